"""SGE kernels for JAX on the CPU: the definition rearranged for XLA:CPU.

Both are the same function as `keras_sge.ops.sge.definition`, in
`keras.ops` with small custom gradients, on the same float32 grouped view.
"""

from __future__ import annotations

from keras import ops

from keras_sge.ops import sge


def on_cpu() -> bool:
    """Whether JAX computes on the CPU by default."""
    import jax

    return jax.default_backend() == "cpu"


# --- channels_first --------------------------------------------------------------
#
# Works around: summing `x * g` over a group's channels, the middle axis of the
# (N, G, C/G, H*W) view, stores the full-size product and reduces a strided
# axis; XLA:CPU's YNNPACK fusions (jaxlib 0.10) run autodiff of the statistics
# on (N, G, 1, H*W) tensors slower than on (N, G, H*W). Here the similarity is
# a batched (1 x C/G) @ (C/G x H*W) matmul on the view, which reads x once; its
# gradient gives x its share element-wise (fused into the rest of dx), not as
# the outer-product matmul autodiff would write out.
# Measured: "Numbers on a 2-core CPU" in docs/performance.md.
# Still needed? `python -m benchmarks.compare_backends --backends jax --layer-only
# --data-format channels_first` with and without KERAS_SGE_PLAIN=1.


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
# stores a product `x * g` that it fuses into the neighbouring reduction, and
# reduces a product over positions about 25x slower when a size-1 axis trails
# it. Here the per-position tensors are (N, H*W, G), without the size-1 axis,
# and both channel sums (the similarity, and the gate's cotangent `<dy, x>`)
# are halvings, which XLA fuses into element-wise loops.
# Measured: "Numbers on a 2-core CPU" in docs/performance.md.
# Still needed? `python -m benchmarks.compare_backends --backends jax --layer-only
# --data-format channels_last` with and without KERAS_SGE_PLAIN=1.


def spatial_group_enhance_channels_last(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_last", normalize=True
):
    """The op on the (N, H*W, G, C/G) view, without size-1 axes or short-axis sums."""

    def gated(view):
        positions, divisor = sge.position_counts(view, 1)
        g = sge.sum_over_positions(view, 1) / positions
        s = _similarity(sge.similarity_terms(view, g, normalize), g)  # (N, P, G)
        gate = sge.gate_from_similarity(
            s,
            *sge.float32_parameters(gamma, beta, (groups,)),
            positions=positions,
            divisor=divisor,
            epsilon=epsilon,
            normalize=normalize,
            axis=1,
        )
        return _scale_channels(view, gate)

    return sge.on_groups(x, groups, "channels_last", gated)


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
