"""Top-1/top-5 evaluation of trained models and of the authors' checkpoints."""

from __future__ import annotations

import os

import keras

from keras_sge.training.trainer import accuracy_metrics, build_model

# Authors' README, single 224 centre crop after resizing the short side to 256.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "resnet50": {"top1": 76.384, "top5": 92.908},
    "sge_resnet50": {"top1": 77.584, "top5": 93.664},
    "resnet101": {"top1": 78.200, "top5": 93.906},
    "sge_resnet101": {"top1": 78.798, "top5": 94.368},
}

_TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")


def evaluate(
    model: keras.Model,
    dataset,
    *,
    steps: int | None = None,
    jit_compile: bool | str = "auto",
    verbose: str | int = "auto",
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) and the cross-entropy of a classifier.

    The model is (re)compiled with a plain cross-entropy and the two metrics
    (with fewer than 5 classes, top-5 is top-`num_classes`, i.e. 100 %).

    Args:
        model: a classifier ending in a softmax.
        dataset: batches of `(images, integer labels)` (or with sample weights).
        steps: number of batches (default: the whole dataset).
        jit_compile: passed to `model.compile`.
        verbose: passed to `model.evaluate`.

    Returns:
        `{"top1": ..., "top5": ..., "loss": ...}` with accuracies in percent.

    Example:

    >>> val = keras_sge.data.load("demo", "validation", batch_size=64, image_size=32)
    >>> evaluate(model, val)["top1"]
    """
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=accuracy_metrics(model.output_shape[-1]),
        jit_compile=jit_compile,
    )
    logs = model.evaluate(dataset, steps=steps, verbose=verbose, return_dict=True)
    return {
        "top1": 100.0 * float(logs["top1"]),
        "top5": 100.0 * float(logs["top5"]),
        "loss": float(logs["loss"]),
    }


def load_for_evaluation(
    path: str,
    *,
    model: str | None = None,
    num_classes: int = 1000,
    image_size: int = 224,
) -> keras.Model:
    """Loads a trained `.keras` model, or an authors' PyTorch checkpoint.

    `.keras` files load with `safe_mode=True` (no code runs from the file).
    PyTorch checkpoints (`.pth`, `.pth.tar`, `.pt`, `.tar`) are read without
    executing code (`weights_only=True`) into a freshly built `model` through
    `keras_sge.applications.load_pytorch_checkpoint`.

    Args:
        path: the file.
        model: architecture of a PyTorch checkpoint (`sge_resnet50`, ...).
        num_classes: classes of a PyTorch checkpoint's head.
        image_size: input size the model is built for (PyTorch checkpoints).

    Returns:
        The `keras.Model`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    if path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    if path.endswith(_TORCH_SUFFIXES):
        if model is None:
            raise ValueError(
                f"{path!r} is a PyTorch checkpoint: name its architecture with "
                "model= (--model), e.g. 'sge_resnet50'."
            )
        from keras_sge import applications

        channels_first = keras.config.image_data_format() == "channels_first"
        input_shape = (3, image_size, image_size) if channels_first else (image_size, image_size, 3)
        network = build_model(model, input_shape=input_shape, num_classes=num_classes)
        applications.load_pytorch_checkpoint(network, path)
        return network
    raise ValueError(
        f"Unsupported model file {path!r}: expected a .keras file or a PyTorch "
        f"checkpoint ({', '.join(_TORCH_SUFFIXES)})."
    )


def _model_image_size(model: keras.Model) -> int | None:
    shape = model.input_shape
    return shape[2] if keras.config.image_data_format() == "channels_first" else shape[1]


def evaluate_model_file(
    path: str,
    *,
    dataset: str = "imagenet2012",
    split: str = "validation",
    model: str | None = None,
    image_size: int | None = None,
    batch_size: int = 100,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    steps: int | None = None,
    verbose: str | int = "auto",
) -> dict[str, float]:
    """Loads a model file and measures its top-1/top-5 on a dataset split.

    The split goes through `keras_sge.data.load(..., training=False)`: the
    paper's evaluation preprocessing (short side to `image_size / 0.875`, then
    the central `image_size` crop, ImageNet mean/std).

    Args:
        path: a `.keras` file or an authors' PyTorch checkpoint.
        dataset: `keras_sge.data.load` dataset name or folder.
        split: the split to evaluate.
        model: architecture of a PyTorch checkpoint.
        image_size: crop size; default the `.keras` model's input size, else 224.
        batch_size: evaluation batch size.
        data_dir: tfds data directory.
        manual_dir: folder of manually downloaded archives.
        steps: evaluate only this many batches.
        verbose: `model.evaluate` verbosity.

    Returns:
        `{"top1", "top5", "loss"}` (accuracies in percent) and `"num_classes"`.
    """
    from keras_sge import data

    network = None
    if path.endswith(".keras"):
        network = load_for_evaluation(path)
        image_size = image_size or _model_image_size(network)
    image_size = image_size or 224
    folders = {"data_dir": data_dir, "manual_dir": manual_dir}
    images, info = data.load(
        dataset,
        split,
        batch_size=batch_size,
        image_size=image_size,
        training=False,
        with_info=True,
        **{key: value for key, value in folders.items() if value is not None},
    )
    if network is None:
        network = load_for_evaluation(
            path, model=model, num_classes=info.num_classes, image_size=image_size
        )
    measured = evaluate(network, images, steps=steps, verbose=verbose)
    return {**measured, "num_classes": info.num_classes, "image_size": image_size}


def results_table(measured: dict[str, float], model: str | None = None) -> str:
    """A Markdown table of measured top-1/top-5 beside the paper's numbers.

    Args:
        measured: `{"top1": ..., "top5": ...}` in percent.
        model: architecture name, to look up the paper's numbers.

    Returns:
        The table as a string.
    """
    paper = PAPER_RESULTS.get(model or "", {})

    def cell(value):
        return f"{value:.3f}" if value is not None else "-"

    lines = [
        "| model | top-1 (measured) | top-1 (paper) | top-5 (measured) | top-5 (paper) |",
        "|---|---|---|---|---|",
        f"| {model or 'model'} | {cell(measured['top1'])} | {cell(paper.get('top1'))} "
        f"| {cell(measured['top5'])} | {cell(paper.get('top5'))} |",
    ]
    return "\n".join(lines)
