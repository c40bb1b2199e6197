"""Models that carry their preprocessing, and weights="imagenet" from the cache."""

import os

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge.applications import pretrained
from tests.helpers import BACKEND

SHAPE = (40, 40, 3)


def _raw_images():
    return np.random.default_rng(0).integers(0, 256, size=(2,) + SHAPE).astype("float32")


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(1)
    inside = applications.SGEResNet18(input_shape=SHAPE, classes=7, include_preprocessing=True)
    outside = applications.SGEResNet18(input_shape=SHAPE, classes=7)
    outside.set_weights(inside.get_weights())  # the normalisation has no weights
    return inside, outside


def test_model_normalises_raw_images_like_preprocess_input(models):
    inside, outside = models
    images = _raw_images()
    expected = outside.predict(applications.preprocess_input(images), verbose=0)
    np.testing.assert_allclose(inside.predict(images, verbose=0), expected, atol=1e-5)
    # Without the normalisation the outputs would differ: the test sees it.
    assert np.max(np.abs(outside.predict(images, verbose=0) - expected)) > 1e-3


def test_saved_model_keeps_the_preprocessing(models, tmp_path):
    inside, _ = models
    inside.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    images = _raw_images()
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), inside.predict(images, verbose=0), atol=1e-6
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="model.export writes a TF SavedModel")
def test_exported_saved_model_takes_raw_images(models, tmp_path):
    import tensorflow as tf

    inside, _ = models
    inside.export(str(tmp_path / "exported"), verbose=False)
    artifact = tf.saved_model.load(str(tmp_path / "exported"))
    images = _raw_images()
    served = artifact.serve(tf.constant(images)).numpy()
    np.testing.assert_allclose(served, inside.predict(images, verbose=0), atol=1e-5)


def test_imagenet_weights_missing_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_VARIABLE, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        applications.SGEResNet50(weights="imagenet")
    message = str(info.value)
    assert os.path.join(str(tmp_path), "sge_resnet50.pth.tar") in message
    assert pretrained.PRETRAINED["sge_resnet50"].google_drive in message
    assert "unknown" in message
    with pytest.raises(ValueError, match="none for 'sge_resnet18'"):
        applications.SGEResNet18(weights="imagenet")


def test_imagenet_weights_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_VARIABLE, str(tmp_path))
    # A stand-in entry: the mechanism is the same for every published model.
    monkeypatch.setitem(
        pretrained.PRETRAINED,
        "sge_resnet18",
        pretrained.PretrainedFile("sge_resnet18.pth.tar", "", "", ""),
    )
    source = applications.SGEResNet18(input_shape=SHAPE)
    source.save_weights(tmp_path / "sge_resnet18.weights.h5")
    model = applications.SGEResNet18(input_shape=SHAPE, weights="imagenet")
    for expected, actual in zip(source.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    with pytest.raises(ValueError, match="classes"):
        applications.SGEResNet18(input_shape=SHAPE, weights="imagenet", classes=10)
