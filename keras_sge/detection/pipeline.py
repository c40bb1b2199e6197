"""tf.data pipelines of detection sets in keras-hub's format, for `model.fit` on any backend."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_sge.applications.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_sge.detection.coco import CocoSet
from keras_sge.detection.tfds_coco import TfdsCocoSet, tfds_coco_examples

DEFAULT_MAX_BOXES = 100
SIZE_DIVISOR = 32  # the recipe's: canvases of a `(long, short)` scale are multiples of it

ImageSize = int | tuple[int, int]
DetectionSet = CocoSet | TfdsCocoSet


def _scale_sides(image_size: ImageSize) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    return max(image_size), min(image_size)


def canvas_shapes(image_size: ImageSize) -> tuple[tuple[int, int], tuple[int, int]]:
    """The `(height, width)` model inputs of landscape and of portrait images.

    Args:
        image_size: a square side, or a `(long, short)` scale (its sides
            are rounded up to a multiple of `SIZE_DIVISOR`).

    Returns:
        `(landscape, portrait)`; both `(image_size, image_size)` for a square.

    Example:

    >>> canvas_shapes((1333, 800))
    ((800, 1344), (1344, 800))
    """
    if isinstance(image_size, int):
        return (image_size, image_size), (image_size, image_size)
    sides = _scale_sides(image_size)
    long_side, short_side = (math.ceil(s / SIZE_DIVISOR) * SIZE_DIVISOR for s in sides)
    return (short_side, long_side), (long_side, short_side)


def input_shape(image_size: ImageSize) -> tuple[int | None, int | None, int]:
    """The detector's `image_shape` for `image_size`: fixed for a square, any for a scale."""
    if isinstance(image_size, int):
        return (image_size, image_size, 3)
    return (None, None, 3)


def _resize(image, boxes, image_size: ImageSize):
    """Scales the image by min(long / its long side, short / its short side)."""
    long_side, short_side = _scale_sides(image_size)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(long_side / tf.reduce_max(shape), short_side / tf.reduce_min(shape))
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, antialias=True)
    return image, boxes * scale, scale


def _pad(image, image_size: ImageSize, landscape):
    """Pads bottom/right with zeros to the canvas of the image's orientation."""
    (wide_h, wide_w), (tall_h, tall_w) = canvas_shapes(image_size)
    height = tf.where(landscape, wide_h, tall_h)
    width = tf.where(landscape, wide_w, tall_w)
    shape = tf.shape(image)
    image = tf.pad(image, [[0, height - shape[0]], [0, width - shape[1]], [0, 0]])
    if isinstance(image_size, int):
        return tf.ensure_shape(image, (image_size, image_size, 3))
    return tf.ensure_shape(image, (None, None, 3))


def _flip(image, boxes):
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    flipped = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)
    return tf.image.flip_left_right(image), flipped


def _pad_targets(boxes, labels, max_boxes: int):
    boxes, labels = boxes[:max_boxes], labels[:max_boxes]
    pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]], constant_values=-1.0)
    labels = tf.pad(labels, [[0, pad]], constant_values=-1)
    return tf.reshape(boxes, (max_boxes, 4)), tf.reshape(labels, (max_boxes,))


def _batch(dataset: tf.data.Dataset, batch_size: int, drop: bool, grouped: bool):
    """Batches; `grouped`: only images of one canvas (orientation) per batch."""
    if not grouped:
        return dataset.batch(batch_size, drop_remainder=drop)

    def portrait(image, *_):
        return tf.cast(tf.shape(image)[0] > tf.shape(image)[1], tf.int64)

    return dataset.group_by_window(
        key_func=portrait,
        reduce_func=lambda _, window: window.batch(batch_size, drop_remainder=drop),
        window_size=batch_size,
    )


