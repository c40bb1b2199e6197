"""Initialising a model from another one's weights: the start of fine-tuning."""

from __future__ import annotations

import collections
import dataclasses
import os
import re

import keras

from keras_sge.applications import checkpoint, resnet
from keras_sge.applications.loading import load_model_file
from keras_sge.applications.suffixes import (
    KERAS_MODEL_SUFFIX,
    KERAS_WEIGHTS_SUFFIX,
    PYTORCH_SUFFIXES,
)
from keras_sge.applications.variants import ARCHITECTURES
from keras_sge.layers import SpatialGroupEnhance

HEAD_LAYER = "fc"
_BLOCK_OUTPUT = re.compile(r"^layer([1-4])_(\d+)_out$")


@dataclasses.dataclass
class TransferReport:
    """What `transfer_weights` did, by Keras layer name.

    Attributes:
        source: The weights file.
        loaded: Layers of the model whose weights all came from the file.
        new: Layers of the model left at their initialisation (a head of
            another class count, SGE layers absent from a plain ResNet file).
        skipped: Layers (Keras names) of the file that were not used.
    """

    source: str
    loaded: list[str]
    new: list[str]
    skipped: list[str]

    def summary(self) -> str:
        """A few human-readable lines: counts and the new/skipped layers."""
        lines = [f"Weights from {self.source}:", f"  loaded: {len(self.loaded)} layers"]
        for title, names in (("new (initialised)", self.new), ("skipped", self.skipped)):
            shown = ", ".join(names[:12]) + (
                f", ... ({len(names)} in all)" if len(names) > 12 else ""
            )
            lines.append(f"  {title}: {len(names)} layers" + (f": {shown}" if names else ""))
        return "\n".join(lines)


def _layer_of(key: str) -> str:
    """PyTorch key -> Keras layer name (`layer1.0.sge.weight` -> `layer1_0_sge`)."""
    return key.rsplit(".", 1)[0].replace(".", "_")


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


def _from_pytorch(model, path, allow_new_head, allow_missing_sge) -> TransferReport:
    state = checkpoint.read_state_dict(path)
    assignments, left_out, skipped = checkpoint.plan_pytorch_load(
        model,
        state,
        path,
        allow_missing_sge=allow_missing_sge,
        allow_new_head=allow_new_head,
    )
    for variable, array in assignments:
        variable.assign(array.astype(variable.dtype))
    new = _unique(_layer_of(k) for k in left_out)
    loaded = [layer.name for layer in model.layers if layer.weights and layer.name not in new]
    return TransferReport(path, loaded, new, _unique(_layer_of(k) for k in skipped))


def _architecture(model) -> tuple[int, bool]:
    """(depth, attention) of a ResNet built by `build_resnet`, from its layer names."""
    blocks = collections.Counter()
    for layer in model.layers:
        match = _BLOCK_OUTPUT.match(layer.name)
        if match:
            blocks[int(match.group(1))] += 1
    names = {layer.name for layer in model.layers}
    kind = "bottleneck" if "layer1_0_conv3" in names else "basic"
    for depth, architecture in ARCHITECTURES.items():
        if architecture == (kind, tuple(blocks[s] for s in (1, 2, 3, 4))):
            attention = any(isinstance(layer, SpatialGroupEnhance) for layer in model.layers)
            return depth, attention
    raise ValueError(
        f"Model {model.name!r} is not a ResNet built by keras_sge.applications "
        "(its block layers `layerK_I_out` match no known depth); a .weights.h5 "
        "file can only be transferred into one."
    )


def _twin_for_weights_file(model, path):
    """The model's architecture with the head and SGE layers the file has.

    A `.weights.h5` file stores its layers under class-based names, not layer
    names, so it is read into a model of the file's own shape first.
    """
    import h5py

    with h5py.File(path, "r") as f:
        layers = f["layers"] if "layers" in f else {}
        dense = [name for name in layers if name.startswith("dense")]
        sge = sorted(name for name in layers if name.startswith("spatial_group_enhance"))
        classes = int(layers[dense[0]]["vars"]["0"].shape[1]) if dense else None
        groups = int(layers[sge[0]]["vars"]["0"].shape[0]) if sge else 64
    depth, _ = _architecture(model)
    kwargs = {"groups": groups} if sge else {}
    twin = resnet.build_resnet(
        depth,
        bool(sge),
        include_top=classes is not None,
        input_shape=model.input_shape[1:],
        classes=classes or 1000,
        **kwargs,
    )
    try:
        twin.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"Could not read {path!r} as the weights of a {twin.name} "
            f"(the architecture of model {model.name!r}, with the head and SGE "
            f"layers found in the file): {error}"
        ) from error
    return twin


