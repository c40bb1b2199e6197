"""Builders of keras_sge.applications: architecture, arguments, backbone use."""

import os

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge.layers import SpatialGroupEnhance
from tests.helpers import channels_first_convs_supported


def _trainable_count(model):
    # PyTorch counts parameters only; Keras' count_params() also counts the
    # BatchNorm moving statistics (buffers in PyTorch).
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Parameter counts of the paper's networks (1000 classes) and torchvision's.
@pytest.mark.parametrize(
    "builder, expected",
    [
        (applications.ResNet50, 25_557_032),
        (applications.SGEResNet50, 25_559_080),
        (applications.ResNet101, 44_549_160),
        (applications.SGEResNet101, 44_553_384),
        (applications.ResNet18, 11_689_512),
        (applications.SGEResNet18, 11_689_512 + 8 * 128),
    ],
)
def test_parameter_counts(builder, expected):
    model = builder()
    assert _trainable_count(model) == expected
    assert model.input.shape == (None, 224, 224, 3)
    assert model.output.shape == (None, 1000)


def test_layer_names_follow_the_official_modules():
    model = applications.SGEResNet50(input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    for name in (
        "conv1",
        "bn1",
        "layer1_0_conv1",
        "layer1_0_bn3",
        "layer1_0_sge",
        "layer1_0_downsample_0",
        "layer1_0_downsample_1",
        "layer3_5_sge",
        "layer4_2_sge",
        "fc",
    ):
        assert name in names
    assert "layer1_1_downsample_0" not in names
    assert "layer4_3_conv1" not in names
    sge = [layer for layer in model.layers if isinstance(layer, SpatialGroupEnhance)]
    assert len(sge) == 3 + 4 + 6 + 3
    assert {layer.groups for layer in sge} == {64}
    # SGE starts as in the paper: gamma 0, beta 1.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sge[0].gamma), 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sge[0].beta), 1.0)
    # SGE sits on the residual branch after bn3, before the add.
    add = model.get_layer("layer2_0_add")
    sources = {t._keras_history[0].name for t in add.input}
    assert sources == {"layer2_0_sge", "layer2_0_downsample_1"}
    assert model.get_layer("layer2_0_sge").input._keras_history[0].name == "layer2_0_bn3"
    # The stride is on the 3x3 convolution (v1.5).
    assert model.get_layer("layer2_0_conv1").strides == (1, 1)
    assert model.get_layer("layer2_0_conv2").strides == (2, 2)
    assert model.get_layer("layer2_0_downsample_0").strides == (2, 2)
    bn = model.get_layer("layer2_0_bn1")
    assert (bn.epsilon, bn.momentum) == (1e-5, 0.9)
    assert not model.get_layer("conv1").use_bias


def test_baseline_is_the_same_network_without_sge():
    sge = applications.SGEResNet18(input_shape=(64, 64, 3))
    plain = applications.ResNet18(input_shape=(64, 64, 3))

    def names(model):
        return {
            layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
        }

    assert names(sge) - names(plain) == {
        f"layer{stage}_{index}_sge" for stage in (1, 2, 3, 4) for index in (0, 1)
    }
    assert names(plain) < names(sge)
    assert sge.get_layer("layer1_1_sge").input._keras_history[0].name == "layer1_1_bn2"
    assert sge.name == "sge_resnet18" and plain.name == "resnet18"


def test_initialisation_matches_pytorch():
    model = applications.ResNet50(input_shape=(64, 64, 3))
    kernel = keras.ops.convert_to_numpy(model.get_layer("layer3_0_conv2").kernel)
    fan_out = 3 * 3 * 256
    assert abs(kernel.std() / np.sqrt(2.0 / fan_out) - 1) < 0.02
    assert abs(kernel.mean()) < 0.01 * kernel.std()
    fc = model.get_layer("fc")
    bound = 1 / np.sqrt(2048)
    for variable in (fc.kernel, fc.bias):
        values = keras.ops.convert_to_numpy(variable)
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.9 * bound
    bn = model.get_layer("layer1_0_bn3")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.beta), 0.0)


@pytest.mark.parametrize(
    "pooling, shape", [(None, (None, 2, 2, 512)), ("avg", (None, 512)), ("max", (None, 512))]
)
def test_backbone_pooling(pooling, shape):
    model = applications.SGEResNet18(include_top=False, input_shape=(64, 64, 3), pooling=pooling)
    assert model.output.shape == shape
    assert "fc" not in {layer.name for layer in model.layers}