def detection_dataset(
    examples: tf.data.Dataset,
    *,
    batch_size: int,
    image_size: ImageSize,
    training: bool,
    max_boxes: int = DEFAULT_MAX_BOXES,
    flip_probability: float = 0.5,
    seed: int | None = None,
    drop_remainder: bool | None = None,
    with_info: bool = False,
) -> tf.data.Dataset:
    """Batches `(uint8 image, xyxy pixel boxes, int labels)` for keras-hub detectors.

    With a square `image_size` each image is fitted into that square keeping
    its aspect. With a `(long, short)` scale (the recipe's `(1333, 800)`)
    each image is scaled by min(long / its long side, short / its short
    side), mmdetection's `keep_ratio` resize, and padded to the canvas of its
    orientation (see `canvas_shapes`: 800x1344 for landscape, 1344x800 for
    portrait images); batches then hold images of one orientation
    (mmdetection's aspect-ratio grouping), so there are two batch shapes, not
    one per image, and batches come out in another order than the examples.

    Images are flipped with `flip_probability` when `training` (before
    padding), normalised like `keras_sge.applications.preprocess_input` and
    padded bottom/right with zeros; boxes follow. Targets are padded to
    `max_boxes` with box -1 and label -1 (keras-hub's padding).

    Args:
        examples: unbatched `(image, boxes, labels)` or `(image, boxes,
            labels, image_id)`.
        batch_size: images per batch.
        image_size: side of the square input, or a `(long, short)` scale.
        training: flip, drop partial batches (shuffling is the caller's).
        max_boxes: boxes kept per image.
        flip_probability: horizontal flip rate when training.
        seed: augmentation seed.
        drop_remainder: default `training`.
        with_info: add a third element `{"image_id": (B,), "scale": (B,)}`:
            the examples' ids (-1 when they have none) and each image's
            resize factor (input pixels per original pixel), to map
            predictions back (see `evaluate_detector`).

    Returns:
        A dataset of `(images, {"boxes": (B, max_boxes, 4), "labels": (B, max_boxes)})`
        (and the info), float32 images and boxes in `xyxy` pixels of the model input.

    Example:

    >>> batches = detection_dataset(examples, batch_size=2, image_size=(1333, 800),
    ...                             training=True)
    >>> detector.fit(batches)
    """
    mean = tf.constant([255.0 * m for m in IMAGENET_MEAN])
    std = tf.constant([255.0 * s for s in IMAGENET_STD])
    augment_seed = tf.random.Generator.from_seed(seed if seed is not None else 0)

    def prepare(image, boxes, labels, image_id=-1):
        landscape = tf.shape(image)[1] >= tf.shape(image)[0]
        image, boxes, scale = _resize(
            tf.cast(image, tf.float32), tf.cast(boxes, tf.float32), image_size
        )
        if training and flip_probability > 0:
            flip = augment_seed.uniform(()) < flip_probability
            image, boxes = tf.cond(flip, lambda: _flip(image, boxes), lambda: (image, boxes))
        image = _pad((image - mean) / std, image_size, landscape)
        boxes, labels = _pad_targets(boxes, tf.cast(labels, tf.int32), max_boxes)
        targets = {"boxes": boxes, "labels": labels}
        if with_info:
            return image, targets, {"image_id": tf.cast(image_id, tf.int64), "scale": scale}
        return image, targets

    dataset = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    drop = training if drop_remainder is None else drop_remainder
    grouped = not isinstance(image_size, int)
    return _batch(dataset, batch_size, drop, grouped).prefetch(tf.data.AUTOTUNE)


def coco_examples(coco: CocoSet) -> tf.data.Dataset:
    """Unbatched `(uint8 image, xyxy boxes, labels, image_id)` of a `CocoSet`, from its files."""
    counts = [len(labels) for labels in coco.labels]
    boxes = tf.RaggedTensor.from_row_lengths(np.concatenate(coco.boxes).reshape(-1, 4), counts)
    labels = tf.RaggedTensor.from_row_lengths(np.concatenate(coco.labels), counts)
    files = tf.data.Dataset.from_tensor_slices(list(coco.image_paths))
    targets = tf.data.Dataset.from_tensor_slices(
        (boxes, labels, np.asarray(coco.image_ids, "int64"))
    )

    def read(path, target):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image, target[0], target[1], target[2]

    return tf.data.Dataset.zip((files, targets)).map(read, num_parallel_calls=tf.data.AUTOTUNE)


def load_coco_dataset(
    coco: DetectionSet,
    *,
    batch_size: int,
    image_size: ImageSize,
    training: bool,
    shuffle_seed: int = 0,
    **options,
) -> tf.data.Dataset:
    """`detection_dataset` of a COCO set, shuffled when training.

    Args:
        coco: a `CocoSet` (see `read_coco`) or a `TfdsCocoSet` (see
            `load_tfds_coco`).
        batch_size: images per batch.
        image_size: side of the square input, or a `(long, short)` scale
            such as the recipe's `(1333, 800)` (see `detection_dataset`).
        training: shuffle each epoch, flip, drop partial batches.
        shuffle_seed: shuffle order seed.
        **options: `max_boxes`, `flip_probability`, `seed`, `drop_remainder`,
            `with_info` (as `detection_dataset`).

    Example:

    >>> train = load_coco_dataset(read_coco(json_file, image_dir), batch_size=2,
    ...                           image_size=(1333, 800), training=True)
    >>> detector.fit(train, epochs=1)
    """
    if isinstance(coco, CocoSet):
        examples = coco_examples(coco)
    else:
        examples = tfds_coco_examples(coco, shuffle_files=training)
    if training:
        examples = examples.shuffle(min(len(coco), 10_000), seed=shuffle_seed)
    return detection_dataset(
        examples, batch_size=batch_size, image_size=image_size, training=training, **options
    )
