"""Classifying image files: the library and applications/predict.py."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_sge import applications
from keras_sge.applications import prediction
from tests.helpers import load_program

predict = load_program("predict")

SIZE = 32


def _biased_model(classes, winner, **kwargs):
    """A model whose head always prefers `winner` (zero kernel, one large bias)."""
    model = applications.SGEResNet18(input_shape=(SIZE, SIZE, 3), classes=classes, **kwargs)
    fc = model.get_layer("fc")
    fc.kernel.assign(np.zeros(fc.kernel.shape, "float32"))
    bias = np.zeros(classes, "float32")
    bias[winner] = 5.0
    fc.bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    os.makedirs(root / "folder" / "sub")
    paths = [root / "a.png", root / "folder" / "b.jpg", root / "folder" / "sub" / "c.png"]
    for i, path in enumerate(paths):
        Image.fromarray(rng.integers(0, 256, (40 + 10 * i, 50, 3)).astype("uint8")).save(path)
    (root / "folder" / "notes.txt").write_text("not an image")
    return root


def test_load_image_centre_crop(tmp_path):
    # Left half black, right half white, wider than tall: the centre crop
    # keeps both halves equally.
    image = np.zeros((60, 90, 3), "uint8")
    image[:, 45:] = 255
    Image.fromarray(image).save(tmp_path / "halves.png")
    crop = prediction.load_image(tmp_path / "halves.png", SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop[:, : SIZE // 2 - 1], 0)
    np.testing.assert_array_equal(crop[:, SIZE // 2 + 1 :], 255)


def test_list_images_expands_folders(images):
    files = prediction.list_images([images / "a.png", images / "folder"])
    assert [os.path.relpath(f, images) for f in files] == [
        "a.png",
        os.path.join("folder", "b.jpg"),
        os.path.join("folder", "sub", "c.png"),
    ]


@pytest.mark.parametrize("include_preprocessing", [False, True])
def test_classify_with_imagenet_names(images, include_preprocessing):
    model = _biased_model(1000, 207, include_preprocessing=include_preprocessing)
    results = prediction.classify(model, [images], top=3, batch_size=2)
    assert len(results) == 3
    for _, top in results:
        assert top[0][:2] == ("n02099601", "golden retriever")
        assert len(top) == 3 and top[0][2] > top[1][2]


def test_classify_refuses_other_widths_without_names(images):
    model = _biased_model(3, 1)
    with pytest.raises(ValueError, match="3 outputs, not ImageNet's 1000"):
        prediction.classify(model, [images / "a.png"])


def test_predict_program_uses_the_saved_class_names(images, tmp_path, capsys):
    model = _biased_model(3, 2)
    run = tmp_path / "run"
    os.makedirs(run)
    model.save(run / "model.keras")
    with open(run / "config.json", "w") as f:
        json.dump({"derived": {"class_names": ["ant", "bee", "cat"]}}, f)
    assert (
        predict.main([str(images / "a.png"), "--model", str(run / "model.keras"), "--top", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "a.png" in out and "1. cat" in out and "2. " in out
    os.remove(run / "config.json")
    assert predict.main([str(images / "a.png"), "--model", str(run / "model.keras")]) == 2
    assert "not ImageNet's 1000" in capsys.readouterr().err


def test_predict_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    assert "python applications/predict.py cat.jpg" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        predict.main(["cat.jpg", "--model", "sge_resnet50"])
    assert "give --weights" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A `.keras` model of 3 classes that always prefers the third, with its class names."""
    run = tmp_path_factory.mktemp("run")
    _biased_model(3, 2).save(run / "model.keras")
    with open(run / "config.json", "w") as f:
        json.dump({"derived": {"class_names": ["ant", "bee", "cat"]}}, f)
    return run


def test_predict_classifies_every_readable_image_and_lists_the_others(
    images, saved_run, tmp_path, capsys
):
    good = images / "a.png"
    text = tmp_path / "hostname"
    text.write_text("my-host\n")
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing.jpg"
    bad = [text, fake, truncated, loop, empty, missing]
    argv = [str(good), *map(str, bad), str(images / "folder"), "--model"]
    code = predict.main([*argv, str(saved_run / "model.keras"), "--top", "1", "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    # Every readable image has its result, in order, the bad ones none.
    printed = [line for line in out.splitlines() if not line.startswith(" ")]
    assert printed == [
        str(good),
        str(images / "folder" / "b.jpg"),
        str(images / "folder/sub/c.png"),
    ]
    assert out.count("1. cat") == 3
    assert f"{len(bad)} of {len(bad) + 3} inputs not classified" in err
    reasons = {line.split(": ")[0].strip(): line for line in err.splitlines()[1:]}
    assert set(reasons) == set(map(str, bad))
    assert "as an image" in reasons[str(text)] and "as an image" in reasons[str(truncated)]
    assert "symbolic link" in reasons[str(loop)] and "holds no images" in reasons[str(empty)]
    assert "no such file or folder" in reasons[str(missing)]


def test_predict_refuses_non_finite_weights(images, tmp_path, capsys):
    model = _biased_model(3, 2)
    model.get_layer("fc").bias.assign(np.array([0.0, np.nan, 1.0], "float32"))
    model.save(tmp_path / "model.keras")
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"derived": {"class_names": ["ant", "bee", "cat"]}}, f)
    assert predict.main([str(images / "a.png"), "--model", str(tmp_path / "model.keras")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "non-finite values (NaN or inf)" in err and "fc/bias" in err
