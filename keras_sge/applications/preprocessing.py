"""Input normalisation expected by the SGE-ResNet weights."""

from __future__ import annotations

import keras
import numpy as np

from keras_sge.constants import IMAGENET_MEAN, IMAGENET_STD


def preprocess_input(x, data_format: str | None = None):
    """Normalises RGB images as the authors' PyTorch training did.

    Pixel values in [0, 255] (any integer or float dtype) are scaled to
    [0, 1], then standardised per channel with the ImageNet mean
    (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), as torchvision's
    `ToTensor()` + `Normalize(...)`. Channels must be in RGB order.

    This is the "torch" mode of keras.applications (as in
    `keras.applications.densenet.preprocess_input`), not the "caffe" mode of
    `keras.applications.resnet.preprocess_input` / `resnet50`, which flips
    RGB to BGR and subtracts the mean pixel (103.939, 116.779, 123.68) of
    [0, 255] images without dividing by a std. Giving an SGE-ResNet caffe
    inputs fails silently (wrong predictions, no error). Models built with
    `include_preprocessing=True` normalise [0, 255] RGB images themselves;
    do not call this function for them.

    Args:
        x: Images with 3 channels, batched or not: a NumPy array (or
            nested list), a backend tensor or a symbolic Keras tensor.
        data_format: `"channels_last"` (channels on the last axis) or
            `"channels_first"` (channels on the axis third from last).
            Defaults to `keras.config.image_data_format()`.

    Returns:
        A float32 NumPy array for NumPy or list inputs, otherwise a float32
        tensor of the backend (or a symbolic tensor), of the input's shape.

    Example:

    >>> images = np.full((1, 2, 2, 3), 255, dtype="uint8")
    >>> keras_sge.applications.preprocess_input(images)[0, 0, 0].round(3)
    array([2.249, 2.429, 2.64 ], dtype=float32)
    """
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None. "
            f"Received: data_format={data_format!r}"
        )
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    rank = len(x.shape)
    channel_axis = rank - 1 if data_format == "channels_last" else rank - 3
    if rank < 3 or x.shape[channel_axis] != 3:
        raise ValueError(
            "`preprocess_input` expects RGB images with 3 channels on axis "
            f"{channel_axis - rank} ({data_format}), such as (H, W, 3) / "
            f"(N, H, W, 3) or (3, H, W) / (N, 3, H, W). Received shape "
            f"{tuple(x.shape)}."
        )
    param_shape = [1] * rank
    param_shape[channel_axis] = 3
    scale = np.reshape(1.0 / (255.0 * np.asarray(IMAGENET_STD)), param_shape)
    shift = np.reshape(np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD), param_shape)
    scale, shift = scale.astype("float32"), shift.astype("float32")
    if isinstance(x, np.ndarray):
        return x.astype("float32") * scale - shift
    x = keras.ops.cast(x, "float32")
    return x * keras.ops.convert_to_tensor(scale) - keras.ops.convert_to_tensor(shift)
