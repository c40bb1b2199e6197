"""PyTorch checkpoints -> Keras models, checked against the plain-PyTorch reference."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_resnet  # noqa: E402
from keras_sge import applications  # noqa: E402
from tests.helpers import (  # noqa: E402
    BACKEND,
    channels_first_convs_supported,
    load_program,
    randomize_torch_network,
    save_as_authors,
    subprocess_env,
    torch_outputs,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4  # max abs difference of float32 logits


class NotATensor:
    """Pickled into a file that `weights_only=True` must refuse to load."""


def _keras_forward(model, images_nchw):
    if keras.config.image_data_format() == "channels_last":
        images = np.transpose(images_nchw, (0, 2, 3, 1))
    else:
        images = images_nchw
    return keras.ops.convert_to_numpy(model(images, training=False))


def _max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.fixture(scope="module")
def sge_resnet50_file(tmp_path_factory):
    torch.manual_seed(0)
    net = randomize_torch_network(torch_resnet.sge_resnet50(), seed=1)
    images = np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype("float32")
    logits, _ = torch_outputs(net, images)
    path = str(tmp_path_factory.mktemp("ckpt") / "sge_resnet50.pth.tar")
    save_as_authors(net, path)
    return path, images, logits


def _input_shape(size):
    if keras.config.image_data_format() == "channels_first":
        return (3, size, size)
    return (size, size, 3)


def test_sge_resnet50_matches_pytorch(sge_resnet50_file):
    path, images, logits = sge_resnet50_file
    # The two images get clearly different logits: the test sees the features.
    assert _max_abs(logits[0], logits[1]) > 1000 * TOLERANCE
    model = applications.SGEResNet50(
        weights=path, input_shape=_input_shape(64), classifier_activation=None
    )
    outputs = _keras_forward(model, images)
    assert _max_abs(outputs, logits) <= TOLERANCE
    gamma = keras.ops.convert_to_numpy(model.get_layer("layer4_2_sge").gamma)
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    np.testing.assert_array_equal(gamma, stored["module.layer4.2.sge.weight"].numpy().reshape(-1))


@pytest.mark.parametrize(
    "arch, data_format",
    [("sge_resnet18", "channels_first"), ("resnet18", "channels_last")],
)
def test_basic_block_models_match_pytorch_and_survive_keras_saving(arch, data_format, tmp_path):
    if data_format == "channels_first" and not channels_first_convs_supported():
        pytest.skip("TensorFlow on the CPU has no channels_first (NCHW) convolution kernels")
    keras.config.set_image_data_format(data_format)
    torch.manual_seed(3)
    net = randomize_torch_network(torch_resnet.MODELS[arch](num_classes=10), seed=4)
    images = np.random.default_rng(5).normal(size=(2, 3, 64, 64)).astype("float32")
    logits, pooled = torch_outputs(net, images)
    path = str(tmp_path / f"{arch}.pt")
    torch.save(net.state_dict(), path)  # a bare state_dict, without "module."
    builder = {"sge_resnet18": applications.SGEResNet18, "resnet18": applications.ResNet18}[arch]

    model = builder(
        weights=path, input_shape=_input_shape(64), classes=10, classifier_activation=None
    )
    outputs = _keras_forward(model, images)
    assert _max_abs(outputs, logits) <= TOLERANCE
    # The converted model survives a .keras round trip.
    keras_path = str(tmp_path / "converted.keras")
    model.save(keras_path)
    reloaded = keras.saving.load_model(keras_path)
    assert _max_abs(_keras_forward(reloaded, images), outputs) <= 1e-6
    # Without the top the file's fc.* tensors are skipped.
    backbone = builder(weights=path, include_top=False, pooling="avg")
    assert _max_abs(_keras_forward(backbone, images), pooled) <= TOLERANCE


def _snapshot(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _unchanged(model, snapshot):
    return all(
        np.array_equal(keras.ops.convert_to_numpy(w), s) for w, s in zip(model.weights, snapshot)
    )


def test_mismatches_list_keys_and_load_nothing(sge_resnet50_file):
    path = sge_resnet50_file[0]
    deeper = applications.SGEResNet101(include_top=False, input_shape=(64, 64, 3))
    before = _snapshot(deeper)
    with pytest.raises(ValueError) as error:
        applications.load_pytorch_checkpoint(deeper, path)
    message = str(error.value)
    assert "nothing was loaded" in message
    blocks = ", ".join(f"layer3.{i}" for i in range(6, 23))
    assert f"Missing keys (in the model, not in the file) ({17 * 17}), in {blocks}:" in message
    assert "    layer3.6.bn1.bias\n" in message
    assert "Unexpected" not in message
    assert _unchanged(deeper, before)

    ten_classes = applications.SGEResNet50(input_shape=(64, 64, 3), classes=10)
    before = _snapshot(ten_classes)
    with pytest.raises(ValueError) as error:
        applications.load_pytorch_checkpoint(ten_classes, path)
    message = str(error.value)
    assert "Shape mismatches (2)" in message
    assert "fc.weight: file (1000, 2048), model expects (10, 2048)" in message
    assert "fc.bias: file (1000,), model expects (10,)" in message
    assert "Missing" not in message
    assert _unchanged(ten_classes, before)

    plain = applications.ResNet50(include_top=False, input_shape=(64, 64, 3))
    with pytest.raises(
        ValueError, match=r"(?s)Unexpected keys.*layer1\.0\.sge\.weight.*build an SGEResNet"
    ):
        applications.load_pytorch_checkpoint(plain, path)


def test_se_resnet_and_bad_files_are_refused(tmp_path):
    net = torch_resnet.resnet18(num_classes=10)
    state = net.state_dict()
    # An SE-ResNet checkpoint has squeeze-excitation weights in every block.
    state["layer1.0.se.fc1.weight"] = torch.zeros(4, 64, 1, 1)
    state["layer1.0.se.fc2.weight"] = torch.zeros(64, 4, 1, 1)
    se_path = str(tmp_path / "se_resnet18.pth")
    torch.save({"state_dict": state}, se_path)
    model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=10)
    before = _snapshot(model)
    with pytest.raises(ValueError) as error:
        applications.load_pytorch_checkpoint(model, se_path)
    message = str(error.value)
    assert "layer1.0.se.fc1.weight" in message and "layer1.0.sge.weight" in message
    assert "file has no SGE weights" in message
    assert _unchanged(model, before)

    code_path = str(tmp_path / "code.pth")
    torch.save({"state_dict": NotATensor()}, code_path)
    with pytest.raises(ValueError, match="weights_only=True"):
        applications.load_pytorch_checkpoint(model, code_path)
    other_path = str(tmp_path / "other.pth")
    torch.save({"epoch": 3, "weights": [1, 2]}, other_path)
    with pytest.raises(ValueError, match="neither a state_dict"):
        applications.load_pytorch_checkpoint(model, other_path)
    with pytest.raises(FileNotFoundError):
        applications.load_pytorch_checkpoint(model, str(tmp_path / "absent.pth"))
    assert _unchanged(model, before)


def test_missing_torch_gives_a_clear_error(monkeypatch, tmp_path):
    model = applications.ResNet18(input_shape=(32, 32, 3))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs the `torch` package .*only to read the file"):
        applications.load_pytorch_checkpoint(model, str(tmp_path / "x.pth"))


def test_evaluate_program_measures_an_authors_checkpoint_like_pytorch(tmp_path, capsys):
    from keras_sge import data

    net = randomize_torch_network(torch_resnet.sge_resnet18(num_classes=4), seed=6)
    path = str(tmp_path / "sge_resnet18.pth.tar")
    save_as_authors(net, path)
    program = load_program("evaluate")
    out = str(tmp_path / "eval.json")
    code = program.main(
        [
            "--model",
            "sge_resnet18",
            "--weights",
            path,
            "--dataset",
            "demo",
            "--image-size",
            "40",
            "--batch-size",
            "16",
            "--steps",
            "1",
            "--json",
            out,
        ]
    )
    assert code == 0
    measured = __import__("json").load(open(out))
    # The same sampled batch through the plain-PyTorch network.
    # (40 px leaves 2x2 maps in the last stage, where the authors' module is defined.)
    batch = data.load("demo", "validation", batch_size=16, image_size=40, sample_seed=0).take(1)
    images, labels = next(batch.as_numpy_iterator())
    if keras.config.image_data_format() == "channels_last":
        images = np.transpose(images, (0, 3, 1, 2))
    logits, _ = torch_outputs(net, np.ascontiguousarray(images))
    assert measured["top1"] == pytest.approx(np.mean(np.argmax(logits, -1) == labels), abs=1e-6)
    assert measured["model"] == "sge_resnet18" and measured["weights"] == path


_LOAD_CONVERTED = """
import sys
import keras
import numpy as np
import keras_sge
model = keras.saving.load_model(sys.argv[1])  # plain Keras calls after `import keras_sge`
images = np.load(sys.argv[3])
from_model_file = model.predict(images, verbose=0)
for variable in model.weights:  # forget them, then read them from the .weights.h5 file
    variable.assign(np.zeros(variable.shape, variable.dtype))
