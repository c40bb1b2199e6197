"""SpatialGroupEnhance against the float64 NumPy reference, on the active backend."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_sge.layers import SpatialGroupEnhance
from tests.helpers import BACKEND, BACKENDS, finite_differences, subprocess_env
from tests.reference import sge_reference


def _to_layout(x_nhwc, data_format):
    return x_nhwc if data_format == "channels_last" else np.transpose(x_nhwc, (0, 3, 1, 2))


def _layer_with_random_params(rng, groups, data_format, input_shape, **kwargs):
    layer = SpatialGroupEnhance(groups=groups, data_format=data_format, **kwargs)
    layer.build(input_shape)
    gamma = rng.normal(size=groups).astype("float32")
    beta = rng.normal(size=groups).astype("float32")
    layer.set_weights([gamma, beta])
    return layer, gamma, beta


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "shape,groups",
    [
        ((2, 7, 5, 64), 8),  # odd spatial size
        ((3, 4, 4, 32), 1),  # one group holds every channel
        ((2, 3, 6, 24), 24),  # one channel per group
        ((1, 2, 1, 128), 64),  # the paper's group count, H*W == 2
        ((2, 9, 9, 96), 32),
        ((2, 4, 3, 35), 5),  # 7 channels per group: odd halvings
        ((2, 3, 3, 40), 8),  # 5 channels per group
    ],
)
def test_matches_float64_reference(rng, data_format, shape, groups):
    x = _to_layout(rng.normal(size=shape).astype("float32") * 3.0, data_format)
    layer, gamma, beta = _layer_with_random_params(rng, groups, data_format, x.shape)
    y = ops.convert_to_numpy(layer(x))
    expected = sge_reference(x, gamma, beta, groups, data_format=data_format)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_grouping_is_contiguous_not_interleaved(rng):
    # Only the first group's channels are large: an interleaved grouping
    # would spread them over every group and change the output.
    x = rng.normal(size=(2, 5, 5, 16)).astype("float32")
    x[..., :4] *= 50.0
    layer, gamma, beta = _layer_with_random_params(rng, 4, "channels_last", x.shape)
    y = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y, sge_reference(x, gamma, beta, 4), rtol=1e-5, atol=1e-5)
    interleaved = (
        sge_reference(
            x.reshape(2, 5, 5, 4, 4).swapaxes(-1, -2).reshape(2, 5, 5, 16), gamma, beta, 4
        )
        .reshape(2, 5, 5, 4, 4)
        .swapaxes(-1, -2)
        .reshape(2, 5, 5, 16)
    )
    assert np.max(np.abs(y - interleaved)) > 1e-2


def test_default_weights_give_constant_gate(rng):
    x = rng.normal(size=(2, 6, 6, 32)).astype("float32")
    layer = SpatialGroupEnhance(groups=8)
    y = ops.convert_to_numpy(layer(x))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["gamma", "beta"]
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.gamma), np.zeros(8))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.beta), np.ones(8))
    np.testing.assert_allclose(y, x / (1.0 + np.exp(-1.0)), rtol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_single_position_is_finite_and_uses_beta(rng, data_format):
    x = _to_layout(rng.normal(size=(3, 1, 1, 16)).astype("float32"), data_format)
    layer, _, beta = _layer_with_random_params(rng, 4, data_format, x.shape)
    y = ops.convert_to_numpy(layer(x))
    assert np.all(np.isfinite(y))
    gate = np.repeat(1.0 / (1.0 + np.exp(-beta)), 4)
    gate = gate if data_format == "channels_last" else gate[:, None, None]
    np.testing.assert_allclose(y, x * gate, rtol=1e-6)


def test_compute_gate_matches_reference(rng):
    x = rng.normal(size=(2, 5, 4, 32)).astype("float32")
    layer, gamma, beta = _layer_with_random_params(rng, 8, "channels_last", x.shape)
    gate = ops.convert_to_numpy(layer.compute_gate(x))
    expected = sge_reference(x, gamma, beta, 8, return_gate=True)
    assert gate.shape == (2, 5, 4, 8)
    np.testing.assert_allclose(gate, expected, rtol=1e-5, atol=1e-6)

    x_cf = _to_layout(x, "channels_first")
    layer_cf = SpatialGroupEnhance(8, data_format="channels_first")
    layer_cf.build(x_cf.shape)
    layer_cf.set_weights([gamma, beta])
    gate_cf = ops.convert_to_numpy(layer_cf.compute_gate(x_cf))
    np.testing.assert_allclose(gate_cf, np.transpose(expected, (0, 3, 1, 2)), rtol=1e-5, atol=1e-6)


def test_without_normalization_matches_reference(rng):
    x = rng.normal(size=(2, 4, 4, 16)).astype("float32")
    layer, gamma, beta = _layer_with_random_params(
        rng, 4, "channels_last", x.shape, normalize=False
    )
    y = ops.convert_to_numpy(layer(x))
    expected = sge_reference(x, gamma, beta, 4, normalize=False)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_statistics_in_float32(rng, policy):
    # 32 channels per group with magnitudes up to 1e3: the similarity reaches
    # ~1e7, far beyond float16's range, so it must be computed in float32.
    x = rng.uniform(-1e3, 1e3, size=(2, 6, 6, 64)).astype("float32")
    reference_layer, gamma, beta = _layer_with_random_params(rng, 2, "channels_last", x.shape)
    expected = ops.convert_to_numpy(reference_layer(x))

    keras.config.set_dtype_policy(policy)
    layer = SpatialGroupEnhance(groups=2)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    assert layer.gamma.dtype == "float32" and layer.beta.dtype == "float32"
    compute_dtype = policy.split("_")[1]
    for inputs in (x, ops.cast(x, compute_dtype)):
        y = layer(inputs)
        assert keras.backend.standardize_dtype(y.dtype) == compute_dtype
        y = ops.convert_to_numpy(ops.cast(y, "float32"))
        assert np.all(np.isfinite(y))
        tolerance = 1e-2 if compute_dtype == "bfloat16" else 2e-3
        np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance * 1e3)


def test_unknown_batch_height_width_in_functional_model(rng):
    inputs = keras.Input((None, None, 64))
    layer = SpatialGroupEnhance(groups=16)
    model = keras.Model(inputs, layer(inputs))
    assert model.output.shape == (None, None, None, 64)
    layer.set_weights(
        [rng.normal(size=16).astype("float32"), rng.normal(size=16).astype("float32")]
    )
    gamma, beta = (ops.convert_to_numpy(w) for w in layer.weights)
    for shape in [(1, 5, 7, 64), (3, 8, 2, 64)]:
        x = rng.normal(size=shape).astype("float32")
        y = model.predict(x, verbose=0)
        np.testing.assert_allclose(y, sge_reference(x, gamma, beta, 16), rtol=1e-5, atol=1e-6)


def _compiled_call(layer):
    """The layer's call compiled the way each backend compiles."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(
            layer,
            jit_compile=True,
            input_signature=[tf.TensorSpec((None, None, None, 32), "float32")],
        )
    if BACKEND == "jax":
        import jax

        def call(x):
            outputs, _ = layer.stateless_call(
                layer.trainable_variables, layer.non_trainable_variables, x
            )
            return outputs

        return jax.jit(call)
    return layer  # torch: eager, the way Keras runs torch models by default


