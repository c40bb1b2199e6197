"""The package's shape: a light core, extras that say what to install."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import BACKEND, REPOSITORY, load_program, subprocess_env

_LIGHT_IMPORT = """
import json, sys
import numpy as np
import keras
heavy = ("tensorflow", "matplotlib", "tensorflow_datasets", "PIL", "keras_hub")
# Keras imports matplotlib and Pillow itself when they are installed.
before = {m for m in heavy if m in sys.modules}
import keras_sge
from keras_sge.layers import SpatialGroupEnhance
model = keras_sge.applications.SGEResNet18(input_shape=(32, 32, 3), classes=3)
y = model.predict(keras_sge.applications.preprocess_input(np.zeros((1, 32, 32, 3))), verbose=0)
after = {m for m in heavy if m in sys.modules}
# (Keras' own saving code imports TensorFlow where it is installed.)
model.save(sys.argv[1])
print(json.dumps({"added": sorted(after - before), "tensorflow": "tensorflow" in after}))
"""

_LOAD_SAVED = """
import sys
import keras
import keras_sge
model = keras.saving.load_model(sys.argv[1])  # safe_mode=True by default
assert any(type(layer).__name__ == "SpatialGroupEnhance" for layer in model.layers)
print("loaded", model.name)
"""


def _run(code, *args):
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=subprocess_env(BACKEND),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is the backend itself")
def test_core_imports_neither_tensorflow_nor_matplotlib(tmp_path):
    path = str(tmp_path / "model.keras")
    done = _run(_LIGHT_IMPORT, path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"added": [], "tensorflow": False}
    loaded = _run(_LOAD_SAVED, path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "loaded sge_resnet18" in loaded.stdout


@pytest.mark.parametrize(
    "hidden, module, extra",
    [
        ("matplotlib", "keras_sge.visualization", "viz"),
        ("tensorflow", "keras_sge.data", "data"),
        ("matplotlib", "keras_sge.training", "train"),
        ("keras_hub", "keras_sge.detection", "detection"),
    ],
)
@pytest.mark.backend_independent
def test_a_missing_extra_is_named(hidden, module, extra):
    # `sys.modules[name] = None` makes `import name` fail as if not installed.
    code = f"import sys; sys.modules[{hidden!r}] = None\nimport {module}"
    env = subprocess_env("jax")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert f'pip install "keras-sge[{extra}]"' in done.stderr
    assert f"needs the `{hidden}` package" in done.stderr


def test_subpackages_load_on_first_use():
    import keras_sge

    assert set(dir(keras_sge)) >= {"applications", "layers", "data", "training", "visualization"}
    assert keras_sge.training.TrainConfig is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = keras_sge.nothing


PACKAGED_PROGRAMS = (
    "train",
    "evaluate",
    "predict",
    "convert_checkpoint",
    "visualize",
    "ablate",
    "train_detector",
    "evaluate_detector",
    "predict_detector",
)


@pytest.mark.parametrize("program", PACKAGED_PROGRAMS)
@pytest.mark.backend_independent
def test_every_program_takes_model_and_shows_a_runnable_example(program, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_program(program).main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert f"python applications/{program}.py" in shown  # an example to copy
    if program != "ablate":  # ablate builds its own grid of models
        assert "--model" in shown
    if program in ("evaluate", "predict", "convert_checkpoint", "visualize", "train"):
        assert "--weights" in shown  # the detection programs load whole detectors


@pytest.mark.backend_independent
def test_programs_are_offered_three_ways():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {
        f"keras-sge-{name.replace('_', '-')}": f"keras_sge.programs.{name}:main"
        for name in PACKAGED_PROGRAMS
    }
    for name in PACKAGED_PROGRAMS:
        program = importlib.import_module(f"keras_sge.programs.{name}")
        path = os.path.join(REPOSITORY, "applications", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"thin_{name}", path)
        thin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(thin)
        assert thin.main is program.main  # applications/<name>.py only calls it
        with open(path) as f:
            assert len(f.read().splitlines()) <= 10


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "command",
    [["applications/predict.py", "--help"], ["-m", "keras_sge.programs.convert_checkpoint", "-h"]],
)
def test_a_program_runs_as_a_file_and_as_a_module(command):
    done = subprocess.run(
        [sys.executable, *command],
        env=subprocess_env("jax"),
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--model" in done.stdout and "Installed with pip, the same program is" in done.stdout
