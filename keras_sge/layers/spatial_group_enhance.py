"""The Spatial Group-wise Enhance (SGE) attention layer."""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import constraints, initializers, ops, regularizers

_DATA_FORMATS = ("channels_last", "channels_first")
# Added to the variance under the square root, so that the std's slope stays
# finite where the variance is 0 (one position, a constant map). It leaves
# every float32 variance above about 2e-23 unchanged.
_VARIANCE_FLOOR = 1e-30
# Up to this many groups, channels_last on torch computes the similarity with
# one block-diagonal matmul (see `_channels_last_similarity`).
_BLOCK_MATMUL_MAX_GROUPS = 64


class _Forward(NamedTuple):
    """What the forward pass keeps for the hand-written backward pass.

    Tensors are float32. Per-position ones have the gate's shape, `(N, P, G)`
    or `(N, G, P)`; per-group statistics keep a size-1 position axis. The
    last three exist only with `normalize=True`.
    """

    features: Any  # x, (N, P, G, C/G) or (N, G, C/G, P)
    positions: Any  # P = H * W: a Python float, or a float32 scalar if dynamic
    divisor: Any  # max(P - 1, 1) of the unbiased variance, like `positions`
    mean: Any  # g, the group means
    similarity: Any  # s = <x, g>
    gamma: Any  # (G,) or (G, 1), to broadcast over the gate
    gate: Any  # sigmoid of the logits
    centered: Any = None  # s - mean_p(s)
    std: Any = None  # unbiased std of s over positions
    scale: Any = None  # gamma / (std + epsilon)