def test_pyramid_outputs_have_strides_4_to_32():
    model = applications.SGEResNet50(include_top=False, input_shape=(96, 64, 3))
    outputs = applications.pyramid_outputs(model)
    assert list(outputs) == ["C2", "C3", "C4", "C5"]
    for (key, tensor), stride, channels in zip(
        outputs.items(), (4, 8, 16, 32), (256, 512, 1024, 2048)
    ):
        assert tuple(tensor.shape) == (None, 96 // stride, 64 // stride, channels), key
    # The outputs of the last block of each stage.
    assert outputs["C4"] is model.get_layer("layer3_5_out").output
    assert outputs["C5"] is model.get_layer("layer4_2_out").output
    # Run with a dynamic input size.
    model = applications.SGEResNet18(include_top=False)
    features = keras.Model(model.input, applications.pyramid_outputs(model))
    computed = features(np.zeros((1, 96, 64, 3), "float32"))
    for (key, tensor), stride in zip(computed.items(), (4, 8, 16, 32)):
        assert tuple(tensor.shape) == (1, 96 // stride, 64 // stride, 64 * stride // 4), key
    with pytest.raises(ValueError, match="stage output layers"):
        applications.pyramid_outputs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_input_tensor_and_custom_head():
    inputs = keras.Input((64, 64, 3))
    model = applications.SGEResNet18(input_tensor=inputs, classes=10, classifier_activation=None)
    assert model.input is inputs
    assert model.output.shape == (None, 10)
    assert model.get_layer("fc").activation is keras.activations.linear
    model = applications.ResNet18(input_shape=(32, 40, 1), classes=3)
    assert model.output.shape == (None, 3)
    assert model.get_layer("conv1").kernel.shape == (7, 7, 1, 64)


def test_mixed_precision_keeps_the_head_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=5)
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("fc").compute_dtype == "float32"
    outputs = model(np.zeros((1, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32"


def test_sge_options_and_groups():
    model = applications.SGEResNet18(
        input_shape=(64, 64, 3),
        groups=32,
        sge_options={"gamma_initializer": "ones", "normalize": False},
    )
    layer = model.get_layer("layer4_1_sge")
    assert layer.groups == 32 and layer.normalize is False
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.gamma), 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": "imagenet"}, "none for 'sge_resnet18'"),
        ({"weights": "missing.weights.h5"}, "does not exist"),
        ({"weights": "model.onnx"}, r"\.weights\.h5"),
        ({"weights": 3}, "random initialization"),
        ({"input_shape": (None, None, 3)}, "static `input_shape`"),
        ({"input_shape": (16, 64, 3)}, "at least 32x32"),
        ({"input_shape": (64, 64)}, "three integers"),
        ({"include_top": False, "pooling": "sum"}, "`pooling`"),
        ({"classes": 0}, "`classes`"),
        ({"groups": 48}, "does not divide"),
        ({"groups": 0}, "positive integer"),
        ({"sge_options": {"groups": 8}}, "must not set"),
        ({"sge_options": ["normalize"]}, "must be a dict"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        applications.SGEResNet18(**kwargs)


def test_keras_weights_file_round_trip(tmp_path):
    model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=5)
    for variable in model.weights:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape).astype("float32"))
    path = os.path.join(tmp_path, "model.weights.h5")
    model.save_weights(path)
    again = applications.SGEResNet18(input_shape=(32, 32, 3), classes=5, weights=path)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_preprocess_input_matches_imagenet_normalisation(rng):
    images = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    expected = (images / 255.0 - mean) / std
    out = applications.preprocess_input(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Unbatched, channels_first, and a backend tensor.
    np.testing.assert_allclose(applications.preprocess_input(images[0]), expected[0], atol=1e-5)
    chw = np.transpose(images, (0, 3, 1, 2))
    np.testing.assert_allclose(
        applications.preprocess_input(chw, data_format="channels_first"),
        np.transpose(expected, (0, 3, 1, 2)),
        atol=1e-5,
    )
    tensor_out = applications.preprocess_input(
        keras.ops.convert_to_tensor(images.astype("float32"))
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor_out), expected, atol=1e-5)
    keras.config.set_image_data_format("channels_first")
    np.testing.assert_allclose(
        applications.preprocess_input(chw), np.transpose(expected, (0, 3, 1, 2)), atol=1e-5
    )
    with pytest.raises(ValueError, match="3 channels"):
        applications.preprocess_input(images)  # channels_last data, channels_first format
    with pytest.raises(ValueError, match="data_format"):
        applications.preprocess_input(images, data_format="NHWC")


@pytest.mark.skipif(
    not channels_first_convs_supported(),
    reason="TensorFlow on the CPU has no channels_first (NCHW) convolution kernels",
)
def test_channels_first_model():
    keras.config.set_image_data_format("channels_first")
    model = applications.SGEResNet18(include_top=False, input_shape=(3, 64, 32))
    assert model.get_layer("layer1_0_sge").data_format == "channels_first"
    pyramid = keras.Model(model.input, applications.pyramid_outputs(model))
    outputs = pyramid(np.zeros((1, 3, 64, 32), "float32"))
    assert tuple(outputs["C2"].shape) == (1, 64, 16, 8)
    assert tuple(outputs["C5"].shape) == (1, 512, 2, 1)
    top = applications.SGEResNet18(classes=7)
    assert top.input.shape == (None, 3, 224, 224)


def test_registry_lists_every_builder_with_its_parameter_count():
    # The paper's counts are checked against built models above; here the
    # registry's own numbers (used by the programs) must agree with the
    # builders it names, for the depths cheap enough to build here.
    assert sorted(applications.MODELS) == sorted(
        f"{prefix}resnet{depth}" for prefix in ("", "sge_") for depth in (18, 34, 50, 101)
    )
    for name, spec in applications.MODELS.items():
        assert spec.builder.__name__ == ("SGE" if spec.attention else "") + f"ResNet{spec.depth}"
        assert spec.builder.__doc__ and spec.builder.__name__ in spec.builder.__doc__
        if spec.depth <= 34:
            assert _trainable_count(spec.builder()) == spec.params, name
    assert applications.MODELS["sge_resnet50"].params == 25_559_080
    assert applications.MODELS["resnet101"].params == 44_549_160
    with pytest.raises(ValueError, match="Unknown model 'sge_resnet52'"):
        applications.model_spec("sge_resnet52")


def test_create_model_builds_by_name_or_loads_a_keras_file(tmp_path):
    built = applications.create_model("sge_resnet18", input_shape=(32, 32, 3), classes=3)
    assert built.name == "sge_resnet18" and built.output.shape == (None, 3)
    weights = str(tmp_path / "w.weights.h5")
    built.save_weights(weights)
    saved = str(tmp_path / "m.keras")
    built.save(saved)
    again = applications.create_model("sge_resnet18", weights, input_shape=(32, 32, 3), classes=3)
    loaded = applications.create_model(saved)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = built.predict(images, verbose=0)
    np.testing.assert_allclose(again.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="model name"):
        applications.create_model(str(tmp_path / "m.h5"))
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        applications.create_model(str(tmp_path / "missing.keras"))


@pytest.mark.backend_independent
def test_registry_and_builders_come_from_the_table_of_variants(monkeypatch):
    from keras_sge.applications import resnet
    from keras_sge.applications.variants import VARIANTS

    calls = []
    monkeypatch.setattr(resnet, "build_resnet", lambda **kwargs: calls.append(kwargs))
    assert list(applications.MODELS) == [variant.name for variant in VARIANTS]
    for variant in VARIANTS:
        spec = applications.MODELS[variant.name]
        builder = getattr(applications, variant.function)
        assert spec.builder is builder
        assert (spec.depth, spec.attention, spec.params) == (
            variant.depth,
            variant.attention,
            variant.params,
        )
        assert (spec.paper_top1, spec.paper_top5) == (variant.paper_top1, variant.paper_top5)
        builder(classes=7)
        arguments = calls.pop()
        assert arguments["depth"] == variant.depth and arguments["attention"] == variant.attention
        assert arguments["name"] == variant.name and arguments["classes"] == 7
        assert ("groups" in arguments) == variant.attention
        assert variant.block == ("bottleneck" if variant.depth >= 50 else "basic")
        assert f"{'SGE-' if variant.attention else ''}ResNet{variant.depth}" in builder.__doc__