def test_compiled_with_dynamic_shapes(rng):
    layer, gamma, beta = _layer_with_random_params(rng, 8, "channels_last", (None, None, None, 32))
    call = _compiled_call(layer)
    for shape in [(2, 5, 6, 32), (1, 9, 3, 32)]:
        x = rng.normal(size=shape).astype("float32")
        y = ops.convert_to_numpy(call(ops.convert_to_tensor(x)))
        np.testing.assert_allclose(y, sge_reference(x, gamma, beta, 8), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,shape,message",
    [
        ({"groups": 64}, (None, 8, 8, 96), r"channels \(96\) must be divisible by `groups` \(64\)"),
        ({"groups": 4}, (None, 8, 32), r"4D input.*rank 3"),
        ({"groups": 4}, (None, 2, 8, 8, 32), r"4D input.*rank 5"),
        ({"groups": 4}, (None, 8, 8, None), r"known channel dimension"),
        (
            {"groups": 4, "data_format": "channels_first"},
            (None, 30, 8, 8),
            r"channels \(30\) must be divisible by `groups` \(4\)",
        ),
    ],
)
def test_bad_input_shapes_raise(kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        SpatialGroupEnhance(**kwargs).build(shape)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"groups": 0}, r"positive integer.*groups=0"),
        ({"groups": -3}, r"positive integer.*groups=-3"),
        ({"groups": 2.5}, r"positive integer.*groups=2.5"),
        ({"epsilon": -1e-5}, r"epsilon.*>= 0.*-1e-05"),
        ({"data_format": "NHWC"}, r"data_format.*channels_last.*'NHWC'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpatialGroupEnhance(**kwargs)


def test_data_format_defaults_to_keras_config():
    keras.config.set_image_data_format("channels_first")
    assert SpatialGroupEnhance(4).data_format == "channels_first"
    keras.config.set_image_data_format("channels_last")
    assert SpatialGroupEnhance(4).data_format == "channels_last"


def test_config_round_trip():
    layer = SpatialGroupEnhance(
        groups=8,
        epsilon=1e-3,
        data_format="channels_first",
        gamma_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=3),
        beta_initializer="zeros",
        gamma_regularizer=keras.regularizers.L2(1e-4),
        beta_regularizer=keras.regularizers.L1(1e-5),
        gamma_constraint=keras.constraints.MaxNorm(2.0),
        beta_constraint="non_neg",
        normalize=False,
        name="sge",
    )
    config = layer.get_config()
    json.dumps(config)  # plain data only
    clone = SpatialGroupEnhance.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.gamma_initializer, keras.initializers.RandomNormal)
    assert clone.gamma_initializer.stddev == 0.1
    assert isinstance(clone.beta_regularizer, keras.regularizers.L1)
    assert isinstance(clone.gamma_constraint, keras.constraints.MaxNorm)
    assert isinstance(clone.beta_constraint, keras.constraints.NonNeg)
    assert (clone.groups, clone.epsilon, clone.data_format, clone.normalize) == (
        8,
        1e-3,
        "channels_first",
        False,
    )
    assert layer.compute_output_shape((None, 16, 5, 5)) == (None, 16, 5, 5)


