"""Per-image preprocessing shared by every data source.

Images enter as encoded bytes (JPEG, PNG, GIF or BMP) and leave as `uint8` RGB
tensors of a fixed size; `normalize_images` then turns a batch into the
normalised float tensors the official SGE-ResNet weights expect.

- Training (`preprocess_for_train`): Inception-style random resized crop
  (area 8%-100% of the image, aspect ratio 3/4-4/3, centre-crop fallback),
  fused with the JPEG decoder (`tf.image.decode_and_crop_jpeg`) so only the
  cropped window is decoded, random horizontal flip, bilinear resize.
- Evaluation (`preprocess_for_eval`): resize the short side to
  `image_size / 0.875` (256 for 224), then crop the central `image_size`
  square: torchvision's `Resize(256)` + `CenterCrop(224)`.

The evaluation resize is bilinear with antialiasing, as PIL (and so the
official PyTorch evaluation) resizes, so the official weights see the pixels
they were validated on. The training resize is plain bilinear (as in the
TensorFlow Model Garden's Inception preprocessing): the antialiased one costs
about twice as much per image and random augmentation does not need it.
All functions are TensorFlow graph functions meant for
`tf.data.Dataset.map`; they work on every Keras backend because the input
pipeline always runs in TensorFlow.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_sge.constants import IMAGENET_MEAN, IMAGENET_STD

EVAL_CROP_FRACTION = 0.875
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_CROP_ATTEMPTS = 10
# libjpeg's accurate integer IDCT: the same pixels as Pillow (which the
# official PyTorch pipeline uses), and no slower than the fast one here.
JPEG_DCT_METHOD = "INTEGER_ACCURATE"


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG, PNG, GIF or BMP bytes into a `uint8` RGB image.

    Greyscale images are repeated into 3 channels, CMYK JPEGs are converted
    to RGB, PNGs with alpha lose the alpha channel, and an animated GIF gives
    its first frame.

    Args:
        image_bytes: scalar string tensor with the encoded image.

    Returns:
        A `uint8` tensor of shape `(height, width, 3)`.

    Example:

    >>> image = decode_image(tf.io.read_file("cat.jpg"))
    """
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method=JPEG_DCT_METHOD),
        lambda: _decode_any(image_bytes),
    )
    image.set_shape([None, None, 3])
    return image


def _decode_any(image_bytes: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _image_height_width(image_bytes: tf.Tensor) -> tf.Tensor:
    """`[height, width]` of a JPEG from its header, without decoding it."""
    return tf.image.extract_jpeg_shape(image_bytes)[:2]


def random_crop_window(
    image_shape: tf.Tensor, seed: tf.Tensor, min_area: float = AREA_RANGE[0]
) -> tf.Tensor:
    """Samples an Inception-style crop window `[y, x, height, width]`.

    The window covers `min_area` (8%) to 100% of the image area with an aspect ratio
    between 3/4 and 4/3 (`tf.image.stateless_sample_distorted_bounding_box`,
    10 attempts). When no attempt fits, it falls back to torchvision's
    fallback: the central crop of the largest window whose aspect ratio is
    clamped into that range.

    Args:
        image_shape: `[height, width]` or `[height, width, channels]`.
        seed: shape `(2,)` integer tensor for the stateless random ops.
        min_area: smallest fraction of the image area kept (0.08 for
            ImageNet).

    Returns:
        An `int32` tensor `[y, x, height, width]`.
    """
    image_shape = tf.cast(image_shape, tf.int32)
    height, width = image_shape[0], image_shape[1]
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 3]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=min_area,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=(min_area, 1.0),
        max_attempts=MAX_CROP_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
    # The op returns the whole image when every attempt failed.
    failed = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
    return tf.cond(failed, lambda: _fallback_window(height, width), lambda: sampled)


def _fallback_window(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    ratio = w / h
    low, high = ASPECT_RATIO_RANGE
    crop_w = tf.where(ratio < low, w, tf.where(ratio > high, tf.round(h * high), w))
    crop_h = tf.where(ratio < low, tf.round(w / low), h)
    crop_h = tf.minimum(tf.cast(crop_h, tf.int32), height)
    crop_w = tf.minimum(tf.cast(crop_w, tf.int32), width)
    return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])


