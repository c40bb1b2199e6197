"""Refusals: data that must exist, validation that counts, models that must fit, sane settings."""

import io
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_sge
from keras_sge import data
from keras_sge.training import TrainConfig, evaluate, train
from tests.helpers import SIZE, load_program, tiny_config, tiny_model


def _jpeg(rng, size=(40, 48)):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _folder(root, rng, classes=("ant", "bee"), per_class=3, bad_per_class=0):
    for name in classes:
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(_jpeg(rng))
        for i in range(bad_per_class):
            (root / name / f"bad{i}.jpg").write_bytes(b"not an image at all")
        if bad_per_class:
            (root / name / "empty.png").write_bytes(b"")
    return root


@pytest.mark.backend_independent
def test_a_training_split_without_enough_readable_images_stops_before_training(tmp_path, rng):
    _folder(tmp_path / "data" / "train", rng, per_class=0, bad_per_class=2)
    _folder(tmp_path / "data" / "val", rng, per_class=2)
    config = tiny_config(
        tmp_path / "run",
        dataset=str(tmp_path / "data"),
        batch_size=4,
        steps_per_epoch=None,
        validation_steps=None,
    )
    with pytest.raises(
        ValueError,
        match=r"train' has 0 readable image files of 6 listed, fewer "
        r"than one batch of 4\. Rejected: 4 not a JPEG/PNG/GIF/BMP .*2 empty",
    ):
        train(config, model_fn=tiny_model)
    assert not (tmp_path / "run" / "results.json").exists()

    _folder(tmp_path / "few", rng, per_class=1, bad_per_class=1)  # 2 readable of 6
    with pytest.raises(
        ValueError, match="2 readable image files of 6 listed, fewer than one batch of 3"
    ):
        data.load_image_folder(str(tmp_path / "few"), batch_size=3, training=True)
    assert data.load_image_folder(str(tmp_path / "few"), batch_size=2, training=True) is not None


@pytest.mark.backend_independent
def test_hidden_and_empty_folders_are_not_classes_and_non_utf8_names_are_read(tmp_path, rng, capfd):
    root = _folder(tmp_path / "data", rng)
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "0-checkpoint.jpg").write_bytes(_jpeg(rng))
    (root / "aaa_empty").mkdir()
    name = os.fsencode(str(root / "bee")) + b"/caf\xe9.jpg"  # Latin-1, not UTF-8
    with open(name, "wb") as f:
        f.write(_jpeg(rng))
    dataset, info = data.load_image_folder(str(root), batch_size=8, image_size=SIZE, with_info=True)
    assert info.class_names == ["ant", "bee"] and info.num_examples == 7
    labels = np.concatenate([labels for _, labels in dataset.as_numpy_iterator()])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 1]
    err = capfd.readouterr().err
    assert "without image files (not classes): ['aaa_empty']" in err
    assert "not UTF-8" in err and "caf" in err


def test_partial_validation_is_a_fixed_sample_of_every_class(tmp_path, capsys):
    # The demo validation split is stored class by class (100 images each).
    def first_labels():
        images = data.load("demo", "validation", batch_size=16, image_size=SIZE, sample_seed=0)
        return np.concatenate([labels for _, labels in images.take(2).as_numpy_iterator()])

    labels = first_labels()
    assert len(set(labels.tolist())) == 4
    np.testing.assert_array_equal(labels, first_labels())

    model = tiny_model((SIZE, SIZE, 3), 4)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    out_json = str(tmp_path / "eval.json")
    assert (
        load_program("evaluate").main(
            [
                "--model",
                path,
                "--dataset",
                "demo",
                "--batch-size",
                "16",
                "--steps",
                "2",
                "--json",
                out_json,
            ]
        )
        == 0
    )
    assert (
        "(partial: 2 batches of 16, a fixed random sample of the split)" in capsys.readouterr().out
    )
    measured = json.load(open(out_json))
    assert measured["partial"] and measured["evaluated_batches"] == 2
    # The same numbers as evaluating those sampled batches directly.
    sample = data.load("demo", "validation", batch_size=16, image_size=SIZE, sample_seed=0).take(2)
    x = np.concatenate([b for b, _ in sample.as_numpy_iterator()])
    expected = np.mean(np.argmax(model.predict(x, verbose=0), -1) == labels)
    assert measured["top1"] == pytest.approx(expected, abs=1e-6)


def test_train_says_its_validation_is_partial(tmp_path, capsys):
    train(tiny_config(tmp_path / "run", epochs=1, validation_steps=2), model_fn=tiny_model)
    assert "Validation is partial: 2 batches of 16 images (of 400)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["derived"][
        "validation_partial"
    ]


def test_evaluate_leaves_the_callers_model_as_it_was():
    model = tiny_model((SIZE, SIZE, 3), 4)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    images = data.load("demo", "validation", batch_size=16, image_size=SIZE).take(1)
    measured = evaluate(model, images, verbose=0)
    assert 0.0 <= measured["top1"] <= 1.0 and measured["top5"] == pytest.approx(1.0)
    assert model.optimizer is optimizer and model.loss == "mse"
    x, y = next(images.as_numpy_iterator())
    logs = model.evaluate(x, keras.ops.one_hot(y, 4), verbose=0, return_dict=True)
    assert set(logs) == {"loss", "mae"}  # still the caller's compiled metrics


