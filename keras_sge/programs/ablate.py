"""Runs the paper's SGE ablations (groups, initialisation, normalisation, no SGE).

Every setting is one `keras_sge.training.train` run on the given dataset and
budget; the results go to `<output-dir>/ablation.csv`, `ablation.md` and
`ablation.png`. Finished settings are skipped when the program is run again.

Example (a small grid on the offline demo data, minutes on a CPU):

    python applications/ablate.py --groups 1 8 64 --epochs 3 --image-size 32 \
        --output-dir runs/ablation-demo

Installed with pip, the same program is `keras-sge-ablate` or
`python -m keras_sge.programs.ablate`.
"""

from __future__ import annotations

import argparse
import sys
import time

from keras_sge.applications import MODELS
from keras_sge.programs.arguments import (
    add_data_arguments,
    add_model_arguments,
    image_size,
    integer,
    number,
)
from keras_sge.training import TrainConfig, ablation


def build_parser() -> argparse.ArgumentParser:
    """The program's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    _add_model_flags(parser)
    _add_sweep_flags(parser)
    _add_recipe_flags(parser)
    _add_run_flags(parser)
    return parser


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The SGE model and the group counts to sweep."""
    model = add_model_arguments(
        parser,
        saved_models=False,
        default="sge_resnet50",
        names=[name for name, spec in MODELS.items() if spec.attention],
        weights=False,
    )
    model.add_argument(
        "--groups",
        type=integer(1),
        nargs="*",
        default=list(ablation.PAPER_GROUPS),
        help="group counts to sweep (none: no sweep)",
    )


def _add_sweep_flags(parser: argparse.ArgumentParser) -> None:
    """Which of the other ablation runs to leave out."""
    parser.add_argument(
        "--no-init", action="store_true", help="leave out the gamma=1/beta=0 initialisation run"
    )
    parser.add_argument(
        "--no-norm", action="store_true", help="leave out the run without normalisation"
    )
    parser.add_argument("--no-baseline", action="store_true", help="leave out the run without SGE")


def _add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """The training recipe of every run (unset: the recipe's default)."""
    parser.add_argument(
        "--recipe",
        default=None,
        choices=("paper", "fast"),
        help="default: fast on the demo data, paper elsewhere",
    )
    parser.add_argument("--epochs", type=integer(1), default=None)
    parser.add_argument(
        "--steps-per-epoch",
        type=integer(1),
        default=None,
        help="default: one pass over the training split",
    )
    parser.add_argument(
        "--validation-steps",
        type=integer(1),
        default=None,
        help="default: the whole validation split",
    )
    parser.add_argument("--batch-size", type=integer(1), default=None)
    parser.add_argument("--image-size", type=image_size, default=None)
    parser.add_argument(
        "--lr", type=number(0, open_minimum=True), default=None, help="learning rate per 256 images"
    )
    parser.add_argument(
        "--warmup-epochs",
        type=number(0),
        default=None,
        help="linear warmup (must be below --epochs)",
    )


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Compilation, seed, output folder and verbosity."""
    parser.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        help="XLA / torch.compile (default: Keras 'auto')",
    )
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--output-dir", default="runs/ablation")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="train every setting again instead of reusing finished runs",
    )
    parser.add_argument("--verbose", default=2, type=integer(0, 2), help="model.fit verbosity")


def parse_args(argv=None) -> argparse.Namespace:
    """The flags of the command line `argv` (default: `sys.argv[1:]`)."""
    return build_parser().parse_args(argv)


def run(argv=None) -> list[dict]:
    """Runs the program on the command line `argv`; returns what it wrote."""
    args = parse_args(argv)
    settings = ablation.ablation_grid(
        args.model,
        groups=args.groups,
        initialization=not args.no_init,
        normalization=not args.no_norm,
        baseline=not args.no_baseline,
    )
    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
        recipe=args.recipe,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        jit=args.jit,
        seed=args.seed,
        verbose=args.verbose,
    )
    start = time.perf_counter()
    rows = ablation.run_ablation(settings, config, args.output_dir, resume=not args.restart)
    print(f"{len(rows)} settings in {time.perf_counter() - start:.0f} s; table:")
    with open(f"{args.output_dir}/ablation.md") as f:
        print(f.read())
    return rows


def main(argv=None) -> int:
    """The program: `python -m keras_sge.programs.ablate` or `keras-sge-ablate`."""
    from keras_sge.programs.train import RUN_ERRORS, report_run_error

    try:
        run(argv)
    except RUN_ERRORS as error:
        return report_run_error(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
