"""Other arrangements of the SGE layer for some backends, each kept only where measured.

`SpatialGroupEnhance.call`, `_gate` and `_gate_from_similarity` are the
definition. A backend path computes the same function from the same float32
grouped view with other `keras.ops` (JAX's with two small custom gradients),
or compiles the definition (TensorFlow in a graph on the CPU): faster where
the plain form runs slowly (JAX on the CPU, torch in channels_first,
TensorFlow's graph kernels), or more precise where the backend's sums round
more (TensorFlow eagerly). Set the environment variable `KERAS_SGE_PLAIN=1` to
run the plain definition everywhere (read at each call and trace), e.g. to
tell whether a path is still needed:

    KERAS_SGE_PLAIN=1 python -m benchmarks.compare_backends --layer-only
    python -m benchmarks.compare_backends --layer-only

docs/performance.md records the measurements.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import keras
from keras import ops


def plain_forced() -> bool:
    """Whether the environment variable `KERAS_SGE_PLAIN` asks for the plain definition."""
    return os.environ.get("KERAS_SGE_PLAIN", "") not in ("", "0")


def find(layer: keras.layers.Layer) -> Callable[[Any, Any], Any] | None:
    """Returns the backend path for `layer` on the active backend, or None.

    Args:
        layer: A `SpatialGroupEnhance` layer.

    Returns:
        A function `f(layer, inputs) -> outputs` that replaces the layer's
        `call`, or None for the plain definition.
    """
    if plain_forced():
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return None if _tensorflow_inside_xla() else tensorflow_outside_xla
    if backend == "torch" and layer.data_format == "channels_first":
        return torch_channels_first
    if not _jax_on_cpu():
        # On torch in channels_last no arrangement measured faster than the
        # definition; on GPUs JAX's was not measured.
        return None
    if layer.data_format == "channels_first":
        return jax_channels_first
    return jax_channels_last


@functools.cache
def _jax_on_cpu() -> bool:
    """Whether the backend is JAX, computing on the CPU."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


# --- JAX on the CPU, channels_first --------------------------------------------
#
# Works around: summing `x * g` over a group's channels, the middle axis of the
# (N, G, C/G, H*W) view, stores the full-size product and reduces a strided
# axis; XLA:CPU's YNNPACK fusions (jaxlib 0.10) run autodiff of the
# statistics on (N, G, 1, H*W) tensors slower than on (N, G, H*W). Here the similarity is a batched
# (1 x C/G) @ (C/G x H*W) matmul on the view, which reads x once; its gradient
# gives x its share element-wise (fused into the rest of dx), not as the
# outer-product matmul autodiff would write out.
# Backends, devices: JAX on the CPU, channels_first. (TensorFlow's XLA, without
# YNNPACK, ran the definition as fast.)
# Measurement: see "Fast paths" in docs/performance.md.
# Still needed? Compare `--layer-only --data-format channels_first --backends
# jax` with and without KERAS_SGE_PLAIN=1.


def jax_channels_first(layer, inputs):
    """The layer on the (N, G, C/G, H*W) view, the similarity as a matmul."""
    return layer._on_groups(
        inputs, lambda x: _channels_first_by_matmul(layer, x, _similarity_by_matmul)
    )


# --- torch, channels_first -----------------------------------------------------
#
# Works around: eager torch runs the similarity `sum(x * g)` over the middle
# axis of the (N, G, C/G, H*W) view as a multiply that writes an input-sized
# product and a strided reduction that reads it back, and autodiff does the
# same again. The batched (1 x C/G) @ (C/G x H*W) matmul reads x once, and its
# autodiff gradient is two matmuls. (JAX's custom gradient above does not help
# here: torch runs each element-wise op as a kernel of its own.)
# Backends, devices: torch, channels_first (measured on the CPU; the layer
# before this version used the same matmul on torch everywhere, GPUs included).
# Measurement: "torch, channels_first" in docs/performance.md.
# Still needed? Compare `--layer-only --data-format channels_first --backends
# torch` with and without KERAS_SGE_PLAIN=1.


def torch_channels_first(layer, inputs):
    """The layer on the (N, G, C/G, H*W) view, the similarity as a plain matmul."""

    def similarity(x, g):
        return ops.matmul(ops.swapaxes(g, 2, 3), x)

    return layer._on_groups(inputs, lambda x: _channels_first_by_matmul(layer, x, similarity))


