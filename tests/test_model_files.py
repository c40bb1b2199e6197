"""Damaged model and weights files: every error names the file and what it is."""

import numpy as np
import pytest

from keras_sge import applications
from keras_sge.applications import pretrained
from tests.helpers import SIZE, load_program, tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model's `.keras` and `.weights.h5` files, and the model."""
    folder = tmp_path_factory.mktemp("saved")
    model = tiny_model((SIZE, SIZE, 3), 3)
    model.save(folder / "model.keras")
    model.save_weights(folder / "model.weights.h5")
    return folder, model


def _damaged_copies(source, folder, suffix, seed):
    """Empty, truncated, random-bytes and corrupted-middle copies of a file."""
    data = source.read_bytes()
    middle = bytearray(data)
    middle[len(data) // 3 : len(data) // 3 + 64] = np.random.default_rng(seed).bytes(64)
    contents = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(seed).bytes(4096),
        "middle": bytes(middle),
    }
    paths = {}
    for kind, content in contents.items():
        paths[kind] = folder / f"{kind}{suffix}"
        paths[kind].write_bytes(content)
    return paths


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "middle"])
def test_a_damaged_keras_file_is_named(saved, tmp_path, kind):
    path = _damaged_copies(saved[0] / "model.keras", tmp_path, ".keras", 1)[kind]
    with pytest.raises(ValueError) as error:
        applications.create_model(path)
    message = str(error.value)
    assert repr(str(path)) in message and "File not found" not in message
    expected = {
        "empty": "is empty (0 bytes)",
        "truncated": "is not a .keras archive (a zip file)",
        "random": "is not a .keras archive (a zip file)",
        "middle": "damaged .keras archive",
    }[kind]
    if kind == "middle" and "damaged" not in message:
        # A change inside a stored (uncompressed) member may still load; it
        # must then not be silently wrong about which file it read.
        pytest.skip(f"this corruption is not detectable: {message}")
    assert expected in message


def test_a_missing_or_folder_keras_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is there"):
        applications.create_model(tmp_path / "missing.keras")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder is there"):
        applications.create_model(tmp_path / "folder.keras")


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_a_damaged_weights_file_is_named(saved, tmp_path, kind):
    folder, model = saved
    path = _damaged_copies(folder / "model.weights.h5", tmp_path, ".weights.h5", 2)[kind]
    with pytest.raises(ValueError, match="The weights file .* (is not an HDF5 file|truncated)"):
        applications.load_weights(model, path)
    with pytest.raises(ValueError) as error:
        applications.load_weights(model, path)
    assert repr(str(path)) in str(error.value)


def test_a_damaged_cached_imagenet_file_names_the_cache_and_how_to_fetch_it(
    saved, tmp_path, monkeypatch
):
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_VARIABLE, str(tmp_path))
    # The authors' files are for the 50 and 101 layers; the cheaper 18-layer
    # model goes through the same code once it has an entry.
    monkeypatch.setitem(
        pretrained.PRETRAINED, "sge_resnet18", pretrained.PRETRAINED["sge_resnet50"]
    )
    cached = tmp_path / "sge_resnet18.weights.h5"
    cached.write_bytes((saved[0] / "model.weights.h5").read_bytes()[:5000])
    with pytest.raises(ValueError) as error:
        applications.SGEResNet18(weights="imagenet", input_shape=(SIZE, SIZE, 3))
    message = str(error.value)
    assert f"cached ImageNet weights {str(cached)!r}" in message
    assert f"weights cache {str(tmp_path)!r}" in message
    assert "delete it and fetch it again" in message
    assert pretrained.PRETRAINED["sge_resnet50"].google_drive in message


def test_programs_name_a_damaged_model_file(saved, tmp_path, capsys):
    path = _damaged_copies(saved[0] / "model.keras", tmp_path, ".keras", 3)["random"]
    image = tmp_path / "image.png"
    image.write_bytes(b"")
    assert load_program("predict").main([str(image), "--model", str(path)]) == 2
    assert f"The model file {str(path)!r} (4,096 bytes) is not a .keras archive" in (
        capsys.readouterr().err
    )