def test_regularizers_add_losses(rng):
    layer = SpatialGroupEnhance(
        groups=4, gamma_regularizer=keras.regularizers.L2(0.5), beta_regularizer="l1"
    )
    layer(rng.normal(size=(1, 3, 3, 8)).astype("float32"))
    assert len(layer.losses) == 2


def _small_model(groups=8):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
    x = SpatialGroupEnhance(groups=groups, name="sge")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    return keras.Model(inputs, outputs)


def _randomize_sge(model, rng):
    sge = model.get_layer("sge")
    sge.set_weights([rng.normal(size=sge.groups).astype("float32") for _ in range(2)])


def test_keras_file_round_trip_safe_mode(rng, tmp_path):
    model = _small_model()
    _randomize_sge(model, rng)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True, no custom_objects
    assert isinstance(loaded.get_layer("sge"), SpatialGroupEnhance)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


_WRITE_MODEL = """
import sys
import keras, numpy as np
import keras_sge
from tests.test_spatial_group_enhance import _randomize_sge, _small_model
keras.utils.set_random_seed(7)
model = _small_model()
_randomize_sge(model, np.random.default_rng(7))
x = np.random.default_rng(8).normal(size=(2, 6, 6, 3)).astype("float32")
model.save(sys.argv[1] + "/model.keras")
np.save(sys.argv[1] + "/x.npy", x)
np.save(sys.argv[1] + "/y.npy", model.predict(x, verbose=0))
"""


@pytest.mark.parametrize("writer", [b for b in BACKENDS if b != BACKEND])
def test_keras_file_from_another_backend_loads(tmp_path, writer):
    subprocess.run(
        [sys.executable, "-c", _WRITE_MODEL, str(tmp_path)],
        env=subprocess_env(writer),
        check=True,
        capture_output=True,
        timeout=300,
    )
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    y = loaded.predict(np.load(tmp_path / "x.npy"), verbose=0)
    np.testing.assert_allclose(y, np.load(tmp_path / "y.npy"), rtol=1e-5, atol=1e-5)


