"""SGE kernel for TensorFlow: a hand-derived backward pass, both passes under XLA in graphs.

Works around, in a traced function (`model.fit`, `predict`: Keras turns XLA
off on machines with only CPUs): TensorFlow's graph kernels write each product
of the definition out in full and broadcast slowly along a group's trailing
channels; and autodiff of the definition, even compiled with XLA, writes
input-sized intermediates (through the centring `x - g` and the blocked sums),
and the function compiled around it hands the grouped view on to its gradient
as a copy. Here a `tf.custom_gradient` in the surrounding graph calls
functions compiled with XLA: the forward pass, and the hand-derived backward
pass of `keras_sge.ops.sge.gated_backward`, for channels_last in its two halves
(compiled as one, XLA recomputes the similarity's gradient inside the loops
over x: 12-28 % slower forward+backward; for channels_first 0-26 % faster, so
there it is one). All read x from the graph, and only small tensors (group
means, similarity, gate, std, its gradient) pass between them.
Inside a function already compiled with XLA they are part of that
compilation. Eagerly (where compiling each new shape would cost more than it
saves) the same passes run without XLA.
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
    forward = _forward_with_xla if compiled else _forward
    # Tensors, not Keras variables, enter the custom gradient.
    gamma, beta = (tf.cast(tf.convert_to_tensor(w), "float32") for w in (gamma, beta))

    @tf.custom_gradient
    def gated(x, gamma, beta):
        y, statistics = forward(x, gamma, beta, settings)

        def gradient(upstream):
            return _backward(upstream, x, gamma, statistics, settings, compiled)

        return y, gradient

    return gated(x, gamma, beta)


def _forward(x, gamma, beta, settings):
    """`(y, statistics)` of `sge.gated_forward` on the grouped view of x."""
    _, epsilon, data_format, normalize = settings
    y, statistics = sge.gated_forward(
        *_grouped_views(settings, x),
        gamma,
        beta,
        epsilon=epsilon,
        normalize=normalize,
        data_format=data_format,
    )
    return _shaped_like(x, y), statistics


def _backward(upstream, x, gamma, statistics, settings, compiled):
    """`(dx, d_gamma, d_beta)` of `sge.gated_backward`; compiled channels_last in two halves."""
    if not compiled:
        return _whole_backward(upstream, x, gamma, statistics, settings)
    if settings[2] == "channels_first":
        return _whole_backward_with_xla(upstream, x, gamma, statistics, settings)
    d_s, d_gamma, d_beta = _similarity_gradient_with_xla(upstream, x, gamma, statistics, settings)
    return _view_gradient_with_xla(upstream, x, statistics, d_s, settings), d_gamma, d_beta


def _whole_backward(upstream, x, gamma, statistics, settings):
    """`sge.gated_backward` on the grouped views: both halves in one function."""
    _, epsilon, data_format, normalize = settings
    d_view, d_gamma, d_beta = sge.gated_backward(
        *_grouped_views(settings, upstream, x),
        gamma,
        statistics,
        epsilon=epsilon,
        normalize=normalize,
        data_format=data_format,
    )
    return _shaped_like(x, d_view), d_gamma, d_beta


def _similarity_gradient(upstream, x, gamma, statistics, settings):
    """`(d_s, d_gamma, d_beta)` of `sge.similarity_gradient` on the grouped views."""
    _, epsilon, data_format, normalize = settings
    return sge.similarity_gradient(
        *_grouped_views(settings, upstream, x),
        gamma,
        statistics,
        epsilon=epsilon,
        normalize=normalize,
        data_format=data_format,
    )


def _view_gradient(upstream, x, statistics, d_s, settings):
    """dx of `sge.view_gradient` on the grouped views, in x's shape and dtype."""
    _, _, data_format, normalize = settings
    d_view = sge.view_gradient(
        *_grouped_views(settings, upstream, x),
        statistics,
        d_s,
        normalize=normalize,
        data_format=data_format,
    )
    return _shaped_like(x, d_view)


def _grouped_views(settings, *tensors):
    """The float32 grouped views of `tensors`."""
    groups, _, data_format, _ = settings
    return [sge.grouped_view(tensor, groups, data_format) for tensor in tensors]


def _shaped_like(x, view):
    """A tensor on the grouped view, back in x's shape and dtype."""
    return ops.cast(ops.reshape(view, ops.shape(x)), x.dtype)


# tf.function traces each once per input signature and `settings`.
_forward_with_xla = tf.function(_forward, jit_compile=True)
_similarity_gradient_with_xla = tf.function(_similarity_gradient, jit_compile=True)
_view_gradient_with_xla = tf.function(_view_gradient, jit_compile=True)
_whole_backward_with_xla = tf.function(_whole_backward, jit_compile=True)
