"""applications/ablate.py on a minimal grid, as a subprocess, in one pass."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import BACKEND, subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="trains a full SGE-ResNet50 for 2 steps; run once, in the tensorflow pass",
)
def test_ablate_program_on_a_minimal_grid(tmp_path):
    out = tmp_path / "ablation"
    command = [
        sys.executable,
        os.path.join(ROOT, "applications", "ablate.py"),
        # One setting: SGE without normalisation (no sweep, no init run, no baseline).
        "--groups",
        "--no-init",
        "--no-baseline",
        "--no-jit",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--steps-per-epoch",
        "2",
        "--validation-steps",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--verbose",
        "0",
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(
        command, env=subprocess_env(BACKEND), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows] == ["groups=64,no_norm"]
    row = rows[0]
    assert row["normalize"] == "False" and row["groups"] == "64" and row["epochs"] == "1"
    assert 0.0 <= float(row["best_val_top1"]) <= 1.0
    assert int(row["params"]) > 23_000_000  # a full SGE-ResNet50 with a 4-class head
    # The run really built its SGE layers with normalize=False.
    with open(out / "runs" / "groups64_no_norm" / "config.json") as f:
        assert json.load(f)["sge_options"] == {"normalize": False}
    assert os.path.getsize(out / "ablation.png") > 1000
    assert "| groups=64,no_norm | sge_resnet50 | 64 |" in done.stdout
    # The finished row is not reused for another budget: refused, exit 2, nothing retrained.
    again = command[:]
    again[again.index("--steps-per-epoch") + 1] = "3"
    refused = subprocess.run(
        again, env=subprocess_env(BACKEND), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "error:" in refused.stderr and "steps_per_epoch: 3 (saved: 2)" in refused.stderr
    assert "--restart" in refused.stderr
