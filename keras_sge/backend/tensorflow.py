"""SGE kernel for TensorFlow: a hand-derived backward pass, both passes under XLA in graphs.

Works around, in a traced function (`model.fit`, `predict`: Keras turns XLA
off on machines with only CPUs): TensorFlow's graph kernels write each product
of the definition out in full and broadcast slowly along a group's trailing
channels; and autodiff of the definition, even compiled with XLA, writes
input-sized intermediates (through the centring `x - g` and the blocked sums),
and the function compiled around it hands the grouped view on to its gradient
as a copy. Here a `tf.custom_gradient` in the surrounding graph calls two
functions compiled with XLA, the forward pass and the hand-derived backward
pass of `keras_sge.ops.sge.gated_backward`; both read x from the graph, and
only the small statistics (group means, similarity, gate, std) pass between
them. Inside a function already compiled with XLA they are part of that
compilation. Eagerly (where compiling each new shape would cost more than it
saves) the same two passes run without XLA.
Measured: "Numbers on a 2-core CPU" and "Precision" in docs/performance.md.
Still needed? `python -m benchmarks.compare_backends --backends tensorflow
--with-definition` (the layer and the network, kernel and definition in turn).
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from keras_sge.ops import sge


def spatial_group_enhance(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_last", normalize=True
):
    """The op with a hand-derived backward pass; each pass under XLA in a graph."""
    settings = (groups, float(epsilon), data_format, normalize)
    compiled = not tf.executing_eagerly()
    forward, backward = (
        (_forward_with_xla, _backward_with_xla) if compiled else (_forward, _backward)
    )
    # Tensors, not Keras variables, enter the custom gradient.
    gamma, beta = (tf.cast(tf.convert_to_tensor(w), "float32") for w in (gamma, beta))

    @tf.custom_gradient
    def gated(x, gamma, beta):
        y, statistics = forward(x, gamma, beta, settings)

        def gradient(upstream):
            return backward(upstream, x, gamma, statistics, settings)

        return y, gradient

    return gated(x, gamma, beta)


def _forward(x, gamma, beta, settings):
    """`(y, statistics)` of `sge.gated_forward` on the grouped view of x."""
    return _on_grouped_views(sge.gated_forward, settings, x, (x,), gamma, beta)


def _backward(upstream, x, gamma, statistics, settings):
    """`(dx, d_gamma, d_beta)` of `sge.gated_backward` on the grouped views."""
    return _on_grouped_views(sge.gated_backward, settings, x, (upstream, x), gamma, statistics)


def _on_grouped_views(function, settings, x, tensors, *arguments):
    """`function` on the grouped views of `tensors` (each of x's shape), with
    `settings` as keywords; its first output back in x's shape and dtype."""
    groups, epsilon, data_format, normalize = settings
    views = (sge.grouped_view(tensor, groups, data_format) for tensor in tensors)
    first, *rest = function(
        *views, *arguments, epsilon=epsilon, normalize=normalize, data_format=data_format
    )
    return (ops.cast(ops.reshape(first, ops.shape(x)), x.dtype), *rest)


# tf.function traces each once per input signature and `settings`.
_forward_with_xla = tf.function(_forward, jit_compile=True)
_backward_with_xla = tf.function(_backward, jit_compile=True)