def _from_keras(model, source, path, allow_new_head, allow_missing_sge) -> TransferReport:
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    theirs = {layer.name: layer for layer in source.layers if layer.weights}
    source_sge = any(isinstance(layer, SpatialGroupEnhance) for layer in theirs.values())
    new, skipped, problems = [], [], []
    head_differs = HEAD_LAYER in ours and (
        HEAD_LAYER not in theirs
        or [w.shape for w in ours[HEAD_LAYER].weights]
        != [w.shape for w in theirs[HEAD_LAYER].weights]
    )
    for name, layer in ours.items():
        if name == HEAD_LAYER and head_differs and allow_new_head:
            new.append(name)
        elif name not in theirs:
            if isinstance(layer, SpatialGroupEnhance) and allow_missing_sge and not source_sge:
                new.append(name)
            else:
                problems.append(f"{name}: in the model, not in the file")
        elif [w.shape for w in layer.weights] != [w.shape for w in theirs[name].weights]:
            problems.append(
                f"{name}: file {[tuple(w.shape) for w in theirs[name].weights]}, "
                f"model {[tuple(w.shape) for w in layer.weights]}"
            )
    for name in theirs:
        if name not in ours or name in new:
            if name == HEAD_LAYER and (allow_new_head or HEAD_LAYER not in ours):
                skipped.append(name)
            elif name not in ours:
                problems.append(f"{name}: in the file, not in the model")
    if problems:
        listed = "\n".join(f"    {p}" for p in problems[:25])
        more = f"\n    ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        raise ValueError(
            f"The weights in {path!r} do not match model {model.name!r}; nothing "
            f"was loaded. Only the classifier head ({HEAD_LAYER!r}) may differ, "
            "and SGE layers may be missing from a plain ResNet file.\n"
            f"{listed}{more}"
        )
    loaded = [name for name in ours if name not in new]
    for name in loaded:
        for variable, value in zip(ours[name].weights, theirs[name].weights):
            variable.assign(keras.ops.convert_to_numpy(value).astype(variable.dtype))
    return TransferReport(path, loaded, new, skipped)


def transfer_weights(
    model: keras.Model,
    source: str | os.PathLike,
    *,
    allow_new_head: bool = True,
    allow_missing_sge: bool = True,
) -> TransferReport:
    """Initialises a model from a weights file, keeping what fits.

    The backbone must match exactly; two differences are accepted (each can
    be turned off):

    - the classifier head `fc` of another class count (or missing, or
      absent from the model): the model keeps its freshly initialised head
      and the file's is skipped; a head of the same shape is loaded;
    - a plain ResNet file for an SGE-ResNet model: the SGE layers keep their
      initialisation (see `load_pytorch_checkpoint(allow_missing_sge=True)`).

    Anything else (another depth, a missing block, a shape mismatch in the
    backbone) raises a `ValueError` listing the differences, and nothing is
    loaded.

    Args:
        model: A model built by `keras_sge.applications`.
        source: An authors' PyTorch checkpoint (`.pth`, `.pth.tar`, `.pt`,
            `.tar`; also a torchvision ResNet state_dict), a `.keras` model
            saved from such a model (e.g. converted or trained here), or a
            `.weights.h5` file saved from one.
        allow_new_head: Accept a head of another shape.
        allow_missing_sge: Accept a file without SGE layers for an SGE model.

    Returns:
        A `TransferReport` (layers loaded, new, skipped).

    Example:

    >>> model = keras_sge.applications.SGEResNet50(classes=5)
    >>> report = keras_sge.applications.transfer_weights(
    ...     model, "sge_resnet50.pth.tar")
    >>> report.new
    ['fc']
    """
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file at {path!r}.")
    if path.endswith(PYTORCH_SUFFIXES):
        return _from_pytorch(model, path, allow_new_head, allow_missing_sge)
    if path.endswith(KERAS_MODEL_SUFFIX):
        source_model = load_model_file(path)
    elif path.endswith(KERAS_WEIGHTS_SUFFIX):
        source_model = _twin_for_weights_file(model, path)
    else:
        raise ValueError(
            "The weights file must be a PyTorch checkpoint (.pth, .pth.tar, .pt, "
            f".tar), a .keras model or a .weights.h5 file. Received: {path!r}"
        )
    return _from_keras(model, source_model, path, allow_new_head, allow_missing_sge)