def test_evaluate_program_refuses_models_that_do_not_fit(tmp_path, capsys):
    two_classes = str(tmp_path / "two.keras")
    tiny_model((SIZE, SIZE, 3), 2).save(two_classes)
    assert (
        load_program("evaluate").main(["--model", two_classes, "--dataset", "demo", "--steps", "1"])
        == 2
    )
    assert "outputs 2 classes but the dataset has 4" in capsys.readouterr().err

    broken = tiny_model((SIZE, SIZE, 3), 4)
    kernel = broken.layers[-1].kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 0, np.nan, kernel.numpy()))
    path = str(tmp_path / "nan.keras")
    broken.save(path)
    assert (
        load_program("evaluate").main(["--model", path, "--dataset", "demo", "--steps", "1"]) == 2
    )
    assert "non-finite values (NaN or inf)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        load_program("visualize").main(
            ["--model", two_classes, "--output-dir", str(tmp_path / "vis")]
        )
    assert exit_info.value.code == 2
    assert "outputs 2 classes but the dataset has 4" in capsys.readouterr().err


@pytest.mark.backend_independent
def test_unset_warmup_stays_below_epochs_and_nan_settings_are_refused():
    assert (
        TrainConfig(epochs=1).resolved(accelerator=False).warmup_epochs == 0.5
    )  # demo: 1 by default
    with pytest.raises(ValueError, match=r"warmup_epochs` must be in \[0, epochs=1\)"):
        TrainConfig(epochs=1, warmup_epochs=1.0).resolved(accelerator=False)
    for key in ("lr", "warmup_epochs", "momentum"):
        with pytest.raises(ValueError, match=f"`{key}` must be a finite number. Received: nan"):
            TrainConfig(**{key: float("nan")}).resolved(accelerator=False)
    with pytest.raises(ValueError, match="`epsilon` must be a finite number"):
        keras_sge.layers.SpatialGroupEnhance(epsilon=float("nan"))


@pytest.mark.backend_independent
def test_a_mistyped_folder_is_reported_as_a_missing_folder(tmp_path, rng):
    _folder(tmp_path / "flat", rng)  # class folders without train/ and val/
    with pytest.raises(FileNotFoundError, match="the training programs need them"):
        data.load(str(tmp_path / "flat"), "train", batch_size=2)
    with pytest.raises(FileNotFoundError, match="No folder .*imagenett"):
        data.load(str(tmp_path / "imagenett"), "train", batch_size=4)
    with pytest.raises(FileNotFoundError, match="No folder './no_such_folder'"):
        data.load("./no_such_folder", "train", batch_size=4)


@pytest.mark.backend_independent
def test_a_broken_imagenet_archive_is_named(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"ILSVRC2012_img_val.tar failed \(ReadError: empty file\)"
    ):
        data.load_imagenet(
            "validation", batch_size=4, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual)
        )


def test_evaluate_program_refuses_a_model_trained_on_other_class_names(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    path = str(run / "model.keras")
    tiny_model((SIZE, SIZE, 3), 4).save(path)
    evaluate_program = load_program("evaluate").main
    argv = ["--model", path, "--dataset", "demo", "--steps", "1", "--batch-size", "8"]

    def trained_on(names):
        with open(run / "config.json", "w") as f:
            json.dump({"derived": {"class_names": names}}, f)

    trained_on(["circle", "cross", "square", "triangle"])  # the demo's: evaluated
    assert evaluate_program(argv) == 0
    capsys.readouterr()
    trained_on(["ant", "bee", "square", "triangle"])
    assert evaluate_program(argv) == 2
    err = capsys.readouterr().err
    assert "['ant', 'bee', 'square', 'triangle']" in err
    assert "['circle', 'cross', 'square', 'triangle']" in err
    assert "only the model's: ['ant', 'bee']" in err and "--ignore-class-names" in err
    assert evaluate_program([*argv, "--ignore-class-names"]) == 0


@pytest.mark.backend_independent
def test_class_name_mismatches_say_what_differs():
    from keras_sge.training.evaluation import class_names_mismatch

    assert class_names_mismatch(["a", "b"], ["a", "b"]) is None
    assert class_names_mismatch(None, ["a"]) is None and class_names_mismatch(["a"], None) is None
    reordered = class_names_mismatch(["a", "b", "c"], ["a", "c", "b"])
    assert "another order" in reordered and "label 1: model 'b', dataset 'c'" in reordered
    different = class_names_mismatch(["a", "b"], ["a", "z", "y"])
    assert "only the model's: ['b']" in different and "only the dataset's: ['z', 'y']" in different
    many = class_names_mismatch([f"n{i}" for i in range(1000)], [f"m{i}" for i in range(1000)])
    assert "and 990 more" in many and len(many) < 1000
