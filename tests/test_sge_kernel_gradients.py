"""The backend kernels' gradients against float64 finite differences, in every mode they run.

The kernels on TensorFlow, JAX (CPU) and torch (CPU, channels_last) derive
their backward passes by hand; here each is held to central differences of
the float64 NumPy reference, with and without normalisation, in both layouts,
eagerly and compiled, at spatial sizes below and above the block of
`sum_over_positions` (an odd block size, so the halvings set elements aside).
"""

import functools

import numpy as np
import pytest

from keras_sge import backend
from keras_sge.ops.sge import definition
from tests.helpers import BACKEND, finite_differences
from tests.reference import sge_reference
from tests.test_sge_precision import FORMATS, KERNEL_MODES, op_outputs

pytest.importorskip("torch")

KERNELS = {
    data_format: kernel
    for data_format, kernel in backend.select_kernels(BACKEND).items()
    if kernel is not definition
}
MODES = sorted(
    {*KERNEL_MODES, "eager", "compiled"} - ({"compiled"} if BACKEND == "torch" else set())
)


@pytest.mark.parametrize("spatial", [(3, 4), (6, 7)])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data_format", FORMATS)
def test_kernel_gradients_match_finite_differences(data_format, mode, normalize, spatial):
    if data_format not in KERNELS:
        pytest.skip(f"no {BACKEND} kernel for {data_format} on this device")
    rng = np.random.default_rng(7)
    groups = 2
    x, dy = (rng.normal(size=(2, 8, *spatial)) for _ in range(2))
    gamma, beta = rng.normal(size=groups), rng.normal(size=groups)
    kernel = functools.partial(KERNELS[data_format], normalize=normalize)
    inputs = (t.astype("float32") for t in (x, gamma, beta, dy))
    _, *grads = op_outputs(kernel, *inputs, groups, data_format, mode)

    def loss(x, gamma, beta):
        y = sge_reference(x, gamma, beta, groups, data_format="channels_first", normalize=normalize)
        return np.sum(y * dy)

    expected = [
        finite_differences(lambda v: loss(v, gamma, beta), x),
        finite_differences(lambda v: loss(x, v, beta), gamma),
        finite_differences(lambda v: loss(x, gamma, v), beta),
    ]
    for name, got, want in zip(("x", "gamma", "beta"), grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=5e-5, err_msg=name)
