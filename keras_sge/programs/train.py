"""Train SGE-ResNet / ResNet with model.fit: the paper's recipe, or a fast one.

With no arguments: SGE-ResNet50 on the offline demo dataset at 40 px (a few
minutes on a 2-core CPU). For ImageNet on GPUs:

    python applications/train.py --dataset imagenet2012 --manual-dir ~/imagenet \
        --batch-size 256 --output-dir runs/sge_resnet50

Every recipe field can be overridden; unset flags take the recipe's value
(see keras_sge.training.RECIPES). Rerun the same command after an
interruption to resume from the last finished epoch.

Fine-tune the authors' ImageNet weights on a folder of images (one
sub-folder per class; train/ and val/ side by side):

    python applications/train.py --dataset ~/flowers --model sge_resnet50 \
        --weights sge_resnet50.pth.tar --output-dir runs/flowers

Installed with pip, the same program is `keras-sge-train` or
`python -m keras_sge.programs.train`.
"""

from __future__ import annotations

import argparse
import json
import sys

from keras_sge.programs.arguments import (
    add_data_arguments,
    add_model_arguments,
    image_size,
    integer,
    number,
)
from keras_sge.training import (
    InsufficientSpaceError,
    NonFiniteLossError,
    RunInProgressError,
    RunSettingsMismatchError,
    TrainConfig,
    WorkersNotJoinedError,
    is_chief,
    train,
    worker_index,
)


