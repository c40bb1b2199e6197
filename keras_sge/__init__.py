"""keras-sge: Spatial Group-wise Enhance (SGE) attention for Keras 3.

The package works on every Keras backend (TensorFlow, JAX, PyTorch); pick one
with the `KERAS_BACKEND` environment variable before importing Keras.
"""

__version__ = "0.1.0"

from keras_sge import layers  # noqa: E402,F401
from keras_sge import data  # noqa: E402,F401
from keras_sge import visualization  # noqa: E402,F401
from keras_sge import applications  # noqa: E402,F401
from keras_sge import benchmarking  # noqa: E402,F401
from keras_sge import training  # noqa: E402,F401
