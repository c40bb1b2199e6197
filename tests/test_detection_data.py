"""COCO-layout reading and its errors, the demo set, the tf.data pipeline (square and
the recipe's scale), tfds coco/2017 (mocked), COCO AP."""

import contextlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_sge.detection.coco import find_coco_split, read_coco
from keras_sge.detection.demo import IMAGE_SIZE, prepare_detection_demo
from keras_sge.detection.evaluation import coco_ap, coco_detections, evaluate_detector
from keras_sge.detection.pipeline import canvas_shapes, detection_dataset, load_coco_dataset
from keras_sge.detection.tfds_coco import (
    COCO_CATEGORY_IDS,
    load_tfds_coco,
    tfds_coco_examples,
)

SCALE = (96, 64)  # a small (long, short) scale: canvases 64x96 and 96x64


def _write_coco(folder, images, annotations, categories=((1, "a"), (2, "b"))):
    os.makedirs(os.path.join(folder, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(folder, "val"), exist_ok=True)
    records = []
    for image_id, (width, height) in enumerate(images, start=1):
        name = f"{image_id}.jpg"
        Image.new("RGB", (width, height), (90, 120, 150)).save(os.path.join(folder, "val", name))
        records.append({"id": image_id, "file_name": name, "width": width, "height": height})
    content = {
        "images": records,
        "annotations": [
            {
                "id": i,
                "image_id": image,
                "category_id": cat,
                "bbox": box,
                "iscrowd": 0,
                "area": box[2] * box[3],
            }
            for i, (image, cat, box) in enumerate(annotations, start=1)
        ],
        "categories": [{"id": i, "name": n} for i, n in categories],
    }
    path = os.path.join(folder, "annotations", "instances_val.json")
    with open(path, "w") as f:
        json.dump(content, f)
    return path


@pytest.mark.backend_independent
def test_reads_boxes_as_xyxy_and_drops_zero_area_with_a_count(tmp_path):
    _write_coco(
        tmp_path,
        [(40, 30), (20, 20)],
        [(1, 2, [1, 2, 10, 5]), (1, 1, [3, 3, 0, 4]), (2, 1, [0, 0, 20.5, 20])],
    )
    with pytest.warns(UserWarning, match="dropped 1 zero-area"):
        coco = read_coco(*find_coco_split(tmp_path, "val"))
    assert coco.class_names == ("a", "b") and coco.dropped_boxes == 1
    np.testing.assert_array_equal(coco.boxes[0], [[1, 2, 11, 7]])
    np.testing.assert_array_equal(coco.labels[0], [1])
    np.testing.assert_array_equal(coco.boxes[1], [[0, 0, 20, 20]])  # clipped within 1 px


@pytest.mark.parametrize(
    "annotations, message",
    [
        ([(1, 1, [30, 2, 20, 5])], "outside the 40x30 image"),
        ([(1, 7, [1, 1, 5, 5])], "category_id 7, not one of"),
        ([(3, 1, [1, 1, 5, 5])], "refers to image id 3"),
    ],
)
@pytest.mark.backend_independent
def test_bad_annotations_name_the_file_and_what_is_wrong(tmp_path, annotations, message):
    path = _write_coco(tmp_path, [(40, 30)], annotations)
    with pytest.raises(ValueError, match=message) as error:
        read_coco(path, tmp_path / "val")
    assert "instances_val.json" in str(error.value)


@pytest.mark.backend_independent
def test_missing_json_and_unreadable_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_val.json"):
        read_coco(tmp_path / "annotations" / "instances_val.json", tmp_path)
    path = _write_coco(tmp_path, [(40, 30)], [])
    with open(tmp_path / "val" / "1.jpg", "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(ValueError, match="1.jpg' is not a readable image"):
        read_coco(path, tmp_path / "val")
    os.remove(tmp_path / "val" / "1.jpg")
    with pytest.raises(FileNotFoundError, match="1.jpg"):
        read_coco(path, tmp_path / "val")


@pytest.mark.backend_independent
def test_pipeline_fits_images_keeping_aspect_and_pads_targets(tmp_path):
    path = _write_coco(
        tmp_path, [(64, 32), (32, 64)], [(1, 2, [8, 4, 16, 8]), (2, 1, [0, 0, 4, 4])]
    )
    coco = read_coco(path, tmp_path / "val")
    images, targets = next(
        iter(load_coco_dataset(coco, batch_size=2, image_size=32, training=False, max_boxes=3))
    )
    assert images.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(targets["boxes"][0].numpy(), [[4, 2, 12, 6]] + [[-1] * 4] * 2)
    np.testing.assert_allclose(targets["boxes"][1, 0].numpy(), [0, 0, 2, 2])
    np.testing.assert_array_equal(targets["labels"].numpy(), [[1, -1, -1], [0, -1, -1]])
    # Padding (the right half of the wide image fitted into 32x32 is black).
    assert np.all(images[0, 16:].numpy() == images[0, -1, -1].numpy())


@pytest.mark.backend_independent
def test_demo_set_is_real_jpegs_and_coco_json_read_back(tmp_path):
    folder = prepare_detection_demo(str(tmp_path), num_train=6, num_validation=3)
    assert prepare_detection_demo(str(tmp_path), num_train=6, num_validation=3) == folder
    coco = read_coco(*find_coco_split(folder, "train"))
    assert len(coco) == 6 and coco.class_names == ("circle", "cross", "square", "triangle")
    for boxes in coco.boxes:
        assert 1 <= len(boxes) <= 3
        assert np.all(boxes >= 0) and np.all(boxes <= IMAGE_SIZE)
        sides = boxes[:, 2:] - boxes[:, :2]
        assert np.all(sides > 10)
    with Image.open(coco.image_paths[0]) as image:
        assert image.format == "JPEG"


def _ground_truth(tmp_path):
    return _write_coco(
        tmp_path,
        [(100, 100), (100, 100)],
        [(1, 1, [10, 10, 30, 30]), (1, 2, [50, 50, 40, 40]), (2, 1, [5, 5, 50, 20])],
    )


@pytest.mark.backend_independent
def test_perfect_detections_score_ap_one(tmp_path):
    path = _ground_truth(tmp_path)
    detections = coco_detections(
        [1, 2],
        [[[10, 10, 40, 40], [50, 50, 90, 90], [-1] * 4], [[5, 5, 55, 25], [-1] * 4, [-1] * 4]],
        [[0.9, 0.8, -1], [0.7, -1, -1]],
        [[0, 1, -1], [0, -1, -1]],
        (1, 2),
    )
    assert len(detections) == 3
    metrics = coco_ap(path, detections)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["APs"] == pytest.approx(1.0)  # the 30x30 box: area 900 < 32^2
    assert metrics["APl"] == -1.0  # no object over 96^2 in the json


@pytest.mark.backend_independent
def test_a_known_mix_of_hits_and_misses(tmp_path):
    # Class a: two objects; a hit (score 0.9), a false positive (0.8), a
    # shifted hit (0.7). Class b: its one object is missed.
    path = _ground_truth(tmp_path)
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 0, 30, 30], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [10, 5, 50, 20], "score": 0.7},
    ]
    metrics = coco_ap(path, detections)
    # IoU of the third box: overlap 45x20 = 900 over 1000 + 1000 - 900 = 1100 -> 0.818.
    # Class a at IoU 0.5: precision after each detection 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # COCO's 101-point interpolated precision: 1 for recall <= 0.5 (51 points),
    # 2/3 for recall in (0.5, 1] (50 points) -> (51 + 50 * 2 / 3) / 101.
    ap50_a = (51 + 50 * 2 / 3) / 101
    # Class b has one object and no detection: AP 0. The mean is over both classes.
    assert metrics["AP50"] == pytest.approx((ap50_a + 0.0) / 2, abs=1e-6)
    # IoU 0.818 is a hit up to threshold 0.80 (7 of the 10 thresholds 0.5..0.95),
    # a miss above: AP_a = (7 * ap50_a + 3 * 51 / 101) / 10.
    ap_a = (7 * ap50_a + 3 * 51 / 101) / 10
    assert metrics["AP"] == pytest.approx(ap_a / 2, abs=1e-6)


