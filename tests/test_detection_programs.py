"""The detection programs end to end on a tiny demo set, and the opt-in learning check."""

import json
import os

import pytest

from keras_sge.detection.sources import load_detection_split
from keras_sge.training import read_metrics
from keras_sge.training.files import AtomicCSVLogger
from tests.helpers import BACKEND, load_program
from tests.test_detection_data import TFDS_VALIDATION, mock_tfds_coco


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, not even `except Exception`."""


# The program runs, kills and reruns below build and compile a new detector per
# call; under JAX each compiles anew with XLA (about a minute on a CPU). The
# per-backend numerics (fit, evaluate, predict of a detector, a killed run's
# resume) are covered in every pass by tests/test_detection.py and the
# classification trainer's tests.
skip_under_xla = pytest.mark.skipif(
    BACKEND == "jax",
    reason="program glue that compiles a detector per call under XLA; "
    "the TF and torch passes cover it",
)


def _train(tmp_path, *extra):
    out = str(tmp_path / "run")
    code = load_program("train_detector").main(
        [
            "--output-dir",
            out,
            "--data-dir",
            str(tmp_path / "data"),
            "--demo-images",
            "4",
            "2",
            "--image-size",
            "64",
            "--batch-size",
            "2",
            "--epochs",
            "2",
            "--warmup-steps",
            "1",
            "--head-convs",
            "1",
            "--pretrain-epochs",
            "0",
            *extra,
        ]
    )
    return code, out


@skip_under_xla
def test_killed_resumed_finished_then_evaluate_and_draw_on_the_demo(tmp_path, capsys, monkeypatch):
    import keras

    back_up, begun = keras.callbacks.BackupAndRestore.on_epoch_end, []

    def killed_after_the_first_epoch(self, epoch, logs=None):
        back_up(self, epoch, logs)  # the epoch's last write: then the kill
        raise Killed()

    monkeypatch.setattr(
        keras.callbacks.BackupAndRestore, "on_epoch_end", killed_after_the_first_epoch
    )
    with pytest.raises(Killed):
        _train(tmp_path)
    out = str(tmp_path / "run")
    first_row = read_metrics(os.path.join(out, "metrics.csv"))
    assert [row["epoch"] for row in first_row] == [0]
    assert not os.path.exists(os.path.join(out, "model.keras"))
    capsys.readouterr()
    assert _train(tmp_path, "--seed", "1")[0] == 2
    refusal = "unfinished run with another configuration (seed: 1 (saved: 0))"
    assert refusal in capsys.readouterr().err

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", back_up)
    begin_epoch = AtomicCSVLogger.on_epoch_begin

    def recorded(self, epoch, logs=None):
        begun.append(epoch)
        begin_epoch(self, epoch, logs)

    monkeypatch.setattr(AtomicCSVLogger, "on_epoch_begin", recorded)
    code, out = _train(tmp_path)
    assert code == 0
    assert begun == [1]  # resumed: epoch 0 is not trained again
    rows = read_metrics(os.path.join(out, "metrics.csv"))
    assert [row["epoch"] for row in rows] == [0, 1] and rows[0] == first_row[0]
    for name in ("model.keras", "metrics.csv", "results.json", "config.json", "curves.png"):
        assert os.path.exists(os.path.join(out, name)), name
    for name in ("run.lock", "backup", "trained.json"):
        assert not os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "results.json")) as f:
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "fit_wall_time_s"} <= set(json.load(f))
    assert "held-out COCO AP" in capsys.readouterr().out

    files = sorted(os.listdir(out))
    stamps = [os.stat(os.path.join(out, name)).st_mtime_ns for name in files]
    assert _train(tmp_path)[0] == 0
    assert "already holds a finished run" in capsys.readouterr().out
    assert _train(tmp_path, "--seed", "1")[0] == 2
    refusal = "holds a finished run with another configuration (seed: 1 (saved: 0))"
    assert refusal in capsys.readouterr().err
    assert begun == [1]  # nothing trained
    assert sorted(os.listdir(out)) == files
    assert [os.stat(os.path.join(out, name)).st_mtime_ns for name in files] == stamps

    model = os.path.join(out, "model.keras")
    from keras_sge.detection.demo import prepare_detection_demo

    folder = prepare_detection_demo(str(tmp_path / "data"), num_train=4, num_validation=2)
    assert (
        load_program("evaluate_detector").main(
            [
                "--model",
                model,
                "--dataset",
                folder,
                "--split",
                "val",
                "--image-size",
                "64",
                "--output-dir",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert os.path.exists(tmp_path / "eval" / "results.json")
    image = os.path.join(folder, "val", "val_00000.jpg")
    assert (
        load_program("predict_detector").main(
            [
                "--model",
                model,
                "--image-size",
                "64",
                "--min-score",
                "0",
                "--output-dir",
                str(tmp_path / "png"),
                image,
            ]
        )
        == 0
    )
    assert os.path.exists(tmp_path / "png" / "val_00000.png")


@skip_under_xla
def test_a_finish_killed_while_evaluating_is_completed_without_training(
    tmp_path, capsys, monkeypatch
):
    from keras_sge.detection import training

    evaluate, begun = training.evaluate_detector, []

    def killed(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(training, "evaluate_detector", killed)
    with pytest.raises(Killed):
        _train(tmp_path, "--epochs", "1")
    out = str(tmp_path / "run")
    assert os.path.exists(os.path.join(out, "trained.json"))
    assert os.path.exists(os.path.join(out, "model.keras"))
    assert not os.path.exists(os.path.join(out, "results.json"))

    monkeypatch.setattr(training, "evaluate_detector", evaluate)
    monkeypatch.setattr(
        AtomicCSVLogger, "on_epoch_begin", lambda self, epoch, logs=None: begun.append(epoch)
    )
    assert _train(tmp_path, "--epochs", "1")[0] == 0
    assert "completing its outputs" in capsys.readouterr().out
    assert begun == []  # nothing trained again
    assert not os.path.exists(os.path.join(out, "trained.json"))
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["finished"] is True


def test_another_run_in_the_folder_is_refused_with_exit_code_2(tmp_path, capsys):
    from keras_sge.training.files import run_lock

    out = tmp_path / "run"
    out.mkdir()
    with run_lock(str(out / "run.lock")):
        assert _train(tmp_path)[0] == 2
    assert "run.lock" in capsys.readouterr().err


def test_train_and_evaluate_tfds_coco_at_a_recipe_scale(tmp_path, capsys):
    # tfds coco/2017 mocked offline (the real builder's features, a few
    # examples of both orientations) at a (96, 64) scale: the loader, two
    # canvases in fit, COCOeval against the ground truth built from tfds.
    # JAX trains at 64 px, one canvas: XLA compiles the training and the
    # prediction step once per canvas (about a minute on a CPU); the TF and
    # torch passes train on both canvases.
    out, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    scale = ["64"] if BACKEND == "jax" else ["96", "64"]
    common = ["--dataset", "coco/2017", "--data-dir", data_dir, "--image-size", *scale]
    with mock_tfds_coco():
        code = load_program("train_detector").main(
            [*common, "--output-dir", out, "--batch-size", "2", "--epochs", "1"]
            + ["--warmup-steps", "1", "--head-convs", "1"]
        )
        assert code == 0
        with open(os.path.join(out, "results.json")) as f:
            assert {"AP", "AP50", "fit_wall_time_s"} <= set(json.load(f))
        assert "held-out COCO AP" in capsys.readouterr().out
        held_out = load_detection_split("coco/2017", data_dir=data_dir)
        assert (held_out.split, len(held_out)) == ("validation", len(TFDS_VALIDATION))
    # Not prepared: the error names where tfds looked and the build command.
    model = os.path.join(out, "model.keras")
    assert load_program("evaluate_detector").main([*common, "--model", model]) == 2
    assert "tfds build coco/2017 --data_dir" in capsys.readouterr().err
    assert load_program("train_detector").main([*common, "--output-dir", out + "-2"]) == 2
    assert "tfds build coco/2017 --data_dir" in capsys.readouterr().err


@pytest.mark.backend_independent
def test_image_size_is_one_side_or_a_long_short_scale(capsys):
    parse = load_program("train_detector").parse_args
    assert parse(["--image-size", "96"]).image_size == 96
    assert parse(["--image-size", "1333", "800"]).image_size == (1333, 800)
    assert parse(["--image-size", "800", "1333"]).image_size == (1333, 800)
    assert parse([]).image_size == 64
    with pytest.raises(SystemExit):
        parse(["--image-size", "1333", "800", "600"])
    assert "one size (a square) or two (long short)" in capsys.readouterr().err


@pytest.mark.long
@pytest.mark.parametrize("model", ["sge_resnet18", "resnet18"])
def test_the_demo_learns(tmp_path, model):
    # Minutes on a CPU: opt in with `pytest -m long`.
    out = str(tmp_path / model)
    assert load_program("train_detector").main(["--output-dir", out, "--model", model]) == 0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["AP50"] >= 0.5


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "program, arguments, message",
    [
        ("train_detector", ["--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
        ("train_detector", ["--image-size", "8"], "--image-size: must be an integer >= 32"),
        (
            "train_detector",
            ["--learning-rate", "-1"],
            "--learning-rate: must be a finite number > 0",
        ),
        ("train_detector", ["--demo-images", "0", "5"], "--demo-images: must be an integer >= 1"),
        ("evaluate_detector", ["--model", "m.keras", "--batch-size", "0"], "--batch-size: must be"),
        ("predict_detector", ["a.jpg", "--model", "m.keras", "--min-score", "2"], "[0, 1]"),
    ],
)
def test_detection_program_flags_are_range_checked(program, arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_program(program).main(arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_backbone_pretrained_with_other_settings_is_pretrained_again(tmp_path, monkeypatch):
    """`<output-dir>/backbone/` belongs to the detector run: reused as it is when
    its settings match, pretrained afresh (not refused) when they do not."""
    import keras_sge.training
    from keras_sge.detection.training import DetectorConfig, _demo_backbone
    from keras_sge.training import RunSettingsMismatchError

    calls = []

    def train(config):
        calls.append(config)
        if not config.overwrite and config.seed != 0:
            raise RunSettingsMismatchError("pretrained with seed 0")

    monkeypatch.setattr(keras_sge.training, "train", train)
    out = str(tmp_path / "run")
    for seed in (0, 1):
        model = _demo_backbone(DetectorConfig(output_dir=out, seed=seed, pretrain_epochs=1))
        assert model == os.path.join(out, "backbone", "model.keras")
    assert [(c.seed, c.overwrite) for c in calls] == [(0, False), (1, False), (1, True)]
    assert {c.output_dir for c in calls} == {os.path.join(out, "backbone")}
