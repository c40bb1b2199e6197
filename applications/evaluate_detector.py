"""COCO box AP (pycocotools) of a saved detector on a COCO folder or the demo set.

    python applications/evaluate_detector.py --model runs/demo_detector/model.keras

    python applications/evaluate_detector.py --model runs/sge_retinanet50/model.keras \
        --dataset ~/coco --split val2017 --image-size 1344 --output-dir runs/eval

Prints AP, AP50, AP75, APs, APm, APl and writes results.json.
"""

from __future__ import annotations

import argparse
import sys

from keras_sge.programs.arguments import image_size, integer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="a detector .keras file")
    p.add_argument("--dataset", default="demo", help="demo | a COCO folder")
    p.add_argument("--split", help="split of a COCO folder (default val2017; demo: val)")
    p.add_argument("--data-dir", help="cache root of the demo files")
    p.add_argument(
        "--image-size", type=image_size, default=64, help="the size it was trained at (demo: 64)"
    )
    p.add_argument("--batch-size", type=integer(1), default=8)
    p.add_argument("--output-dir", default=".")
    args = p.parse_args(argv)

    import keras

    from keras_sge.detection.coco import find_coco_split, read_coco
    from keras_sge.detection.demo import prepare_detection_demo
    from keras_sge.detection.evaluation import evaluate_detector, format_metrics
    from keras_sge.detection.pipeline import load_coco_dataset

    if args.dataset == "demo":
        folder, split = prepare_detection_demo(args.data_dir), args.split or "val"
    else:
        folder, split = args.dataset, args.split or "val2017"
    coco = read_coco(*find_coco_split(folder, split))
    detector = keras.saving.load_model(args.model, compile=False)
    batches = load_coco_dataset(
        coco, batch_size=args.batch_size, image_size=args.image_size, training=False
    )
    metrics = evaluate_detector(detector, coco, batches, args.image_size, args.output_dir)
    print(f"COCO box AP on {len(coco)} images: {format_metrics(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
