"""Detect objects with a saved detector and draw the boxes with class names (PNG).

    python applications/predict_detector.py --model runs/demo_detector/model.keras \
        --class-names circle cross square triangle --output-dir boxes img1.jpg img2.jpg

Each image is resized as in training (--image-size: a square side, or the
recipe's 1333 800); the boxes are mapped back by the image's own scale and
drawn on the original image, one PNG per input.

Installed with pip, the same program is `keras-sge-predict-detector` or
`python -m keras_sge.programs.predict_detector`.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_sge.programs.arguments import add_detection_image_size, number


def main(argv=None) -> int:
    """Runs the program on `argv` (default: `sys.argv[1:]`); returns the exit code."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="a detector .keras file")
    p.add_argument("--class-names", nargs="+", help="names by class index (default: numbers)")
    add_detection_image_size(p, 64, "the size it was trained at (demo: 64)")
    p.add_argument("--min-score", type=number(0, 1), default=0.3)
    p.add_argument("--output-dir", default="detections")
    args = p.parse_args(argv)

    import keras

    from keras_sge.detection.drawing import draw_detections
    from keras_sge.detection.prediction import detect_image_file

    detector = keras.saving.load_model(args.model, compile=False)
    names = args.class_names or [str(i) for i in range(detector.num_classes)]
    os.makedirs(args.output_dir, exist_ok=True)
    for path in args.images:
        if not os.path.isfile(path):
            print(f"error: no image file {path!r}", file=sys.stderr)
            return 2
        image, boxes, labels, scores = detect_image_file(detector, path, args.image_size)
        out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        count = draw_detections(image, boxes, labels, scores, names, out, args.min_score)
        print(f"{path}: {count} box(es) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
