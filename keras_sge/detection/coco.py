"""COCO-layout detection sets: an image folder and an `instances_*.json`, checked."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import numpy as np

# Boxes may overhang the image by this many pixels (COCO's own annotations
# do, by rounding) and are clipped; farther out is an error.
BOX_TOLERANCE = 1.0


@dataclasses.dataclass(frozen=True)
class CocoSet:
    """A detection set read from COCO json.

    Attributes:
        image_paths: one file per image.
        image_ids: the json's image ids, in the same order.
        boxes: per image, a float32 `(n, 4)` array of `xyxy` pixel boxes.
        labels: per image, an int32 `(n,)` array of class indices
            (0-based positions in `category_ids`).
        category_ids: the json's category ids, sorted; index = class.
        class_names: the category names, in the same order.
        annotation_file: the json file read.
        dropped_boxes: zero-area boxes left out.
    """

    image_paths: tuple[str, ...]
    image_ids: tuple[int, ...]
    boxes: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    annotation_file: str
    dropped_boxes: int = 0

    def __len__(self) -> int:
        return len(self.image_paths)

    def ground_truth(self) -> str:
        """The ground truth for `coco_ap`: the json file."""
        return self.annotation_file


def _read_json(annotation_file: str) -> dict:
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(
            f"No COCO annotation file at {annotation_file!r}: expected an "
            "`instances_<split>.json` (COCO's format) next to the image folder."
        )
    try:
        with open(annotation_file) as f:
            content = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{annotation_file!r} is not readable JSON: {error}") from error
    missing = [key for key in ("images", "annotations", "categories") if key not in content]
    if missing:
        raise ValueError(
            f"{annotation_file!r} is not a COCO instances file: it lacks {missing} "
            "(expected the keys 'images', 'annotations', 'categories')."
        )
    return content


def _checked_box(annotation: dict, image: dict, annotation_file: str) -> np.ndarray | None:
    """The annotation's box as clipped `xyxy`, or None when it has no area."""
    x, y, w, h = (float(v) for v in annotation["bbox"])
    width, height = float(image["width"]), float(image["height"])
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t or w < 0 or h < 0:
        raise ValueError(
            f"{annotation_file!r}: annotation {annotation.get('id')} of image "
            f"{image['file_name']!r} has box [x, y, w, h] = {[x, y, w, h]} outside "
            f"the {width:g}x{height:g} image (COCO boxes are [x, y, width, height] "
            "in pixels, inside the image)."
        )
    box = np.clip([x, y, x + w, y + h], 0.0, [width, height, width, height])
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        return None
    return box.astype("float32")


def _check_image(path: str, image: dict, annotation_file: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            size = opened.size
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"Image {path!r} is not a readable image file: {error}") from error
    if size != (image["width"], image["height"]):
        raise ValueError(
            f"Image {path!r} is {size[0]}x{size[1]} pixels but {annotation_file!r} "
            f"says {image['width']}x{image['height']}: its boxes would not fit it."
        )


def read_coco(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    check_images: bool = True,
) -> CocoSet:
    """Reads and checks a COCO instances json and its image folder.

    Crowd annotations (`iscrowd=1`) are left out of training targets, as
    mmdetection does; zero-area boxes are dropped with a warning that
    counts them. Images without a box stay (they teach background).

    Args:
        annotation_file: the `instances_*.json`.
        image_dir: the folder its `file_name`s are relative to.
        check_images: open every image's header (fast: no decoding) to check
            that it is an image of the size the json states.

    Returns:
        A `CocoSet`.

    Raises:
        FileNotFoundError: the json or an image file is missing.
        ValueError: unreadable json, a box outside its image, an annotation
            of a category the json does not list, an unreadable image or one
            of another size than the json says.

    Example:

    >>> coco = read_coco("coco/annotations/instances_val2017.json", "coco/val2017")
    >>> coco.class_names[:2]
    ('person', 'bicycle')
    """
    annotation_file, image_dir = os.fspath(annotation_file), os.fspath(image_dir)
    content = _read_json(annotation_file)
    categories = sorted(content["categories"], key=lambda c: c["id"])
    images = {image["id"]: image for image in content["images"]}
    boxes, labels, dropped = _targets(content, images, categories, annotation_file)
    if dropped:
        warnings.warn(f"{annotation_file!r}: dropped {dropped} zero-area box(es).", stacklevel=2)
    ids = sorted(images)
    paths = _image_paths([images[i] for i in ids], image_dir, annotation_file, check_images)
    return CocoSet(
        image_paths=paths,
        image_ids=tuple(ids),
        boxes=tuple(np.asarray(boxes[i], "float32").reshape(-1, 4) for i in ids),
        labels=tuple(np.asarray(labels[i], "int32") for i in ids),
        category_ids=tuple(c["id"] for c in categories),
        class_names=tuple(c["name"] for c in categories),
        annotation_file=annotation_file,
        dropped_boxes=dropped,
    )


def _targets(content: dict, images: dict, categories: list, annotation_file: str):
    """Per image id, the checked boxes and class indices; and the zero-area count.

    Crowd annotations are left out; zero-area boxes are counted and left out.
    """
    class_of = {c["id"]: index for index, c in enumerate(categories)}
    boxes = {image_id: [] for image_id in images}
    labels = {image_id: [] for image_id in images}
    dropped = 0
    for annotation in content["annotations"]:
        image = images.get(annotation["image_id"])
        if image is None:
            raise ValueError(
                f"{annotation_file!r}: annotation {annotation.get('id')} refers to image id "
                f"{annotation['image_id']}, which 'images' does not list."
            )
        if annotation["category_id"] not in class_of:
            raise ValueError(
                f"{annotation_file!r}: annotation {annotation.get('id')} of image "
                f"{image['file_name']!r} has category_id {annotation['category_id']}, "
                f"not one of the json's categories {sorted(class_of)}."
            )
        if annotation.get("iscrowd", 0):
            continue
        box = _checked_box(annotation, image, annotation_file)
        if box is None:
            dropped += 1
            continue
        boxes[image["id"]].append(box)
        labels[image["id"]].append(class_of[annotation["category_id"]])
    return boxes, labels, dropped


def _image_paths(
    images: list[dict], image_dir: str, annotation_file: str, check_images: bool
) -> tuple[str, ...]:
    """The images' files, which must exist (and, checked, be of the json's sizes)."""
    paths = tuple(os.path.join(image_dir, image["file_name"]) for image in images)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {annotation_file!r} are not in "
            f"{image_dir!r}, e.g. {missing[:3]}."
        )
    if check_images:
        for image, path in zip(images, paths):
            _check_image(path, image, annotation_file)
    return paths


def find_coco_split(folder: str | os.PathLike, split: str) -> tuple[str, str]:
    """The json and image folder of a split in COCO's own layout.

    `<folder>/annotations/instances_<split>.json` and `<folder>/<split>/`
    (e.g. `split="val2017"`).

    Returns:
        `(annotation_file, image_dir)`.
    """
    folder = os.fspath(folder)
    annotation_file = os.path.join(folder, "annotations", f"instances_{split}.json")
    image_dir = os.path.join(folder, split)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"No image folder {image_dir!r}: a COCO folder holds <split>/ images and "
            f"annotations/instances_<split>.json."
        )
    _read_json(annotation_file)
    return annotation_file, image_dir