def _resize_to_uint8(image: tf.Tensor, size) -> tf.Tensor:
    resized = tf.image.resize(image, size, method="bilinear", antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def preprocess_for_train(
    image_bytes: tf.Tensor,
    image_size: int = 224,
    *,
    seed: tf.Tensor | None = None,
    min_crop_area: float = AREA_RANGE[0],
) -> tf.Tensor:
    """Training augmentation: random resized crop, random flip, resize.

    The resize is bilinear without antialiasing (see the module notes).

    JPEGs are decoded with `tf.image.decode_and_crop_jpeg`, which decodes only
    the sampled window; other formats are decoded whole, then cropped.

    Args:
        image_bytes: scalar string tensor with the encoded image.
        image_size: side of the square output.
        seed: optional shape `(2,)` integer tensor. The same seed gives the
            same crop and flip; `None` draws one at random.
        min_crop_area: smallest fraction of the image area the random crop
            keeps (0.08, the ImageNet recipe's).

    Returns:
        A `uint8` RGB tensor of shape `(image_size, image_size, 3)`.

    Example:

    >>> image = preprocess_for_train(tf.io.read_file("cat.jpg"), 224, seed=[1, 2])
    """
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    )

    def crop_jpeg():
        window = random_crop_window(_image_height_width(image_bytes), crop_seed, min_crop_area)
        return tf.image.decode_and_crop_jpeg(
            image_bytes, window, channels=3, dct_method=JPEG_DCT_METHOD
        )

    def crop_other():
        image = _decode_any(image_bytes)
        y, x, h, w = tf.unstack(random_crop_window(tf.shape(image), crop_seed, min_crop_area))
        return image[y : y + h, x : x + w, :]

    image = tf.cond(tf.io.is_jpeg(image_bytes), crop_jpeg, crop_other)
    image.set_shape([None, None, 3])
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _resize_to_uint8(image, [image_size, image_size])


def eval_resize_size(image_size: int) -> int:
    """Short side before the evaluation centre crop (256 for 224)."""
    return int(image_size / EVAL_CROP_FRACTION)


def _eval_geometry(height: tf.Tensor, width: tf.Tensor, image_size: int):
    """Resized size, per-axis scale and crop offset of the evaluation transform."""
    short = tf.minimum(height, width)
    resize = eval_resize_size(image_size)
    ratio = tf.cast(resize, tf.float64) / tf.cast(short, tf.float64)
    new_height = tf.where(
        height == short, resize, tf.cast(tf.cast(height, tf.float64) * ratio, tf.int32)
    )
    new_width = tf.where(
        width == short, resize, tf.cast(tf.cast(width, tf.float64) * ratio, tf.int32)
    )
    new_size = tf.maximum(tf.stack([new_height, new_width]), image_size)
    # The scale tf.image.resize uses (float32 new / old, per axis).
    scale = tf.cast(new_size, tf.float32) / tf.cast(tf.stack([height, width]), tf.float32)
    offset = tf.cast(tf.round(tf.cast(new_size - image_size, tf.float32) / 2.0), tf.int32)
    return scale, offset


def _eval_window(height: tf.Tensor, width: tf.Tensor, image_size: int):
    """Source window that the evaluation crop reads, with the filter's margin."""
    scale, offset = _eval_geometry(height, width, image_size)
    # Antialiased bilinear (triangle) support: 1 / scale source pixels when
    # shrinking, 1 when enlarging; one more for rounding.
    margin = tf.cast(tf.math.ceil(1.0 / tf.minimum(scale, 1.0)), tf.int32) + 1
    start = tf.cast(tf.floor(tf.cast(offset, tf.float32) / scale), tf.int32) - margin
    stop = (
        tf.cast(tf.math.ceil(tf.cast(offset + image_size, tf.float32) / scale), tf.int32) + margin
    )
    limits = tf.stack([height, width])
    start = tf.clip_by_value(start, 0, limits)
    stop = tf.clip_by_value(stop, start + 1, limits)
    return tf.concat([start, stop - start], axis=0), scale, offset


