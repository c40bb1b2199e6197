"""Gate extraction, activation statistics and plots, against the float64 reference."""

import os

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from keras_sge import visualization as vis
from keras_sge.layers import SpatialGroupEnhance
from tests.helpers import BACKEND
from tests.reference import sge_reference

GROUPS = 4


def _sge(rng, name, data_format, channels):
    layer = SpatialGroupEnhance(groups=GROUPS, data_format=data_format, name=name)
    shape = (None, channels, 5, 6) if data_format == "channels_first" else (None, 5, 6, channels)
    layer.build(shape)
    gamma = rng.normal(size=GROUPS).astype("float32") * 2.0
    beta = rng.normal(size=GROUPS).astype("float32")
    layer.set_weights([gamma, beta])
    return layer, gamma, beta


def _two_sge_model(rng, data_format, names=("stem_sge", "head_sge")):
    """x -> SGE -> tanh -> SGE -> pooled; no convolutions, so any layout runs."""
    shape = (16, 5, 6) if data_format == "channels_first" else (5, 6, 16)
    first, g1, b1 = _sge(rng, names[0], data_format, 16)
    second, g2, b2 = _sge(rng, names[1], data_format, 16)
    inputs = keras.Input(shape)
    x = first(inputs)
    x = keras.layers.Activation("tanh")(x)
    x = second(x)
    outputs = keras.layers.GlobalAveragePooling2D(data_format=data_format)(x)
    return keras.Model(inputs, outputs), (g1, b1), (g2, b2)


def _nhwc(x, data_format):
    return np.transpose(x, (0, 2, 3, 1)) if data_format == "channels_first" else x


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gates_and_norms_match_reference(rng, data_format):
    model, (g1, b1), (g2, b2) = _two_sge_model(rng, data_format)
    images = rng.normal(size=(3,) + model.input.shape[1:]).astype("float32") * 2.0
    before_predict = ops.convert_to_numpy(model(images))

    results = vis.sge_gates(model, images, return_features=True)

    assert list(results) == ["stem_sge", "head_sge"]
    # The reference chain, computed independently of the model's graph.
    y1 = sge_reference(images, g1, b1, GROUPS, data_format=data_format)
    x2 = np.tanh(y1)
    y2 = sge_reference(x2, g2, b2, GROUPS, data_format=data_format)
    expected = {
        "stem_sge": (
            images,
            y1,
            sge_reference(images, g1, b1, GROUPS, data_format=data_format, return_gate=True),
        ),
        "head_sge": (
            x2,
            y2,
            sge_reference(x2, g2, b2, GROUPS, data_format=data_format, return_gate=True),
        ),
    }
    for name, (x, y, gate) in expected.items():
        result = results[name]
        assert result.groups == GROUPS
        assert result.gate.shape == (3, 5, 6, GROUPS)
        assert result.gate.dtype == np.float32
        assert np.all((result.gate > 0) & (result.gate < 1))
        np.testing.assert_allclose(result.gate, gate, rtol=1e-5, atol=1e-6)
        x, y = _nhwc(x, data_format), _nhwc(y, data_format)
        np.testing.assert_allclose(result.features_before, x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.norm_before, np.linalg.norm(x, axis=-1), rtol=1e-5)
        np.testing.assert_allclose(
            result.norm_after, np.linalg.norm(y, axis=-1), rtol=1e-4, atol=1e-6
        )
    # The model is left as it was.
    assert len(model.layers) == 5
    np.testing.assert_array_equal(ops.convert_to_numpy(model(images)), before_predict)
    # Restricting to one layer, and without features.
    only = vis.sge_gates(model, images, layer_names="head_sge")
    assert list(only) == ["head_sge"] and only["head_sge"].features_before is None
    np.testing.assert_allclose(only["head_sge"].gate, results["head_sge"].gate, rtol=1e-6)


