"""tf.data pipelines of detection sets in keras-hub's format, for `model.fit` on any backend."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sge.applications.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_sge.detection.coco import CocoSet

DEFAULT_MAX_BOXES = 100


def _resize_and_pad(image, boxes, image_size: int):
    """Fits the image into a square of `image_size` keeping aspect, pads bottom/right."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(image_size / shape[0], image_size / shape[1])
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, antialias=True)
    image = tf.image.pad_to_bounding_box(image, 0, 0, image_size, image_size)
    return image, boxes * scale


def _flip(image, boxes, width):
    flipped = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)
    return tf.image.flip_left_right(image), flipped


def _pad_targets(boxes, labels, max_boxes: int):
    boxes, labels = boxes[:max_boxes], labels[:max_boxes]
    pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]], constant_values=-1.0)
    labels = tf.pad(labels, [[0, pad]], constant_values=-1)
    return tf.reshape(boxes, (max_boxes, 4)), tf.reshape(labels, (max_boxes,))


def detection_dataset(
    examples: tf.data.Dataset,
    *,
    batch_size: int,
    image_size: int,
    training: bool,
    max_boxes: int = DEFAULT_MAX_BOXES,
    flip_probability: float = 0.5,
    seed: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batches `(uint8 image, xyxy pixel boxes, int labels)` for keras-hub detectors.

    Each image is fitted into `image_size` x `image_size` keeping its aspect
    (padded bottom and right), flipped with `flip_probability` when
    `training`, normalised like `keras_sge.applications.preprocess_input`;
    boxes follow. Targets are padded to `max_boxes` with box -1 and label -1
    (keras-hub's padding).

    Args:
        examples: unbatched `(image, boxes, labels)`.
        batch_size: images per batch.
        image_size: side of the square input.
        training: shuffle (by the caller), flip, drop the last partial batch.
        max_boxes: boxes kept per image.
        flip_probability: horizontal flip rate when training.
        seed: augmentation seed.
        drop_remainder: default `training`.

    Returns:
        A dataset of `(images, {"boxes": (B, max_boxes, 4), "labels": (B, max_boxes)})`,
        float32 images and boxes in `xyxy` pixels of the model input.
    """
    mean = tf.constant([255.0 * m for m in IMAGENET_MEAN])
    std = tf.constant([255.0 * s for s in IMAGENET_STD])
    augment_seed = tf.random.Generator.from_seed(seed if seed is not None else 0)

    def prepare(image, boxes, labels):
        image = tf.cast(image, tf.float32)
        boxes = tf.cast(boxes, tf.float32)
        image, boxes = _resize_and_pad(image, boxes, image_size)
        if training and flip_probability > 0:
            flip = augment_seed.uniform(()) < flip_probability
            image, boxes = tf.cond(
                flip, lambda: _flip(image, boxes, float(image_size)), lambda: (image, boxes)
            )
        image = (image - mean) / std
        boxes, labels = _pad_targets(boxes, tf.cast(labels, tf.int32), max_boxes)
        return image, {"boxes": boxes, "labels": labels}

    dataset = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    drop = training if drop_remainder is None else drop_remainder
    return dataset.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def coco_examples(coco: CocoSet) -> tf.data.Dataset:
    """Unbatched `(uint8 image, xyxy boxes, labels)` of a `CocoSet`, read from its files."""
    counts = [len(labels) for labels in coco.labels]
    boxes = tf.RaggedTensor.from_row_lengths(np.concatenate(coco.boxes).reshape(-1, 4), counts)
    labels = tf.RaggedTensor.from_row_lengths(np.concatenate(coco.labels), counts)
    files = tf.data.Dataset.from_tensor_slices(list(coco.image_paths))
    targets = tf.data.Dataset.from_tensor_slices((boxes, labels))

    def read(path, target):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image, target[0], target[1]

    return tf.data.Dataset.zip((files, targets)).map(read, num_parallel_calls=tf.data.AUTOTUNE)


def load_coco_dataset(
    coco: CocoSet,
    *,
    batch_size: int,
    image_size: int,
    training: bool,
    shuffle_seed: int = 0,
    **options,
) -> tf.data.Dataset:
    """`detection_dataset` of a `CocoSet` (see `read_coco`), shuffled when training.

    Args:
        coco: the set.
        batch_size: images per batch.
        image_size: side of the square input.
        training: shuffle each epoch, flip, drop the last partial batch.
        shuffle_seed: shuffle order seed.
        **options: `max_boxes`, `flip_probability`, `seed`, `drop_remainder`.

    Example:

    >>> train = load_coco_dataset(read_coco(json_file, image_dir), batch_size=2,
    ...                           image_size=640, training=True)
    >>> detector.fit(train, epochs=1)
    """
    examples = coco_examples(coco)
    if training:
        examples = examples.shuffle(min(len(coco), 10_000), seed=shuffle_seed)
    return detection_dataset(
        examples, batch_size=batch_size, image_size=image_size, training=training, **options
    )


def tfds_coco_examples(split: str = "train", data_dir: str | None = None) -> tf.data.Dataset:
    """Unbatched `(image, xyxy pixel boxes, labels)` of tfds `coco/2017` (prepared).

    tfds' boxes are normalised `yxyx`; its labels are the 80 class indices
    (crowd boxes are left out).
    """
    import tensorflow_datasets as tfds

    dataset = tfds.load("coco/2017", split=split, data_dir=data_dir, download=False)

    def convert(example):
        image = example["image"]
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        y0x0y1x1 = example["objects"]["bbox"] * tf.concat([size, size], 0)
        keep = tf.logical_not(example["objects"]["is_crowd"])
        boxes = tf.gather(y0x0y1x1, [1, 0, 3, 2], axis=1)
        return (
            image,
            tf.boolean_mask(boxes, keep),
            tf.boolean_mask(example["objects"]["label"], keep),
        )

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
