"""The detection programs end to end on a tiny demo set, and the opt-in learning check."""

import json
import os

import pytest

from tests.helpers import load_program


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
            "1",
            "--warmup-steps",
            "1",
            "--anchor-size",
            "2",
            *extra,
        ]
    )
    return code, out


def test_train_evaluate_and_draw_on_the_demo(tmp_path, capsys):
    code, out = _train(tmp_path)
    assert code == 0
    for name in ("model.keras", "metrics.csv", "results.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "lock"))
    with open(os.path.join(out, "results.json")) as f:
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "train_seconds"} <= set(json.load(f))
    assert "held-out COCO AP" in capsys.readouterr().out

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


@pytest.mark.long
@pytest.mark.parametrize("model", ["sge_resnet18", "resnet18"])
def test_the_demo_learns(tmp_path, model):
    # Minutes on a CPU: opt in with `pytest -m long`.
    out = str(tmp_path / model)
    assert load_program("train_detector").main(["--output-dir", out, "--model", model]) == 0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["AP50"] >= 0.5
