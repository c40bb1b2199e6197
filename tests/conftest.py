import keras
import numpy as np
import pytest

from tests.helpers import BACKEND


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts in float32, channels_last, with a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backend_independent: exercises no Keras backend code (tf.data, file "
        "formats); runs once, in the tensorflow pass",
    )


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(
        reason="backend-independent; runs once, in the KERAS_BACKEND=tensorflow pass"
    )
    for item in items:
        if "backend_independent" in item.keywords:
            item.add_marker(skip)
