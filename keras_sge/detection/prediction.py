"""A detector's boxes on one image file, in the original image's pixels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sge.detection.evaluation import predicted_batches
from keras_sge.detection.pipeline import ImageSize, detection_dataset


def detect_image_file(
    detector, path: str, image_size: ImageSize
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs a detector on one image file, resized as in training.

    Args:
        detector: a keras-hub `ObjectDetector`.
        path: an image file (JPEG, PNG, BMP or GIF).
        image_size: the size the detector was trained at (a square side or
            a `(long, short)` scale, as for `detection_dataset`).

    Returns:
        `(image, boxes, labels, scores)`: the decoded uint8 image, and per
        detection its `xyxy` box in the image's own pixels, class index and
        confidence (padding rows have label -1).

    Example:

    >>> image, boxes, labels, scores = detect_image_file(detector, "street.jpg", 64)
    """
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    examples = tf.data.Dataset.from_tensors((image, tf.zeros((0, 4)), tf.zeros((0,), "int32")))
    batches = detection_dataset(
        examples, batch_size=1, image_size=image_size, training=False, with_info=True
    )
    found, info = next(predicted_batches(detector, batches))
    boxes = found["boxes"][0] / info["scale"][0]
    return image.numpy(), boxes, found["labels"][0], found["confidence"][0]