model.load_weights(sys.argv[2])
np.save(sys.argv[4], np.stack([from_model_file, model.predict(images, verbose=0)]))
"""


def test_convert_checkpoint_outputs_load_in_a_fresh_process(tmp_path):
    torch.manual_seed(6)
    net = randomize_torch_network(torch_resnet.sge_resnet18(num_classes=3), seed=7)
    checkpoint = str(tmp_path / "sge_resnet18.pth.tar")
    save_as_authors(net, checkpoint)
    convert = load_program("convert_checkpoint").main
    outputs = {}
    for suffix in (".keras", ".weights.h5"):
        outputs[suffix] = str(tmp_path / f"converted{suffix}")
        argv = ["--model", "sge_resnet18", "--weights", checkpoint, "--output", outputs[suffix]]
        assert convert([*argv, "--classes", "3", "--image-size", "64"]) == 0
    # 64 px: layer4 is 2x2 (PyTorch's unbiased std of SGE is NaN at 1x1).
    images = np.random.default_rng(8).normal(size=(2, 3, 64, 64)).astype("float32")
    logits, _ = torch_outputs(net, images)
    np.save(tmp_path / "images.npy", images.transpose(0, 2, 3, 1))
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_CONVERTED, outputs[".keras"], outputs[".weights.h5"]]
        + [str(tmp_path / "images.npy"), str(tmp_path / "predicted.npy")],
        env=subprocess_env(BACKEND),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    for predicted in np.load(tmp_path / "predicted.npy"):  # from the .keras, then the .weights.h5
        np.testing.assert_allclose(predicted, expected, atol=1e-5)
