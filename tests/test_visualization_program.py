"""applications/visualize.py on image files and on the demo images."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_sge.layers import SpatialGroupEnhance
from tests.helpers import BACKEND, load_program


def _program():
    return load_program("visualize")


def _small_model(path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = SpatialGroupEnhance(4, gamma_initializer="random_normal", name="layer1_0_sge")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = SpatialGroupEnhance(4, gamma_initializer="random_normal", name="layer2_0_sge")(x)
    x = SpatialGroupEnhance(4, gamma_initializer="random_normal", name="layer2_1_sge")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x), name="tiny")
    model.save(path)
    return model


# The programs are glue over the library (tested on every backend); each test
# runs in one pass only, spread over the passes to keep each short.
@pytest.mark.skipif(BACKEND != "torch", reason="program glue; run once, in the torch pass")
def test_program_on_image_files(tmp_path, rng):
    _small_model(str(tmp_path / "tiny.keras"))
    files = []
    for index, size in enumerate(((50, 40), (30, 60))):
        file = tmp_path / f"photo{index}.png"
        Image.fromarray(rng.integers(0, 256, size=size + (3,)).astype("uint8")).save(file)
        files.append(str(file))
    out = tmp_path / "vis"
    paths = _program().run(
        files
        + ["--model", str(tmp_path / "tiny.keras"), "--output-dir", str(out), "--num-groups", "2"]
    )
    assert set(paths) == {"attention_maps", "activation_statistics", "statistics_json"}
    for key in ("attention_maps", "activation_statistics"):
        assert os.path.getsize(paths[key]) > 1000
        with Image.open(paths[key]) as image:
            assert image.format == "PNG"
    with open(paths["statistics_json"]) as f:
        stats = json.load(f)
    assert stats["layer_names"] == ["layer2_0_sge", "layer2_1_sge"] and stats["num_images"] == 2
    assert np.asarray(stats["variance_before"]).shape == (2, 4)


def test_program_rejects_bad_models(tmp_path):
    program = _program()
    with pytest.raises(SystemExit, match="needs --weights"):
        program.main(["--model", "sge_resnet50"])
    with pytest.raises(SystemExit, match="No .keras model file"):
        program.main(["--model", str(tmp_path / "missing.keras")])


@pytest.mark.skipif(
    BACKEND != "torch", reason="program glue over the demo data; run once, in the torch pass"
)
def test_program_on_demo_images(tmp_path):
    # The demo data is generated once into its default cache and reused.
    _small_model(str(tmp_path / "tiny.keras"))
    paths = _program().run(
        [
            "--model",
            str(tmp_path / "tiny.keras"),
            "--output-dir",
            str(tmp_path / "vis"),
            "--num-images",
            "3",
            "--statistics-images",
            "20",
            "--stage",
            "layer1",
            "--shuffle-buffer",
            "24",
        ]
    )
    with open(paths["statistics_json"]) as f:
        stats = json.load(f)
    assert stats["layer_names"] == ["layer1_0_sge"] and stats["num_images"] == 20
    assert os.path.getsize(paths["attention_maps"]) > 1000