def build_parser() -> argparse.ArgumentParser:
    """The program's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_data_flags(p)
    _add_model_flags(p)
    _add_recipe_flags(p)
    _add_run_flags(p)
    return p


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    data = add_data_arguments(p)
    data.add_argument("--train-split", default="train")
    data.add_argument("--val-split", default="validation")
    data.add_argument(
        "--image-size", type=image_size, help="crop size (default 224; 40 on the demo)"
    )
    data.add_argument(
        "--train-augmentation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shuffle and augment the training split (default: yes)",
    )


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    model = add_model_arguments(
        p,
        saved_models=False,
        default="sge_resnet50",
        weights_help="fine-tune from this file: an authors' .pth.tar (SGE-ResNet or plain "
        "ResNet), a .keras model or a .weights.h5 file; the head is new when the class count "
        "differs (default recipe then: fast, with keras_sge.training.FINETUNE_DEFAULTS)",
    )
    model.add_argument("--groups", type=integer(1), default=64, help="SGE groups")
    model.add_argument(
        "--freeze-backbone-epochs",
        type=integer(0),
        help=(
            "first epochs with the loaded layers frozen, BatchNorm in inference mode "
            "(fast fine-tuning: 1)"
        ),
    )
    model.add_argument(
        "--backbone-lr-multiplier",
        type=number(0),
        help="learning-rate factor of the loaded layers (fast fine-tuning: 0.1)",
    )
    model.add_argument(
        "--sge-options",
        type=json.loads,
        help="JSON dict of SpatialGroupEnhance kwargs, e.g. '{\"normalize\": false}'",
    )


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    recipe = p.add_argument_group("recipe (unset = recipe default)")
    recipe.add_argument(
        "--recipe",
        choices=("paper", "fast"),
        help="default: fast on the demo and with --weights, paper elsewhere",
    )
    recipe.add_argument("--epochs", type=integer(1))
    recipe.add_argument(
        "--batch-size", type=integer(1), help="global batch size, split across devices"
    )
    recipe.add_argument(
        "--steps-per-epoch", type=integer(1), help="default: one pass over the training split"
    )
    recipe.add_argument(
        "--validation-steps", type=integer(1), help="default: the whole validation split"
    )
    recipe.add_argument(
        "--lr",
        type=number(0, open_minimum=True),
        help="learning rate per 256 images (scaled linearly with the batch)",
    )
    recipe.add_argument("--momentum", type=number(0, 1, open_maximum=True))
    recipe.add_argument(
        "--weight-decay", type=number(0), help="coupled L2, added to the gradient before momentum"
    )
    recipe.add_argument(
        "--decay-all-parameters",
        action=argparse.BooleanOptionalAction,
        help="also decay BatchNorm/bias/SGE parameters (paper: yes, fast: no)",
    )
    recipe.add_argument("--label-smoothing", type=number(0, 1, open_maximum=True))
    recipe.add_argument("--schedule", choices=("step", "cosine"))
    recipe.add_argument(
        "--lr-milestones", type=integer(1), nargs="+", help="epochs of the step decay"
    )
    recipe.add_argument("--lr-decay-factor", type=number(0, 1, open_minimum=True))
    recipe.add_argument("--warmup-epochs", type=number(0))
    recipe.add_argument("--mixed-precision", choices=("none", "bfloat16", "float16", "auto"))


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("run")
    run.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        help="XLA / torch.compile (default: Keras 'auto')",
    )
    run.add_argument(
        "--devices",
        type=integer(1),
        help="devices for data parallelism, per host (default: all GPUs, or 1 CPU)",
    )
    run.add_argument(
        "--multi-worker",
        action="store_true",
        help="several hosts: run on each (TF: TF_CONFIG; JAX: KERAS_DISTRIBUTION_JOB_ADDRESSES, "
        "_NUM_PROCESSES, _PROCESS_ID); see docs/training.md",
    )
    run.add_argument(
        "--worker-timeout",
        type=number(0, open_minimum=True),
        default=TrainConfig.worker_timeout,
        help="with --multi-worker: seconds to wait for every worker to join (default %(default)s)",
    )
    run.add_argument("--output-dir", default="runs/train")
    run.add_argument("--seed", type=integer(0), default=0)
    run.add_argument(
        "--verbose", default="auto", choices=("auto", "0", "1", "2"), help="model.fit verbosity"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="start afresh in an output dir holding a run"
    )


def parse_args(argv=None) -> TrainConfig:
    """The `TrainConfig` of the command line `argv` (default: `sys.argv[1:]`)."""
    args = vars(build_parser().parse_args(argv))
    if args["verbose"] != "auto":
        args["verbose"] = int(args["verbose"])
    return TrainConfig(**args)


# A run's expected failures: the program prints the message, not a traceback.
RUN_ERRORS = (
    NonFiniteLossError,
    RunInProgressError,
    RunSettingsMismatchError,
    InsufficientSpaceError,
    WorkersNotJoinedError,
)
# Refusals of the output directory: another run in it, or one with other settings.
_REFUSALS = (RunInProgressError, RunSettingsMismatchError)


def report_run_error(error: Exception) -> int:
    """Prints one of `RUN_ERRORS` to stderr as the programs do; returns the exit code.

    Returns:
        2 where the output directory was refused (a run in progress there, or
        a run with other settings), else 1.
    """
    if isinstance(error, NonFiniteLossError):
        print(f"\n{error}", file=sys.stderr)
        return 1
    message = error.strerror if isinstance(error, InsufficientSpaceError) else error
    print(f"error: {message}", file=sys.stderr)
    return 2 if isinstance(error, _REFUSALS) else 1


def main(argv=None) -> int:
    config = parse_args(argv)
    try:
        result = train(config)
    except RUN_ERRORS as error:
        return report_run_error(error)
    if not is_chief():
        print(f"\nworker {worker_index()} finished; the chief (worker 0) wrote the outputs")
        return 0
    best, last = result.best, result.last
    print(
        f"\nbest validation: epoch {best['epoch']}: top-1 {100 * best['val_top1']:.2f}%, "
        f"top-5 {100 * best['val_top5']:.2f}%"
    )
    print(
        f"last validation: epoch {last['epoch']}: top-1 {100 * last['val_top1']:.2f}%, "
        f"top-5 {100 * last['val_top5']:.2f}%"
    )
    print(f"model.fit wall time: {result.wall_time_s:.0f} s; outputs in {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
