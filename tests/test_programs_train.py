"""applications/train.py and applications/evaluate.py: flags in, library calls, results out."""

import json
import re

import keras
import pytest

from keras_sge.training import TrainConfig
from tests.helpers import SIZE, load_program, tiny_model


def test_train_flags_map_onto_the_config():
    parse = load_program("train").parse_args
    assert parse([]) == TrainConfig()  # no arguments: the demo run
    config = parse(
        [
            "--dataset",
            "imagenet2012",
            "--manual-dir",
            "/archives",
            "--model",
            "resnet101",
            "--recipe",
            "paper",
            "--epochs",
            "90",
            "--batch-size",
            "1024",
            "--lr",
            "0.2",
            "--weight-decay",
            "5e-5",
            "--no-decay-all-parameters",
            "--label-smoothing",
            "0.1",
            "--warmup-epochs",
            "5",
            "--lr-milestones",
            "30",
            "60",
            "80",
            "--mixed-precision",
            "bfloat16",
            "--no-jit",
            "--devices",
            "8",
            "--steps-per-epoch",
            "10",
            "--multi-worker",
            "--worker-timeout",
            "30",
            "--output-dir",
            "/tmp/x",
            "--seed",
            "3",
            "--verbose",
            "2",
        ]
    )
    assert config == TrainConfig(
        dataset="imagenet2012",
        manual_dir="/archives",
        model="resnet101",
        recipe="paper",
        epochs=90,
        batch_size=1024,
        lr=0.2,
        weight_decay=5e-5,
        decay_all_parameters=False,
        label_smoothing=0.1,
        warmup_epochs=5.0,
        lr_milestones=[30, 60, 80],
        mixed_precision="bfloat16",
        jit=False,
        devices=8,
        steps_per_epoch=10,
        multi_worker=True,
        worker_timeout=30.0,
        output_dir="/tmp/x",
        seed=3,
        verbose=2,
    )
    assert parse(["--sge-options", '{"normalize": false}']).sge_options == {"normalize": False}
    with pytest.raises(SystemExit):
        parse(["--model", "vgg16"])


def test_evaluate_program_prints_the_paper_table(tmp_path, capsys):
    model = tiny_model((SIZE, SIZE, 3), 4)
    # Named as a registry model, so that the paper's row is printed beside it.
    model = keras.Model(model.inputs, model.outputs, name="sge_resnet50")
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    out_json = str(tmp_path / "eval.json")
    code = load_program("evaluate").main(
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
    assert code == 0
    printed = capsys.readouterr().out
    assert f"demo/validation at {SIZE} px" in printed
    assert "| sge_resnet50 |" in printed and "77.584" in printed and "93.664" in printed
    measured = json.load(open(out_json))
    assert 0.0 <= measured["top1"] <= 1.0 and measured["top5"] == pytest.approx(1.0)  # fractions
    assert measured["num_classes"] == 4


def test_evaluate_program_rejects_unknown_files(tmp_path, capsys):
    evaluate_program = load_program("evaluate").main
    bad = tmp_path / "model.onnx"
    bad.write_text("x")
    argv = ["--dataset", "demo", "--image-size", "32"]
    assert evaluate_program(["--model", str(bad), *argv]) == 2
    assert re.search("a model name .* or a .keras file", capsys.readouterr().err)
    checkpoint = tmp_path / "weights.pth"
    checkpoint.write_bytes(b"")
    assert evaluate_program(["--model", str(checkpoint), *argv]) == 2
    assert "name its architecture" in capsys.readouterr().err
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"PK\x03\x04 not a whole archive")
    assert evaluate_program(["--model", str(damaged), *argv]) == 2
    assert f"The model file {str(damaged)!r} (24 bytes) is not a .keras archive" in (
        capsys.readouterr().err
    )
