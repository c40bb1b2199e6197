"""Classifying image files: the library side of `applications/predict.py`."""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from keras_sge._lazy import require
from keras_sge.applications.imagenet import NUM_CLASSES, decode_predictions
from keras_sge.applications.preprocessing import preprocess_input

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".gif", ".bmp", ".webp")
DEFAULT_SIZE = 224
# Evaluation crop: resize the short side to size / 0.875 (256 for 224), then
# take the central square, as the authors evaluated.
CROP_FRACTION = 0.875
PREPROCESSING_LAYER = "preprocessing"


def gather_images(paths) -> tuple[list[str], list[tuple[str, str]]]:
    """Expands image files and folders (searched recursively), keeping what is missing.

    Args:
        paths: Image files and/or folders.

    Returns:
        `(files, missing)`: the image files (given files in order, each
        folder's images sorted) and `(path, reason)` for each argument that
        is neither a file nor a folder with images.

    Example:

    >>> gather_images(["cat.jpg", "holiday/", "nowhere.jpg"])
    (['cat.jpg', 'holiday/beach.jpg'], [('nowhere.jpg', 'no such file or folder')])
    """
    files, missing = [], []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                missing.append(
                    (path, f"the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
                )
            files += found
        elif os.path.isfile(path):
            files.append(path)
        elif os.path.islink(path):
            missing.append((path, "a broken symbolic link (or one that points to itself)"))
        else:
            missing.append((path, "no such file or folder"))
    return files, missing


def list_images(paths) -> list[str]:
    """Expands image files and folders (searched recursively) into image files.

    Args:
        paths: Image files and/or folders.

    Returns:
        The image files: given files in order, each folder's images sorted.

    Raises:
        FileNotFoundError: an argument is neither a file nor a folder with images.

    Example:

    >>> list_images(["cat.jpg", "holiday/"])
    ['cat.jpg', 'holiday/beach.jpg', 'holiday/dog.png']
    """
    files, missing = gather_images(paths)
    if missing:
        path, reason = missing[0]
        raise FileNotFoundError(f"No image file or folder with images at {path!r}: {reason}.")
    return files


def load_image(path: str | os.PathLike, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Reads an image as the authors evaluated: short side to size / 0.875, centre crop.

    The resize is PIL's bilinear (antialiased), the pixels of torchvision's
    `Resize(256)` + `CenterCrop(224)` on a PIL image.

    Args:
        path: An image file (any format Pillow reads; converted to RGB).
        size: Side of the square crop.

    Returns:
        A `uint8` array `(size, size, 3)`, RGB in [0, 255].

    Example:

    >>> load_image("cat.jpg").shape
    (224, 224, 3)
    """
    Image = require("PIL.Image", "viz", "Reading image files")

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # Pillow raises these for files that are not images, truncated or
        # damaged ones, and images too large to decode safely.
        raise ValueError(f"Could not read {os.fspath(path)!r} as an image: {error}") from error
    width, height = image.size
    short = int(size / CROP_FRACTION)
    if width <= height:
        new_size = (short, int(short * height / width))
    else:
        new_size = (int(short * width / height), short)
    image = image.resize(new_size, Image.BILINEAR)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype="uint8")


def saved_class_names(model_path: str | os.PathLike) -> list[str] | None:
    """The training classes stored next to a `.keras` model written by `train`.

    `train` writes `config.json` (with `derived.class_names`) beside
    `model.keras` and one folder above `checkpoints/best.keras`.

    Args:
        model_path: Path of the `.keras` file.

    Returns:
        The class names, or `None` when there are none.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    for candidate in (folder, os.path.dirname(folder)):
        config = os.path.join(candidate, "config.json")
        if os.path.isfile(config):
            with open(config) as f:
                names = json.load(f).get("derived", {}).get("class_names")
            if names:
                return list(names)
    return None


def _image_size(model: keras.Model, data_format: str) -> int:
    shape = model.input_shape[1:3] if data_format == "channels_last" else model.input_shape[2:4]
    return shape[0] if shape[0] is not None else DEFAULT_SIZE


def _outputs_logits(model: keras.Model) -> bool:
    last = model.layers[-1]
    return getattr(last, "activation", None) is keras.activations.linear


def classify(
    model: keras.Model,
    paths,
    *,
    top: int = 5,
    class_names: list[str] | None = None,
    batch_size: int = 16,
) -> list[tuple[str, list[tuple[str, str, float]]]]:
    """Top classes of image files, with ImageNet names or the model's own.

    Images are cropped as in `load_image` at the model's input size (224
    when it is not static). A model built with `include_preprocessing=True`
    gets the raw pixels, any other the output of `preprocess_input`. Logits
    are turned into probabilities with a softmax.

    Args:
        model: An ImageNet classifier (1000 outputs) or, with `class_names`,
            any classifier of this package.
        paths: Image files and/or folders (see `list_images`).
        top: Classes per image.
        class_names: Names of the model's classes (e.g. of a fine-tuned
            model); required unless the model has 1000 outputs.
        batch_size: Images per forward pass.

    Returns:
        `[(path, [(class id, name, probability), ...]), ...]`; the class id is
        the synset id for ImageNet and the label index otherwise.

    Raises:
        ValueError: an image cannot be read, or the class names do not fit.
        FileNotFoundError: a path is neither a file nor a folder with images.

    Example:

    >>> model = keras_sge.applications.SGEResNet50(weights="imagenet")
    >>> classify(model, ["cat.jpg"], top=1)
    [('cat.jpg', [('n02123045', 'tabby', 0.71)])]
    """
    results, failures = classify_each(
        model, list_images(paths), top=top, class_names=class_names, batch_size=batch_size
    )
    if failures:
        raise ValueError(failures[0][1])
    return results


def classify_each(
    model: keras.Model,
    paths,
    *,
    top: int = 5,
    class_names: list[str] | None = None,
    batch_size: int = 16,
) -> tuple[list[tuple[str, list[tuple[str, str, float]]]], list[tuple[str, str]]]:
    """Classifies every readable image and lists the others with the reason.

    As `classify`, but a path that cannot be read (missing, not an image,
    damaged) does not stop the others.

    Args:
        model: As in `classify`.
        paths: Image files and/or folders.
        top: Classes per image.
        class_names: As in `classify`.
        batch_size: Images per forward pass.

    Returns:
        `(results, failures)`: results as `classify` returns them, and
        `(path, reason)` for each path that could not be classified.

    Raises:
        ValueError: the class names do not fit the model.

    Example:

    >>> results, failures = classify_each(model, ["cat.jpg", "/etc/hostname"])
    >>> failures
    [('/etc/hostname', "Could not read '/etc/hostname' as an image: ...")]
    """
    outputs = model.output_shape[-1]
    if class_names is None and outputs != NUM_CLASSES:
        raise ValueError(
            f"Model {model.name!r} has {outputs} outputs, not ImageNet's "
            f"{NUM_CLASSES}, and no class names were given: pass the names of its "
            "classes (a model saved by train has them in the config.json beside it)."
        )
    if class_names is not None and len(class_names) != outputs:
        raise ValueError(
            f"{len(class_names)} class names were given for a model with {outputs} outputs."
        )
    files, failures = gather_images(paths)
    size = _image_size(model, keras.config.image_data_format())
    results = []
    for start in range(0, len(files), batch_size):
        images, readable = [], []
        for path in files[start : start + batch_size]:
            try:
                images.append(load_image(path, size))
                readable.append(path)
            except ValueError as error:
                failures.append((path, str(error)))
        if readable:
            probabilities = _probabilities(model, np.stack(images))
            decoded = decode_predictions(
                probabilities, top=min(top, outputs), class_names=class_names
            )
            results += list(zip(readable, decoded))
    return results, failures


def _probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's class probabilities (float64) for a batch of uint8 RGB crops."""
    data_format = keras.config.image_data_format()
    images = images.astype("float32")
    if data_format == "channels_first":
        images = np.transpose(images, (0, 3, 1, 2))
    if not any(layer.name == PREPROCESSING_LAYER for layer in model.layers):
        images = preprocess_input(images, data_format=data_format)
    preds = keras.ops.convert_to_numpy(model(images, training=False)).astype("float64")
    if _outputs_logits(model):
        preds = np.exp(preds - preds.max(axis=1, keepdims=True))
        preds /= preds.sum(axis=1, keepdims=True)
    return preds
