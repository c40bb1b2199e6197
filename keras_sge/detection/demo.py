"""An offline demo detection set: coloured shapes with boxes, as JPEGs and COCO json.

Each image (`IMAGE_SIZE` pixels square) holds one to three objects of the
four classification-demo classes (circle, cross, square, triangle, in their
class colours) on the same cluttered background, never overlapping. The
files are written once, in COCO's layout (`<split>/*.jpg`,
`annotations/instances_<split>.json`), and read back by `read_coco`, like
any COCO folder.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import ImageDraw

from keras_sge.data.demo import (
    CLASS_NAMES,
    _background,
    _object_colour,
    _rotated,
    _shape_polygons,
    default_data_dir,
    write_folder_once,
)

DEMO_VERSION = 1
IMAGE_SIZE = 96
MIN_OBJECT, MAX_OBJECT = 24, 48  # box sides, pixels
MAX_OBJECTS = 3
# Anchor octave base 2: at 64 px (objects of 11-30 px) P3 anchors are 16-25 px and
# P4 32-50 px; 94 % of the boxes have an anchor at IoU >= 0.5 (99.8 % at 96 px).
DEMO_ANCHOR_SIZE = 2.0
DEMO_HEAD_CONVS = 2  # the recipe's 4 double the cost of a step at 64 px
# Training and held-out images of the demo run (train_detector's default).
DEMO_IMAGES = (600, 200)
_SPLITS = {"train": 0, "val": 1}


def _draw_object(draw, rng, label: int, cx: float, cy: float, radius: float) -> list[float]:
    """Draws one shape and returns its tight `[x, y, w, h]` box."""
    colour = _object_colour(rng, label)
    if CLASS_NAMES[label] == "circle":
        points = [(cx - radius, cy - radius), (cx + radius, cy + radius)]
        draw.ellipse([*points[0], *points[1]], fill=colour)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        points = []
        for polygon in _shape_polygons(CLASS_NAMES[label], radius):
            vertices = _rotated(polygon, angle, cx, cy)
            draw.polygon(vertices, fill=colour)
            points += vertices
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def render_detection_example(seed: int, split: str, index: int):
    """Renders demo detection image `index` of `split`, deterministically.

    Returns:
        `(PIL image, [(label, [x, y, w, h]), ...])`.
    """
    rng = np.random.default_rng([seed, _SPLITS[split], index, 7])
    image = _background(rng, IMAGE_SIZE, IMAGE_SIZE)
    draw = ImageDraw.Draw(image)
    objects, placed = [], []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(20):
            radius = rng.uniform(MIN_OBJECT, MAX_OBJECT) / 2 / 1.2
            margin = radius * 1.25
            cx, cy = rng.uniform(margin, IMAGE_SIZE - margin, size=2)
            if all(math.hypot(cx - x, cy - y) > (radius + r) * 1.3 for x, y, r in placed):
                break
        else:
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        box = _draw_object(draw, rng, label, cx, cy, radius)
        placed.append((cx, cy, radius))
        objects.append((label, [round(float(v), 2) for v in box]))
    return image, objects


def _write_split(root: str, seed: int, split: str, count: int) -> None:
    os.makedirs(os.path.join(root, split))
    images, annotations = [], []
    for index in range(count):
        image, objects = render_detection_example(seed, split, index)
        name = f"{split}_{index:05d}.jpg"
        image.save(os.path.join(root, split, name), format="JPEG", quality=92)
        images.append(
            {"id": index + 1, "file_name": name, "width": IMAGE_SIZE, "height": IMAGE_SIZE}
        )
        for label, box in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)
    ]
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def prepare_detection_demo(
    data_dir: str | None = None, *, num_train: int = 1200, num_validation: int = 200, seed: int = 0
) -> str:
    """Writes the demo detection set once and returns its COCO-layout folder.

    The folder, `<data_dir>/detection-demo-v1-seed<seed>-<num_train>-<num_validation>`,
    holds `train/`, `val/` and `annotations/instances_{train,val}.json`; it is
    written to a temporary folder and renamed into place, so concurrent
    callers never see half of it.

    Args:
        data_dir: cache root; default `$KERAS_SGE_DATA_DIR` or `~/.cache/keras_sge`.
        num_train: training images.
        num_validation: held-out images.
        seed: generator seed; the same seed gives the same files.

    Returns:
        The folder, for `find_coco_split(folder, "train")`.

    Example:

    >>> folder = prepare_detection_demo()
    >>> coco = read_coco(*find_coco_split(folder, "val"))
    """
    for arg, value in (("num_train", num_train), ("num_validation", num_validation)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
    root = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    folder = os.path.join(
        root, f"detection-demo-v{DEMO_VERSION}-seed{seed}-{num_train}-{num_validation}"
    )

    def write(staging: str) -> None:
        os.makedirs(os.path.join(staging, "annotations"))
        _write_split(staging, seed, "train", num_train)
        _write_split(staging, seed, "val", num_validation)

    return write_folder_once(folder, write, f"keras_sge detection demo v{DEMO_VERSION}")
