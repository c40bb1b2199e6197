"""The SGE operation: the paper's definition in `keras.ops`, and its building blocks.

`spatial_group_enhance` checks its arguments and runs the kernel that
`keras_sge.backend.kernel` selected for this process (the definition itself
unless a backend kernel was measured faster or more precise). The building
blocks below are the definition's steps on a float32 *grouped view* of the
input, `(N, H*W, G, C/G)` for channels_last and `(N, G, C/G, H*W)` for
channels_first; the backend kernels reuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import ops

DATA_FORMATS = ("channels_last", "channels_first")

# Most positions that `sum_over_positions` adds with the backend's own
# reduction, one block at a time, and how few block sums it halves down to.
# Without halvings between them XLA merges the block sums and their sum into
# one long sum; halving below 4 costs XLA:CPU more than it saves.
BLOCK_SIZE = 32
HALVED_TO = 4

# Added to the variance under the square root, so that the std's slope stays
# finite where the variance is 0; no float32 variance above about 2e-23 changes.
VARIANCE_FLOOR = 1e-30


def check_groups(groups: int, channels: int | Sequence[int] = (), where: str = "") -> None:
    """Checks an SGE group count, alone or against channel counts.

    The one statement of the rule: `groups` is a positive integer that
    divides every channel count the layer will see.

    Args:
        groups: The group count to check.
        channels: A channel count, or several (e.g. every stage of a
            network); none checks `groups` alone.
        where: Text appended to the message (what the channels belong to).

    Raises:
        ValueError: naming the rule and the values received.

    Example:

    >>> check_groups(64, (256, 512, 1024, 2048))
    >>> check_groups(48, 256)
    Traceback (most recent call last):
    ValueError: The number of channels (256) must be divisible by `groups` (48).
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(
            f"`groups` must be a positive integer (the paper uses 64). Received: groups={groups!r}"
        )
    counts = (channels,) if isinstance(channels, int) else tuple(channels)
    bad = [count for count in counts if count % groups]
    if len(counts) == 1 and bad:
        raise ValueError(
            f"The number of channels ({counts[0]}) must be divisible by `groups` ({groups}){where}."
        )
    if bad:
        raise ValueError(
            f"`groups` must divide every channel count {counts}; {groups} does not divide "
            f"{bad}{where}. Received: groups={groups}"
        )


def check_data_format(data_format: str | None) -> str:
    """Returns `data_format`, or Keras' default for None; raises for anything else."""
    data_format = data_format or keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be one of {DATA_FORMATS} or None. "
            f"Received: data_format={data_format!r}"
        )
    return data_format


def spatial_group_enhance(
    x,
    gamma,
    beta,
    *,
    groups: int,
    epsilon: float = 1e-5,
    data_format: str | None = None,
    normalize: bool = True,
):
    """Spatial Group-wise Enhance (SGE): gates each position of each channel group.

    For each sample and group `k` (the contiguous channels `[k * C / groups,
    (k + 1) * C / groups)`), with features `x` at the `H * W` positions:

    1. `g = mean_hw(x)`, the group's global average vector;
    2. `s = sum_c(x * g)`, the similarity of each position to `g`;
    3. `t = (s - mean_hw(s)) / (std_hw(s) + epsilon)`, with the unbiased
       (`H * W - 1`) spatial standard deviation, and `t = 0` where
       `H * W == 1`;
    4. `y = x * sigmoid(gamma[k] * t + beta[k])`.

    The statistics are computed in float32 whatever the input's dtype; the
    output has the input's dtype. The function is differentiable in `x`,
    `gamma` and `beta` on every backend.

    Args:
        x: 4D float tensor, `(batch, height, width, channels)` for
            `channels_last` or `(batch, channels, height, width)` for
            `channels_first`; `channels` divisible by `groups`.
        gamma: Per-group scale of the normalised similarity, shape `(groups,)`.
        beta: Per-group shift, shape `(groups,)`.
        groups: Number of channel groups (keyword only).
        epsilon: Added to the standard deviation (not the variance).
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`.
        normalize: Whether to normalise the similarity (step 3); `False` only
            for the paper's ablation, where `t = s`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Example:

    >>> x = keras.random.normal((2, 8, 8, 16))
    >>> y = keras_sge.ops.spatial_group_enhance(
    ...     x, keras.ops.zeros(4), keras.ops.ones(4), groups=4)
    >>> y.shape
    (2, 8, 8, 16)
    """
    from keras_sge import backend

    data_format = check_arguments(x, gamma, beta, groups, epsilon, data_format)
    return backend.kernel(data_format)(
        x,
        gamma,
        beta,
        groups=groups,
        epsilon=epsilon,
        data_format=data_format,
        normalize=normalize,
    )


