"""keras-sge: Spatial Group-wise Enhance (SGE) attention for Keras 3.

The package works on every Keras backend (TensorFlow, JAX, PyTorch); pick one
with the `KERAS_BACKEND` environment variable before importing Keras.

`import keras_sge` loads the core only (`layers`, `ops`, `applications`, `optimizers`,
`losses`: Keras and NumPy), which also registers what the programs' `.keras`
files name, so `keras.saving.load_model(path)` opens them. `data`,
`training`, `visualization` and `detection` load on first use and need their
extras (`pip install "keras-sge[train]"`, `"keras-sge[viz]"`,
`"keras-sge[detection]"`).
"""

__version__ = "0.2.0"

from keras_sge import applications, layers, losses, ops, optimizers  # noqa: E402,F401
from keras_sge._lazy import lazy_exports, register_deferred_class  # noqa: E402

__getattr__, __dir__ = lazy_exports(
    __name__, {"data": "", "training": "", "visualization": "", "detection": ""}
)
# Saved detectors load after `import keras_sge` without importing keras-hub here.
register_deferred_class(
    "keras_sge>SGEResNetBackbone", "keras_sge.detection.backbone", "SGEResNetBackbone"
)