def _channels_first_by_matmul(layer, x, similarity):
    """`x * gate` with `similarity(x, g)` giving s as (N, G, 1, H*W)."""
    positions, _ = layer._position_counts(x)
    g = layer._sum_over_positions(x) / positions  # (N, G, C/G, 1)
    s = ops.squeeze(similarity(x, g), 2)  # (N, G, H*W)
    gate = layer._gate_from_similarity(s, x, position_axis=2, parameter_shape=(layer.groups, 1))
    return x * ops.expand_dims(gate, 2)


@ops.custom_gradient
def _similarity_by_matmul(x, g):
    """`sum(x * g, axis=2, keepdims=True)` for x (N, G, C/G, P), g (N, G, C/G, 1).

    Its gradient gives x its share element-wise (fused into the rest of dx by
    XLA) rather than as the outer-product matmul that autodiff writes out.
    """

    def gradient(upstream):
        return upstream * g, ops.matmul(x, ops.swapaxes(upstream, 2, 3))

    return ops.matmul(ops.swapaxes(g, 2, 3), x), gradient


# --- JAX on the CPU, channels_last ---------------------------------------------
#
# Works around: XLA:CPU (jaxlib 0.10) hands reductions to YNNPACK, which runs a
# sum over a group's few trailing channels 5-30x slower than XLA's own loops,
# stores a product `x * g` that it fuses into the neighbouring reduction, and
# reduces a product over positions about 25x slower when a size-1 axis trails
# it. Here the per-position tensors are (N, H*W, G), without the size-1 axis,
# and both channel sums (the similarity, and the gate's cotangent `<dy, x>`)
# are halvings, which XLA fuses into element-wise loops.
# Backends, devices: JAX on the CPU, channels_last. (TensorFlow's XLA, without
# YNNPACK, ran the definition as fast.)
# Measurement: see "Fast paths" in docs/performance.md.
# Still needed? Compare `--layer-only --data-format channels_last --backends
# jax` with and without KERAS_SGE_PLAIN=1.


def jax_channels_last(layer, inputs):
    """The layer on the (N, H*W, G, C/G) view, without size-1 axes or short-axis sums."""
    return layer._on_groups(inputs, lambda x: _jax_channels_last_groups(layer, x))


def _jax_channels_last_groups(layer, x):
    """`x * gate` for the float32 (N, H*W, G, C/G) view."""
    positions, _ = layer._position_counts(x)
    g = layer._sum_over_positions(x) / positions
    s = _similarity(x, g)  # (N, H*W, G)
    gate = layer._gate_from_similarity(s, x, position_axis=1, parameter_shape=(layer.groups,))
    return _scale_channels(x, gate)


@ops.custom_gradient
def _similarity(x, g):
    """`sum(x * g, axis=-1)` for x (N, P, G, C/G) and g (N, 1, G, C/G), by halving.

    Its gradient takes `dg` as a contraction over positions: as a reduction
    of a product with a trailing size-1 axis, YNNPACK runs it many times slower.
    """

    def gradient(upstream):
        d_g = ops.expand_dims(ops.einsum("npgc,npg->ngc", x, upstream), 1)
        return ops.expand_dims(upstream, -1) * g, d_g

    return _dot_over_last_axis(x, g), gradient


@ops.custom_gradient
def _scale_channels(x, gate):
    """`x * gate[..., None]`, whose gradient sums `dy * x` by halving too."""

    def gradient(upstream):
        return upstream * ops.expand_dims(gate, -1), _dot_over_last_axis(upstream, x)

    return x * ops.expand_dims(gate, -1), gradient


def _dot_over_last_axis(a, b):
    """`sum(a * b, axis=-1)` by repeated halving (first half plus second half).

    The first step multiplies as it adds, so `a * b` is never stored; an odd
    middle element is set aside and added at the end.
    """
    size, total, remainder = a.shape[-1], None, None

    def part(start, stop):
        # A slice of a * b before the first step, of the running sum after.
        if total is None:
            return a[..., start:stop] * b[..., start:stop]
        return total[..., start:stop]

    while size > 1:
        half = size // 2
        if size % 2:
            middle = part(half, half + 1)
            remainder = middle if remainder is None else remainder + middle
        total = part(0, half) + part(size - half, size)
        size = half
    total = part(0, 1)
    if remainder is not None:
        total = total + remainder
    return ops.squeeze(total, axis=-1)


