"""COCO-layout reading and its errors, the demo set, the tf.data pipeline, COCO AP."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_sge.detection.coco import find_coco_split, read_coco
from keras_sge.detection.demo import IMAGE_SIZE, prepare_detection_demo
from keras_sge.detection.evaluation import coco_ap, coco_detections
from keras_sge.detection.pipeline import load_coco_dataset


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
