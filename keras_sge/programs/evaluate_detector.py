"""COCO box AP (pycocotools) of a saved detector on the demo set, a COCO folder or tfds coco/2017.

    python applications/evaluate_detector.py --model runs/demo_detector/model.keras

    python applications/evaluate_detector.py --model runs/sge_retinanet50/model.keras \
        --dataset ~/coco --split val2017 --image-size 1333 800 --output-dir runs/eval

    python applications/evaluate_detector.py --model runs/sge_retinanet50/model.keras \
        --dataset coco/2017 --data-dir ~/tensorflow_datasets --image-size 1333 800

Prints AP, AP50, AP75, APs, APm, APl and writes results.json.

Installed with pip, the same program is `keras-sge-evaluate-detector` or
`python -m keras_sge.programs.evaluate_detector`.
"""

from __future__ import annotations

import argparse
import sys

from keras_sge.programs.arguments import add_detection_image_size, integer


def main(argv=None) -> int:
    """Runs the program on `argv` (default: `sys.argv[1:]`); returns the exit code."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="a detector .keras file")
    p.add_argument("--dataset", default="demo", help="demo | coco/2017 (tfds) | a COCO folder")
    p.add_argument(
        "--split", help="default: val2017 (a COCO folder), validation (tfds), val (demo)"
    )
    p.add_argument("--data-dir", help="tfds data directory (demo: cache root of its files)")
    add_detection_image_size(p, 64, "the size it was trained at (demo: 64)")
    p.add_argument("--batch-size", type=integer(1), default=8)
    p.add_argument("--output-dir", default=".")
    args = p.parse_args(argv)

    import keras

    from keras_sge.detection.evaluation import evaluate_detector, format_metrics
    from keras_sge.detection.pipeline import load_coco_dataset
    from keras_sge.detection.sources import load_detection_split

    try:
        coco = load_detection_split(args.dataset, args.split, data_dir=args.data_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detector = keras.saving.load_model(args.model, compile=False)
    batches = load_coco_dataset(
        coco,
        batch_size=args.batch_size,
        image_size=args.image_size,
        training=False,
        with_info=True,
    )
    metrics = evaluate_detector(detector, coco, batches, args.output_dir)
    print(f"COCO box AP on {len(coco)} images: {format_metrics(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
