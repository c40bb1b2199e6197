"""SGE kernels for torch: the definition rearranged for eager torch.

Both compute the same function as `keras_sge.ops.sge.definition` on the same
float32 grouped view.
"""

from __future__ import annotations

import torch
from keras import ops

from keras_sge.ops import sge


def on_cpu() -> bool:
    """Whether Keras runs torch on the CPU (no CUDA device)."""
    return not torch.cuda.is_available()


# --- channels_first, on the CPU --------------------------------------------------
#
# Works around: on the CPU, eager torch runs the similarity `sum(x * g)` over the middle
# axis of the (N, G, C/G, H*W) view as a multiply that writes an input-sized
# product and a strided reduction that reads it back, and autodiff does the
# same again. The batched (1 x C/G) @ (C/G x H*W) matmul reads x once, and its
# autodiff gradient is two matmuls.
# Measured: "Numbers on a 2-core CPU" in docs/performance.md; on a GPU, where eager
# torch is bound by dispatch, the definition was faster ("GPU" there).
# Still needed? `python -m benchmarks.compare_backends --backends torch --with-definition
# --data-format channels_first` (the layer and the network, kernel and definition in turn).


def spatial_group_enhance_channels_first(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_first", normalize=True
):
    """The op on the (N, G, C/G, H*W) view, the similarity as a plain matmul."""

    def similarity(view, g):
        return ops.matmul(ops.swapaxes(g, 2, 3), view)

    def gated(view):
        return sge.gated_by_similarity_matmul(view, gamma, beta, similarity, epsilon, normalize)

    return sge.on_groups(x, groups, "channels_first", gated)


# --- channels_last, on the CPU ---------------------------------------------------
#
# Works around: on the CPU every input-sized tensor that eager torch allocates
# costs page faults (a multiply into a new tensor took 3-5x one into an
# existing buffer), torch sums a group's few trailing channels 5x slower than
# a product with a vector of ones, and autodiff of the definition writes about
# ten input-sized tensors. Here the backward pass is derived by hand: one
# workspace from the forward pass is reused for every input-sized
# intermediate, the channel sums are products with ones, and dx is two fused
# multiply-adds. The centred terms `x - g` are formed again rather than
# expanded, so it is as precise as the definition.
# Under `torch.compile` the definition runs (the compiler fuses it).
# Measured: "Numbers on a 2-core CPU" in docs/performance.md.
# Still needed? `python -m benchmarks.compare_backends --backends torch --with-definition
# --data-format channels_last` (the layer and the network, kernel and definition in turn).


def spatial_group_enhance_channels_last(
    x, gamma, beta, *, groups, epsilon=1e-5, data_format="channels_last", normalize=True
):
    """The op on the (N, H*W, G, C/G) view with a hand-derived backward pass."""
    if torch.compiler.is_compiling():
        arguments = dict(groups=groups, epsilon=epsilon, normalize=normalize)
        return sge.definition(x, gamma, beta, data_format=data_format, **arguments)
    gamma, beta = (ops.cast(ops.convert_to_tensor(w), "float32") for w in (gamma, beta))
    return sge.on_groups(
        x,
        groups,
        "channels_last",
        lambda view: _GatedChannelsLast.apply(view, gamma, beta, float(epsilon), normalize),
    )


def _sum_channels(tensor):
    """`sum(tensor, -1)` as a product with ones: BLAS, ~5x faster than torch's sum here."""
    return tensor @ torch.ones(tensor.shape[-1], dtype=tensor.dtype, device=tensor.device)


class _GatedChannelsLast(torch.autograd.Function):
    """`view * gate` for the (N, P, G, C) view; gamma and beta of shape (G,)."""

    @staticmethod
    def forward(ctx, view, gamma, beta, epsilon, normalize):
        positions = view.shape[1]
        divisor = float(max(positions - 1, 1))
        g = view.sum(1, keepdim=True) / positions  # (N, 1, G, C)
        workspace = torch.sub(view, g) if normalize else view.clone()
        s = _sum_channels(workspace.mul_(g))  # (N, P, G)
        if normalize:
            variance = s.square().sum(1, keepdim=True) / divisor
            std = torch.sqrt(variance + sge.VARIANCE_FLOOR)  # (N, 1, G)
            scale = gamma / (std + epsilon)
        else:
            std = torch.ones_like(gamma)
            scale = gamma.expand(s.shape[0], 1, -1)
        gate = torch.sigmoid(torch.addcmul(beta.expand_as(scale), s, scale))
        ctx.save_for_backward(view, g, s, gate, gamma, std, scale, workspace)
        ctx.constants = (positions, divisor, epsilon, normalize)
        return view * gate.unsqueeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream):
        view, g, s, gate, gamma, std, scale, workspace = ctx.saved_tensors
        positions, divisor, epsilon, normalize = ctx.constants
        # Through y = x * gate, and the sigmoid.
        d_z = _sum_channels(torch.mul(upstream, view, out=workspace))
        d_z.mul_(gate).mul_(1 - gate)  # (N, P, G)
        d_beta = d_z.sum((0, 1))
        d_scale = (d_z * s).sum(1, keepdim=True)  # (N, 1, G)
        if normalize:
            # scale = gamma / (std + epsilon), std = sqrt(sum(s^2) / divisor).
            inverse = 1.0 / (std + epsilon)
            d_gamma = (d_scale * inverse).sum((0, 1))
            d_s = d_z * scale - (d_scale * gamma * inverse * inverse / (std * divisor)) * s
            torch.sub(view, g, out=workspace)
        else:
            d_gamma = d_scale.sum((0, 1))
            d_s = d_z * gamma
            workspace.copy_(view)
        # s = sum_c((x - g) * g): d_g = sum_p(d_s * (x - g)) - g * sum_p(d_s).
        d_s = d_s.unsqueeze(-1)
        d_g = workspace.mul_(d_s).sum(1, keepdim=True)
        if normalize:
            d_g -= g * d_s.sum(1, keepdim=True)
        # g = sum_p(x) / P.
        dx = torch.addcmul(d_g / positions, d_s, g)
        dx.addcmul_(upstream, gate.unsqueeze(-1))
        return dx, d_gamma, d_beta, None, None
