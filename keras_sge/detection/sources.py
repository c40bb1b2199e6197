"""Where a detection set comes from: the offline demo, a COCO folder, tfds `coco/2017`."""

from __future__ import annotations

from keras_sge.detection.coco import find_coco_split, read_coco
from keras_sge.detection.demo import DEMO_IMAGES, prepare_detection_demo
from keras_sge.detection.pipeline import DetectionSet
from keras_sge.detection.tfds_coco import TFDS_NAME, load_tfds_coco

# Split names per source when none is given: (training, held out).
DEFAULT_SPLITS = {"demo": ("train", "val"), TFDS_NAME: ("train", "validation")}
COCO_FOLDER_SPLITS = ("train2017", "val2017")


def load_detection_split(
    dataset: str,
    split: str | None = None,
    *,
    training: bool = False,
    data_dir: str | None = None,
    demo_images: tuple[int, int] = DEMO_IMAGES,
) -> DetectionSet:
    """One split of a detection set, checked, in the form the pipelines read.

    Args:
        dataset: `"demo"` (generated once under `data_dir`), `"coco/2017"`
            (tfds' prepared copy in `data_dir`; never downloads) or a COCO
            folder (`annotations/instances_<split>.json` beside `<split>/`).
        split: the split's name; `None`: the source's training or held-out
            split (`train`/`val`, tfds' `train`/`validation`, a folder's
            `train2017`/`val2017`).
        training: which default split `None` means.
        data_dir: tfds' data directory, or the demo's cache root.
        demo_images: the demo's `(training, held-out)` image counts.

    Returns:
        A `CocoSet` (demo, COCO folder) or the tfds set.

    Raises:
        FileNotFoundError: the annotation file, an image folder or the
            prepared tfds copy is missing (the message says where to put it).

    Example:

    >>> held_out = load_detection_split("coco/2017", data_dir="~/tensorflow_datasets")
    """
    defaults = DEFAULT_SPLITS.get(dataset, COCO_FOLDER_SPLITS)
    split = split or defaults[0 if training else 1]
    if dataset == TFDS_NAME:
        return load_tfds_coco(split, data_dir)
    if dataset == "demo":
        num_train, num_validation = demo_images
        folder = prepare_detection_demo(
            data_dir, num_train=num_train, num_validation=num_validation
        )
        return read_coco(*find_coco_split(folder, split))
    return read_coco(*find_coco_split(dataset, split))
