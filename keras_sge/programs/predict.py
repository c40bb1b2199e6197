"""Classify images with an SGE-ResNet: top-5 class names and probabilities.

Examples (a model name with its weights, or a trained .keras model, which
uses the class names of its training data):

    python applications/predict.py cat.jpg holiday/ --model sge_resnet50 \\
        --weights sge_resnet50.pth.tar
    python applications/predict.py cat.jpg --model sge_resnet50 --weights imagenet
    python applications/predict.py flowers/val/ --model runs/flowers/model.keras

Every readable image is classified; the others are listed at the end with
the reason, and the exit status is then 1.

`--weights imagenet` reads the authors' file from the weights cache
(~/.keras/models, or $KERAS_SGE_WEIGHTS_DIR); the error says where to
download it when it is not there.

Installed with pip, the same program is `keras-sge-predict` or
`python -m keras_sge.programs.predict`.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_sge.programs.arguments import add_model_arguments, integer


def build_parser() -> argparse.ArgumentParser:
    """The program's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    add_model_arguments(p)
    p.add_argument("--top", type=integer(1), default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=integer(1), default=16)
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.model.endswith(".keras") and args.weights is None:
        p.error(f"--model {args.model} is built untrained: give --weights (a file, or imagenet)")

    from keras_sge.applications import create_model
    from keras_sge.applications.loading import check_finite_weights
    from keras_sge.applications.prediction import classify_each, saved_class_names

    try:
        model = create_model(args.model, weights=args.weights)
        check_finite_weights(model)
        class_names = saved_class_names(args.model) if args.model.endswith(".keras") else None
        if class_names is not None and len(class_names) != model.output_shape[-1]:
            class_names = None
        results, failures = classify_each(
            model, args.images, top=args.top, class_names=class_names, batch_size=args.batch_size
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, top in results:
        print(os.path.normpath(path))
        for rank, (class_id, name, probability) in enumerate(top, 1):
            label = name if class_id.isdigit() else f"{name} ({class_id})"
            print(f"  {rank}. {label:<40} {100 * probability:6.2f}%")
    if failures:
        print(
            f"error: {len(failures)} of {len(results) + len(failures)} inputs not classified:",
            file=sys.stderr,
        )
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
