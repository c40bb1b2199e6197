"""Draws what SGE does in a model: attention maps and activation statistics.

Writes to `--output-dir`: `attention_maps.png` (each image beside the gates of
its most varied groups in the last SGE layer and the feature-norm heat maps
before and after it), `activation_statistics.png` and `.json` (per-group
activation variance before and after SGE over a stage).

Examples:

    # a model trained by applications/train.py, on demo validation images
    python applications/visualize.py --model runs/train/model.keras --output-dir runs/vis
    # the authors' checkpoint, on your own images
    python applications/visualize.py dog.jpg cat.jpg --model sge_resnet50 \
        --weights sge_resnet50.pth.tar --output-dir runs/vis

Installed with pip, the same program is `keras-sge-visualize` or
`python -m keras_sge.programs.visualize`.
"""

from __future__ import annotations

import argparse
import os
import sys

import keras
import numpy as np

from keras_sge import applications, data, visualization
from keras_sge.programs.arguments import (
    add_data_arguments,
    add_model_arguments,
    image_size,
    integer,
)
from keras_sge.training import IncompatibleModelError, check_model


def build_parser() -> argparse.ArgumentParser:
    """The program's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="*", help="image files; default: images of --dataset")
    add_model_arguments(parser)
    data = add_data_arguments(parser)
    data.add_argument("--split", default="validation")
    data.add_argument(
        "--image-size", type=image_size, help="default: the model's input size, else 224"
    )
    parser.add_argument(
        "--num-images", type=integer(1), default=6, help="images shown from --dataset"
    )
    parser.add_argument(
        "--statistics-images",
        type=integer(1),
        default=64,
        help="images of --dataset for the statistics (image files: the files)",
    )
    parser.add_argument(
        "--shuffle-buffer",
        type=integer(1),
        default=1000,
        help="mixes --dataset images before taking them",
    )
    parser.add_argument("--seed", type=integer(0), default=0, help="seed of that mixing")
    parser.add_argument(
        "--layer", default=None, help="SGE layer of the maps; default: the last one"
    )
    parser.add_argument(
        "--stage",
        default=None,
        help="stage (e.g. layer4) or layer of the statistics; default: the last stage",
    )
    parser.add_argument("--num-groups", type=integer(1), default=4, help="gate maps per image")
    parser.add_argument("--output-dir", default="runs/visualize")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The flags of the command line `argv` (default: `sys.argv[1:]`)."""
    return build_parser().parse_args(argv)


def load_model(args: argparse.Namespace) -> keras.Model:
    if args.model in applications.MODELS and args.weights is None:
        raise SystemExit(f"--model {args.model} needs --weights (a trained checkpoint).")
    try:
        return applications.create_model(args.model, args.weights)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


def run(argv=None) -> dict[str, str]:
    """Runs the program on the command line `argv`; returns what it wrote."""
    args = parse_args(argv)
    model = load_model(args)
    spatial = (
        model.input.shape[1:3]
        if keras.config.image_data_format() == "channels_last"
        else model.input.shape[2:4]
    )
    image_size = args.image_size or (spatial[0] if spatial[0] and spatial[0] == spatial[1] else 224)
    statistics_data = None
    if args.images:
        images = visualization.load_images(args.images, image_size)
        captions = [os.path.basename(path) for path in args.images]
    else:
        dataset, info = data.load(
            args.dataset,
            args.split,
            batch_size=16,
            image_size=image_size,
            data_dir=args.data_dir,
            training=False,
            with_info=True,
            **({} if args.manual_dir is None else {"manual_dir": args.manual_dir}),
        )
        # Splits are often stored class by class: mix them so that the images
        # shown and the statistics cover several classes.
        stream = dataset.unbatch().shuffle(args.shuffle_buffer, seed=args.seed)
        images, labels = next(iter(stream.batch(args.num_images)))
        images, labels = np.asarray(images), np.asarray(labels)
        names = info.class_names or [str(i) for i in range(info.num_classes)]
        captions = [names[int(label)] for label in labels]
        statistics_data = stream.batch(16)
    try:
        check_model(model, None if args.images else info.num_classes)
    except IncompatibleModelError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    paths = visualization.write_report(
        model,
        images,
        args.output_dir,
        statistics_data=statistics_data,
        captions=captions,
        layer=args.layer,
        stage=args.stage,
        num_groups=args.num_groups,
        max_statistics_images=None if args.images else args.statistics_images,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return paths


def main(argv=None) -> int:
    """The program: `python -m keras_sge.programs.visualize` or `keras-sge-visualize`."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
