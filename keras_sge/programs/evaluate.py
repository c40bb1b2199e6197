"""Top-1 / top-5 of a trained .keras model or an authors' PyTorch checkpoint.

Uses the paper's evaluation preprocessing (short side to image_size / 0.875,
i.e. 256 for 224, then the central crop) and prints the paper's numbers beside
the measured ones:

    python applications/evaluate.py --model sge_resnet50 --weights sge_resnet50.pth.tar \\
        --dataset imagenet2012 --manual-dir ~/imagenet
    python applications/evaluate.py --model runs/train/model.keras --dataset demo

Installed with pip, the same program is `keras-sge-evaluate` or
`python -m keras_sge.programs.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys

from keras_sge.applications.prediction import saved_class_names
from keras_sge.programs.arguments import (
    add_data_arguments,
    add_model_arguments,
    image_size,
    integer,
)
from keras_sge.training import evaluate_model_file, results_table
from keras_sge.training.evaluation import ClassNamesMismatchError


def build_parser() -> argparse.ArgumentParser:
    """The program's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(p)
    data = add_data_arguments(p, default="imagenet2012")
    data.add_argument("--split", default="validation")
    data.add_argument(
        "--image-size",
        type=image_size,
        help="crop size (default: the .keras model's input size, else 224)",
    )
    p.add_argument("--batch-size", type=integer(1), default=100)
    p.add_argument(
        "--steps",
        type=integer(1),
        help="evaluate only this many batches, a fixed random sample of the split",
    )
    p.add_argument(
        "--ignore-class-names",
        action="store_true",
        help="evaluate a .keras model even when the class names of its run (config.json "
        "beside it) differ from the dataset's",
    )
    p.add_argument(
        "--json", help="also write the results (accuracies as fractions) to this JSON file"
    )
    return p


def _run_class_names(args: argparse.Namespace) -> list[str] | None:
    """The classes of the .keras model's training run (its config.json), if checked."""
    if args.ignore_class_names or not args.model.endswith(".keras"):
        return None
    return saved_class_names(args.model)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)

    try:
        measured = evaluate_model_file(
            args.model,
            args.weights,
            dataset=args.dataset,
            split=args.split,
            image_size=args.image_size,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
            manual_dir=args.manual_dir,
            steps=args.steps,
            class_names=_run_class_names(args),
        )
    except ClassNamesMismatchError as error:
        print(f"error: {error}\n(--ignore-class-names evaluates it anyway)", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    part = (
        f" (partial: {args.steps} batches of {args.batch_size}, a fixed random sample of the split)"
        if measured.get("partial")
        else ""
    )
    print(
        f"\n{args.dataset}/{args.split} at {measured['image_size']} px{part}: top-1 "
        f"{100 * measured['top1']:.3f}%, top-5 {100 * measured['top5']:.3f}%, "
        f"loss {measured['loss']:.4f}\n"
    )
    print(results_table(measured, measured["model"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"weights": args.weights, "dataset": args.dataset, "split": args.split, **measured},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