# (height, width): landscape, portrait, square (landscape), very wide, portrait.
MIXED_SIZES = [(80, 120), (100, 50), (90, 90), (60, 200), (70, 40)]


def _examples(sizes, seed=0):
    """Random images, each with one box, as `(image, boxes, labels, image_id)`."""
    rng = np.random.default_rng(seed)
    items = []
    for image_id, (height, width) in enumerate(sizes, start=1):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        box = np.array([[width * 0.1, height * 0.2, width * 0.6, height * 0.9]], "float32")
        items.append((image, box, np.array([image_id % 3], "int32"), image_id))
    signature = (
        tf.TensorSpec((None, None, 3), tf.uint8),
        tf.TensorSpec((None, 4), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.int64),
    )
    return items, tf.data.Dataset.from_generator(lambda: iter(items), output_signature=signature)


def _expected_resize(image, box, scale_sides):
    """NumPy: mmdetection's keep-ratio scale, the resized size and the box."""
    long_side, short_side = scale_sides
    height, width = image.shape[:2]
    scale = min(long_side / max(height, width), short_side / min(height, width))
    return scale, (round(height * scale), round(width * scale)), box * scale


@pytest.mark.backend_independent
def test_recipe_scale_pads_each_orientation_to_its_canvas_and_groups_batches():
    assert canvas_shapes((1333, 800)) == canvas_shapes((800, 1333)) == ((800, 1344), (1344, 800))
    assert canvas_shapes(64) == ((64, 64), (64, 64))
    items, examples = _examples(MIXED_SIZES)
    batches = list(
        detection_dataset(
            examples, batch_size=2, image_size=SCALE, training=False, max_boxes=2, with_info=True
        )
    )
    # Grouped by orientation: ids 1 and 3 (landscape), 2 and 5 (portrait), then
    # the partial landscape batch of id 4, which evaluation keeps.
    assert [b[2]["image_id"].numpy().tolist() for b in batches] == [[1, 3], [2, 5], [4]]
    assert [tuple(b[0].shape[1:3]) for b in batches] == [(64, 96), (96, 64), (64, 96)]
    for images, targets, info in batches:
        assert images.shape[1] % 32 == 0 and images.shape[2] % 32 == 0
        for row, image_id in enumerate(info["image_id"].numpy()):
            image, box, _, _ = items[image_id - 1]
            scale, (height, width), expected_box = _expected_resize(image, box, SCALE)
            assert info["scale"][row].numpy() == pytest.approx(scale, rel=1e-6)
            np.testing.assert_allclose(targets["boxes"][row, :1].numpy(), expected_box, rtol=1e-5)
            # Zero padding (after normalisation) right of and below the resized image.
            assert np.all(images[row, height:].numpy() == 0)
            assert np.all(images[row, :, width:].numpy() == 0)
            assert np.any(images[row, height - 1, width - 1].numpy() != 0)
    training = list(detection_dataset(examples, batch_size=2, image_size=SCALE, training=True))
    assert [tuple(b[0].shape) for b in training] == [(2, 64, 96, 3), (2, 96, 64, 3)]


