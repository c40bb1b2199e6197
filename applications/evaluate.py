"""Top-1 / top-5 of a trained .keras model or an authors' PyTorch checkpoint.

Uses the paper's evaluation preprocessing (short side to image_size / 0.875,
i.e. 256 for 224, then the central crop) and prints the paper's numbers beside
the measured ones:

    python applications/evaluate.py --model sge_resnet50 --weights sge_resnet50.pth.tar \\
        --dataset imagenet2012 --manual-dir ~/imagenet
    python applications/evaluate.py --model runs/train/model.keras --dataset demo
"""

from __future__ import annotations

import argparse
import json
import sys

from keras_sge.applications import MODELS
from keras_sge.training import evaluate_model_file, results_table
from keras_sge.training.evaluation import IncompatibleModelError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", required=True, help=f"a .keras file, or a model name ({', '.join(MODELS)})"
    )
    p.add_argument(
        "--weights",
        help="checkpoint to load into the model (.pth, .pth.tar, .pt, .tar, .weights.h5)",
    )
    p.add_argument(
        "--dataset",
        default="imagenet2012",
        help="imagenet2012 | demo | a tfds name | an image-folder path",
    )
    p.add_argument("--split", default="validation")
    p.add_argument("--data-dir")
    p.add_argument("--manual-dir", help="folder with the ImageNet archives")
    p.add_argument(
        "--image-size",
        type=int,
        help="crop size (default: the .keras model's input size, else 224)",
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--steps",
        type=int,
        help="evaluate only this many batches, a fixed random sample of the split",
    )
    p.add_argument(
        "--json", help="also write the results (accuracies as fractions) to this JSON file"
    )
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
        )
    except IncompatibleModelError as error:
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
