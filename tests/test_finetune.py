"""Fine-tuning from PyTorch checkpoints: partial loading, frozen backbone, a short run."""

import json
import os

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from benchmarks import torch_resnet  # noqa: E402
from keras_sge import applications  # noqa: E402
from keras_sge.applications import checkpoint  # noqa: E402
from keras_sge.training import TrainConfig, train  # noqa: E402
from tests.helpers import (  # noqa: E402
    load_in_fresh_process,
    load_program,
    randomize_torch_network,
    save_as_authors,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 40
COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def _file_arrays(model, path):
    """The file's tensors that fit the model, in the Keras layout, by PyTorch key."""
    state = checkpoint.read_state_dict(path)
    targets = checkpoint._model_targets(model)
    return {
        key: (variable, to_keras(state[key]))
        for key, (variable, shape, to_keras) in targets.items()
        if key in state and tuple(state[key].shape) == tuple(shape)
    }


@pytest.fixture(scope="module")
def sge_resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "sge_resnet18.pth.tar")
    save_as_authors(randomize_torch_network(torch_resnet.sge_resnet18(), seed=3), path)
    return path


@pytest.fixture(scope="module")
def easy_folder(tmp_path_factory):
    """Three classes of noisy plain colours, train/ and val/ side by side."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 6)):
        for name, colour in COLOURS.items():
            os.makedirs(root / split / name)
            for i in range(count):
                noise = rng.integers(-25, 26, size=(48, 48, 3))
                image = np.clip(np.asarray(colour) + noise, 0, 255).astype("uint8")
                Image.fromarray(image).save(root / split / name / f"{i}.png")
    return str(root)


def _input_shape():
    return (SIZE, SIZE, 3)


def test_backbone_from_file_and_new_head(sge_resnet18_file):
    model = applications.SGEResNet18(input_shape=_input_shape(), classes=3)
    head_before = [_numpy(w) for w in model.get_layer("fc").weights]
    report = applications.transfer_weights(model, sge_resnet18_file)
    assert report.new == ["fc"] and report.skipped == ["fc"]
    assert "fc" not in report.loaded and "layer4_1_sge" in report.loaded
    arrays = _file_arrays(model, sge_resnet18_file)
    assert not any(key.startswith("fc.") for key in arrays)  # 1000 classes in the file
    for key, (variable, expected) in arrays.items():
        np.testing.assert_array_equal(_numpy(variable), expected, err_msg=key)
    for before, after in zip(head_before, model.get_layer("fc").weights):
        np.testing.assert_array_equal(before, _numpy(after))


def test_same_class_count_keeps_the_head(sge_resnet18_file):
    model = applications.SGEResNet18(input_shape=_input_shape(), classes=1000)
    report = applications.transfer_weights(model, sge_resnet18_file)
    assert report.new == [] and report.skipped == [] and "fc" in report.loaded
    state = checkpoint.read_state_dict(sge_resnet18_file)
    np.testing.assert_array_equal(_numpy(model.get_layer("fc").kernel), state["fc.weight"].T)


def test_keras_files_transfer_like_the_checkpoint(sge_resnet18_file, tmp_path):
    source = applications.SGEResNet18(
        input_shape=_input_shape(), classes=1000, weights=sge_resnet18_file
    )
    source.save(tmp_path / "source.keras")
    source.save_weights(tmp_path / "source.weights.h5")
    expected = {w.path: _numpy(w) for w in source.weights if not w.path.startswith("fc/")}
    for name in ("source.keras", "source.weights.h5"):
        model = applications.SGEResNet18(input_shape=_input_shape(), classes=3)
        report = applications.transfer_weights(model, tmp_path / name)
        assert report.new == ["fc"] and report.skipped == ["fc"], name
        for w in model.weights:
            if not w.path.startswith("fc/"):
                np.testing.assert_array_equal(_numpy(w), expected[w.path], err_msg=name)


def test_other_architecture_is_refused_and_nothing_loaded(sge_resnet18_file):
    model = applications.SGEResNet34(input_shape=_input_shape(), classes=3)
    before = [_numpy(w) for w in model.weights]
    with pytest.raises(ValueError, match="nothing was loaded"):
        applications.transfer_weights(model, sge_resnet18_file)
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, _numpy(w))


@pytest.mark.parametrize("layout", ["authors", "torchvision"])
def test_plain_resnet_into_sge_resnet(tmp_path, layout):
    net = randomize_torch_network(torch_resnet.resnet18(), seed=5)
    path = str(tmp_path / "resnet18.pth")
    if layout == "authors":
        save_as_authors(net, path)
    else:  # torchvision: a bare state_dict, no `module.` prefix
        torch.save(net.state_dict(), path)
    model = applications.SGEResNet18(input_shape=_input_shape())
    with pytest.raises(ValueError, match="allow_missing_sge=True"):
        applications.load_pytorch_checkpoint(model, path)
    left_out = applications.load_pytorch_checkpoint(model, path, allow_missing_sge=True)
    expected = [
        f"layer{stage}.{block}.sge.{name}"
        for stage in (1, 2, 3, 4)
        for block in (0, 1)
        for name in ("bias", "weight")
    ]
    assert left_out == expected
    for key, (variable, array) in _file_arrays(model, path).items():
        np.testing.assert_array_equal(_numpy(variable), array, err_msg=key)
    sge = [
        layer
        for layer in model.layers
        if isinstance(layer, applications.resnet.SpatialGroupEnhance)
    ]
    assert len(sge) == 8
    for layer in sge:
        np.testing.assert_array_equal(_numpy(layer.gamma), 0.0)
        np.testing.assert_array_equal(_numpy(layer.beta), 1.0)


def test_other_mismatch_still_refused_with_allow_missing_sge(tmp_path):
    path = str(tmp_path / "resnet34.pth")
    torch.save(torch_resnet.resnet34().state_dict(), path)
    model = applications.SGEResNet18(input_shape=_input_shape())
    before = [_numpy(w) for w in model.weights]
    with pytest.raises(ValueError, match="Unexpected keys"):
        applications.load_pytorch_checkpoint(model, path, allow_missing_sge=True)
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, _numpy(w))


def test_train_program_fine_tuning_flags():
    program = load_program("train")
    config = program.parse_args(
        [
            "--dataset",
            "/data/flowers",
            "--weights",
            "w.pth.tar",
            "--freeze-backbone-epochs",
            "2",
            "--backbone-lr-multiplier",
            "0.5",
        ]
    )
    assert (config.weights, config.freeze_backbone_epochs, config.backbone_lr_multiplier) == (
        "w.pth.tar",
        2,
        0.5,
    )
    resolved = program.parse_args(
        ["--dataset", "/data/flowers", "--weights", "w.pth.tar"]
    ).resolved(accelerator=False)
    assert (
        resolved.recipe == "fast" and resolved.epochs == 10 and resolved.freeze_backbone_epochs == 1
    )
    with pytest.raises(ValueError, match="pass `weights`"):
        program.parse_args(["--freeze-backbone-epochs", "1"]).resolved(accelerator=False)


class _Snapshot(keras.callbacks.Callback):
    """Weights (BatchNorm statistics included) after every epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = {w.path: _numpy(w) for w in self.model.weights}