@pytest.mark.backend_independent
def test_flip_mirrors_each_resized_image_and_its_boxes_within_its_own_width():
    items, examples = _examples(MIXED_SIZES[:2])

    def batches(flip):
        dataset = detection_dataset(
            examples,
            batch_size=1,
            image_size=SCALE,
            training=True,
            flip_probability=flip,
            max_boxes=1,
        )
        return list(dataset)

    for (kept, _), (flipped, flipped_targets), item in zip(batches(0.0), batches(1.0), items):
        image, box, _, _ = item
        _, (height, width), (x0, y0, x1, y1) = _expected_resize(image, box[0], SCALE)
        np.testing.assert_allclose(
            flipped_targets["boxes"][0, 0].numpy(), [width - x1, y0, width - x0, y1], rtol=1e-5
        )
        np.testing.assert_allclose(
            flipped[0, :height, :width].numpy(), kept[0, :height, width - 1 :: -1].numpy()
        )
        assert np.all(flipped[0, :, width:].numpy() == 0)  # the padding stays right


class _Oracle:
    """Stands for a detector: returns the targets of the batches it is given,
    in the order it is given them."""

    run_eagerly = True

    def __init__(self, dataset):
        self.targets = [targets for _, targets, _ in dataset]

    def predict(self, batch, verbose):
        (images, given), targets = next(iter(batch)), self.targets.pop(0)
        assert len(images) == len(targets["labels"])
        np.testing.assert_array_equal(given["boxes"], targets["boxes"])
        labels = targets["labels"].numpy()
        return {
            "boxes": targets["boxes"].numpy(),
            "labels": labels,
            "confidence": np.where(labels >= 0, 0.9, -1.0),
        }


@pytest.mark.backend_independent
@pytest.mark.parametrize("image_size", [48, SCALE])
def test_perfect_predictions_map_back_to_ap_one(tmp_path, image_size):
    # Different sizes and orientations, so each image has its own scale and
    # grouping reorders them.
    path = _write_coco(
        tmp_path,
        [(120, 80), (50, 100), (90, 90), (200, 60), (40, 70)],
        [(1, 1, [10, 10, 50, 40]), (2, 2, [5, 20, 30, 60]), (3, 1, [0, 0, 90, 45])]
        + [(4, 2, [150, 10, 40, 40]), (5, 1, [3, 30, 30, 30]), (1, 2, [70, 5, 40, 60])],
    )
    coco = read_coco(path, tmp_path / "val")
    dataset = load_coco_dataset(
        coco, batch_size=2, image_size=image_size, training=False, with_info=True
    )
    metrics = evaluate_detector(_Oracle(dataset), coco, dataset, str(tmp_path / "out"))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)
    with open(tmp_path / "out" / "detections.json") as f:
        first = min(json.load(f), key=lambda record: (record["image_id"], record["bbox"][0]))
    np.testing.assert_allclose(first["bbox"], [10, 10, 50, 40], rtol=1e-5)
    with pytest.raises(ValueError, match="holds 4 images"):
        evaluate_detector(_Oracle(dataset.take(2)), coco, dataset.take(2))