@keras.saving.register_keras_serializable(package="keras_sge")
class SpatialGroupEnhance(keras.layers.Layer):
    """Spatial Group-wise Enhance (SGE) attention.

    SGE splits the channels into groups and, in each group, scores every
    spatial position by its similarity to the group's global average feature.
    The normalised score, scaled and shifted by two learned numbers per group,
    gates the features of that position through a sigmoid.

    For a group with features `x` (H x W positions, C / groups channels):

    1. `g = mean_hw(x)`, the group's global average vector;
    2. `s = sum_c(x * g)`, the similarity of each position to `g`;
    3. `t = (s - mean_hw(s)) / (std_hw(s) + epsilon)`, with the unbiased
       (`H * W - 1`) spatial standard deviation;
    4. `y = x * sigmoid(gamma * t + beta)`.

    Group `k` holds the contiguous channels `[k * C / groups, (k + 1) * C /
    groups)`, as in the authors' PyTorch module. The statistics are always
    computed in float32, so the layer is safe under `mixed_float16`. Where
    `H * W == 1` the standard deviation is undefined; the layer then uses
    `t = 0` and returns `x * sigmoid(beta)` (the authors' module returns NaN).

    Args:
        groups: Number of channel groups. The channel count must be divisible
            by it. The paper uses 64.
        epsilon: Small float added to the standard deviation (not the
            variance) to avoid dividing by zero.
        data_format: `"channels_last"` (inputs `(batch, height, width,
            channels)`) or `"channels_first"` (inputs `(batch, channels,
            height, width)`). Defaults to `keras.config.image_data_format()`.
        gamma_initializer: Initializer of the per-group scale `gamma`. The
            paper initialises it to zeros, so the gate starts at
            `sigmoid(beta)`.
        beta_initializer: Initializer of the per-group shift `beta`.
        gamma_regularizer: Optional regularizer for `gamma`.
        beta_regularizer: Optional regularizer for `beta`.
        gamma_constraint: Optional constraint for `gamma`.
        beta_constraint: Optional constraint for `beta`.
        normalize: Whether to normalise the similarity (step 3 above). Only
            for the paper's ablation; keep the default `True` otherwise.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, height, width, channels)` for `channels_last` or
        `(batch, channels, height, width)` for `channels_first`.

    Output shape:
        Same as the input.

    Example:

    >>> x = keras.Input((56, 56, 256))
    >>> y = keras_sge.layers.SpatialGroupEnhance(groups=64)(x)
    >>> y.shape
    (None, 56, 56, 256)

    Reference:
        Li, Hu & Yang, "Spatial Group-wise Enhance: Improving Semantic Feature
        Learning in Convolutional Networks", 2019, arXiv:1905.09646.
    """

    def __init__(
        self,
        groups: int = 64,
        epsilon: float = 1e-5,
        data_format: str | None = None,
        gamma_initializer="zeros",
        beta_initializer="ones",
        gamma_regularizer=None,
        beta_regularizer=None,
        gamma_constraint=None,
        beta_constraint=None,
        normalize: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(
                "`groups` must be a positive integer (the paper uses 64). "
                f"Received: groups={groups!r}"
            )
        if not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
            raise ValueError(
                f"`epsilon` must be a finite number >= 0. Received: epsilon={epsilon!r}"
            )
        data_format = data_format or keras.config.image_data_format()
        if data_format not in _DATA_FORMATS:
            raise ValueError(
                f"`data_format` must be one of {_DATA_FORMATS} or None. "
                f"Received: data_format={data_format!r}"
            )
        self.groups = groups
        self.epsilon = float(epsilon)
        self.data_format = data_format
        self.normalize = bool(normalize)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_constraint = constraints.get(beta_constraint)
        # Statistics run in float32 whatever the policy; the output is cast
        # to the compute dtype at the end.
        self.autocast = False
        self._channel_axis = -1 if data_format == "channels_last" else 1
        # Axes of the grouped view (see `_grouped`), and the position axis
        # of the per-position tensors (the gate's shape, see `_forward`).
        if data_format == "channels_last":
            self._grouped_spatial_axis, self._grouped_channel_axis = 1, 3
            self._gate_position_axis = 1
        else:
            self._grouped_spatial_axis, self._grouped_channel_axis = 3, 2
            self._gate_position_axis = 2

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "SpatialGroupEnhance expects a 4D input (batch, height, width, "
                "channels) or (batch, channels, height, width); received an "
                f"input of rank {len(input_shape)} with shape {input_shape}."
            )
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                "SpatialGroupEnhance needs a known channel dimension "
                f"(data_format={self.data_format!r}), but the input shape is "
                f"{input_shape}."
            )
        if channels % self.groups != 0:
            raise ValueError(
                f"The number of channels ({channels}) must be divisible by "
                f"`groups` ({self.groups}); input shape {input_shape}, "
                f"data_format={self.data_format!r}."
            )
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )
        self.gamma = self.add_weight(
            shape=(self.groups,),
            name="gamma",
            initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer,
            constraint=self.gamma_constraint,
        )
        self.beta = self.add_weight(
            shape=(self.groups,),
            name="beta",
            initializer=self.beta_initializer,
            regularizer=self.beta_regularizer,
            constraint=self.beta_constraint,
        )

    def _grouped(self, inputs):
        """Views the input per group, flattened over space.

        Returns:
            The view, `(N, P, G, C/G)` for channels_last or `(N, G, C/G, P)`
            for channels_first with `P = H * W`, and `P` itself.
        """
        shape = ops.shape(inputs)
        per_group = inputs.shape[self._channel_axis] // self.groups
        if self.data_format == "channels_last":
            positions = shape[1] * shape[2]
            view = (-1, positions, self.groups, per_group)
        else:
            positions = shape[2] * shape[3]
            view = (-1, self.groups, per_group, positions)
        return ops.reshape(inputs, view), positions

    def _forward(self, features, positions, gamma, beta):
        """Steps 1-4 on the float32 grouped view.

        Every per-position quantity has the gate's shape, `(N, P, G)` or
        `(N, G, P)`, with no size-1 axis: XLA:CPU's YNNPACK fusions reduce a
        product over positions about 25 times slower when a size-1 channel
        axis trails it (docs/performance.md). `_per_channel` broadcasts them
        against the grouped view.

        Returns:
            A `_Forward` holding the gate and what the backward pass needs.
        """
        position_axis = self._gate_position_axis
        # A static P stays a Python number: on torch, turning a Python
        # scalar into a GPU tensor is a host-to-device copy that waits for
        # the device, so the statistics use no such scalars at all.
        if isinstance(positions, int):
            positions = float(positions)
            divisor = max(positions - 1.0, 1.0)
        else:
            positions = ops.cast(positions, "float32")
            divisor = ops.maximum(positions - 1.0, 1.0)
        # Step 1: the group means g, (N, 1, G, C/G) or (N, G, C/G, 1).
        mean = self._mean_over_positions(
            features, positions, self._grouped_spatial_axis
        )
        # Step 2: the similarity s = <x, g> of every position.
        if self.data_format == "channels_last":
            similarity = self._channels_last_similarity(features, mean)
        else:
            # A batched (1 x C/G) @ (C/G x P) product: no transpose needed.
            similarity = ops.squeeze(
                ops.matmul(ops.swapaxes(mean, 2, 3), features), axis=2
            )
            # gamma and beta broadcast over the gate's shape, (N, G, P).
            gamma = ops.expand_dims(gamma, -1)
            beta = ops.expand_dims(beta, -1)
        centered = std = scale = None
        if self.normalize:
            # Step 3. (The mean of s equals <g, g> in exact arithmetic, but
            # with few positions the rounding of that shortcut is not
            # cancelled out, so it is taken from s itself.)
            centered = similarity - self._mean_over_positions(
                similarity, positions, position_axis
            )
            # Unbiased variance, as torch.std. With a single position the
            # centred values are exactly 0, so any positive divisor gives t=0.
            variance = (
                ops.sum(ops.square(centered), axis=position_axis, keepdims=True)
                / divisor
            )
            std = ops.sqrt(variance + _VARIANCE_FLOOR)
            # gamma / (std + epsilon) is one multiplier per group.
            scale = gamma / (std + self.epsilon)
            logits = centered * scale + beta
        else:
            logits = similarity * gamma + beta
        return _Forward(
            features=features,
            positions=positions,
            divisor=divisor,
            mean=mean,
            similarity=similarity,
            gamma=gamma,
            gate=ops.sigmoid(logits),
            centered=centered,
            std=std,
            scale=scale,
        )

    def _per_channel(self, tensor):
        """Broadcasts a per-position tensor against the grouped view."""
        return ops.expand_dims(tensor, self._grouped_channel_axis)

    @staticmethod
    def _mean_over_positions(tensor, positions, axis):
        """The mean over the position axis `axis`, kept as a size-1 axis.

        Taken as a sum divided afterwards: torch's autograd of a mean divides
        an input-sized broadcast gradient element by element, that of a sum
        only expands it (forward+backward 20-25 % faster on torch;
        docs/performance.md).
        """
        return ops.sum(tensor, axis=axis, keepdims=True) / positions

    def _backward(self, upstream, saved):
        """The vector-Jacobian product of `_enhance`, by hand.

        It reads x and dy twice each and writes dx once (the derivation is in
        docs/performance.md).

        Args:
            upstream: The output's cotangent, float32, in the grouped view.
            saved: The `_Forward` of the same inputs.

        Returns:
            dx (float32, grouped view), d_gamma and d_beta (each `(groups,)`).
        """
        features, gate = saved.features, saved.gate
        position_axis = self._gate_position_axis
        batch_and_positions = (0, position_axis)
        # y = x * a: the gate's cotangent, then the logits' (sigmoid').
        # (This pass runs on TensorFlow and JAX only; see `call`.)
        if self.data_format == "channels_last":
            d_gate = _dot_over_last_axis(upstream, features)
        else:
            d_gate = ops.sum(upstream * features, axis=self._grouped_channel_axis)
        d_logits = d_gate * gate * (1.0 - gate)
        d_beta = ops.sum(d_logits, axis=batch_and_positions)
        if self.normalize:
            centered, std, scale = saved.centered, saved.std, saved.scale
            # logits = centered * scale + beta, scale = gamma / (std + eps).
            d_scale = ops.sum(d_logits * centered, axis=position_axis, keepdims=True)
            d_gamma = ops.sum(d_scale / (std + self.epsilon), axis=0)
            d_std = -d_scale * scale / (std + self.epsilon)
            # std = sqrt(sum(centered^2) / divisor + floor): d std / d centered
            # = centered / (divisor * std); the floor keeps std > 0.
            d_centered = d_logits * scale + centered * (d_std / (saved.divisor * std))
            d_similarity = d_centered - self._mean_over_positions(
                d_centered, saved.positions, position_axis
            )
        else:
            d_gamma = ops.sum(d_logits * saved.similarity, axis=batch_and_positions)
            d_similarity = d_logits * saved.gamma
        # s = <x, g> with g = mean(x): x receives d_s * g directly and
        # d_g / P through the mean, where d_g = sum_p d_s * x is a
        # contraction over positions (a reduction here would be fused into
        # the element-wise dx below and recomputed per element by XLA).
        if self.data_format == "channels_last":
            d_mean = ops.expand_dims(
                ops.einsum("npgc,npg->ngc", features, d_similarity), 1
            )
        else:
            d_mean = ops.matmul(features, ops.expand_dims(d_similarity, -1))
        dx = (
            upstream * self._per_channel(gate)
            + self._per_channel(d_similarity) * saved.mean
            + d_mean / saved.positions
        )
        return dx, ops.reshape(d_gamma, (-1,)), ops.reshape(d_beta, (-1,))

    def _channels_last_similarity(self, features, mean):
        """Computes s (N, P, G) from features (N, P, G, C/G) and g (N, 1, G, C/G).

        Both forms read x once, in its own layout. On TensorFlow and JAX it is
        `x * g` summed over each group's channels by halving, fused by XLA
        into one loop (`_dot_over_last_axis`). On torch, where every op is a
        kernel of its own and autograd of the slices writes zero-padded
        input-sized gradients, it is one batched matmul of the (N, P, C)
        features with the block-diagonal (C, G) matrix that holds each
        group's mean in its rows; beyond `_BLOCK_MATMUL_MAX_GROUPS` groups
        the G-fold extra multiplications of that matrix would cost more than
        a multiply-and-sum.
        """
        if not _runs_op_by_op():
            return _dot_over_last_axis(features, mean)
        if self.groups > _BLOCK_MATMUL_MAX_GROUPS:
            return ops.sum(features * mean, axis=-1)
        num_positions = ops.shape(features)[1]
        per_group = features.shape[-1]
        channels = self.groups * per_group
        indicator = ops.cast(
            ops.equal(
                ops.expand_dims(ops.arange(channels) // per_group, 1),
                ops.expand_dims(ops.arange(self.groups), 0),
            ),
            "float32",
        )  # (C, G): 1 where channel c belongs to group k
        blocks = ops.reshape(mean, (-1, channels, 1)) * indicator  # (N, C, G)
        flat = ops.reshape(features, (-1, num_positions, channels))
        return ops.matmul(flat, blocks)

    def compute_gate(self, inputs):
        """Computes the attention gate `sigmoid(gamma * t + beta)`.

        Args:
            inputs: The layer's input tensor.

        Returns:
            A float32 tensor of values in (0, 1), of shape
            `(batch, height, width, groups)` for channels_last or
            `(batch, groups, height, width)` for channels_first.
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        _, saved = self._gate(inputs, *self._float32_weights())
        shape = ops.shape(inputs)
        if self.data_format == "channels_last":
            return ops.reshape(saved.gate, (-1, shape[1], shape[2], self.groups))
        return ops.reshape(saved.gate, (-1, self.groups, shape[2], shape[3]))

    def _float32_weights(self):
        return ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")

    def _gate(self, inputs, gamma, beta):
        """Returns the grouped view and the `_Forward` of its float32 copy."""
        grouped, positions = self._grouped(inputs)
        features = ops.cast(grouped, "float32")
        return grouped, self._forward(features, positions, gamma, beta)

    def _enhance(self, inputs, gamma, beta):
        """Returns `x * gate` and the `_Forward` its backward pass needs."""
        grouped, saved = self._gate(inputs, gamma, beta)
        gate = ops.cast(self._per_channel(saved.gate), grouped.dtype)
        return ops.reshape(grouped * gate, ops.shape(inputs)), saved

    def call(self, inputs):
        gamma, beta = self._float32_weights()
        if _runs_op_by_op():
            # Eager autograd of the forward pass measured faster on torch
            # than the hand-written backward (docs/performance.md).
            outputs, _ = self._enhance(inputs, gamma, beta)
        else:
            outputs = self._enhance_with_vjp(inputs, gamma, beta)
        return ops.cast(outputs, self.compute_dtype)

    def _enhance_with_vjp(self, inputs, gamma, beta):
        """`_enhance` with the hand-written backward pass of `_backward`.

        Autodiff of the statistics keeps and re-reads several input-sized
        tensors; on XLA (TensorFlow, JAX) the hand-written pass is faster.
        """

        @ops.custom_gradient
        def enhance(inputs, gamma, beta):
            outputs, saved = self._enhance(inputs, gamma, beta)

            def gradient(*args, upstream=None):
                # TensorFlow and JAX pass the output's cotangent positionally.
                if upstream is None:
                    (upstream,) = args
                d_grouped, _ = self._grouped(upstream)
                dx, d_gamma, d_beta = self._backward(
                    ops.cast(d_grouped, "float32"), saved
                )
                dx = ops.reshape(dx, ops.shape(inputs))
                return ops.cast(dx, inputs.dtype), d_gamma, d_beta

            return outputs, gradient

        return enhance(inputs, gamma, beta)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "groups": self.groups,
                "epsilon": self.epsilon,
                "data_format": self.data_format,
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_constraint": constraints.serialize(self.gamma_constraint),
                "beta_constraint": constraints.serialize(self.beta_constraint),
                "normalize": self.normalize,
            }
        )
        return config


def _runs_op_by_op() -> bool:
    """Whether every `keras.ops` call runs as a kernel of its own.

    So it is on torch, where Keras runs layers eagerly; TensorFlow and JAX
    compile the layer with XLA, which fuses element-wise ops into loops. The
    layer picks its similarity and its backward pass by this
    (docs/performance.md).
    """
    return keras.backend.backend() == "torch"


def _dot_over_last_axis(a, b):
    """`sum(a * b, axis=-1)` by repeated halving, for a short last axis.

    Each step adds the first half of the axis to the second; an odd middle
    element is set aside and added at the end. The first step multiplies the
    halves as it adds them, so that `a * b` is never stored. XLA fuses the
    slices, products and additions into one element-wise loop that reads `a`
    and `b` once. XLA:CPU's YNNPACK fusions run the plain `sum` over a short
    last axis 5-30 times slower, and fuse a separate product `a * b` into a
    neighbouring reduction and store it (docs/performance.md).
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
