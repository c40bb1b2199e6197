"""The ablation grid, its tables and plot, and resumption (no training here)."""

import csv
import json
import os

import pytest
from PIL import Image

from keras_sge.training import ablation


@pytest.mark.backend_independent
def test_grid_changes_one_knob_at_a_time():
    grid = ablation.ablation_grid("sge_resnet101", groups=(1, 64, 1))
    assert [s.key for s in grid] == [
        "no_sge",
        "groups=1",
        "groups=64",
        "groups=64,init=1/0",
        "groups=64,no_norm",
    ]
    assert grid[0].model == "resnet101" and grid[0].sge_options() is None
    assert grid[1].model == "sge_resnet101" and grid[1].groups == 1
    assert grid[2].sge_options() is None  # the paper's defaults
    assert grid[3].sge_options() == {"gamma_initializer": "ones", "beta_initializer": "zeros"}
    assert grid[4].sge_options() == {"normalize": False}
    assert [
        s.key
        for s in ablation.ablation_grid(
            groups=(8,), initialization=False, normalization=False, baseline=False
        )
    ] == ["groups=8"]
    with pytest.raises(ValueError, match="divisor of 256.*96"):
        ablation.ablation_grid(groups=(96,))
    with pytest.raises(ValueError, match="SGE model"):
        ablation.ablation_grid("resnet50")
    with pytest.raises(ValueError, match="grid is empty"):
        ablation.ablation_grid(groups=(), initialization=False, normalization=False, baseline=False)


def _row(setting, model, groups, top1, **extra):
    sge = model.startswith("sge_")
    return {
        "setting": setting,
        "model": model,
        "groups": groups if sge else "",
        "gamma_init": extra.get("gamma_init", "zeros") if sge else "",
        "beta_init": extra.get("beta_init", "ones") if sge else "",
        "normalize": extra.get("normalize", True) if sge else "",
        "params": 1000,
        "best_val_top1": top1,
        "best_val_top5": 1.0,
        "best_epoch": 2,
        "last_val_top1": top1,
        "epochs": 3,
        "wall_time_s": 12.5,
    }


@pytest.mark.backend_independent
def test_tables_and_plot(tmp_path):
    rows = [
        _row("no_sge", "resnet50", 64, 0.5),
        _row("groups=1", "sge_resnet50", 1, 0.55),
        _row("groups=64", "sge_resnet50", 64, 0.625),
        _row("groups=64,no_norm", "sge_resnet50", 64, 0.25, normalize=False),
    ]
    csv_path, md_path = ablation.write_tables(rows, str(tmp_path))
    with open(csv_path) as f:
        read = list(csv.DictReader(f))
    assert [r["setting"] for r in read] == [r["setting"] for r in rows]
    assert read[2]["best_val_top1"] == "0.625" and read[0]["groups"] == ""
    with open(md_path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 2 + len(rows)
    assert "| groups=64 | sge_resnet50 | 64 | zeros/ones | True | 1,000 | 62.50 |" in lines[4]
    assert "| no_sge | resnet50 | - | - | - |" in lines[2]
    path = ablation.plot_ablation(rows, str(tmp_path / "ablation.png"))
    assert os.path.getsize(path) > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # two panels


@pytest.fixture
def finished_setting(tmp_path, monkeypatch):
    """A setting whose row is saved in its folder under tmp_path; training it fails the test.

    Returns:
        `(setting, folder, saved row)`.
    """
    from keras_sge import training

    def fail(config):
        raise AssertionError(f"trained {config.output_dir} again")

    monkeypatch.setattr(training, "train", fail)
    setting = ablation.ablation_grid(
        groups=(4,), initialization=False, normalization=False, baseline=False
    )[0]
    folder = tmp_path / "runs" / "groups4"
    folder.mkdir(parents=True)
    saved = _row("groups=4", "sge_resnet50", 4, 0.75)
    (folder / "ablation_row.json").write_text(json.dumps(saved))
    return setting, folder, saved


@pytest.mark.backend_independent
def test_finished_settings_are_reused_without_training(tmp_path, finished_setting):
    from keras_sge import training

    setting, _, saved = finished_setting
    lines = []
    rows = ablation.run_ablation([setting], training.TrainConfig(), str(tmp_path), log=lines.append)
    assert rows == [saved]
    assert "finished earlier" in lines[0]
    assert (tmp_path / "ablation.md").exists() and (tmp_path / "ablation.png").exists()
    with pytest.raises(AssertionError, match="trained"):
        ablation.run_ablation([setting], training.TrainConfig(), str(tmp_path), resume=False)


@pytest.mark.backend_independent
def test_a_finished_setting_is_reused_only_with_its_settings(tmp_path, finished_setting):
    import dataclasses

    from keras_sge import training

    setting, folder, saved = finished_setting
    trained_with = dataclasses.replace(
        training.TrainConfig(epochs=3), model="sge_resnet50", groups=4, output_dir=str(folder)
    )
    config = {**dataclasses.asdict(trained_with), "derived": {}}
    (folder / "config.json").write_text(json.dumps(config))

    rows = ablation.run_ablation([setting], training.TrainConfig(epochs=3), str(tmp_path))
    assert rows == [saved]
    with pytest.raises(
        training.RunSettingsMismatchError, match=r"epochs: 5 \(saved: 3\).*--restart"
    ):
        ablation.run_ablation([setting], training.TrainConfig(epochs=5), str(tmp_path))
    # An unfinished run (no row yet) with other settings: refused before `train`, naming --restart.
    (folder / "ablation_row.json").unlink()
    with pytest.raises(training.RunSettingsMismatchError, match=r"an unfinished run.*--restart"):
        ablation.run_ablation([setting], training.TrainConfig(epochs=5), str(tmp_path))
