"""Loading the authors' PyTorch (PytorchInsight) checkpoints into Keras models."""

from __future__ import annotations

import os
import re

import keras
import numpy as np

from keras_sge.layers import SpatialGroupEnhance

_MODULE_PREFIX = "module."
_LIST_LIMIT = 25


def read_state_dict(path) -> dict:
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
    if (
        not isinstance(content, dict)
        or not content
        or not all(isinstance(value, torch.Tensor) for value in content.values())
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
            key = key[len(_MODULE_PREFIX) :]
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


def _head_key(key: str) -> bool:
    return key.startswith("fc.")


def _mismatch_message(
    model: keras.Model,
    path: str,
    state: dict,
    targets: dict,
    *,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
) -> str:
    """Explains why a state_dict does not fit a model, with a hint on SGE.

    Args:
        model: The Keras model.
        path: The file's path.
        state: `{key: ndarray}` as read by `read_state_dict`.
        targets: the model's keys, as made by `_model_targets`.
        missing, unexpected, mismatched: the keys at fault.

    Returns:
        The message of the `ValueError`.
    """
    parts = [
        f"The PyTorch checkpoint {os.fspath(path)!r} does not match model "
        f"{model.name!r}; nothing was loaded."
    ]
    if missing:
        parts.append(_listing("Missing keys (in the model, not in the file)", missing))
    if unexpected:
        parts.append(_listing("Unexpected keys (in the file, not in the model)", unexpected))
    if mismatched:
        parts.append(
            _listing(
                "Shape mismatches",
                [
                    f"{k}: file {tuple(state[k].shape)}, model expects {targets[k][1]}"
                    for k in mismatched
                ],
            )
        )
    file_sge = any(".sge." in key for key in state)
    model_sge = any(".sge." in key for key in targets)
    if file_sge and not model_sge:
        parts.append("  Hint: the file has SGE weights; build an SGEResNet model.")
    elif model_sge and not file_sge:
        parts.append(
            "  Hint: the file has no SGE weights (a plain ResNet): build a "
            "ResNet (not SGEResNet) model, or pass allow_missing_sge=True to "
            "load it into the SGE model and leave the SGE layers at their "
            "initialisation."
        )
    return "\n".join(parts)


def plan_pytorch_load(
    model: keras.Model,
    state: dict,
    path: str,
    *,
    allow_missing_sge: bool = False,
    allow_new_head: bool = False,
) -> tuple[list, list[str], list[str]]:
    """Matches a state_dict against a model without assigning anything.

    Args:
        model: The Keras model.
        state: `{key: ndarray}` as read by `read_state_dict`.
        path: The file's path, for error messages.
        allow_missing_sge: Accept a file without any SGE tensors: the model's
            SGE keys are left out (the file is a plain ResNet).
        allow_new_head: Accept an `fc` head of another shape, or none, in the
            file: the model's head is left out and the file's is skipped.

    Returns:
        `(assignments, left_out, skipped)`: `(variable, array)` pairs in the
        variable's layout, the model's PyTorch keys left at their
        initialisation, and the file's keys not used, both sorted.

    Raises:
        ValueError: listing every other missing, unexpected or mismatched
            key.
    """
    targets = _model_targets(model)
    has_top = any(_head_key(key) for key in targets)
    skipped = []
    if not has_top:
        skipped = [k for k in state if _head_key(k)]

    missing = [k for k in targets if k not in state]
    unexpected = [k for k in state if k not in targets and k not in skipped]
    mismatched = [
        k for k in targets if k in state and tuple(state[k].shape) != tuple(targets[k][1])
    ]
    left_out = []
    file_sge = any(".sge." in key for key in state)
    if allow_missing_sge and not file_sge:
        left_out += [k for k in missing if ".sge." in k]
    if allow_new_head:
        head_differs = any(_head_key(k) for k in missing + unexpected + mismatched)
        if head_differs:
            left_out += [k for k in targets if _head_key(k)]
            skipped += [k for k in state if _head_key(k)]
    missing = [k for k in missing if k not in left_out]
    unexpected = [k for k in unexpected if k not in skipped]
    mismatched = [k for k in mismatched if k not in left_out]
    if missing or unexpected or mismatched:
        raise ValueError(
            _mismatch_message(
                model,
                path,
                state,
                targets,
                missing=missing,
                unexpected=unexpected,
                mismatched=mismatched,
            )
        )

    assignments = [
        (variable, to_keras(state[key]))
        for key, (variable, _, to_keras) in targets.items()
        if key not in left_out
    ]
    return (
        assignments,
        sorted(left_out, key=_natural_key),
        sorted(skipped, key=_natural_key),
    )


def load_pytorch_checkpoint(
    model: keras.Model, path: str | os.PathLike, allow_missing_sge: bool = False
) -> list[str]:
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

    The authors' plain ResNet checkpoints and torchvision's `resnet18/34/50/
    101` state_dicts use the same ResNet v1.5 key names (`layer1.0.conv1.
    weight`, `layer1.0.downsample.1.running_var`, `fc.bias`, ...), so both
    load into the `ResNet` models, and, with `allow_missing_sge=True`, into
    the `SGEResNet` models: every tensor of the file is loaded and the SGE
    layers keep their initialisation (gamma 0, beta 1: the gate is then the
    constant sigmoid(1) and scales every block's residual branch by it, so
    the network is close to, not equal to, the plain ResNet until
    fine-tuned).

    Everything is checked before anything is assigned: if a key is missing
    (other than the SGE keys allowed above), unexpected or of another shape,
    a `ValueError` lists them all and the model is left unchanged.

    Args:
        model: A model from `keras_sge.applications` (`SGEResNet50`,
            `ResNet101`, ...), in either data format, on any backend.
        path: Path of the PyTorch checkpoint (`.pth`, `.pth.tar`, ...).
        allow_missing_sge: Accept a checkpoint without SGE tensors (a plain
            ResNet) for an SGE model, leaving its SGE layers as initialised.
            Only accepted when the file has no SGE tensor at all.

    Returns:
        The PyTorch keys of the model that were left out (not in the file),
        sorted, e.g. `["layer1.0.sge.bias", "layer1.0.sge.weight", ...]`;
        empty for a complete checkpoint.

    Raises:
        ImportError: If torch is not installed (it is needed only to read
            the file).
        ValueError: If the file is not a state_dict checkpoint or does not
            match the model.

    Example:

    >>> model = keras_sge.applications.SGEResNet50()
    >>> keras_sge.applications.load_pytorch_checkpoint(
    ...     model, "sge_resnet50.pth.tar")
    []
    >>> left_out = keras_sge.applications.load_pytorch_checkpoint(
    ...     model, "resnet50.pth.tar", allow_missing_sge=True)
    >>> len(left_out)  # gamma and beta of the 16 blocks' SGE layers
    32
    """
    state = read_state_dict(path)
    assignments, left_out, _ = plan_pytorch_load(
        model, state, os.fspath(path), allow_missing_sge=allow_missing_sge
    )
    for variable, array in assignments:
        variable.assign(array.astype(variable.dtype))
    return left_out