def _tfds_example(image_id, height, width, objects):
    """A tfds coco/2017 example; objects are (yxyx normalised box, label, crowd, area)."""
    boxes, labels, crowd, area = ([row[i] for row in objects] for i in range(4))
    return {
        "image": np.full((height, width, 3), image_id % 255, np.uint8),
        "image/filename": f"{image_id:012d}.jpg",
        "image/id": image_id,
        "objects": {
            "area": np.asarray(area, np.int64),
            "bbox": np.asarray(boxes, np.float32).reshape(-1, 4),
            "id": np.arange(len(labels), dtype=np.int64),
            "is_crowd": np.asarray(crowd, bool),
            "label": np.asarray(labels, np.int64),
        },
    }


# Validation: a landscape image with an object and a crowd region, a portrait
# image with two objects, a landscape image without objects.
TFDS_VALIDATION = [
    _tfds_example(
        139, 40, 60, [([0.1, 0.2, 0.6, 0.7], 0, False, 500), ([0, 0, 1, 1], 0, True, 90)]
    ),
    _tfds_example(
        285, 90, 45, [([0.2, 0.1, 0.5, 0.9], 79, False, 900), ([0.6, 0, 1, 0.5], 3, False, 300)]
    ),
    _tfds_example(632, 30, 50, []),
]
TFDS_TRAIN = [
    _tfds_example(9, 48, 72, [([0.1, 0.1, 0.9, 0.6], 2, False, 1000)]),
    _tfds_example(25, 72, 48, [([0.3, 0.2, 0.8, 0.8], 5, False, 900)]),
    _tfds_example(30, 50, 60, [([0.2, 0.3, 0.7, 0.9], 2, False, 700)]),
    _tfds_example(34, 64, 40, [([0.1, 0.1, 0.5, 0.5], 0, False, 300)]),
]


@contextlib.contextmanager
def mock_tfds_coco(splits=None):
    """tfds `coco/2017` offline: the real builder's features (tfds' code), these examples."""
    splits = splits or {"train": TFDS_TRAIN, "validation": TFDS_VALIDATION}

    def as_dataset(builder, split, *args, **kwargs):
        return tf.data.Dataset.from_generator(
            lambda: iter(splits[split]), output_signature=builder.info.features.get_tensor_spec()
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.backend_independent
def test_tfds_coco_converts_boxes_and_builds_the_ground_truth(tmp_path):
    with mock_tfds_coco():
        coco = load_tfds_coco("validation", data_dir=str(tmp_path))
        assert len(coco) == 3 and len(coco.class_names) == 80
        examples = list(tfds_coco_examples(coco))
        truth = coco.ground_truth()
    image, boxes, labels, image_id = examples[0]
    assert image.shape == (40, 60, 3) and image_id == 139
    np.testing.assert_allclose(boxes.numpy(), [[12, 4, 42, 24]], rtol=1e-5)  # crowd left out
    np.testing.assert_array_equal(labels.numpy(), [0])
    np.testing.assert_allclose(examples[1][1].numpy(), [[4.5, 18, 40.5, 45], [0, 54, 22.5, 90]])
    np.testing.assert_array_equal(examples[1][2].numpy(), [79, 3])
    assert examples[2][1].shape == (0, 4)
    assert [(i["id"], i["height"], i["width"]) for i in truth["images"]] == [
        (139, 40, 60),
        (285, 90, 45),
        (632, 30, 50),
    ]
    first, crowd, tall = truth["annotations"][:3]
    assert first == {
        "id": 1,
        "image_id": 139,
        "category_id": 1,
        "bbox": pytest.approx([12, 4, 30, 20]),
        "area": 500.0,
        "iscrowd": 0,
    }
    assert crowd["iscrowd"] == 1 and crowd["bbox"] == pytest.approx([0, 0, 60, 40])
    assert tall["category_id"] == 90 == COCO_CATEGORY_IDS[79]  # label 79: COCO's id 90
    assert len(truth["categories"]) == 80 and truth["categories"][11]["id"] == 13
    # The same structure coco_ap reads from a json: perfect predictions give AP 1.0.
    with mock_tfds_coco():
        dataset = load_coco_dataset(
            coco, batch_size=2, image_size=SCALE, training=False, with_info=True
        )
        metrics = evaluate_detector(_Oracle(dataset), coco, dataset)
    assert metrics["AP"] == pytest.approx(1.0)


@pytest.mark.backend_independent
def test_missing_tfds_coco_names_where_tfds_looked_and_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_tfds_coco("validation", data_dir=str(tmp_path))
    message = str(error.value)
    assert os.path.join(str(tmp_path), "coco", "2017") in message
    assert f"tfds build coco/2017 --data_dir {tmp_path}" in message