def spatial_group_enhance_gate(
    x,
    gamma,
    beta,
    *,
    groups: int,
    epsilon: float = 1e-5,
    data_format: str | None = None,
    normalize: bool = True,
):
    """The gate `sigmoid(gamma * t + beta)` of `spatial_group_enhance` (steps 1-4).

    Args:
        x, gamma, beta, groups, epsilon, data_format, normalize: As for
            `spatial_group_enhance`.

    Returns:
        A float32 tensor of values in (0, 1), `(batch, height, width, groups)`
        for channels_last or `(batch, groups, height, width)` for
        channels_first.

    Example:

    >>> x = keras.random.normal((2, 8, 8, 16))
    >>> keras_sge.ops.spatial_group_enhance_gate(
    ...     x, keras.ops.zeros(4), keras.ops.ones(4), groups=4).shape
    (2, 8, 8, 4)
    """
    data_format = check_arguments(x, gamma, beta, groups, epsilon, data_format)
    view = grouped_view(x, groups, data_format)
    gate = view_gate(
        view, gamma, beta, epsilon=epsilon, data_format=data_format, normalize=normalize
    )
    shape = ops.shape(x)
    if data_format == "channels_last":
        return ops.reshape(gate, (-1, shape[1], shape[2], groups))
    return ops.reshape(gate, (-1, groups, shape[2], shape[3]))


def check_arguments(x, gamma, beta, groups, epsilon, data_format) -> str:
    """Checks the op's static arguments and shapes; returns the data format."""
    data_format = check_data_format(data_format)
    check_groups(groups)
    if not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
        raise ValueError(f"`epsilon` must be a finite number >= 0. Received: epsilon={epsilon!r}")
    if len(x.shape) != 4:
        raise ValueError(
            "spatial_group_enhance expects a 4D input (batch, height, width, channels) or "
            f"(batch, channels, height, width); received shape {tuple(x.shape)}."
        )
    channels = x.shape[-1 if data_format == "channels_last" else 1]
    if channels is None:
        raise ValueError(
            f"spatial_group_enhance needs a known channel dimension (data_format="
            f"{data_format!r}); received shape {tuple(x.shape)}."
        )
    check_groups(groups, channels, where=f"; input shape {tuple(x.shape)}")
    for name, value in (("gamma", gamma), ("beta", beta)):
        if tuple(value.shape) != (groups,):
            raise ValueError(
                f"`{name}` must have shape (groups,) = ({groups},); "
                f"received shape {tuple(value.shape)}."
            )
    return data_format


def definition(
    x,
    gamma,
    beta,
    *,
    groups: int,
    epsilon: float = 1e-5,
    data_format: str = "channels_last",
    normalize: bool = True,
):
    """`spatial_group_enhance` as written (steps 1-4), without checks: the plain kernel."""
    return on_groups(
        x,
        groups,
        data_format,
        lambda view: (
            view
            * view_gate(
                view, gamma, beta, epsilon=epsilon, data_format=data_format, normalize=normalize
            )
        ),
    )


# --- Building blocks on the float32 grouped view ---------------------------------


def on_groups(x, groups: int, data_format: str, function: Callable):
    """Applies `function` to the float32 grouped view of `x`.

    Returns its result in the shape and dtype of `x`.
    """
    y = function(grouped_view(x, groups, data_format))
    return ops.cast(ops.reshape(y, ops.shape(x)), x.dtype)


