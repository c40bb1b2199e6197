"""SGE kernel for torch in channels_first.

Works around: eager torch runs the similarity `sum(x * g)` over the middle
axis of the (N, G, C/G, H*W) view as a multiply that writes an input-sized
product and a strided reduction that reads it back, and autodiff does the
same again. The batched (1 x C/G) @ (C/G x H*W) matmul reads x once, and its
autodiff gradient is two matmuls.
Measured: "Numbers on a 2-core CPU" in docs/performance.md.
Still needed? `python -m benchmarks.compare_backends --backends torch --layer-only
--data-format channels_first` with and without KERAS_SGE_PLAIN=1.
"""

from __future__ import annotations

from keras import ops

from keras_sge.ops import sge


def spatial_group_enhance_channels_first(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_first", normalize=True
):
    """The op on the (N, G, C/G, H*W) view, the similarity as a plain matmul."""

    def similarity(view, g):
        return ops.matmul(ops.swapaxes(g, 2, 3), view)

    def gated(view):
        return sge.gated_by_similarity_matmul(view, gamma, beta, similarity, epsilon, normalize)

    return sge.on_groups(x, groups, "channels_first", gated)
