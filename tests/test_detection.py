"""The SGE-ResNet backbone on keras-hub, the RetinaNet builder and its recipe."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sge import applications
from keras_sge.detection import (
    DETECTION_RECIPE,
    SGEResNetBackbone,
    build_retinanet,
    compile_retinanet,
    freeze_stages,
)
from keras_sge.detection.evaluation import predicted_batches
from tests.helpers import BACKEND, subprocess_env

SIZE = 64


@pytest.mark.parametrize("depth, attention", [(18, True), (34, False)])
def test_pyramid_features_are_the_classification_models_stage_outputs(
    tmp_path, rng, depth, attention
):
    classifier = applications.build_resnet(
        depth, attention, input_shape=(SIZE, SIZE, 3), classes=5, groups=8
    )
    # Non-trivial SGE and BatchNorm parameters, so a missed weight shows.
    for variable in classifier.weights:
        if "sge" in variable.path or "bn" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    path = str(tmp_path / "classifier.weights.h5")
    classifier.save_weights(path)
    backbone = SGEResNetBackbone(
        depth, attention, groups=8, image_shape=(SIZE, SIZE, 3), weights=path
    )
    images = rng.standard_normal((2, SIZE, SIZE, 3)).astype("float32")
    expected = keras.Model(classifier.input, applications.pyramid_outputs(classifier))(images)
    got = keras.Model(backbone.input, backbone.pyramid_outputs)(images)
    assert sorted(got) == ["P2", "P3", "P4", "P5"]
    for level in (2, 3, 4, 5):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(got[f"P{level}"]),
            keras.ops.convert_to_numpy(expected[f"C{level}"]),
        )
    has_sge = any("sge" in layer.name for layer in backbone.layers)
    assert has_sge == attention


def test_backbone_config_round_trip():
    backbone = SGEResNetBackbone(18, False, groups=8, image_shape=(None, None, 3), name="b")
    clone = SGEResNetBackbone.from_config(backbone.get_config())
    assert (clone.depth, clone.attention, clone.groups, clone.name) == (18, False, 8, "b")
    assert clone.count_params() == backbone.count_params()


def test_freeze_stages_freezes_stem_stage_one_and_every_batch_norm():
    backbone = SGEResNetBackbone(18, True, groups=8, image_shape=(SIZE, SIZE, 3))
    frozen = set(freeze_stages(backbone, 1))
    assert {"conv1", "bn1", "layer1_0_conv1", "layer1_1_sge", "layer2_0_bn1"} <= frozen
    assert "layer2_0_conv1" not in frozen and "layer4_1_sge" not in frozen
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    with pytest.raises(ValueError, match="frozen_stages"):
        freeze_stages(backbone, 5)


def test_retinanet_levels_anchors_and_decoder_follow_the_recipe():
    detector = build_retinanet(4, depth=18, image_shape=(SIZE, SIZE, 3), anchor_size=2.0)
    outputs = detector.backbone.pyramid_outputs
    assert sorted(outputs) == ["P3", "P4", "P5", "P6", "P7"]
    assert not detector.backbone.use_p5  # P6 from C5, as the authors
    anchors = detector.anchor_generator
    assert (anchors.num_scales, list(anchors.aspect_ratios), anchors.anchor_size) == (
        3,
        [0.5, 1.0, 2.0],
        2.0,
    )
    assert (
        detector.label_encoder.positive_threshold,
        detector.label_encoder.negative_threshold,
    ) == (
        DETECTION_RECIPE.positive_iou,
        DETECTION_RECIPE.negative_iou,
    )
    decoder = detector.prediction_decoder
    assert (decoder.iou_threshold, decoder.confidence_threshold, decoder.max_detections) == (
        0.5,
        0.05,
        100,
    )
    # Every class score starts at the prior probability 0.01.
    images = np.random.default_rng(0).standard_normal((1, SIZE, SIZE, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(detector(images)["cls_logits"])
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    assert abs(float(np.median(probabilities)) - 0.01) < 0.005


def test_compile_uses_the_authors_schedule_optimizer_and_losses():
    recipe = DETECTION_RECIPE
    assert (recipe.learning_rate, recipe.base_batch_size, recipe.momentum) == (0.01, 16, 0.9)
    assert (recipe.weight_decay, recipe.warmup_steps, recipe.clip_norm) == (1e-4, 500, 35.0)
    assert (recipe.epochs, recipe.milestones, recipe.max_size) == (24, (16, 22), (1333, 800))
    assert (recipe.focal_alpha, recipe.focal_gamma, recipe.smooth_l1_beta) == (0.25, 2.0, 0.11)
    detector = build_retinanet(3, depth=18, image_shape=(SIZE, SIZE, 3))
    compile_retinanet(detector, batch_size=2, steps_per_epoch=100)
    optimizer = detector.optimizer
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    peak = 0.01 * 2 / 16
    rates = {step: float(schedule(step)) for step in (0, 250, 500, 1599, 1600, 2200)}
    np.testing.assert_allclose(
        [rates[s] for s in (0, 250, 500, 1599, 1600, 2200)],
        [peak / 3, peak * (1 / 3 + 2 / 3 / 2), peak, peak, peak * 0.1, peak * 0.01],
        rtol=1e-6,
    )
    assert (optimizer.momentum, optimizer.l2, optimizer.global_clipnorm) == (0.9, 1e-4, 35.0)


_LOAD_DETECTOR = """
import sys
import numpy as np
import keras
import keras_sge
assert "keras_hub" not in sys.modules
detector = keras.saving.load_model(sys.argv[1])
encoder = detector.backbone.image_encoder
assert type(encoder).__name__ == "SGEResNetBackbone", type(encoder)
out = detector(np.load(sys.argv[2]))
np.save(sys.argv[3], keras.ops.convert_to_numpy(out["cls_logits"]))
"""


def test_saved_detector_loads_in_a_fresh_process_after_import_keras_sge(tmp_path):
    detector = build_retinanet(2, depth=18, image_shape=(SIZE, SIZE, 3))
    images = np.random.default_rng(3).standard_normal((1, SIZE, SIZE, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(detector(images)["cls_logits"])
    model_path, images_path, out_path = (
        str(tmp_path / name) for name in ("d.keras", "x.npy", "y.npy")
    )
    detector.save(model_path)
    np.save(images_path, images)
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_DETECTOR, model_path, images_path, out_path],
        env=subprocess_env(BACKEND),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(out_path), expected, rtol=1e-5, atol=1e-5)


def test_backbone_preset_round_trip(tmp_path):
    backbone = SGEResNetBackbone(18, True, groups=8, image_shape=(SIZE, SIZE, 3))
    backbone.save_to_preset(str(tmp_path / "preset"))
    loaded = SGEResNetBackbone.from_preset(str(tmp_path / "preset"))
    images = np.random.default_rng(4).standard_normal((1, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(backbone(images))
    )


def test_demo_folder_fits_evaluates_and_predicts(tmp_path):
    from keras_sge.detection.coco import find_coco_split, read_coco
    from keras_sge.detection.demo import prepare_detection_demo
    from keras_sge.detection.evaluation import METRIC_NAMES, evaluate_detector
    from keras_sge.detection.pipeline import load_coco_dataset

    folder = prepare_detection_demo(str(tmp_path), num_train=4, num_validation=2)
    train = read_coco(*find_coco_split(folder, "train"))
    val = read_coco(*find_coco_split(folder, "val"))
    detector = build_retinanet(4, depth=18, image_shape=(SIZE, SIZE, 3), anchor_size=2.0)
    compile_retinanet(detector, batch_size=2, steps_per_epoch=2, warmup_steps=1)
    history = detector.fit(
        load_coco_dataset(train, batch_size=2, image_size=SIZE, training=True), verbose=0
    )
    assert np.isfinite(history.history["loss"][-1])
    val_batches = load_coco_dataset(
        val, batch_size=2, image_size=SIZE, training=False, with_info=True
    )
    metrics = evaluate_detector(detector, val, val_batches, str(tmp_path / "out"))
    assert set(metrics) == set(METRIC_NAMES)
    assert (tmp_path / "out" / "results.json").exists()
    predictions = detector.predict(val_batches.map(lambda x, y, info: (x, y)), verbose=0)
    assert predictions["boxes"].shape == (2, 100, 4)


def test_anchors_and_outputs_follow_each_canvas_of_the_recipe_scale():
    # (96, 64): landscape batches are 64x96, portrait ones 96x64; one detector
    # built for any size serves both, with the anchors of each input. JAX
    # predicts on the first canvas only: XLA compiles the detector once per
    # canvas (tens of seconds on a CPU); the TF and torch passes predict on both.
    detector = build_retinanet(3, depth=18, image_shape=(None, None, 3), head_convs=1)
    for canvas, (height, width) in enumerate(((64, 96), (96, 64))):
        images = np.random.default_rng(5).standard_normal((2, height, width, 3))
        images = images.astype("float32")
        anchors = detector.anchor_generator(images)
        expected = sum(-(-height // 2**level) * -(-width // 2**level) * 9 for level in range(3, 8))
        assert sum(int(a.shape[0]) for a in anchors.values()) == expected
        if canvas and BACKEND == "jax":
            continue
        info = {"image_id": [1, 2], "scale": [1.0, 1.0]}
        batches = tf.data.Dataset.from_tensors((images, {"labels": [[-1], [-1]]}, info))
        found, _ = next(predicted_batches(detector, batches))
        assert found["boxes"].shape == (2, 100, 4)
