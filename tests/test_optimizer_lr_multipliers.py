"""SGDWithL2(lr_multipliers=...): per-variable learning-rate factors by path prefix."""

import keras
import numpy as np
import pytest

from keras_sge.training import SGDWithL2


def test_longest_prefix_sets_the_factor():
    layers = {name: keras.layers.Dense(2, name=name) for name in ("fc", "fc_extra", "body")}
    for layer in layers.values():
        layer.build((None, 3))
    variables = [v for layer in layers.values() for v in layer.trainable_variables]
    start = [keras.ops.convert_to_numpy(v) for v in variables]
    grads = [np.full(v.shape, 1.0, "float32") for v in variables]
    optimizer = SGDWithL2(
        learning_rate=0.5, momentum=0.0, l2=0.1, lr_multipliers={"": 0.1, "fc/": 1.0}
    )
    optimizer.apply(grads, variables)
    for v, w0 in zip(variables, start):
        factor = 1.0 if v.path.startswith("fc/") else 0.1  # fc_extra/ matches "" only
        expected = w0 - 0.5 * factor * (1.0 + 0.1 * w0)  # coupled L2 scaled too
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), expected, rtol=1e-6, atol=1e-6)
    config = optimizer.get_config()
    assert SGDWithL2.from_config(config).lr_multipliers == {"": 0.1, "fc/": 1.0}


def test_bad_factor_is_refused():
    with pytest.raises(ValueError, match="lr_multipliers"):
        SGDWithL2(lr_multipliers={"fc/": -1.0})
