"""The Spatial Group-wise Enhance (SGE) attention layer."""

from __future__ import annotations

import keras
from keras import constraints, initializers, ops, regularizers

from keras_sge.ops import sge
from keras_sge.ops.sge import check_groups

__all__ = ["SpatialGroupEnhance", "check_groups"]


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

    The layer holds `gamma`, `beta`, the configuration and the checks; `call`
    is `keras_sge.ops.spatial_group_enhance`, which runs the definition in
    `keras.ops` or a backend kernel of the same function measured faster or
    more precise (`keras_sge.backend`; `KERAS_SGE_PLAIN=1` forces the
    definition).

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
        check_groups(groups)
        if not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
            raise ValueError(
                f"`epsilon` must be a finite number >= 0. Received: epsilon={epsilon!r}"
            )
        data_format = sge.check_data_format(data_format)
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
        check_groups(
            self.groups,
            channels,
            where=f"; input shape {input_shape}, data_format={self.data_format!r}",
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis: channels})
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

    def call(self, inputs):
        # The op keeps the input's dtype; the layer returns its compute dtype.
        outputs = sge.spatial_group_enhance(inputs, self.gamma, self.beta, **self._op_arguments())
        return ops.cast(outputs, self.compute_dtype)

    def _op_arguments(self) -> dict:
        return {
            "groups": self.groups,
            "epsilon": self.epsilon,
            "data_format": self.data_format,
            "normalize": self.normalize,
        }

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
        return sge.spatial_group_enhance_gate(inputs, self.gamma, self.beta, **self._op_arguments())

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
