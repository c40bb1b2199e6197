import os

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")


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


def channels_first_convs_supported() -> bool:
    """TensorFlow on the CPU has no NCHW convolution kernels."""
    if BACKEND != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def subprocess_env(backend: str) -> dict:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


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