def test_conv_model_and_batched_prediction(rng):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    sge, gamma, beta = _sge(rng, "layer1_0_sge", "channels_last", 32)
    x = sge(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    images = rng.normal(size=(4, 12, 12, 3)).astype("float32")
    result = vis.sge_gates(model, images, batch_size=2, return_features=True)["layer1_0_sge"]
    assert result.gate.shape == (4, 6, 6, GROUPS)
    expected = sge_reference(result.features_before, gamma, beta, GROUPS, return_gate=True)
    np.testing.assert_allclose(result.gate, expected, rtol=1e-5, atol=1e-6)


def test_nested_functional_model(rng):
    inner_in = keras.Input((5, 6, 16))
    sge, gamma, beta = _sge(rng, "sge", "channels_last", 16)
    inner = keras.Model(inner_in, sge(inner_in), name="backbone")
    outer_in = keras.Input((5, 6, 16))
    x = keras.layers.Activation("tanh")(outer_in)
    outer = keras.Model(outer_in, inner(x))
    images = rng.normal(size=(2, 5, 6, 16)).astype("float32")

    assert vis.find_sge_layers(outer) == ["backbone/sge"]
    result = vis.sge_gates(outer, images)["backbone/sge"]
    expected = sge_reference(np.tanh(images), gamma, beta, GROUPS, return_gate=True)
    np.testing.assert_allclose(result.gate, expected, rtol=1e-5, atol=1e-6)


def test_stage_selection_and_errors(rng):
    inputs = keras.Input((5, 6, 16))
    x = inputs
    for name in ("layer1_0_sge", "layer2_0_sge", "layer2_1_sge"):
        x = _sge(rng, name, "channels_last", 16)[0](x)
    model = keras.Model(inputs, x)
    assert vis.select_sge_layers(model) == ["layer2_0_sge", "layer2_1_sge"]
    assert vis.select_sge_layers(model, "layer1") == ["layer1_0_sge"]
    assert vis.select_sge_layers(model, "layer2_1_sge") == ["layer2_1_sge"]
    with pytest.raises(ValueError, match="stage 'layer3'.*layer1"):
        vis.select_sge_layers(model, "layer3")
    with pytest.raises(ValueError, match="Unknown SGE layer.*layer9_0_sge"):
        vis.sge_gates(model, np.zeros((1, 5, 6, 16), "float32"), ["layer9_0_sge"])
    plain = keras.Model(inputs, keras.layers.Activation("relu")(inputs))
    with pytest.raises(ValueError, match="no SpatialGroupEnhance"):
        vis.sge_gates(plain, np.zeros((1, 5, 6, 16), "float32"))


def test_activation_statistics_match_numpy(rng):
    model, (g1, b1), (g2, b2) = _two_sge_model(
        rng, "channels_last", ("layer1_0_sge", "layer1_1_sge")
    )
    batches = [rng.normal(size=(3, 5, 6, 16)).astype("float32") * s for s in (1.0, 3.0, 0.5)]
    labels = np.zeros(3, "int32")
    stats = vis.activation_statistics(model, [(b, labels) for b in batches], "layer1", max_images=7)

    images = np.concatenate(batches)[:7].astype("float64")
    x1, y1 = images, sge_reference(images, g1, b1, GROUPS)
    x2 = np.tanh(y1)
    y2 = sge_reference(x2, g2, b2, GROUPS)
    a1 = sge_reference(x1, g1, b1, GROUPS, return_gate=True)
    a2 = sge_reference(x2, g2, b2, GROUPS, return_gate=True)

    def variance(x):  # (N, G): over each group's positions and channels
        return np.stack([x[..., k * 4 : (k + 1) * 4].var(axis=(1, 2, 3)) for k in range(GROUPS)], 1)

    assert stats.layer_names == ["layer1_0_sge", "layer1_1_sge"]
    assert stats.num_images == 7
    for row, (x, y, a) in enumerate(((x1, y1, a1), (x2, y2, a2))):
        np.testing.assert_allclose(stats.variance_before[row], variance(x).mean(0), rtol=1e-5)
        np.testing.assert_allclose(stats.variance_after[row], variance(y).mean(0), rtol=1e-4)
        np.testing.assert_allclose(stats.mean_gate[row], a.mean(axis=(1, 2)).mean(0), rtol=1e-5)
        gain = variance(y) / (a.mean(axis=(1, 2)) ** 2 * variance(x))
        np.testing.assert_allclose(stats.contrast_gain[row], gain.mean(0), rtol=1e-4)
    with pytest.raises(ValueError, match="no images"):
        vis.activation_statistics(model, [])


@pytest.mark.backend_independent
def test_denormalize_inverts_the_pipeline_normalisation(rng):
    import tensorflow as tf

    from keras_sge.data import normalize_images

    pixels = rng.integers(0, 256, size=(2, 4, 5, 3)).astype("uint8")
    for data_format in ("channels_last", "channels_first"):
        normalised = np.asarray(normalize_images(tf.constant(pixels), data_format=data_format))
        shown = vis.denormalize_images(normalised, data_format)
        assert shown.shape == (2, 4, 5, 3)
        np.testing.assert_allclose(shown, pixels / 255.0, atol=1e-5)
    with pytest.raises(ValueError, match="3 colour channels"):
        vis.denormalize_images(np.zeros((1, 4, 4, 5)), "channels_last")


def _png_size(path):
    assert os.path.getsize(path) > 1000
    with Image.open(path) as image:
        return image.format, image.size


@pytest.mark.backend_independent
def test_plots_are_written(rng, tmp_path):
    images = rng.normal(size=(3, 32, 32, 3)).astype("float32")
    gate = rng.uniform(0.2, 0.9, size=(3, 4, 4, 8)).astype("float32")
    gate[1, :2, :2, 5] = 0.01  # group 5 varies most in image 1
    assert vis.most_varied_groups(gate[1], 2)[0] == 5
    result = vis.GateResult(
        "layer4_2_sge", 8, gate, rng.uniform(size=(3, 4, 4)), rng.uniform(size=(3, 4, 4))
    )
    path = vis.plot_attention_maps(
        images,
        result,
        str(tmp_path / "maps" / "gates.png"),
        num_groups=2,
        max_images=2,
        captions=["a", "b", "c"],
    )
    assert _png_size(path)[0] == "PNG"

    stats = vis.ActivationStatistics(
        ["layer4_0_sge", "layer4_1_sge"],
        rng.uniform(1, 2, (2, 8)),
        rng.uniform(0.2, 1, (2, 8)),
        rng.uniform(0.5, 0.8, (2, 8)),
        rng.uniform(0.9, 1.5, (2, 8)),
        12,
    )
    one = vis.plot_activation_statistics(stats, str(tmp_path / "stats.png"))
    two = vis.plot_activation_statistics({"SGE": stats, "other": stats}, str(tmp_path / "both.png"))
    assert _png_size(one)[0] == "PNG" and _png_size(two)[0] == "PNG"


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="reads the graph of a full-depth builder (slow to build on jax); the "
    "backend math is covered above on every backend; run once, in the tensorflow pass",
)
def test_builder_gates_every_stage(rng):
    from keras_sge.applications import SGEResNet50

    model = SGEResNet50(
        input_shape=(64, 64, 3),
        classes=4,
        sge_options={"gamma_initializer": keras.initializers.RandomNormal(stddev=2.0, seed=1)},
    )
    names = vis.find_sge_layers(model)
    assert len(names) == 16 and names[0] == "layer1_0_sge" and names[-1] == "layer4_2_sge"
    assert vis.select_sge_layers(model) == ["layer4_0_sge", "layer4_1_sge", "layer4_2_sge"]
    images = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    # Early layers only: the extractor stops there and compiles quickly.
    results = vis.sge_gates(model, images, ["layer1_2_sge", "layer2_0_sge"], return_features=True)
    assert list(results) == ["layer1_2_sge", "layer2_0_sge"]
    for name, side in (("layer1_2_sge", 16), ("layer2_0_sge", 8)):
        result = results[name]
        layer = model.get_layer(name)
        gamma, beta = (ops.convert_to_numpy(w) for w in (layer.gamma, layer.beta))
        assert result.gate.shape == (2, side, side, 64)
        expected = sge_reference(result.features_before, gamma, beta, 64, return_gate=True)
        np.testing.assert_allclose(result.gate, expected, rtol=1e-5, atol=1e-6)
        y = sge_reference(result.features_before, gamma, beta, 64)
        np.testing.assert_allclose(result.features_after, y, rtol=1e-4, atol=1e-5)
