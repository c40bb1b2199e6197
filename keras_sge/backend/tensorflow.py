"""SGE kernel for TensorFlow: the definition under XLA in graphs, a blocked group mean eagerly.

Works around, in a traced function (`model.fit`, `predict`: Keras turns XLA
off on machines with only CPUs): TensorFlow's graph kernels write each product
of the definition out in full and broadcast slowly along a group's trailing
channels. The kernel runs the definition compiled with XLA, which fuses them,
inside the surrounding graph (inside a function already compiled with XLA it
is simply part of that compilation).
Eagerly (where compiling each new shape would cost more than it saves):
TensorFlow's kernels add up a reduced axis one element after another, so the
group mean over H*W positions carries H*W rounding steps where torch sums
pairwise, and the normalisation amplifies that error where a group's
similarity barely varies. The kernel sums blocks of about sqrt(H*W)
positions, then the blocks.
Measured: "Kernels" and "Precision" in docs/performance.md, on the CPU.
Still needed? `KERAS_BACKEND=tensorflow python -m benchmarks.layer_benchmark`
with and without KERAS_SGE_PLAIN=1, and `KERAS_BACKEND=tensorflow
KERAS_SGE_PLAIN=1 pytest tests/test_sge_precision.py`.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras import ops

from keras_sge.ops import sge

# The definition compiled with XLA; tf.function traces it once per input
# signature and static argument (groups, epsilon, data_format, normalize).
_definition_with_xla = tf.function(sge.definition, jit_compile=True)


def spatial_group_enhance(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_last", normalize=True
):
    """The op: the definition under XLA in a graph, with a blocked group mean eagerly."""
    arguments = dict(groups=groups, epsilon=epsilon, data_format=data_format, normalize=normalize)
    if not tf.executing_eagerly():
        # Tensors, not Keras variables, cross into the compiled function.
        gamma, beta = tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta)
        return _definition_with_xla(x, gamma, beta, **arguments)
    axis = sge.position_axis(data_format)

    def gated(view):
        g = sum_in_blocks(view, axis) / sge.position_counts(view, axis)[0]
        return view * sge.view_gate(
            view,
            gamma,
            beta,
            epsilon=epsilon,
            data_format=data_format,
            normalize=normalize,
            group_mean=g,
        )

    return sge.on_groups(x, groups, data_format, gated)


def sum_in_blocks(x, axis: int):
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
