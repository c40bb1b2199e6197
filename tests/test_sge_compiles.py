"""SGE compiles cleanly: Keras `jit_compile=True` on every backend, `torch.compile` on torch."""

import keras
import numpy as np
import pytest

import keras_sge
from keras_sge.layers import SpatialGroupEnhance
from keras_sge.ops import spatial_group_enhance
from tests.helpers import BACKEND


def test_sge_resnet18_trains_a_step_with_jit_compile():
    keras.utils.set_random_seed(0)
    model = keras_sge.applications.SGEResNet18(input_shape=(32, 32, 3), classes=3, weights=None)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=(4,))
    sge = [layer for layer in model.layers if isinstance(layer, SpatialGroupEnhance)]
    before = [keras.ops.convert_to_numpy(layer.beta) for layer in sge]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    # Every SGE layer took part in the compiled step. (At 32 px the last
    # stage has one position, where t = 0 and gamma gets no gradient.)
    for old, layer in zip(before, sge):
        assert not np.array_equal(old, keras.ops.convert_to_numpy(layer.beta)), layer.name


def _counting_backend(graphs):
    """A `torch.compile` backend that counts the graphs it is given and runs them as traced."""

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return backend


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile; torch pass only")
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_op_traces_as_one_graph_under_torch_compile(data_format):
    import torch

    graphs = []

    def sge(x, gamma, beta):
        return spatial_group_enhance(x, gamma, beta, groups=4, data_format=data_format)

    compiled = torch.compile(sge, backend=_counting_backend(graphs), fullgraph=True)
    x_shape = (2, 6, 6, 16) if data_format == "channels_last" else (2, 16, 6, 6)
    rng = np.random.default_rng(1)
    x, gamma, beta = (
        torch.tensor(rng.normal(size=shape).astype("float32"), requires_grad=True)
        for shape in (x_shape, (4,), (4,))
    )
    y = compiled(x, gamma, beta)
    torch.testing.assert_close(y, sge(x, gamma, beta), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert len(graphs) == 1


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile; torch pass only")
def test_new_layers_in_a_loop_do_not_recompile_under_torch_compile():
    import torch

    graphs = []

    def apply(layer, x):
        return layer.call(x)

    compiled = torch.compile(apply, backend=_counting_backend(graphs))
    x = torch.randn(2, 6, 6, 16)
    for _ in range(12):
        layer = SpatialGroupEnhance(4)
        layer.build(tuple(x.shape))
        torch.testing.assert_close(compiled(layer, x), layer(x))
    # One graph for the first layer, at most one more once dynamo marks what
    # changes between layers as dynamic; never one per layer.
    assert len(graphs) <= 2
