"""Train an SGE-ResNet (or plain ResNet) RetinaNet with keras-hub and model.fit.

With no arguments: the classification demo trains an SGE-ResNet18 (2 epochs,
into <output-dir>/backbone/), which starts the backbone of a RetinaNet trained
on the offline demo detection set (64 px, 2 epochs), then COCO AP on its
held-out images; about 4 minutes on a 2-core CPU:

    python applications/train_detector.py --output-dir runs/demo_detector

On COCO (a folder with annotations/instances_train2017.json, train2017/,
val2017/; or --dataset coco/2017, tfds' prepared copy in --data-dir), from the
authors' ImageNet weights, at the authors' 1333x800 scale, on GPUs:

    python applications/train_detector.py --dataset ~/coco --model sge_resnet50 \
        --weights imagenet --image-size 1333 800 --batch-size 16 --epochs 24 \
        --optimizer sgd --learning-rate 0.01 --warmup-steps 500 --output-dir runs/sge_retinanet50

Rerun the same command after an interruption to resume from the last epoch.

Installed with pip, the same program is `keras-sge-train-detector` or
`python -m keras_sge.programs.train_detector`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from keras_sge.programs.arguments import add_detection_image_size, integer, number

if TYPE_CHECKING:
    from keras_sge.detection.training import DetectorConfig

_MODELS = {f"{p}resnet{d}": (d, p == "sge_") for p in ("sge_", "") for d in (18, 34, 50, 101)}


def parse_args(argv=None) -> DetectorConfig:
    """The `DetectorConfig` of the command line `argv` (default: `sys.argv[1:]`)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", default="runs/demo_detector")
    p.add_argument("--dataset", default="demo", help="demo | coco/2017 (tfds) | a COCO folder")
    p.add_argument("--train-split", help="default: train2017 (a COCO folder), train (tfds)")
    p.add_argument("--val-split", help="default: val2017 (a COCO folder), validation (tfds)")
    p.add_argument("--data-dir", help="tfds data directory (demo: cache root of its files)")
    p.add_argument(
        "--demo-images", type=integer(1), nargs=2, default=(600, 200), metavar=("TRAIN", "VAL")
    )
    p.add_argument("--model", default="sge_resnet18", choices=sorted(_MODELS))
    p.add_argument(
        "--weights", help="backbone start (imagenet, a checkpoint) or a detector .keras file"
    )
    add_detection_image_size(p, 64, "input size")
    p.add_argument("--batch-size", type=integer(1), default=16)
    p.add_argument("--epochs", type=integer(1), default=2)
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="adam",
        help="sgd: the authors' recipe; adam: the demo's default",
    )
    p.add_argument("--learning-rate", type=number(0, open_minimum=True), default=3e-4)
    p.add_argument("--warmup-steps", type=integer(0), default=10)
    p.add_argument(
        "--anchor-size",
        type=number(0, open_minimum=True),
        help="anchor octave base (demo: 2, COCO: 4)",
    )
    p.add_argument("--head-convs", type=integer(1), help="convolutions per head (demo: 2, COCO: 4)")
    p.add_argument(
        "--pretrain-epochs",
        type=integer(0),
        default=2,
        help="demo, no --weights: classification demo epochs to start the backbone (0: random)",
    )
    p.add_argument("--devices", type=integer(1), help="data-parallel devices")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2, help="fit's verbosity")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="remove an earlier run in --output-dir first; <output-dir>/backbone/, the "
        "classification demo run that starts the demo's backbone (minutes of training), is "
        "reused if it was pretrained with the same settings and pretrained again if not",
    )
    args = p.parse_args(argv)
    from keras_sge.detection.training import DetectorConfig

    depth, attention = _MODELS[args.model]
    fields = {k: v for k, v in vars(args).items() if k != "model"}
    fields["demo_images"] = tuple(fields["demo_images"])
    return DetectorConfig(depth=depth, attention=attention, **fields)


def main(argv=None) -> int:
    """Runs the program on `argv` (default: `sys.argv[1:]`); returns the exit code."""
    config = parse_args(argv)
    from keras_sge.detection.evaluation import format_metrics
    from keras_sge.detection.training import train_detector
    from keras_sge.programs.train import RUN_ERRORS, report_run_error

    try:
        metrics = train_detector(config)
    except RUN_ERRORS as error:
        return report_run_error(error)
    except FileNotFoundError as error:  # the dataset's files, named in the message
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\nheld-out COCO AP: {format_metrics(metrics)}")
    print(f"training: {metrics['fit_wall_time_s']:.0f} s; outputs in {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
