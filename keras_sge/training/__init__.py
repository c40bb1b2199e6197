"""Training and evaluation: the paper's recipe with `model.fit`, resumable, data-parallel.

Needs the `train` extra (TensorFlow for tf.data and TensorBoard, matplotlib).
"""

from keras_sge._lazy import require

require("tensorflow", "train", "keras_sge.training")
require("matplotlib", "train", "keras_sge.training")

from keras_sge.losses import SparseCategoricalCrossentropyWithSmoothing  # noqa: E402
from keras_sge.optimizers import SGDWithL2  # noqa: E402
from keras_sge.optimizers.schedules import StepDecay, make_schedule  # noqa: E402
from keras_sge.training import ablation  # noqa: E402
from keras_sge.training.callbacks import (  # noqa: E402
    LearningRateLogger,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
    TrainingCurves,
    plot_training_curves,
    read_metrics,
)
from keras_sge.training.config import DEMO_DEFAULTS, FINETUNE_DEFAULTS, MODELS, RECIPES, TrainConfig  # noqa: E402
from keras_sge.training.distribution import (  # noqa: E402
    Cluster,
    WorkersNotJoinedError,
    data_parallel,
    has_accelerator,
    initialize_multi_worker,
    is_chief,
    num_workers,
    worker_index,
)
from keras_sge.training.evaluation import (  # noqa: E402
    IncompatibleModelError,
    check_model,
    evaluate,
    evaluate_model_file,
    results_table,
)
from keras_sge.training.files import (  # noqa: E402
    AtomicCSVLogger,
    AtomicModelCheckpoint,
    InsufficientSpaceError,
    RunInProgressError,
    run_lock,
    save_model_atomically,
)
from keras_sge.training.run import RunSettingsMismatchError  # noqa: E402
from keras_sge.training.trainer import TrainResult, build_model, train  # noqa: E402

__all__ = [
    "AtomicCSVLogger",
    "AtomicModelCheckpoint",
    "Cluster",
    "DEMO_DEFAULTS",
    "FINETUNE_DEFAULTS",
    "IncompatibleModelError",
    "LearningRateLogger",
    "MODELS",
    "NonFiniteLossError",
    "RECIPES",
    "InsufficientSpaceError",
    "RunInProgressError",
    "RunSettingsMismatchError",
    "WorkersNotJoinedError",
    "SGDWithL2",
    "SparseCategoricalCrossentropyWithSmoothing",
    "StepDecay",
    "StopOnNonFiniteLoss",
    "TrainConfig",
    "TrainResult",
    "TrainingCurves",
    "ablation",
    "build_model",
    "check_model",
    "data_parallel",
    "evaluate",
    "evaluate_model_file",
    "has_accelerator",
    "initialize_multi_worker",
    "is_chief",
    "make_schedule",
    "num_workers",
    "plot_training_curves",
    "read_metrics",
    "results_table",
    "run_lock",
    "save_model_atomically",
    "train",
    "worker_index",
]
