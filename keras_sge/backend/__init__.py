"""The one switch that picks the SGE kernel for this process.

`kernel(data_format)` returns the function that `keras_sge.ops.spatial_group_enhance`
runs: a backend kernel from `keras_sge.backend.{tensorflow,jax,torch}` where one
was measured faster or more precise than the definition on this backend,
device and data format (on JAX: with XLA:CPU's default YNNPACK fusions),
else `keras_sge.ops.sge.definition`. Every kernel has
the op's signature, `f(x, gamma, beta, *, groups, epsilon, data_format,
normalize)`, and computes the same function.

The choice is made once per process, on the first call; the environment
variable `KERAS_SGE_PLAIN=1`, read once when this module is imported, forces
the definition everywhere (to debug, or to re-measure whether a kernel is
still needed):

    KERAS_SGE_PLAIN=1 python -m benchmarks.compare_backends --layer-only

`definition_only()` does the same inside a `with` block, to compare a kernel
with the definition in one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import keras

PLAIN = os.environ.get("KERAS_SGE_PLAIN", "") not in ("", "0")

# data_format -> kernel, filled on the first call of `kernel`.
_SELECTED: dict[str, Callable] = {}
# Set inside `definition_only()`.
_DEFINITION_ONLY = False


def kernel(data_format: str) -> Callable:
    """The SGE kernel of this process for `data_format`.

    Args:
        data_format: `"channels_last"` or `"channels_first"`.

    Returns:
        A function with the signature of `keras_sge.ops.spatial_group_enhance`.
    """
    if _DEFINITION_ONLY:
        from keras_sge.ops.sge import definition

        return definition
    if not _SELECTED:
        _SELECTED.update(select_kernels(keras.backend.backend(), plain=PLAIN))
    return _SELECTED[data_format]


@contextlib.contextmanager
def definition_only() -> Iterator[None]:
    """Runs the definition in place of every kernel inside the block.

    The op picks its kernel when it is called; in a compiled function
    (`jax.jit`, `tf.function`, the functions `fit` and `predict` compile)
    that is when the function is traced, so a function first traced inside
    the block keeps the definition afterwards, and one traced before keeps
    its kernel. Eager calls (torch, TensorFlow eagerly) follow the block.
    The setting is process-wide, not per thread.

    Example:

    >>> import numpy as np
    >>> from keras_sge.ops import spatial_group_enhance
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    >>> gamma, beta = np.ones(2, "float32"), np.zeros(2, "float32")
    >>> with definition_only():
    ...     y = spatial_group_enhance(x, gamma, beta, groups=2)
    >>> tuple(y.shape)
    (2, 4, 4, 8)
    """
    global _DEFINITION_ONLY
    before, _DEFINITION_ONLY = _DEFINITION_ONLY, True
    try:
        yield
    finally:
        _DEFINITION_ONLY = before


def select_kernels(backend: str, plain: bool = False) -> dict[str, Callable]:
    """The kernel per data format for `backend` on this machine (devices; on JAX, XLA flags).

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

        if jax.on_cpu() and not jax.ynn_fusions_off():
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
