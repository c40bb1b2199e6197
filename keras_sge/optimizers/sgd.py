"""SGD with coupled L2 weight decay, as `torch.optim.SGD(weight_decay=...)` does it."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sge")
class SGDWithL2(keras.optimizers.Optimizer):
    """Stochastic gradient descent with momentum and coupled L2 weight decay.

    This is the update of `torch.optim.SGD(lr, momentum, weight_decay,
    nesterov)` (with `dampening=0`), the optimizer of the SGE paper:

        g = grad + l2 * w                 # L2 decay enters the gradient ...
        b = momentum * b + g              # ... before momentum
        w = w - lr * b                    # (nesterov: w - lr * (g + momentum * b))

    It differs from `keras.optimizers.SGD(weight_decay=...)`, whose decay is
    decoupled (applied to the weights, outside momentum), and from Keras' SGD
    momentum, which folds the learning rate into the velocity (the two agree
    only while the learning rate stays constant).

    Args:
        learning_rate: float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: float in [0, 1).
        l2: coupled L2 weight-decay factor (PyTorch's `weight_decay`).
        nesterov: whether to use Nesterov momentum.
        decay_vectors: whether parameters with at most one dimension (BatchNorm
            scales and offsets, biases, SGE `gamma`/`beta`) are decayed too.
            `True` is the paper's "every parameter"; `False` decays only
            convolution and dense kernels.
        lr_multipliers: optional `{variable path prefix: factor}` scaling the
            learning rate of the variables whose `path` starts with the
            prefix (the longest matching prefix wins; `""` matches every
            variable; unmatched variables use 1), e.g. `{"": 0.1, "fc/": 1.0}`
            for a backbone learning rate ten times smaller than the head's.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `global_clipnorm`, `loss_scale_factor`, ...), except `weight_decay`.

    Example:

    >>> optimizer = SGDWithL2(learning_rate=0.1, momentum=0.9, l2=1e-4)
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        l2: float = 1e-4,
        nesterov: bool = False,
        decay_vectors: bool = True,
        lr_multipliers: dict[str, float] | None = None,
        name: str = "sgd_with_l2",
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "SGDWithL2 applies coupled L2 decay through `l2`; the decoupled "
                f"`weight_decay` argument is not supported. Received: "
                f"weight_decay={kwargs['weight_decay']}"
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        l2 = float(l2)
        if l2 < 0.0:
            raise ValueError(f"`l2` must be >= 0. Received: l2={l2}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs `momentum` > 0.")
        self.momentum = momentum
        self.l2 = l2
        self.nesterov = bool(nesterov)
        self.decay_vectors = bool(decay_vectors)
        self.lr_multipliers = dict(lr_multipliers or {})
        for prefix, factor in self.lr_multipliers.items():
            if not isinstance(prefix, str) or not factor >= 0:
                raise ValueError(
                    "`lr_multipliers` maps variable path prefixes (str) to factors "
                    f">= 0. Received: {prefix!r}: {factor!r}"
                )

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # One L2 factor per trainable variable, indexed like the momentum slots.
        self._l2_factors = [
            self.l2 if (self.decay_vectors or len(v.shape) > 1) else 0.0 for v in variables
        ]
        self._lr_factors = [self._lr_factor(v.path) for v in variables]
        self.momentums = []
        if self.momentum != 0.0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _lr_factor(self, path: str) -> float:
        matches = [prefix for prefix in self.lr_multipliers if path.startswith(prefix)]
        return float(self.lr_multipliers[max(matches, key=len)]) if matches else 1.0

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        if self._lr_factors[index] != 1.0:
            learning_rate = learning_rate * ops.cast(self._lr_factors[index], variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        l2 = self._l2_factors[index]
        if l2:
            gradient = ops.add(gradient, ops.multiply(ops.cast(l2, variable.dtype), variable))
        if self.momentum == 0.0:
            self.assign_sub(variable, ops.multiply(learning_rate, gradient))
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        buffer = self.momentums[index]
        new_buffer = ops.add(ops.multiply(momentum, buffer), gradient)
        self.assign(buffer, new_buffer)
        step = (
            ops.add(gradient, ops.multiply(momentum, new_buffer)) if self.nesterov else new_buffer
        )
        self.assign_sub(variable, ops.multiply(learning_rate, step))

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(
            {
                "momentum": self.momentum,
                "l2": self.l2,
                "nesterov": self.nesterov,
                "decay_vectors": self.decay_vectors,
                "lr_multipliers": self.lr_multipliers,
            }
        )
        return config
