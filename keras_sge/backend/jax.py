"""SGE kernels for JAX on the CPU: the definition rearranged for XLA:CPU's YNNPACK fusions.

Both are the same function as `keras_sge.ops.sge.definition`, in
`keras.ops` on the same float32 grouped view: channels_first with a small
custom gradient, channels_last with its whole backward pass derived by hand.
With the YNNPACK fusions switched off (`ynn_fusions_off`) the definition
ran faster than either, and the switch picks it.
"""

from __future__ import annotations

import os

from keras import ops

from keras_sge.ops import sge


def on_cpu() -> bool:
    """Whether JAX computes on the CPU by default."""
    import jax

    return jax.default_backend() == "cpu"


def ynn_fusions_off(xla_flags: str | None = None) -> bool:
    """Whether `XLA_FLAGS` switches XLA:CPU's YNNPACK fusions off.

    That is `--xla_cpu_experimental_ynn_fusion_type=` with an empty list (an
    experimental flag of jaxlib 0.10-0.11); the kernels here are arranged
    for those fusions, and without them the definition measured faster.

    Args:
        xla_flags: The flags to read; `None`: the environment's `XLA_FLAGS`.
    """
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    values = [
        flag.partition("=")[2]
        for flag in flags.split()
        if flag.partition("=")[0].lstrip("-") == "xla_cpu_experimental_ynn_fusion_type"
    ]
    # XLA applies the flags in order: the last one holds.
    return bool(values) and values[-1] == ""


# --- channels_first --------------------------------------------------------------
#
# Works around: summing `x * g` over a group's channels, the middle axis of the
# (N, G, C/G, H*W) view, stores the full-size product and reduces a strided
# axis; XLA:CPU's YNNPACK fusions (jaxlib 0.10) run autodiff of the statistics
# on (N, G, 1, H*W) tensors slower than on (N, G, H*W). Here the similarity is
# a batched (1 x C/G) @ (C/G x H*W) matmul on the view, which reads x once; its
# gradient gives x its share element-wise (fused into the rest of dx), not as
# the outer-product matmul autodiff would write out.
# Measured: "Numbers on a 2-core CPU" in docs/performance.md; with the YNNPACK fusions
# off the definition was as fast or faster ("The kernels inside the network" there).
# Still needed? `python -m benchmarks.compare_backends --backends jax --with-definition
# --data-format channels_first` (the layer and the network, kernel and definition in turn).


def spatial_group_enhance_channels_first(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_first", normalize=True
):
    """The op on the (N, G, C/G, H*W) view, the similarity as a matmul."""

    def gated(view):
        return sge.gated_by_similarity_matmul(
            view, gamma, beta, _similarity_by_matmul, epsilon, normalize
        )

    return sge.on_groups(x, groups, "channels_first", gated)


@ops.custom_gradient
def _similarity_by_matmul(x, g):
    """`sum(x * g, axis=2, keepdims=True)` for x (N, G, C/G, P), g (N, G, C/G, 1).

    Its gradient gives x its share element-wise (fused into the rest of dx by
    XLA) rather than as the outer-product matmul that autodiff writes out.
    """

    def gradient(upstream):
        return upstream * g, ops.matmul(x, ops.swapaxes(upstream, 2, 3))

    return ops.matmul(ops.swapaxes(g, 2, 3), x), gradient


# --- channels_last ---------------------------------------------------------------
#
# Works around: XLA:CPU (jaxlib 0.10) hands reductions to YNNPACK, which runs a
# sum over a group's few trailing channels 5-30x slower than XLA's own loops,
# and writes out in full a product (such as `(x - g) * d_s`) that it sums over
# positions; and autodiff of the definition writes further input-sized
# intermediates through the centring `x - g` and the blocked sums. Here the
# backward pass is derived by hand (`keras_sge.ops.sge.gated_backward`), the
# per-position tensors are (N, H*W, G), without a size-1 axis, both channel sums
# (the similarity, and the gate's cotangent `<dy, x>`) are halvings, and the
# sum over positions of `(x - g) * d_s` halves each block of positions with the
# product formed in the first step: all fused by XLA into element-wise loops.
# Measured: "Numbers on a 2-core CPU" in docs/performance.md; with the YNNPACK fusions
# off the definition was as fast or faster ("The kernels inside the network" there).
# Still needed? `python -m benchmarks.compare_backends --backends jax --with-definition
# --data-format channels_last` (the layer and the network, kernel and definition in turn).


def spatial_group_enhance_channels_last(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_last", normalize=True
):
    """The op on the (N, H*W, G, C/G) view with a hand-derived backward pass."""
    gamma, beta = (ops.cast(w, "float32") for w in (gamma, beta))
    settings = dict(epsilon=epsilon, normalize=normalize, data_format="channels_last")

    @ops.custom_gradient
    def gated(view, gamma, beta):
        y, statistics = sge.gated_forward(
            view, gamma, beta, dot_over_channels=_dot_over_channels, **settings
        )

        def gradient(upstream):
            return sge.gated_backward(
                upstream,
                view,
                gamma,
                statistics,
                dot_over_channels=_dot_over_channels,
                centred_sum_over_positions=_centred_sum_over_positions,
                **settings,
            )

        return y, gradient

    return sge.on_groups(x, groups, "channels_last", lambda view: gated(view, gamma, beta))


def _dot_over_channels(a, b, data_format="channels_last"):
    """`sum(a * b, axis=-1)` by halving; the channels_last view's channel axis."""
    return ops.squeeze(_halving_sum(a, b, -1), axis=-1)


def _centred_sum_over_positions(view, offset, weights, data_format="channels_last"):
    """`sge.sum_over_positions((view - offset) * weights, 1)` for the (N, P, G, C) view.

    Each block of positions (as `sge.sum_over_positions` blocks them) is
    halved with the product formed in its first step, so the product is never
    stored; the block sums then go to `sge.sum_over_positions`.
    """
    size = view.shape[1]
    if not isinstance(size, int) or size <= sge.BLOCK_SIZE:
        return sge.centred_sum_over_positions(view, offset, weights, data_format)
    block = sge.largest_divisor(size, sge.BLOCK_SIZE)

    def blocks(tensor):
        return ops.reshape(tensor, (-1, size // block, block, *tensor.shape[2:]))

    offset = None if offset is None else ops.expand_dims(offset, 1)
    sums = ops.squeeze(_halving_sum(blocks(view), blocks(weights), 2, offset), axis=2)
    return sge.sum_over_positions(sums, 1)


def _halving_sum(a, b, axis, offset=None):
    """`sum((a - offset) * b, axis, keepdims=True)` by repeated halving along `axis`.

    First half plus second half, an odd last element set aside and added at
    the end; the first step multiplies as it adds, so the product is never
    stored, and XLA fuses all the steps into one element-wise loop. `offset`
    None: `a * b`.
    """
    axis %= len(a.shape)
    size, total, remainder = a.shape[axis], None, None

    def part(start, stop):
        # A slice of the product before the first step, of the running sum after.
        index = (slice(None),) * axis + (slice(start, stop),)
        if total is not None:
            return total[index]
        return (a[index] if offset is None else a[index] - offset) * b[index]

    while size > 1:
        half = size // 2
        if size % 2:
            middle = part(size - 1, size)
            remainder = middle if remainder is None else remainder + middle
        total = part(0, half) + part(half, 2 * half)
        size = half
    total = part(0, 1)
    return total if remainder is None else total + remainder
