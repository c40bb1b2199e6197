"""COCO box AP with pycocotools' `COCOeval`, over a detector's predictions."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

from keras_sge._lazy import require

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The authors' COCO val box AP of their RetinaNet table is not in their
# repository; their two-stage detectors' (AP / AP50 / AP75):
AUTHORS_RESULTS = {
    "Faster R-CNN R50": {"ResNet": (37.5, 59.1, 40.6), "SGE-ResNet": (38.7, 60.8, 41.7)},
    "Mask R-CNN R50": {"ResNet": (38.6, 60.0, 41.9), "SGE-ResNet": (39.6, 61.5, 42.9)},
    "Cascade R-CNN R50": {"ResNet": (41.1, 59.3, 44.8), "SGE-ResNet": (42.6, 61.4, 46.2)},
    "Faster R-CNN R101": {"ResNet": (39.4, 60.7, 43.0), "SGE-ResNet": (41.0, 63.0, 44.3)},
    "Mask R-CNN R101": {"ResNet": (40.4, 61.6, 44.2), "SGE-ResNet": (42.1, 63.7, 46.1)},
    "Cascade R-CNN R101": {"ResNet": (42.6, 60.9, 46.4), "SGE-ResNet": (44.4, 63.2, 48.4)},
}


def coco_detections(image_ids, boxes, scores, labels, category_ids, scales=None) -> list[dict]:
    """COCO result records from per-image `xyxy` boxes, scores and class indices.

    Args:
        image_ids: the images' COCO ids.
        boxes: per image `(n, 4)` `xyxy` boxes in model-input pixels (rows
            with a negative label or score are padding and skipped).
        scores: per image `(n,)` confidences.
        labels: per image `(n,)` class indices (positions in `category_ids`).
        category_ids: the json's category ids, index = class.
        scales: optional per image factor from input pixels back to the
            original image's pixels (1 / the resize factor).

    Returns:
        `[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`.
    """
    records = []
    for index, image_id in enumerate(image_ids):
        scale = 1.0 if scales is None else float(scales[index])
        for box, score, label in zip(boxes[index], scores[index], labels[index]):
            if label < 0 or score < 0:
                continue
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            records.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[int(label)]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return records


def coco_ap(annotation_file: str | os.PathLike, detections: list[dict], image_ids=None) -> dict:
    """pycocotools' box AP of `detections` against a COCO json.

    Args:
        annotation_file: the ground truth `instances_*.json`.
        detections: COCO result records (see `coco_detections`).
        image_ids: optional subset of images to score (default: all).

    Returns:
        `{"AP", "AP50", "AP75", "APs", "APm", "APl"}` in [0, 1] (-1 where
        the json has no object of that size, pycocotools' convention); 0
        for every metric when there are no detections.
    """
    require("pycocotools", "detection", "keras_sge.detection.evaluation")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(os.fspath(annotation_file))
        if not detections:
            return dict.fromkeys(METRIC_NAMES, 0.0)
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6])}


def evaluate_detector(detector, coco, dataset, image_size: int, output_dir: str | None = None):
    """COCO AP of a keras-hub detector on a `CocoSet` read in order by `dataset`.

    Args:
        detector: a keras-hub `ObjectDetector` predicting `xyxy` boxes.
        coco: the `CocoSet` (its json is the ground truth).
        dataset: its unshuffled batches (`load_coco_dataset(training=False)`).
        image_size: the square input side the images were fitted into.
        output_dir: where to write `results.json` (metrics) and
            `detections.json` (COCO records), when given.

    Returns:
        The metrics dict of `coco_ap`.
    """
    predictions = detector.predict(dataset, verbose=0)
    count = len(coco)
    scales = [max(_original_size(coco, i)) / image_size for i in range(count)]
    detections = coco_detections(
        coco.image_ids,
        np.asarray(predictions["boxes"])[:count],
        np.asarray(predictions["confidence"])[:count],
        np.asarray(predictions["labels"])[:count],
        coco.category_ids,
        scales,
    )
    metrics = coco_ap(coco.annotation_file, detections, coco.image_ids)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        _write_json(os.path.join(output_dir, "results.json"), metrics)
        _write_json(os.path.join(output_dir, "detections.json"), detections)
    return metrics


def _original_size(coco, index: int) -> tuple[int, int]:
    from PIL import Image

    with Image.open(coco.image_paths[index]) as image:
        return image.size


def _write_json(path: str, content) -> None:
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(content, f, indent=1)
    os.replace(partial, path)


def format_metrics(metrics: dict) -> str:
    """One line of the six metrics, in percent as COCO tables print them."""

    def shown(value: float) -> str:
        return "n/a" if value < 0 else f"{100 * value:.1f}"  # -1: no object of that size

    return "  ".join(f"{name} {shown(metrics[name])}" for name in METRIC_NAMES)
