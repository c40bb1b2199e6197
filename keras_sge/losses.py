"""Sparse categorical cross-entropy with label smoothing."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sge")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy between integer labels and class probabilities, with label smoothing.

    `keras.losses.SparseCategoricalCrossentropy` has no `label_smoothing`; this
    loss one-hot encodes the integer labels and applies
    `keras.losses.categorical_crossentropy(..., label_smoothing=...)`, so the
    target of the true class is `1 - s + s / K` and of every other class `s / K`.

    Args:
        label_smoothing: float in [0, 1).
        from_logits: whether `y_pred` holds logits rather than probabilities.
        reduction: a Keras loss reduction.
        name: loss name.

    Example:

    >>> loss = SparseCategoricalCrossentropyWithSmoothing(label_smoothing=0.1)
    >>> value = loss([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        from_logits: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "sparse_categorical_crossentropy_with_smoothing",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1). Received: {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot,
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "from_logits": self.from_logits})
        return config
