"""Loading the authors' PyTorch (PytorchInsight) checkpoints into Keras models."""

from __future__ import annotations

import os
import re

import keras
import numpy as np

from keras_sge.layers import SpatialGroupEnhance

_MODULE_PREFIX = "module."
_LIST_LIMIT = 25


def _read_state_dict(path) -> dict:
    """Reads a checkpoint file safely and returns `{key: float32 ndarray}`."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch checkpoint needs the `torch` package (only to "
            "read the file; the model itself runs on any Keras backend). "
            "Install it with `pip install torch`, or convert the file once on "
            "a machine that has torch with applications/convert_checkpoint.py."
        ) from error

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No PyTorch checkpoint file at {path!r}.")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types here
        raise ValueError(
            f"Could not read {path!r} as a PyTorch checkpoint with "
            "`torch.load(..., weights_only=True)` (files that need to run "
            f"code to load are refused): {error}"
        ) from error

    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not content or not all(
        isinstance(value, torch.Tensor) for value in content.values()
    ):
        raise ValueError(
            f"{path!r} holds neither a state_dict (a dict of tensors) nor a "
            "dict with a 'state_dict' entry, as the authors' checkpoints do. "
            f"Found: {type(content).__name__}"
            + (f" with keys {sorted(map(str, content))[:10]}" if isinstance(content, dict) else "")
        )
    state = {}
    for key, tensor in content.items():
        if key.startswith(_MODULE_PREFIX):
            key = key[len(_MODULE_PREFIX):]
        if key.endswith("num_batches_tracked"):
            continue
        state[key] = tensor.detach().to(torch.float32).numpy()
    return state


def _model_targets(model) -> dict:
    """Maps each PyTorch key the model expects to `(variable, to_keras)`.

    `to_keras` converts the PyTorch array to the variable's layout; the
    expected PyTorch shape is returned alongside for error messages.
    """
    targets = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            # PyTorch OIHW -> Keras HWIO; Keras keeps HWIO in both formats.
            kernel = layer.kernel
            h, w, i, o = kernel.shape
            targets[f"{module}.weight"] = (
                kernel,
                (o, i, h, w),
                lambda a: np.transpose(a, (2, 3, 1, 0)),
            )
            if layer.use_bias:
                targets[f"{module}.bias"] = (layer.bias, (o,), lambda a: a)
        elif isinstance(layer, keras.layers.BatchNormalization):
            pairs = (
                ("weight", layer.gamma),
                ("bias", layer.beta),
                ("running_mean", layer.moving_mean),
                ("running_var", layer.moving_variance),
            )
            for suffix, variable in pairs:
                if variable is not None:
                    targets[f"{module}.{suffix}"] = (
                        variable,
                        tuple(variable.shape),
                        lambda a: a,
                    )
        elif isinstance(layer, SpatialGroupEnhance):
            groups = layer.groups
            for suffix, variable in (("weight", layer.gamma), ("bias", layer.beta)):
                targets[f"{module}.{suffix}"] = (
                    variable,
                    (1, groups, 1, 1),
                    lambda a: np.reshape(a, (-1,)),
                )
        elif isinstance(layer, keras.layers.Dense):
            kernel = layer.kernel
            fan_in, units = kernel.shape
            targets[f"{module}.weight"] = (kernel, (units, fan_in), np.transpose)
            if layer.use_bias:
                targets[f"{module}.bias"] = (layer.bias, (units,), lambda a: a)
        else:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has weights "
                "with no PyTorch counterpart; load_pytorch_checkpoint supports "
                "the models of keras_sge.applications only."
            )
    return targets


def _natural_key(text: str):
    """Sorts `layer3.10` after `layer3.9`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _listing(title: str, keys: list) -> str:
    """All the modules concerned, then the first keys."""
    keys = sorted(keys, key=_natural_key)
    modules = []
    for key in keys:
        parts = key.split(".")
        module = ".".join(parts[:2]) if parts[0].startswith("layer") else parts[0]
        if module not in modules:
            modules.append(module)
    lines = [f"  {title} ({len(keys)}), in {', '.join(modules)}:"]
    lines += [f"    {key}" for key in keys[:_LIST_LIMIT]]
    if len(keys) > _LIST_LIMIT:
        lines.append(f"    ... and {len(keys) - _LIST_LIMIT} more")
    return "\n".join(lines)


def load_pytorch_checkpoint(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads an SGE-ResNet / ResNet PyTorch checkpoint into a Keras model.

    Reads the authors' PytorchInsight checkpoints (a dict with a
    `state_dict` whose keys carry a `module.` prefix, as `torch.save`d by
    their training script) or a bare state_dict, with
    `torch.load(path, map_location="cpu", weights_only=True)`: the file never
    runs code. PyTorch module `a.b.c` maps to Keras layer `a_b_c`:
    convolution kernels are transposed from OIHW to HWIO (the Keras layout in
    both data formats), BatchNorm `weight`/`bias`/`running_mean`/
    `running_var` become `gamma`/`beta`/`moving_mean`/`moving_variance`
    (`num_batches_tracked` is ignored), SGE `weight`/`bias` of shape
    `(1, G, 1, 1)` become `gamma`/`beta` of shape `(G,)`, and the `fc` weight
    is transposed. A model built with `include_top=False` ignores the file's
    `fc.*` tensors.

    Everything is checked before anything is assigned: if a key is missing,
    unexpected or of another shape, a `ValueError` lists them all and the
    model is left unchanged.

    Args:
        model: A model from `keras_sge.applications` (`SGEResNet50`,
            `ResNet101`, ...), in either data format, on any backend.
        path: Path of the PyTorch checkpoint (`.pth`, `.pth.tar`, ...).

    Raises:
        ImportError: If torch is not installed (it is needed only to read
            the file).
        ValueError: If the file is not a state_dict checkpoint or does not
            match the model.

    Example:

    >>> model = keras_sge.applications.SGEResNet50()
    >>> keras_sge.applications.load_pytorch_checkpoint(
    ...     model, "sge_resnet50.pth.tar")
    """
    state = _read_state_dict(path)
    targets = _model_targets(model)
    has_top = any(key.startswith("fc.") for key in targets)
    if not has_top:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    missing = list(set(targets) - set(state))
    unexpected = list(set(state) - set(targets))
    mismatched = list(
        f"{key}: file {tuple(state[key].shape)}, model expects {targets[key][1]}"
        for key in set(targets) & set(state)
        if tuple(state[key].shape) != tuple(targets[key][1])
    )
    if missing or unexpected or mismatched:
        parts = [
            f"The PyTorch checkpoint {os.fspath(path)!r} does not match model "
            f"{model.name!r}; nothing was loaded."
        ]
        if missing:
            parts.append(_listing("Missing keys (in the model, not in the file)", missing))
        if unexpected:
            parts.append(
                _listing("Unexpected keys (in the file, not in the model)", unexpected)
            )
        if mismatched:
            parts.append(_listing("Shape mismatches", mismatched))
        file_sge = any(".sge." in key for key in state)
        model_sge = any(".sge." in key for key in targets)
        if file_sge and not model_sge:
            parts.append("  Hint: the file has SGE weights; build an SGEResNet model.")
        elif model_sge and not file_sge:
            parts.append(
                "  Hint: the file has no SGE weights; build a ResNet (not "
                "SGEResNet) model, or check that it is an SGE-ResNet checkpoint."
            )
        raise ValueError("\n".join(parts))

    for key, (variable, _, to_keras) in targets.items():
        variable.assign(to_keras(state[key]).astype(variable.dtype))
