"""Training and evaluation: the paper's recipe with `model.fit`, resumable, data-parallel."""

from keras_sge.training.callbacks import (
    LearningRateLogger,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
    TrainingCurves,
    plot_training_curves,
    read_metrics,
)
from keras_sge.training.config import DEMO_DEFAULTS, MODELS, RECIPES, TrainConfig
from keras_sge.training.distribution import (
    data_parallel,
    has_accelerator,
    initialize_multi_worker,
    is_chief,
    num_workers,
    worker_index,
)
from keras_sge.training.evaluation import (
    PAPER_RESULTS,
    evaluate,
    evaluate_model_file,
    load_for_evaluation,
    results_table,
)
from keras_sge.training.losses import SparseCategoricalCrossentropyWithSmoothing
from keras_sge.training.optimizers import SGDWithL2
from keras_sge.training.schedules import StepDecay, make_schedule
from keras_sge.training.trainer import TrainResult, build_model, train

__all__ = [
    "DEMO_DEFAULTS",
    "LearningRateLogger",
    "MODELS",
    "NonFiniteLossError",
    "PAPER_RESULTS",
    "RECIPES",
    "SGDWithL2",
    "SparseCategoricalCrossentropyWithSmoothing",
    "StepDecay",
    "StopOnNonFiniteLoss",
    "TrainConfig",
    "TrainResult",
    "TrainingCurves",
    "build_model",
    "data_parallel",
    "evaluate",
    "evaluate_model_file",
    "has_accelerator",
    "initialize_multi_worker",
    "is_chief",
    "load_for_evaluation",
    "make_schedule",
    "num_workers",
    "plot_training_curves",
    "read_metrics",
    "results_table",
    "train",
    "worker_index",
]