class _Interrupt(keras.callbacks.Callback):
    """Stops the run as the second epoch starts, as a crash would."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_fine_tune_on_a_folder_and_resume(sge_resnet18_file, easy_folder, tmp_path, capsys):
    snapshot = _Snapshot()
    config = TrainConfig(
        dataset=easy_folder,
        model="sge_resnet18",
        weights=sge_resnet18_file,
        image_size=SIZE,
        batch_size=12,
        epochs=2,
        lr=4.0,  # per 256 images: a peak rate of about 0.19 at batch 12
        output_dir=str(tmp_path / "run"),
        verbose=0,
    )
    # The frozen first epoch, then a crash; the same call again resumes.
    with pytest.raises(RuntimeError, match="interrupted"):
        train(config, callbacks=[snapshot, _Interrupt()])
    printed = capsys.readouterr().out
    assert "loaded: 48 layers" in printed and "new (initialised): 1 layers: fc" in printed
    result = train(config, callbacks=[snapshot])
    resolved = result.config
    assert resolved.recipe == "fast" and resolved.freeze_backbone_epochs == 1
    assert resolved.backbone_lr_multiplier == 0.1

    # Epoch 1 (frozen): every loaded weight and BatchNorm statistic is the file's.
    model = applications.SGEResNet18(input_shape=_input_shape(), classes=3)
    arrays = _file_arrays(model, sge_resnet18_file)
    frozen = snapshot.epochs[0]
    for key, (variable, expected) in arrays.items():
        np.testing.assert_array_equal(frozen[variable.path], expected, err_msg=key)
    assert not np.array_equal(frozen["fc/kernel"], _numpy(model.get_layer("fc").kernel))
    # Epoch 2, resumed: the backbone trains, BatchNorm statistics move, and
    # the schedule continues from the first epoch's steps.
    after = snapshot.epochs[1]
    assert not np.array_equal(after["conv1/kernel"], frozen["conv1/kernel"])
    assert not np.array_equal(after["bn1/moving_mean"], frozen["bn1/moving_mean"])
    steps = 3 * 16 // 12
    assert int(_numpy(result.model.optimizer.iterations)) == 2 * steps

    assert [int(row["epoch"]) for row in result.history] == [0, 1]
    assert result.best["val_top1"] > 0.6  # chance: 1/3
    with open(os.path.join(result.output_dir, "config.json")) as f:
        assert json.load(f)["derived"]["class_names"] == sorted(COLOURS)
    # The fine-tuned model loads in a fresh process after `import keras_sge` alone,
    # compiled, with the per-layer learning-rate multipliers' optimizer and its state.
    model_file = os.path.join(result.output_dir, "model.keras")
    loaded = load_in_fresh_process([model_file])
    assert loaded[model_file]["optimizer"] == "SGDWithL2"
    assert loaded[model_file]["iterations"] == 2 * steps and loaded["imported"] == []
