"""The one switch that picks the SGE kernel for this process.

`kernel(data_format)` returns the function that `keras_sge.ops.spatial_group_enhance`
runs: a backend kernel from `keras_sge.backend.{tensorflow,jax,torch}` where one
was measured faster or more precise than the definition on this backend,
device and data format, else `keras_sge.ops.sge.definition`. Every kernel has
the op's signature, `f(x, gamma, beta, *, groups, epsilon, data_format,
normalize)`, and computes the same function.

The choice is made once per process, on the first call; the environment
variable `KERAS_SGE_PLAIN=1`, read once when this module is imported, forces
the definition everywhere (to debug, or to re-measure whether a kernel is
still needed):

    KERAS_SGE_PLAIN=1 python -m benchmarks.compare_backends --layer-only
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras

PLAIN = os.environ.get("KERAS_SGE_PLAIN", "") not in ("", "0")

# data_format -> kernel, filled on the first call of `kernel`.
_SELECTED: dict[str, Callable] = {}


def kernel(data_format: str) -> Callable:
    """The SGE kernel of this process for `data_format`.

    Args:
        data_format: `"channels_last"` or `"channels_first"`.

    Returns:
        A function with the signature of `keras_sge.ops.spatial_group_enhance`.
    """
    if not _SELECTED:
        _SELECTED.update(select_kernels(keras.backend.backend(), plain=PLAIN))
    return _SELECTED[data_format]


def select_kernels(backend: str, plain: bool = False) -> dict[str, Callable]:
    """The kernel per data format for `backend` on this machine's devices.

    Args:
        backend: A Keras backend name.
        plain: Whether to use the definition everywhere.

    Returns:
        `{"channels_last": f, "channels_first": f}`.
    """
    from keras_sge.ops.sge import definition

    kernels = {"channels_last": definition, "channels_first": definition}
    if plain:
        return kernels
    if backend == "tensorflow":
        from keras_sge.backend import tensorflow

        kernels = dict.fromkeys(kernels, tensorflow.spatial_group_enhance)
    elif backend == "jax":
        from keras_sge.backend import jax

        if jax.on_cpu():
            kernels = {
                "channels_last": jax.spatial_group_enhance_channels_last,
                "channels_first": jax.spatial_group_enhance_channels_first,
            }
    elif backend == "torch":
        from keras_sge.backend import torch

        if torch.on_cpu():
            kernels = {
                "channels_last": torch.spatial_group_enhance_channels_last,
                "channels_first": torch.spatial_group_enhance_channels_first,
            }
    return kernels
