"""The Spatial Group-wise Enhance (SGE) attention layer."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import constraints, initializers, ops, regularizers

from keras_sge.layers import sge_backend_paths

_DATA_FORMATS = ("channels_last", "channels_first")


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

    `call` is this definition in `keras.ops`, differentiated automatically.
    On JAX on the CPU and on torch in channels_first the layer runs a
    measured faster arrangement of the same function; on TensorFlow outside
    XLA, the definition compiled with XLA (in a traced function on the CPU)
    or with a more precisely summed group mean (eagerly)
    (`keras_sge.layers.sge_backend_paths`). The environment variable
    `KERAS_SGE_PLAIN=1` turns those off.

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

    # Added to the variance under the square root, so that the std's slope
    # stays finite where the variance is 0; no float32 variance above about
    # 2e-23 changes.
    _variance_floor = 1e-30

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
        # Axes of the grouped view (see `_grouped`) and the shape that
        # broadcasts one number per group against the gate.
        if data_format == "channels_last":
            self._position_axis, self._grouped_channel_axis = 1, 3
            self._parameter_shape = (self.groups, 1)
        else:
            self._position_axis, self._grouped_channel_axis = 3, 2
            self._parameter_shape = (self.groups, 1, 1)

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
        backend_path = sge_backend_paths.find(self)
        return backend_path(self, inputs) if backend_path else self._definition(inputs)

    def _definition(self, inputs):
        """The layer's output by steps 1-4, as written."""
        return self._on_groups(inputs, lambda x: x * self._gate(x))

    def _on_groups(self, inputs, function):
        """Applies `function` to the float32 grouped view of `inputs`.

        Returns its result in the shape of `inputs` and the compute dtype.
        """
        y = function(self._grouped(ops.cast(inputs, "float32")))
        return ops.cast(ops.reshape(y, ops.shape(inputs)), self.compute_dtype)

    def _grouped(self, inputs):
        """Views `(N, H, W, C)` as `(N, H*W, G, C/G)`, `(N, C, H, W)` as `(N, G, C/G, H*W)`."""
        shape = ops.shape(inputs)
        per_group = inputs.shape[self._channel_axis] // self.groups
        if self.data_format == "channels_last":
            return ops.reshape(inputs, (-1, shape[1] * shape[2], self.groups, per_group))
        return ops.reshape(inputs, (-1, self.groups, per_group, shape[2] * shape[3]))

    def _gate(self, x, g=None):
        """Steps 1-4 on the float32 grouped view `x`; the gate keeps a size-1 channel axis.

        `g`, if given, is the group mean of step 1, computed by the caller.
        """
        positions, _ = self._position_counts(x)
        # 1. The group's global average feature g.
        if g is None:
            g = self._sum_over_positions(x) / positions
        # 2. The similarity s of every position to g.
        s = ops.sum(x * g, axis=self._grouped_channel_axis, keepdims=True)
        return self._gate_from_similarity(s, x)

    def _gate_from_similarity(self, s, x, position_axis=None, parameter_shape=None):
        """Steps 3-4: `sigmoid(gamma * t + beta)` from the similarity `s` of view `x`."""
        positions, divisor = self._position_counts(x)

        def sum_over_positions(tensor):
            return self._sum_over_positions(tensor, position_axis)

        gamma, beta = self._float32_parameters(parameter_shape or self._parameter_shape)
        # 3. s normalised over the positions, with the unbiased std, and
        # 4. the gate, with one scale and one shift per group.
        if self.normalize:
            centered = s - sum_over_positions(s) / positions
            variance = sum_over_positions(ops.square(centered)) / divisor
            # The floor keeps the std's slope finite for one position or a
            # constant map (then centered == 0 and t == 0).
            std = ops.sqrt(variance + self._variance_floor)
            # gamma * t as centered times one number per group: one operation
            # on the per-position tensor instead of two, here and in autodiff.
            scale = gamma / (std + self.epsilon)
            # beta per sample, like the scale: autodiff then sums d_beta over
            # each sample's positions and then over the batch, not as one long
            # sum, which TensorFlow adds up element by element.
            logits = centered * scale + ops.broadcast_to(beta, ops.shape(scale))
        else:
            logits = gamma * s + beta
        return ops.sigmoid(logits)

    def _sum_over_positions(self, tensor, axis=None):
        """Sums over the positions axis (of the grouped view by default), keeping it.

        A sum divided afterwards rather than `ops.mean`: torch's autograd of a
        mean divides an input-sized gradient element by element.
        """
        axis = self._position_axis if axis is None else axis
        return ops.sum(tensor, axis=axis, keepdims=True)

    def _position_counts(self, x):
        """Returns `H * W` and the unbiased variance's divisor `max(H * W - 1, 1)`."""
        positions = x.shape[self._position_axis]
        if isinstance(positions, int):
            # Python numbers, not tensors: on torch every tensor made from a
            # Python scalar is a host-to-device copy that waits for the GPU.
            return float(positions), float(max(positions - 1, 1))
        positions = ops.cast(ops.shape(x)[self._position_axis], "float32")
        return positions, ops.maximum(positions - 1.0, 1.0)

    def _float32_parameters(self, shape):
        """gamma and beta in float32, reshaped to `shape`."""
        return tuple(ops.reshape(ops.cast(w, "float32"), shape) for w in (self.gamma, self.beta))

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
        gate = self._gate(self._grouped(ops.cast(inputs, "float32")))
        shape = ops.shape(inputs)
        if self.data_format == "channels_last":
            return ops.reshape(gate, (-1, shape[1], shape[2], self.groups))
        return ops.reshape(gate, (-1, self.groups, shape[2], shape[3]))

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
