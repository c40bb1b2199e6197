"""tfds `coco/2017` as a detection set: its examples and its COCOeval ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

TFDS_NAME = "coco/2017"
# COCO's ids of its 80 categories, in id order: tfds' label index i is the
# i-th of them (tfds lists the categories as the instances json does).
COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TfdsCocoSet:
    """A split of a prepared tfds `coco/2017` (see `load_tfds_coco`).

    Attributes:
        split: the tfds split (`"train"`, `"validation"`).
        data_dir: tfds' data directory (`None`: its default).
        num_examples: images in the split.
        class_names: the 80 class names, index = class.
        category_ids: COCO's category id of each class.
    """

    split: str
    data_dir: str | None
    num_examples: int
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...] = COCO_CATEGORY_IDS

    def __len__(self) -> int:
        return self.num_examples

    def ground_truth(self) -> dict:
        """The split's COCO instances (see `coco_ground_truth`); reads every image."""
        return coco_ground_truth(
            _load(self.split, self.data_dir), self.class_names, self.category_ids
        )


def _load(split: str, data_dir: str | None, **options) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    try:
        return tfds.load(TFDS_NAME, split=split, data_dir=data_dir, download=False, **options)
    except AssertionError as error:  # tfds' "could not find data in <data_dir>"
        looked = tfds.builder(TFDS_NAME, data_dir=data_dir).data_dir
        flag = f" --data_dir {data_dir}" if data_dir else ""
        raise FileNotFoundError(
            f"tfds {TFDS_NAME} is not prepared: tfds looked in {looked!r}. Prepare it once "
            f"with `tfds build {TFDS_NAME}{flag}` (downloads about 25 GB), or give the "
            f"data_dir that holds it ({error})."
        ) from None


def load_tfds_coco(split: str, data_dir: str | None = None) -> TfdsCocoSet:
    """A split of tfds `coco/2017`, which must be prepared (nothing is downloaded).

    Args:
        split: `"train"` or `"validation"` (the COCO 2017 val images).
        data_dir: tfds' data directory (`None`: its default).

    Returns:
        A `TfdsCocoSet`, for `load_coco_dataset` and `evaluate_detector`.

    Raises:
        FileNotFoundError: not prepared; the message names where tfds looked
            and the `tfds build coco/2017` command.

    Example:

    >>> val = load_tfds_coco("validation", data_dir="~/tensorflow_datasets")
    >>> batches = load_coco_dataset(val, batch_size=8, image_size=(1333, 800), training=False)
    """
    import tensorflow_datasets as tfds

    dataset = _load(split, data_dir, decoders={"image": tfds.decode.SkipDecoding()})
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    splits = builder.info.splits
    if split in splits:
        count = splits[split].num_examples
    else:  # split sizes unknown (e.g. tfds.testing.mock_data): count
        count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    names = tuple(builder.info.features["objects"]["label"].names)
    return TfdsCocoSet(split=split, data_dir=data_dir, num_examples=count, class_names=names)


def convert_tfds_example(example: dict) -> tuple:
    """One tfds `coco/2017` example as `(image, xyxy pixel boxes, labels, image_id)`.

    tfds' boxes are normalised `yxyx`; crowd boxes and boxes without area
    are left out of the targets, as `read_coco` does.
    """
    image, objects = example["image"], example["objects"]
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    y0x0y1x1 = objects["bbox"] * tf.concat([size, size], 0)
    boxes = tf.gather(y0x0y1x1, [1, 0, 3, 2], axis=1)
    has_area = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
    keep = tf.logical_and(tf.logical_not(objects["is_crowd"]), has_area)
    labels = tf.boolean_mask(objects["label"], keep)
    return image, tf.boolean_mask(boxes, keep), labels, example["image/id"]


def tfds_coco_examples(coco: TfdsCocoSet, shuffle_files: bool = False) -> tf.data.Dataset:
    """Unbatched `(uint8 image, xyxy pixel boxes, labels, image_id)` of a `TfdsCocoSet`."""
    dataset = _load(coco.split, coco.data_dir, shuffle_files=shuffle_files)
    return dataset.map(convert_tfds_example, num_parallel_calls=tf.data.AUTOTUNE)


def _annotations(image_id: int, size, objects, category_ids, first_id: int) -> list[dict]:
    height, width = (float(s) for s in size)
    records = []
    for (y0, x0, y1, x1), label, crowd, area in zip(*objects):
        box = [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]
        records.append(
            {
                "id": first_id + len(records),
                "image_id": image_id,
                "category_id": int(category_ids[int(label)]),
                "bbox": [float(v) for v in box],
                "area": float(area),
                "iscrowd": int(crowd),
            }
        )
    return records


def coco_ground_truth(examples: tf.data.Dataset, class_names, category_ids) -> dict:
    """COCO instances (the structure of an `instances_*.json`) of tfds coco examples.

    Crowd boxes stay, marked `iscrowd` (COCOeval ignores detections on
    them); `area` is tfds' (COCO's segment area, which COCOeval's size
    ranges use).

    Args:
        examples: unbatched tfds `coco/2017` examples.
        class_names: names by class index.
        category_ids: COCO category id by class index.

    Returns:
        `{"images", "annotations", "categories"}`, for `coco_ap`.
    """

    def fields(example):
        objects = example["objects"]
        parts = (objects["bbox"], objects["label"], objects["is_crowd"], objects["area"])
        return example["image/id"], tf.shape(example["image"])[:2], parts

    images, annotations = [], []
    for image_id, size, objects in examples.map(fields).as_numpy_iterator():
        images.append({"id": int(image_id), "height": int(size[0]), "width": int(size[1])})
        annotations += _annotations(
            int(image_id), size, objects, category_ids, len(annotations) + 1
        )
    categories = [{"id": int(i), "name": n} for i, n in zip(category_ids, class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