def _gradients(layer, x, upstream):
    """d(sum(layer(x) * upstream)) / d(gamma, beta, x) on the active backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * upstream)
        grads = tape.gradient(loss, [layer.gamma.value, layer.beta.value, x])
    elif BACKEND == "jax":
        import jax

        def loss(gamma, beta, x):
            y, _ = layer.stateless_call([gamma, beta], [], x)
            return (y * upstream).sum()

        grads = jax.grad(loss, argnums=(0, 1, 2))(layer.gamma.value, layer.beta.value, x)
    else:
        import torch

        x = torch.tensor(x, requires_grad=True)
        loss = (layer(x) * torch.tensor(upstream)).sum()
        loss.backward()
        grads = [layer.gamma.value.grad, layer.beta.value.grad, x.grad]
    return [ops.convert_to_numpy(g) for g in grads]


@pytest.mark.parametrize(
    "data_format, groups, normalize, channels",
    [
        ("channels_last", 2, True, 8),
        ("channels_first", 2, True, 8),
        ("channels_last", 8, True, 8),  # one channel per group
        ("channels_last", 2, True, 14),  # 7 channels per group: odd halvings
        ("channels_last", 2, False, 8),
        ("channels_first", 2, False, 8),
    ],
)
def test_gradients_match_finite_differences(rng, data_format, groups, normalize, channels):
    # Every backend is held to the same float64 finite differences, so the
    # three backends agree with each other within twice this tolerance. On
    # TensorFlow (eager) and JAX this checks the backend kernels' gradients.
    x = _to_layout(rng.normal(size=(2, 4, 3, channels)), data_format)
    upstream = rng.normal(size=x.shape)
    layer, gamma, beta = _layer_with_random_params(
        rng, groups, data_format, x.shape, normalize=normalize
    )
    grads = _gradients(layer, x.astype("float32"), upstream.astype("float32"))

    def loss(gamma, beta, x):
        y = sge_reference(x, gamma, beta, groups, data_format=data_format, normalize=normalize)
        return np.sum(y * upstream)

    gamma, beta = gamma.astype("float64"), beta.astype("float64")
    expected = [
        finite_differences(lambda g: loss(g, beta, x), gamma),
        finite_differences(lambda b: loss(gamma, b, x), beta),
        finite_differences(lambda v: loss(gamma, beta, v), x),
    ]
    for name, got, want in zip(["gamma", "beta", "x"], grads, expected):
        assert np.all(np.abs(want) > 0) if name != "x" else np.any(want != 0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=5e-5, err_msg=name)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradients_under_mixed_precision(rng, data_format):
    x = _to_layout(rng.normal(size=(2, 6, 5, 16)), data_format).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer, _, _ = _layer_with_random_params(rng, 4, data_format, x.shape)
    want = _gradients(layer, x, upstream)
    half = SpatialGroupEnhance(4, data_format=data_format, dtype="mixed_float16")
    half.build(x.shape)
    half.set_weights(layer.get_weights())
    got = _gradients(half, x.astype("float16"), upstream.astype("float16"))
    assert got[2].dtype == np.float16
    for name, g, w in zip(["gamma", "beta", "x"], got, want):
        np.testing.assert_allclose(
            g.astype("float32"), w, rtol=2e-2, atol=2e-2 * np.abs(w).max(), err_msg=name
        )


@pytest.mark.parametrize("spatial", [(1, 1), (3, 3)])
def test_gradients_finite_where_the_std_is_zero(rng, spatial):
    # One position (a ResNet's last stage at 32 px), or a constant map.
    x = np.broadcast_to(rng.normal(size=(2, 1, 1, 8)), (2, *spatial, 8)).copy()
    layer, _, _ = _layer_with_random_params(rng, 2, "channels_last", x.shape)
    grads = _gradients(layer, x.astype("float32"), np.ones_like(x, "float32"))
    for grad in grads:
        assert np.all(np.isfinite(grad))


@pytest.mark.skipif(BACKEND != "torch", reason="torch dispatch; torch pass only")
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_torch_pass_makes_no_tensors_from_python_scalars(rng, data_format):
    # On a GPU each such tensor is a host-to-device copy that first waits for
    # every queued kernel, which stalled SGE-ResNet50 once per SGE layer.
    import torch

    x = torch.tensor(_to_layout(rng.normal(size=(2, 5, 5, 32)), data_format), dtype=torch.float32)
    x.requires_grad_(True)
    layer, _, _ = _layer_with_random_params(rng, 8, data_format, tuple(x.shape))
    with torch.profiler.profile() as profile:
        layer(x).sum().backward()
    events = {event.name for event in profile.events()}
    assert "aten::sigmoid" in events  # the profile saw the layer
    assert not events & {"aten::lift_fresh", "aten::scalar_tensor"}


def test_fit_step_updates_gamma_and_beta(rng):
    model = _small_model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    sge = model.get_layer("sge")
    before = [ops.convert_to_numpy(w).copy() for w in sge.weights]
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=8)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in sge.weights]
    for old, new in zip(before, after):
        assert np.all(np.isfinite(new)) and not np.allclose(old, new)


def test_sequential_and_subclassed_models(rng):
    x = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    sequential = keras.Sequential([keras.Input((4, 4, 8)), SpatialGroupEnhance(2)])

    class Block(keras.Model):
        def __init__(self):
            super().__init__()
            self.sge = SpatialGroupEnhance(2)

        def call(self, inputs):
            return self.sge(inputs) + inputs

    expected = sge_reference(x, np.zeros(2), np.ones(2), 2)
    np.testing.assert_allclose(ops.convert_to_numpy(sequential(x)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(Block()(x)), expected + x, rtol=1e-5, atol=1e-6)
