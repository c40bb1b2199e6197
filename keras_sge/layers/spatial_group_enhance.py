"""The Spatial Group-wise Enhance (SGE) attention layer."""

from __future__ import annotations

import keras
from keras import constraints, initializers, ops, regularizers

_DATA_FORMATS = ("channels_last", "channels_first")
# Up to this many groups, channels_last computes the similarity with one
# block-diagonal matmul (see `_channels_last_similarity`).
_BLOCK_MATMUL_MAX_GROUPS = 64


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
        if not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(
                f"`epsilon` must be a number >= 0. Received: epsilon={epsilon!r}"
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

    def _gate(self, inputs):
        """Returns the float32 gate and the input viewed per group.

        The features are flattened over space: the gate has shape
        `(N, H*W, G, 1)` for channels_last and `(N, G, 1, H*W)` for
        channels_first, ready to broadcast against the grouped input view
        `(N, H*W, G, C/G)` or `(N, G, C/G, H*W)` that is returned with it.
        """
        shape = ops.shape(inputs)
        channels = inputs.shape[self._channel_axis]
        per_group = channels // self.groups
        channels_last = self.data_format == "channels_last"
        if channels_last:
            positions = shape[1] * shape[2]
            grouped = ops.reshape(inputs, (-1, positions, self.groups, per_group))
        else:
            positions = shape[2] * shape[3]
            grouped = ops.reshape(inputs, (-1, self.groups, per_group, positions))
        features = ops.cast(grouped, "float32")

        # Steps 1-2: the group means g and the similarity s = <x, g> of every
        # position, computed as a contraction so that x * g is never stored.
        if channels_last:
            mean = ops.mean(features, axis=1)  # (N, G, C/G)
            similarity = self._channels_last_similarity(features, mean)  # (N, P, G)
            spatial_axis = 1
        else:
            mean = ops.mean(features, axis=3)  # (N, G, C/G)
            # A batched (1 x C/G) @ (C/G x P) product: no transpose needed.
            similarity = ops.einsum("ngcp,ngc->ngp", features, mean)
            spatial_axis = 2

        # gamma and beta broadcast over (N, P, G) or (N, G, P).
        param_shape = (self.groups,) if channels_last else (self.groups, 1)
        gamma = ops.reshape(ops.cast(self.gamma, "float32"), param_shape)
        beta = ops.reshape(ops.cast(self.beta, "float32"), param_shape)
        if self.normalize:
            # Step 3. (The mean of s equals <g, g> in exact arithmetic, but
            # with few positions the rounding of that shortcut is not
            # cancelled out, so it is taken from s itself.)
            centered = similarity - ops.mean(
                similarity, axis=spatial_axis, keepdims=True
            )
            # Unbiased variance, as torch.std. With a single position the
            # centred values are exactly 0, so any positive divisor gives t=0.
            divisor = ops.maximum(ops.cast(positions, "float32") - 1.0, 1.0)
            variance = ops.sum(
                ops.square(centered), axis=spatial_axis, keepdims=True
            ) / divisor
            # sqrt has an infinite slope at 0 (one position, or a constant
            # map): take it only where the variance is positive, so that the
            # gradient stays finite there.
            positive = ops.greater(variance, 0.0)
            std = ops.where(
                positive, ops.sqrt(ops.where(positive, variance, 1.0)), 0.0
            )
            # Steps 4-5: gamma / (std + epsilon) is one multiplier per group.
            logits = centered * (gamma / (std + self.epsilon)) + beta
        else:
            logits = similarity * gamma + beta
        gate = ops.sigmoid(logits)
        return ops.expand_dims(gate, -1 if channels_last else 2), grouped

    def _channels_last_similarity(self, features, mean):
        """Computes s (N, P, G) from features (N, P, G, C/G) and g (N, G, C/G).

        For up to `_BLOCK_MATMUL_MAX_GROUPS` groups, s is one batched matmul
        of the (N, P, C) features with the block-diagonal (C, G) matrix that
        holds each group's mean in its rows: it reads x once, in its own
        layout (an einsum over the group axis in the middle would transpose
        x first). Beyond that the G-fold extra multiplications of the block
        matrix would cost more than a fused multiply-and-sum.
        """
        num_positions = ops.shape(features)[1]
        groups, per_group = self.groups, features.shape[-1]
        channels = groups * per_group
        if groups > _BLOCK_MATMUL_MAX_GROUPS:
            return ops.sum(features * ops.expand_dims(mean, 1), axis=-1)
        indicator = ops.cast(
            ops.equal(
                ops.expand_dims(ops.arange(channels) // per_group, 1),
                ops.expand_dims(ops.arange(groups), 0),
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
        gate, _ = self._gate(inputs)
        shape = ops.shape(inputs)
        if self.data_format == "channels_last":
            return ops.reshape(gate, (-1, shape[1], shape[2], self.groups))
        return ops.reshape(gate, (-1, self.groups, shape[2], shape[3]))

    def call(self, inputs):
        gate, grouped = self._gate(inputs)
        outputs = grouped * ops.cast(gate, grouped.dtype)
        outputs = ops.reshape(outputs, ops.shape(inputs))
        return ops.cast(outputs, self.compute_dtype)

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
