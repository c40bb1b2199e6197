"""Detect objects with a saved detector and draw the boxes with class names (PNG).

    python applications/predict_detector.py --model runs/demo_detector/model.keras \
        --class-names circle cross square triangle --output-dir boxes img1.jpg img2.jpg

Each image is fitted into --image-size keeping its aspect, as in training;
boxes are drawn on the fitted image, one PNG per input.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_sge.programs.arguments import image_size, number


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="a detector .keras file")
    p.add_argument("--class-names", nargs="+", help="names by class index (default: numbers)")
    p.add_argument(
        "--image-size", type=image_size, default=64, help="the size it was trained at (demo: 64)"
    )
    p.add_argument("--min-score", type=number(0, 1), default=0.3)
    p.add_argument("--output-dir", default="detections")
    args = p.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_sge.applications.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from keras_sge.detection.drawing import draw_detections
    from keras_sge.detection.pipeline import detection_dataset

    detector = keras.saving.load_model(args.model, compile=False)
    names = args.class_names or [str(i) for i in range(detector.num_classes)]
    os.makedirs(args.output_dir, exist_ok=True)
    for path in args.images:
        if not os.path.isfile(path):
            print(f"error: no image file {path!r}", file=sys.stderr)
            return 2
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        examples = tf.data.Dataset.from_tensors((image, tf.zeros((0, 4)), tf.zeros((0,), "int32")))
        batch = next(
            iter(
                detection_dataset(
                    examples, batch_size=1, image_size=args.image_size, training=False
                )
            )
        )[0]
        found = detector.predict(batch.numpy(), verbose=0)
        mean = 255 * np.array(IMAGENET_MEAN)
        std = 255 * np.array(IMAGENET_STD)
        shown = batch.numpy()[0] * std + mean
        out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        count = draw_detections(
            shown,
            found["boxes"][0],
            found["labels"][0],
            found["confidence"][0],
            names,
            out,
            args.min_score,
        )
        print(f"{path}: {count} box(es) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