def grouped_view(x, groups: int, data_format: str):
    """Views `(N, H, W, C)` as `(N, H*W, G, C/G)`, `(N, C, H, W)` as `(N, G, C/G, H*W)`."""
    x = ops.cast(x, "float32")
    shape = ops.shape(x)
    if data_format == "channels_last":
        return ops.reshape(x, (-1, shape[1] * shape[2], groups, x.shape[3] // groups))
    return ops.reshape(x, (-1, groups, x.shape[1] // groups, shape[2] * shape[3]))


def position_axis(data_format: str) -> int:
    """The positions axis of the grouped view."""
    return 1 if data_format == "channels_last" else 3


def parameter_shape(groups: int, data_format: str) -> tuple:
    """The shape that broadcasts one number per group against the view's gate."""
    return (groups, 1) if data_format == "channels_last" else (groups, 1, 1)


def view_gate(view, gamma, beta, *, epsilon, data_format, normalize, group_mean=None):
    """Steps 1-4 on the grouped `view`; the gate keeps a size-1 channel axis.

    `group_mean`, if given, is the group mean of step 1, computed by the caller.
    """
    axis = position_axis(data_format)
    positions, divisor = position_counts(view, axis)
    # 1. The group's global average feature g.
    g = sum_over_positions(view, axis) / positions if group_mean is None else group_mean
    # 2. The similarity s of every position to g (centred: see `similarity_terms`).
    s = ops.sum(
        similarity_terms(view, g, normalize) * g,
        axis=3 if data_format == "channels_last" else 2,
        keepdims=True,
    )
    shape = parameter_shape(gamma.shape[0], data_format)
    return gate_from_similarity(
        s,
        *float32_parameters(gamma, beta, shape),
        positions=positions,
        divisor=divisor,
        epsilon=epsilon,
        normalize=normalize,
        axis=axis,
    )


def similarity_terms(view, g, normalize: bool):
    """What the similarity sums against `g`: `view - g` when normalizing, else `view`.

    The normalisation needs `s - mean_hw(s)`, which is `sum_c((x - g) * g)`
    exactly. Formed so, it has no cancellation: where a group's features
    share a large offset over a tiny spread, `s` and its mean agree in most
    digits, and their float32 difference is mostly rounding.
    """
    return view - g if normalize else view


def gate_from_similarity(s, gamma, beta, *, positions, divisor, epsilon, normalize, axis):
    """Steps 3-4: `sigmoid(gamma * t + beta)` from the similarity `s`.

    Args:
        s: The similarity, positions along `axis`; centred (formed from
            `similarity_terms`) when `normalize`.
        gamma, beta: float32, shaped to broadcast one number per group against `s`.
        positions, divisor: From `position_counts`.
        epsilon, normalize: As for `spatial_group_enhance`.
        axis: The positions axis of `s`.
    """
    if not normalize:
        return ops.sigmoid(gamma * s + beta)
    # 3. s normalised over the positions, with the unbiased std, and
    # 4. the gate, with one scale and one shift per group.
    centered = s
    variance = sum_over_positions(ops.square(centered), axis) / divisor
    # The floor keeps the std's slope finite for one position or a constant
    # map (then centered == 0 and t == 0).
    std = ops.sqrt(variance + VARIANCE_FLOOR)
    # gamma * t as centered times one number per group: one operation on the
    # per-position tensor instead of two, here and in autodiff.
    scale = gamma / (std + epsilon)
    # beta per sample, like the scale: autodiff then sums d_beta over each
    # sample's positions and then over the batch, not as one long sum, which
    # TensorFlow adds up element by element.
    return ops.sigmoid(centered * scale + ops.broadcast_to(beta, ops.shape(scale)))


def sum_over_positions(tensor, axis: int):
    """Sums over the positions `axis`, keeping it, with rounding that grows like log(H*W).

    Eager torch sums float32 by cascade (pairwise) summation itself, so there
    it is `ops.sum`. TensorFlow's kernels, XLA:CPU and `torch.compile`'s
    generated loops may add a long axis up one element after another, whose
    rounding grows with H*W; there the positions
    are reshaped into contiguous blocks of at most `BLOCK_SIZE` (a divisor of
    H*W), each block summed by the backend, and the block sums halved
    pairwise (first half plus second half, an odd last one set aside) down to
    `HALVED_TO`. The reshape reads the tensor once and the halvings run on
    block sums, so the careful sum costs about what a plain one does.
    A sum divided afterwards rather than `ops.mean`: torch's autograd of a
    mean divides an input-sized gradient element by element.
    """
    size = tensor.shape[axis]
    if _torch_eager() or not isinstance(size, int) or size <= BLOCK_SIZE:
        return ops.sum(tensor, axis=axis, keepdims=True)
    block = largest_divisor(size, BLOCK_SIZE)
    if block > 1:
        shape = ops.shape(tensor)
        blocks = (*shape[:axis], size // block, block, *shape[axis + 1 :])
        tensor = ops.sum(ops.reshape(tensor, blocks), axis=axis + 1)
        size //= block
    set_aside, before = [], (slice(None),) * axis
    while size > HALVED_TO:
        half = size // 2
        if size % 2:
            set_aside.append(tensor[before + (slice(size - 1, size),)])
        tensor = tensor[before + (slice(0, half),)] + tensor[before + (slice(half, 2 * half),)]
        size = half
    total = ops.sum(tensor, axis=axis, keepdims=True)
    for part in set_aside:
        total = total + part
    return total


def _torch_eager() -> bool:
    """Whether torch runs the op eagerly (not traced by `torch.compile`)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not torch.compiler.is_compiling()


def largest_divisor(size: int, limit: int) -> int:
    """The largest divisor of `size` that is at most `limit`."""
    return next(d for d in range(min(size, limit), 0, -1) if size % d == 0)


def position_counts(view, axis: int):
    """Returns `H * W` and the unbiased variance's divisor `max(H * W - 1, 1)`."""
    positions = view.shape[axis]
    if isinstance(positions, int):
        # Python numbers, not tensors: on torch every tensor made from a
        # Python scalar is a host-to-device copy that waits for the GPU.
        return float(positions), float(max(positions - 1, 1))
    positions = ops.cast(ops.shape(view)[axis], "float32")
    return positions, ops.maximum(positions - 1.0, 1.0)


def float32_parameters(gamma, beta, shape):
    """gamma and beta in float32, reshaped to `shape`."""
    return tuple(ops.reshape(ops.cast(w, "float32"), shape) for w in (gamma, beta))


def gated_by_similarity_matmul(view, gamma, beta, similarity, epsilon, normalize):
    """`view * gate` for the channels_first view (N, G, C/G, P), without size-1 axes.

    `similarity(terms, g)` (of `similarity_terms`) gives s as (N, G, 1, P),
    e.g. as a batched matmul; the statistics then run on (N, G, P) tensors.
    """
    positions, divisor = position_counts(view, 3)
    g = sum_over_positions(view, 3) / positions  # (N, G, C/G, 1)
    s = ops.squeeze(similarity(similarity_terms(view, g, normalize), g), 2)  # (N, G, P)
    gamma, beta = float32_parameters(gamma, beta, (gamma.shape[0], 1))
    gate = gate_from_similarity(
        s,
        gamma,
        beta,
        positions=positions,
        divisor=divisor,
        epsilon=epsilon,
        normalize=normalize,
        axis=2,
    )
    return view * ops.expand_dims(gate, 2)


# --- A hand-derived backward pass, for the backend kernels ------------------------
#
# On the grouped view (positions axis 1 of (N, P, G, C), or 3 of (N, G, C, P)),
# with the per-position tensors s, gate, d_s without the channel axis ((N, P, G)
# or (N, G, P)): y = x * gate, gate = sigmoid(z), z = s * scale + beta, and
# s = sum_c((x - g) * g) (or sum_c(x * g) without normalisation). Then
#     d_z = sum_c(dy * x) * gate * (1 - gate);  d_beta = sum(d_z);
#     d_scale = sum_p(d_z * s);  with scale = gamma / (std + epsilon),
#     std = sqrt(sum_p(s^2) / divisor): d_gamma = sum_n(d_scale / (std + epsilon)),
#     d_s = d_z * scale - d_scale * scale / ((std + epsilon) * std * divisor) * s;
#     d_g = sum_p(d_s * (x - g)) - g * sum_p(d_s)  (s's two factors g);
#     dx = d_g / P + d_s * g + dy * gate.
# Autodiff of the definition differentiates through the centring and the blocked
# sums instead, writing input-sized intermediates that this does not.


def dot_over_channels(a, b, data_format: str):
    """`sum(a * b)` over the view's channel axis, which it drops."""
    return ops.sum(a * b, axis=3 if data_format == "channels_last" else 2)


def centred_sum_over_positions(view, offset, weights, data_format: str):
    """`sum_over_positions((view - offset) * weights)`; `offset` None: `view * weights`."""
    terms = view if offset is None else view - offset
    return sum_over_positions(terms * weights, position_axis(data_format))


def gated_forward(
    view, gamma, beta, *, epsilon, normalize, data_format, dot_over_channels=dot_over_channels
) -> tuple:
    """`view * gate` and the statistics that `gated_backward` needs.

    Args:
        view: The float32 grouped view.
        gamma, beta: float32, shape `(groups,)`.
        epsilon, normalize, data_format: As for `spatial_group_enhance`.
        dot_over_channels: `f(a, b, data_format)`, the sum of `a * b` over
            the channel axis (dropped); e.g. a faster one of the backend.

    Returns:
        `(y, statistics)`, `statistics` a tuple of small tensors (the group
        mean, the similarity, the gate and the std).
    """
    axis, channel_axis = _per_position_axes(data_format)
    positions, divisor = position_counts(view, position_axis(data_format))
    g = sum_over_positions(view, position_axis(data_format)) / positions
    s = dot_over_channels(similarity_terms(view, g, normalize), g, data_format)
    gamma, beta = _per_group(gamma, data_format), _per_group(beta, data_format)
    if normalize:
        std = ops.sqrt(sum_over_positions(ops.square(s), axis) / divisor + VARIANCE_FLOOR)
        scale = gamma / (std + epsilon)
    else:
        std = ops.ones_like(gamma)
        scale = gamma
    gate = ops.sigmoid(s * scale + beta)
    return view * ops.expand_dims(gate, channel_axis), (g, s, gate, std)


def gated_backward(
    upstream,
    view,
    gamma,
    statistics,
    *,
    epsilon,
    normalize,
    data_format,
    dot_over_channels=dot_over_channels,
    centred_sum_over_positions=centred_sum_over_positions,
) -> tuple:
    """The gradients of `gated_forward`'s `y` in the view, gamma and beta.

    `similarity_gradient` followed by `view_gradient`.

    Args:
        upstream: The cotangent of `y`, shaped as the view.
        view, epsilon, normalize, data_format, dot_over_channels: As for
            `gated_forward`.
        gamma: float32, shape `(groups,)`.
        statistics: `gated_forward`'s statistics.
        centred_sum_over_positions: As for `view_gradient`.

    Returns:
        `(d_view, d_gamma, d_beta)`.
    """
    d_s, d_gamma, d_beta = similarity_gradient(
        upstream,
        view,
        gamma,
        statistics,
        epsilon=epsilon,
        normalize=normalize,
        data_format=data_format,
        dot_over_channels=dot_over_channels,
    )
    d_view = view_gradient(
        upstream,
        view,
        statistics,
        d_s,
        normalize=normalize,
        data_format=data_format,
        centred_sum_over_positions=centred_sum_over_positions,
    )
    return d_view, d_gamma, d_beta


def similarity_gradient(
    upstream,
    view,
    gamma,
    statistics,
    *,
    epsilon,
    normalize,
    data_format,
    dot_over_channels=dot_over_channels,
) -> tuple:
    """The first half of `gated_backward`: the small gradients, in s, gamma and beta.

    Args:
        upstream, view, gamma, statistics, epsilon, normalize, data_format,
            dot_over_channels: As for `gated_backward`.

    Returns:
        `(d_s, d_gamma, d_beta)`, `d_s` shaped as the similarity.
    """
    _, s, gate, std = statistics
    axis, _ = _per_position_axes(data_format)
    _, divisor = position_counts(view, position_axis(data_format))
    gamma = _per_group(gamma, data_format)
    d_z = dot_over_channels(upstream, view, data_format) * gate * (1.0 - gate)
    d_beta = ops.sum(sum_over_positions(d_z, axis), axis=(0, axis))
    d_scale = sum_over_positions(d_z * s, axis)
    if not normalize:
        return d_z * gamma, ops.sum(d_scale, axis=(0, axis)), d_beta
    inverse = 1.0 / (std + epsilon)
    d_gamma = ops.sum(d_scale * inverse, axis=(0, axis))
    d_s = d_z * (gamma * inverse) - (d_scale * gamma * inverse * inverse / (std * divisor)) * s
    return d_s, d_gamma, d_beta


def view_gradient(
    upstream,
    view,
    statistics,
    d_s,
    *,
    normalize,
    data_format,
    centred_sum_over_positions=centred_sum_over_positions,
):
    """The second half of `gated_backward`: the input-sized gradient in the view.

    Args:
        upstream, view, statistics, normalize, data_format: As for
            `gated_backward`.
        d_s: `similarity_gradient`'s gradient in the similarity.
        centred_sum_over_positions: `f(view, offset, weights, data_format)`,
            the sum over positions of `(view - offset) * weights` (offset
            None: `view * weights`), keeping the axis, as
            `sge.centred_sum_over_positions`; e.g. a faster one of the backend.

    Returns:
        The gradient in the view.
    """
    g, _, gate, _ = statistics
    axis, channel_axis = _per_position_axes(data_format)
    positions, _ = position_counts(view, position_axis(data_format))
    d_s_view = ops.expand_dims(d_s, channel_axis)
    d_g = centred_sum_over_positions(view, g if normalize else None, d_s_view, data_format)
    if normalize:
        d_g = d_g - g * ops.expand_dims(sum_over_positions(d_s, axis), channel_axis)
    return d_g / positions + d_s_view * g + upstream * ops.expand_dims(gate, channel_axis)


def _per_position_axes(data_format: str) -> tuple:
    """The positions axis of the per-position tensors, and the view's channel axis."""
    return (1, 3) if data_format == "channels_last" else (2, 2)


def _per_group(parameter, data_format: str):
    """gamma or beta `(groups,)`, shaped to broadcast against the per-position tensors."""
    return parameter if data_format == "channels_last" else ops.expand_dims(parameter, -1)
