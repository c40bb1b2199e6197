"""Smoke test of an installed keras-sge wheel, run from outside the checkout.

`.ci/run` builds the wheel, installs it into a fresh virtual environment with
JAX as the only backend and runs this file from a temporary folder, so that
`import keras_sge` can only find the installed package.
"""

import os
import subprocess
import sys
import tempfile

import keras
import numpy as np

import keras_sge
from keras_sge import applications
from keras_sge.layers import SpatialGroupEnhance

checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.abspath(keras_sge.__file__).startswith(checkout + os.sep):
    sys.exit(f"keras_sge was imported from the checkout ({keras_sge.__file__}), not the wheel")
assert "tensorflow" not in sys.modules, "the core import pulled TensorFlow"

x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
y = keras.ops.convert_to_numpy(SpatialGroupEnhance(groups=4)(x))
assert y.shape == x.shape and np.isfinite(y).all()

model = applications.SGEResNet18(weights=None, input_shape=(32, 32, 3), classes=1000)
probabilities = model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)
top = applications.decode_predictions(probabilities, top=3)
assert len(top[0]) == 3 and all(len(entry) == 3 for entry in top[0]), top

with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0), probabilities, atol=1e-6
    )
# The programs' console entry points (their flags need only the core).
script = os.path.join(os.path.dirname(sys.executable), "keras-sge-predict")
shown = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
assert shown.returncode == 0 and "--model" in shown.stdout, shown.stderr[-2000:]
print(f"wheel smoke test passed: keras_sge {keras_sge.__version__} from {keras_sge.__file__}")
