"""Top-1/top-5 evaluation of trained models and of the authors' checkpoints."""

from __future__ import annotations

import math

import keras

from keras_sge.applications import MODELS, create_model
from keras_sge.applications.loading import NonFiniteWeightsError, check_finite_weights
from keras_sge.training.trainer import accuracy_metrics


class IncompatibleModelError(ValueError):
    """Raised when a model cannot give meaningful numbers on a dataset."""


class ClassNamesMismatchError(IncompatibleModelError):
    """Raised when a model was trained on classes other than the dataset's."""


def check_model(model: keras.Model, num_classes: int | None = None) -> None:
    """Refuses a model whose weights are not finite or whose head does not fit.

    Args:
        model: a classifier ending in a softmax.
        num_classes: the dataset's number of classes (`None`: not checked).

    Raises:
        IncompatibleModelError: a weight holds NaN/inf, or the model's output
            size differs from `num_classes`.
    """
    outputs = model.output_shape[-1]
    if num_classes is not None and outputs != num_classes:
        raise IncompatibleModelError(
            f"The model {model.name!r} outputs {outputs} classes but the dataset has "
            f"{num_classes}: its numbers would mean nothing. Use a model trained on "
            "this dataset (or a dataset with the model's classes)."
        )
    try:
        check_finite_weights(model)
    except NonFiniteWeightsError as error:
        raise IncompatibleModelError(str(error)) from None


def class_names_mismatch(
    model_names: list[str] | None, dataset_names: list[str] | None
) -> str | None:
    """Says how a model's training classes differ from a dataset's, if they do.

    Args:
        model_names: The classes the model was trained on, by output index
            (`None`: unknown, nothing to compare).
        dataset_names: The dataset's classes, by label (`None`: unknown).

    Returns:
        `None` when the lists are equal or one is unknown; otherwise a
        description naming both lists and what differs.

    Example:

    >>> class_names_mismatch(["ant", "bee"], ["bee", "ant"])
    "model's classes (2): ['ant', 'bee']; dataset's (2): ['bee', 'ant']; ..."
    """
    if model_names is None or dataset_names is None:
        return None
    model_names, dataset_names = list(model_names), list(dataset_names)
    if model_names == dataset_names:
        return None
    parts = [
        f"model's classes ({len(model_names)}): {_abridged(model_names)}",
        f"dataset's ({len(dataset_names)}): {_abridged(dataset_names)}",
    ]
    only_model = [name for name in model_names if name not in set(dataset_names)]
    only_dataset = [name for name in dataset_names if name not in set(model_names)]
    if only_model:
        parts.append(f"only the model's: {_abridged(only_model)}")
    if only_dataset:
        parts.append(f"only the dataset's: {_abridged(only_dataset)}")
    if not only_model and not only_dataset:
        moved = [
            f"label {i}: model {a!r}, dataset {b!r}"
            for i, (a, b) in enumerate(zip(model_names, dataset_names))
            if a != b
        ]
        parts.append(f"same names in another order ({_abridged(moved)})")
    return "; ".join(parts)


def _abridged(items: list, limit: int = 20) -> str:
    if len(items) <= limit:
        return repr(items)
    return f"{items[: limit // 2]!r} ... and {len(items) - limit // 2} more"


