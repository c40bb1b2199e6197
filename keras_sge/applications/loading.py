"""One way to get a model: a builder name or a `.keras` file, plus optional weights."""

from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np

from keras_sge.applications.registry import MODELS, model_spec
from keras_sge.applications.suffixes import CHECKPOINT_SUFFIXES, KERAS_MODEL_SUFFIX


def create_model(
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    input_shape: tuple | None = None,
    classes: int = 1000,
    **builder_kwargs,
) -> keras.Model:
    """Builds a model by name, or loads a saved one, and optionally its weights.

    This is what the programs' `--model` and `--weights` flags mean.

    Args:
        model: A name of `keras_sge.applications.MODELS` (e.g.
            `"sge_resnet50"`), or the path of a `.keras` file (loaded with
            Keras' default `safe_mode=True`, without its optimizer).
        weights: Optional weights to load: an authors' PyTorch checkpoint
            (`.pth`, `.pth.tar`, `.pt`, `.tar`), a Keras `.weights.h5` file,
            or, for a model built by name, `"imagenet"` (the authors' file
            from the weights cache, see `SGEResNet50`). The file must match
            the model exactly; to start a model with another head from it,
            use `transfer_weights`.
        input_shape: Input shape of a built model (default: the builder's).
        classes: Classifier width of a built model.
        **builder_kwargs: Further builder arguments (e.g. `groups`,
            `include_top`), for a built model only.

    Returns:
        A `keras.Model`, not compiled.

    Example:

    >>> model = keras_sge.applications.create_model(
    ...     "sge_resnet50", weights="sge_resnet50.pth.tar")
    >>> model = keras_sge.applications.create_model("runs/train/model.keras")
    """
    path = os.fspath(model)
    if path in MODELS:
        return model_spec(path).builder(
            weights=weights, input_shape=input_shape, classes=classes, **builder_kwargs
        )
    if path.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(
            f"{path!r} is a checkpoint, not a model: pass it as weights= (--weights) "
            "and name its architecture as model= (--model), e.g. 'sge_resnet50'."
        )
    if not path.endswith(KERAS_MODEL_SUFFIX):
        raise ValueError(
            f"`model` must be a model name ({', '.join(MODELS)}) or a .keras file. "
            f"Received: model={path!r}"
        )
    if builder_kwargs or input_shape is not None:
        raise ValueError(
            "Builder arguments (input_shape, groups, ...) only apply to a model "
            f"built by name, not to the saved model {path!r}."
        )
    loaded = load_model_file(path)
    if weights is not None:
        from keras_sge.applications.resnet import load_weights

        load_weights(loaded, weights)
    return loaded


class NonFiniteWeightsError(ValueError):
    """Raised for a model holding NaN or inf weights: its outputs would mean nothing."""


def check_finite_weights(model: keras.Model) -> None:
    """Refuses a model with NaN or inf in any weight (a damaged file or a diverged run).

    Args:
        model: Any Keras model.

    Raises:
        NonFiniteWeightsError: naming the first non-finite variable.

    Example:

    >>> check_finite_weights(keras_sge.applications.create_model("runs/train/model.keras"))
    """
    for variable in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            raise NonFiniteWeightsError(
                f"The model {model.name!r} has non-finite values (NaN or inf) in "
                f"{variable.path!r}: the file is damaged or comes from a diverged run."
            )


def check_keras_file(path: str | os.PathLike) -> None:
    """Refuses a path that is not a readable `.keras` archive, naming the file.

    Keras says "File not found" for an existing file that is not a zip
    archive; this says what the file is instead.

    Args:
        path: The `.keras` file.

    Raises:
        FileNotFoundError: Nothing is at `path`, or it is a folder.
        ValueError: The file is empty or not a zip archive (truncated, damaged
            or of another format).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "nothing"
        raise FileNotFoundError(f"No .keras model file at {path!r} ({what} is there).")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"The model file {path!r} is empty (0 bytes): its writing never ended.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"The model file {path!r} ({size:,} bytes) is not a .keras archive (a zip file): "
            "it is truncated, damaged or of another format."
        )


def load_model_file(path: str | os.PathLike, *, compile: bool = False) -> keras.Model:
    """`keras.saving.load_model` with errors that name the file and what is wrong with it.

    Loads with Keras' default `safe_mode=True`: files that would run code
    are refused.

    Args:
        path: A `.keras` file.
        compile: Whether to restore the training configuration (loss,
            metrics, optimizer state) saved with the model.

    Returns:
        The model.

    Raises:
        FileNotFoundError: No file at `path`.
        ValueError: The file is empty, not a zip archive, or a damaged archive.

    Example:

    >>> model = keras_sge.applications.loading.load_model_file("runs/train/model.keras")
    """
    check_keras_file(path)
    try:
        return keras.saving.load_model(os.fspath(path), compile=compile)
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, EOFError, OSError) as error:
        raise ValueError(
            f"The model file {os.fspath(path)!r} is a damaged .keras archive "
            f"({type(error).__name__}: {error})."
        ) from error
