"""SGE kernel for TensorFlow: the definition compiled with XLA inside graphs.

Works around, in a traced function (`model.fit`, `predict`: Keras turns XLA
off on machines with only CPUs): TensorFlow's graph kernels write each product
of the definition out in full and broadcast slowly along a group's trailing
channels. The kernel runs the definition compiled with XLA, which fuses them,
inside the surrounding graph (inside a function already compiled with XLA it
is simply part of that compilation).
Eagerly (where compiling each new shape would cost more than it saves) the
definition runs as it stands: its blocked sums over positions are as precise.
Measured: "Numbers on a 2-core CPU" and "Precision" in docs/performance.md.
Still needed? `python -m benchmarks.compare_backends --backends tensorflow
--layer-only` with and without KERAS_SGE_PLAIN=1.
"""

from __future__ import annotations

import tensorflow as tf

from keras_sge.ops import sge

# The definition compiled with XLA; tf.function traces it once per input
# signature and static argument (groups, epsilon, data_format, normalize).
_definition_with_xla = tf.function(sge.definition, jit_compile=True)


def spatial_group_enhance(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_last", normalize=True
):
    """The op: the definition under XLA in a graph, as it stands eagerly."""
    arguments = dict(groups=groups, epsilon=epsilon, data_format=data_format, normalize=normalize)
    if not tf.executing_eagerly():
        # Tensors, not Keras variables, cross into the compiled function.
        gamma, beta = tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta)
        return _definition_with_xla(x, gamma, beta, **arguments)
    return sge.definition(x, gamma, beta, **arguments)