def evaluate(
    model: keras.Model,
    dataset,
    *,
    steps: int | None = None,
    jit_compile: bool | str = "auto",
    verbose: str | int = "auto",
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (fractions) and the cross-entropy of a classifier.

    Runs a model that shares `model`'s layers and weights, compiled with a
    plain cross-entropy and the two metrics (with fewer than 5 classes,
    top-5 is top-`num_classes`, i.e. 1): `model` itself, its optimizer and
    its compiled loss and metrics are left as they were.

    Args:
        model: a functional (or Sequential) classifier ending in a softmax.
        dataset: batches of `(images, integer labels)` (or with sample weights).
        steps: number of batches (default: the whole dataset).
        jit_compile: passed to `model.compile`.
        verbose: passed to `model.evaluate`.

    Returns:
        `{"top1": ..., "top5": ..., "loss": ...}`, accuracies as fractions in [0, 1].

    Raises:
        IncompatibleModelError: the loss is not finite (NaN/inf outputs).

    Example:

    >>> val = keras_sge.data.load("demo", "validation", batch_size=64, image_size=32)
    >>> evaluate(model, val)["top1"]
    """
    view = _shared_view(model)
    view.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=accuracy_metrics(model.output_shape[-1]),
        jit_compile=jit_compile,
    )
    logs = view.evaluate(dataset, steps=steps, verbose=verbose, return_dict=True)
    if not math.isfinite(float(logs["loss"])):
        raise IncompatibleModelError(
            f"The model {model.name!r} gives a non-finite loss ({float(logs['loss'])}) on "
            "this data: its outputs hold NaN/inf, or labels exceed its classes."
        )
    return {
        "top1": float(logs["top1"]),
        "top5": float(logs["top5"]),
        "loss": float(logs["loss"]),
    }


def _shared_view(model: keras.Model) -> keras.Model:
    """A new `keras.Model` over the same layers and weights (compiling it leaves `model` alone)."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def _model_image_size(model: keras.Model) -> int | None:
    shape = model.input_shape
    return shape[2] if keras.config.image_data_format() == "channels_first" else shape[1]


def evaluate_model_file(
    model: str,
    weights: str | None = None,
    *,
    dataset: str = "imagenet2012",
    split: str = "validation",
    image_size: int | None = None,
    batch_size: int = 100,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    steps: int | None = None,
    verbose: str | int = "auto",
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """Loads a model and measures its top-1/top-5 on a dataset split.

    The split goes through `keras_sge.data.load(..., training=False)`: the
    paper's evaluation preprocessing (short side to `image_size / 0.875`, then
    the central `image_size` crop, ImageNet mean/std).

    Args:
        model: a model name (e.g. `"sge_resnet50"`, built with the dataset's
            class count) or a `.keras` file, as `keras_sge.applications.create_model`.
        weights: optional checkpoint to load into it (an authors' `.pth.tar`
            or a `.weights.h5` file).
        dataset: `keras_sge.data.load` dataset name or folder.
        split: the split to evaluate.
        image_size: crop size; default the `.keras` model's input size, else 224.
        batch_size: evaluation batch size.
        data_dir: tfds data directory.
        manual_dir: folder of manually downloaded archives.
        steps: evaluate only this many batches.
        verbose: `model.evaluate` verbosity.
        class_names: the classes the model was trained on, by output index
            (e.g. from its run's `config.json`); refused when they differ
            from the dataset's (`None`: not checked).

    Returns:
        `{"top1", "top5", "loss"}` (accuracies as fractions), `"model"` (the
        model's name), `"num_classes"`, `"image_size"`, and, with `steps`,
        `"partial": True` and `"evaluated_batches"` (the batches are a fixed
        random sample of the split, the same on every call).

    Raises:
        IncompatibleModelError: the model's number of classes differs from
            the dataset's, or its weights or outputs are not finite.
        ClassNamesMismatchError: `class_names` differ from the dataset's.

    Example:

    >>> evaluate_model_file("sge_resnet50", "sge_resnet50.pth.tar",
    ...                     dataset="imagenet2012", manual_dir="~/imagenet")
    """
    from keras_sge import data

    network = None
    if model not in MODELS:
        network = create_model(model, weights)
        image_size = image_size or _model_image_size(network)
    image_size = image_size or 224
    folders = {"data_dir": data_dir, "manual_dir": manual_dir}
    # A partial evaluation reads a fixed random sample, not the first files
    # of a split stored class by class.
    sample = {} if steps is None else {"sample_seed": 0}
    images, info = data.load(
        dataset,
        split,
        batch_size=batch_size,
        image_size=image_size,
        training=False,
        with_info=True,
        **sample,
        **{key: value for key, value in folders.items() if value is not None},
    )
    if network is None:
        channels_first = keras.config.image_data_format() == "channels_first"
        input_shape = (3, image_size, image_size) if channels_first else (image_size, image_size, 3)
        network = create_model(model, weights, input_shape=input_shape, classes=info.num_classes)
    check_model(network, info.num_classes)
    mismatch = class_names_mismatch(class_names, info.class_names)
    if mismatch:
        raise ClassNamesMismatchError(
            f"The model {network.name!r} was trained on other classes than {dataset!r} "
            f"has: {mismatch}. Its accuracy there would compare unrelated labels."
        )
    measured = evaluate(network, images, steps=steps, verbose=verbose)
    extra = {} if steps is None else {"partial": True, "evaluated_batches": steps}
    return {
        **measured,
        "model": network.name,
        "num_classes": info.num_classes,
        "image_size": image_size,
        **extra,
    }


def results_table(measured: dict[str, float], model: str | None = None) -> str:
    """A Markdown table of measured top-1/top-5 beside the paper's numbers.

    Args:
        measured: `{"top1": ..., "top5": ...}` as fractions (printed in percent).
        model: a `keras_sge.applications.MODELS` name, whose paper numbers
            are shown (none for other names).

    Returns:
        The table as a string.
    """
    spec = MODELS.get(model or "")
    paper = {"top1": spec.paper_top1, "top5": spec.paper_top5} if spec else {}

    def cell(value):
        return f"{100 * value:.3f}" if value is not None else "-"

    lines = [
        "| model | top-1 % (measured) | top-1 % (paper) | top-5 % (measured) | top-5 % (paper) |",
        "|---|---|---|---|---|",
        f"| {model or 'model'} | {cell(measured['top1'])} | {cell(paper.get('top1'))} "
        f"| {cell(measured['top5'])} | {cell(paper.get('top5'))} |",
    ]
    return "\n".join(lines)