# --- TensorFlow outside XLA ------------------------------------------------------
#
# Works around, in a traced function (`model.fit`, `predict`: Keras turns XLA
# off on machines with only CPUs): TensorFlow's graph kernels write each
# product of the definition out in full and broadcast slowly along a group's
# trailing channels. The path runs the definition compiled with XLA, which
# fuses them, inside the surrounding graph.
# Eagerly (where compiling each new shape would cost more than it saves), and on
# other devices: TensorFlow's kernels add up a reduced axis one element after
# another, so the group mean over H*W positions carries H*W rounding steps
# where torch sums pairwise, and the normalisation amplifies that error where a
# group's similarity barely varies. The path sums blocks of about sqrt(H*W)
# positions, then the blocks. (Inside XLA, which merges the two sums into one
# that rounds more than its own single sum, the definition runs as it stands.)
# Backends, devices: TensorFlow outside XLA; measured on the CPU.
# Measurement: "TensorFlow outside XLA" and "Precision" in docs/performance.md.
# Still needed? Time `python -m benchmarks.compare_backends --backends
# tensorflow --layer-only` (TensorFlow as Keras runs it by default: no XLA on a
# machine with only CPUs) with and without KERAS_SGE_PLAIN=1, and run
# `KERAS_BACKEND=tensorflow KERAS_SGE_PLAIN=1 pytest tests/test_sge_precision.py`,
# which fails where the plain sum is too coarse.


def tensorflow_outside_xla(layer, inputs):
    """The definition compiled with XLA in a graph on the CPU; else with a blocked group mean."""
    import tensorflow as tf

    if not tf.executing_eagerly() and _tensorflow_cpu_only():
        compiled = _definition_compiled_with_xla(layer)
        gamma, beta = (tf.convert_to_tensor(w.value) for w in (layer.gamma, layer.beta))
        return compiled(inputs, gamma, beta)

    def blocked(x):
        positions, _ = layer._position_counts(x)
        g = _sum_in_blocks(x, layer._position_axis) / positions
        return x * layer._gate(x, g)

    return layer._on_groups(inputs, blocked)


# One compiled function per layer configuration, so that layers alike (the
# blocks of a ResNet stage) share XLA's compilation of each input shape.
_XLA_DEFINITIONS: dict = {}


def _definition_compiled_with_xla(layer):
    """`f(inputs, gamma, beta)`: the plain `call` of layers configured like `layer`, under XLA."""
    key = (
        type(layer),
        layer.groups,
        layer.epsilon,
        layer.data_format,
        layer.normalize,
        layer.compute_dtype,
    )
    if key not in _XLA_DEFINITIONS:
        import tensorflow as tf

        # A stand-in whose gamma and beta are replaced by the arguments; built
        # outside the trace, as a function may not create variables.
        with tf.init_scope():
            template = layer.__class__.from_config(layer.get_config())
            channels_last = layer.data_format == "channels_last"
            template.build((1, 1, 1, layer.groups) if channels_last else (1, layer.groups, 1, 1))

        def definition(inputs, gamma, beta):
            mapping = [(template.gamma, gamma), (template.beta, beta)]
            with keras.StatelessScope(state_mapping=mapping):
                return template._definition(inputs)

        _XLA_DEFINITIONS[key] = tf.function(definition, jit_compile=True)
    return _XLA_DEFINITIONS[key]


@functools.cache
def _tensorflow_cpu_only() -> bool:
    """Whether TensorFlow sees no device but CPUs."""
    import tensorflow as tf

    return all(d.device_type == "CPU" for d in tf.config.list_physical_devices())


def _sum_in_blocks(x, axis):
    """Sums `x` over `axis` (keeping it) in blocks of about sqrt(size) elements."""
    size = x.shape[axis]
    block = math.isqrt(size) if isinstance(size, int) else 1
    while block > 1 and size % block:
        block -= 1
    if block == 1:
        return ops.sum(x, axis=axis, keepdims=True)
    blocked_shape = [-1 if d is None else d for d in x.shape]
    blocked_shape[axis : axis + 1] = [size // block, block]
    block_sums = ops.sum(ops.reshape(x, blocked_shape), axis=axis + 1)
    return ops.sum(block_sums, axis=axis, keepdims=True)


def _tensorflow_inside_xla() -> bool:
    """Whether TensorFlow is tracing a function for XLA (`jit_compile=True`)."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    try:
        # No public API tells; tf.keras's recurrent layers asked the same way.
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # Then the path runs inside XLA too: as precise, perhaps slower.
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