def _resample_eval_window(image, window, scale, offset, image_size: int) -> tf.Tensor:
    # Output pixel i of the crop is resized pixel i + offset, i.e. source
    # coordinate (i + offset + 0.5) / scale - 0.5; relative to the window
    # start that is the translation below. Same kernel and weights as
    # tf.image.resize(antialias=True) of the whole image, then the crop.
    translation = tf.cast(window[:2], tf.float32) * scale - tf.cast(offset, tf.float32)
    resampled = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(image[tf.newaxis], tf.float32),
        size=tf.constant([image_size, image_size]),
        scale=scale,
        translation=translation,
        kernel_type="triangle",
        antialias=True,
    )[0]
    out = tf.cast(tf.clip_by_value(tf.round(resampled), 0.0, 255.0), tf.uint8)
    out.set_shape([image_size, image_size, 3])
    return out


def preprocess_for_eval(image_bytes: tf.Tensor, image_size: int = 224) -> tf.Tensor:
    """Evaluation preprocessing: resize the short side, then centre crop.

    The short side becomes `int(image_size / 0.875)` (the long side keeps the
    aspect ratio, truncated as torchvision does), then the central
    `image_size` square is taken, the resize being bilinear with
    antialiasing. Only the part of the image the crop needs is decoded and
    resampled (fused `decode_and_crop_jpeg` + `ScaleAndTranslate`), with the
    same result as resizing the whole image then cropping.

    Args:
        image_bytes: scalar string tensor with the encoded image.
        image_size: side of the square output.

    Returns:
        A `uint8` RGB tensor of shape `(image_size, image_size, 3)`.

    Example:

    >>> image = preprocess_for_eval(tf.io.read_file("cat.jpg"), 224)
    """

    def from_jpeg():
        height_width = _image_height_width(image_bytes)
        window, scale, offset = _eval_window(height_width[0], height_width[1], image_size)
        image = tf.image.decode_and_crop_jpeg(
            image_bytes, window, channels=3, dct_method=JPEG_DCT_METHOD
        )
        return _resample_eval_window(image, window, scale, offset, image_size)

    def from_other():
        image = _decode_any(image_bytes)
        shape = tf.shape(image)
        window, scale, offset = _eval_window(shape[0], shape[1], image_size)
        y, x, h, w = tf.unstack(window)
        image = image[y : y + h, x : x + w, :]
        return _resample_eval_window(image, window, scale, offset, image_size)

    return tf.cond(tf.io.is_jpeg(image_bytes), from_jpeg, from_other)


def normalize_images(
    images: tf.Tensor, data_format: str | None = None, dtype: str | None = None
) -> tf.Tensor:
    """Scales `uint8` RGB images to [0, 1], then applies the ImageNet mean/std.

    Args:
        images: `uint8` (or float in [0, 255]) RGB tensor, channels last, of
            rank 3 (one image) or 4 (a batch).
        data_format: `"channels_last"` or `"channels_first"` layout of the
            result; defaults to `keras.config.image_data_format()`.
        dtype: dtype of the result (e.g. `"bfloat16"` for mixed precision);
            defaults to `"float32"`. The arithmetic is done in float32.

    Returns:
        The normalised tensor, `(x / 255 - mean) / std` per RGB channel.

    Example:

    >>> batch = normalize_images(tf.zeros([8, 224, 224, 3], tf.uint8))
    """
    data_format = standardize_data_format(data_format)
    dtype = tf.as_dtype(dtype or "float32")
    if not dtype.is_floating:
        raise ValueError(f"dtype must be a floating dtype, got {dtype.name!r}.")
    rank = images.shape.rank
    if rank not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(
            "images must be RGB, channels last, of shape (H, W, 3) or "
            f"(N, H, W, 3); got shape {images.shape}."
        )
    scale = tf.constant([1.0 / (255.0 * s) for s in IMAGENET_STD])
    offset = tf.constant([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    x = tf.cast(images, tf.float32) * scale - offset
    if data_format == "channels_first":
        x = tf.transpose(x, [2, 0, 1] if rank == 3 else [0, 3, 1, 2])
    return tf.cast(x, dtype)


def standardize_data_format(data_format: str | None) -> str:
    """Validates `data_format`, defaulting to `keras.config.image_data_format()`."""
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}."
        )
    return data_format
