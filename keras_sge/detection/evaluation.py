"""COCO box AP with pycocotools' `COCOeval`, over a detector's predictions."""

from __future__ import annotations

import contextlib
import io
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


def _ground_truth_index(ground_truth):
    from pycocotools.coco import COCO

    if isinstance(ground_truth, dict):
        truth = COCO()
        truth.dataset = ground_truth
        truth.createIndex()
        return truth
    return COCO(os.fspath(ground_truth))


def coco_ap(ground_truth: str | os.PathLike | dict, detections: list[dict], image_ids=None) -> dict:
    """pycocotools' box AP of `detections` against COCO ground truth.

    Args:
        ground_truth: an `instances_*.json` file, or the same structure as a
            dict (`{"images", "annotations", "categories"}`, e.g.
            `TfdsCocoSet.ground_truth()`).
        detections: COCO result records (see `coco_detections`).
        image_ids: optional subset of images to score (default: all).

    Returns:
        `{"AP", "AP50", "AP75", "APs", "APm", "APl"}` in [0, 1] (-1 where
        the ground truth has no object of that size, pycocotools'
        convention); 0 for every metric when there are no detections.
    """
    require("pycocotools", "detection", "keras_sge.detection.evaluation")
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = _ground_truth_index(ground_truth)
        if not detections:
            return dict.fromkeys(METRIC_NAMES, 0.0)
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6])}


def predicted_batches(detector, dataset):
    """A detector's predictions, batch by batch, with each batch's image info.

    Args:
        detector: a keras-hub `ObjectDetector`.
        dataset: batches `(images, targets, info)`, e.g.
            `load_coco_dataset(..., training=False, with_info=True)`.

    Yields:
        `(predictions, info)`: the decoded `{"boxes", "confidence", "labels",
        ...}` (NumPy) in input pixels, and the batch's `{"image_id",
        "scale"}` (NumPy).
    """
    import keras
    import tensorflow as tf

    # A TensorFlow graph of keras-hub's RetinaNet needs a static height and
    # width (see `needs_eager_execution`); one traced for several input sizes
    # generalises them away. A detector for any size predicts eagerly there.
    eager = not detector.run_eagerly and keras.backend.backend() == "tensorflow"
    eager = eager and None in tuple(detector.inputs[0].shape[1:3])
    if eager:
        detector.run_eagerly = True
        detector.make_predict_function(force=True)
    try:
        for images, targets, info in dataset:
            # keras-hub's RetinaNet decodes only `(images, targets)` batches
            # (its predict_step unpacks two), so not `predict_on_batch(images)`.
            batch = tf.data.Dataset.from_tensors((images, targets))
            found = detector.predict(batch, verbose=0)
            yield _numpy(found), _numpy(info)
    finally:
        if eager:
            detector.run_eagerly = False
            detector.make_predict_function(force=True)


def _numpy(tensors: dict) -> dict:
    return {key: np.asarray(value) for key, value in tensors.items()}


def predict_detections(detector, dataset, category_ids) -> tuple[list[dict], list[int]]:
    """A detector's COCO records over batches that carry their images' ids and scales.

    Args:
        detector: a keras-hub `ObjectDetector` predicting `xyxy` boxes.
        dataset: batches `(images, targets, {"image_id", "scale"})`, e.g.
            `load_coco_dataset(..., training=False, with_info=True)`, in any
            order (orientation-grouped batches reorder the images).
        category_ids: COCO category id by class index.

    Returns:
        `(records, image_ids)`: boxes in each original image's pixels (each
        divided by its image's scale), and the ids of the images predicted.
    """
    records, image_ids = [], []
    for found, info in predicted_batches(detector, dataset):
        records += coco_detections(
            info["image_id"],
            found["boxes"],
            found["confidence"],
            found["labels"],
            category_ids,
            1.0 / info["scale"],
        )
        image_ids += [int(i) for i in info["image_id"]]
    return records, image_ids


def evaluate_detector(detector, coco, dataset, output_dir: str | None = None) -> dict:
    """COCO AP of a keras-hub detector on a `CocoSet` or `TfdsCocoSet`.

    Args:
        detector: a keras-hub `ObjectDetector` predicting `xyxy` boxes.
        coco: the set; its ground truth is the json (`CocoSet`) or built from
            its examples (`TfdsCocoSet.ground_truth()`).
        dataset: its batches with ids and scales, in any order:
            `load_coco_dataset(coco, ..., training=False, with_info=True)`.
        output_dir: where to write `results.json` (metrics) and
            `detections.json` (COCO records), when given.

    Returns:
        The metrics dict of `coco_ap`.

    Raises:
        ValueError: the dataset does not hold each image of `coco` once.

    Example:

    >>> val = load_coco_dataset(coco, batch_size=8, image_size=(1333, 800),
    ...                         training=False, with_info=True)
    >>> evaluate_detector(detector, coco, val)["AP"]
    """
    detections, image_ids = predict_detections(detector, dataset, coco.category_ids)
    if len(image_ids) != len(coco) or len(set(image_ids)) != len(image_ids):
        raise ValueError(
            f"The dataset holds {len(image_ids)} images ({len(set(image_ids))} distinct ids) "
            f"where the set has {len(coco)}: evaluate unshuffled batches of every image "
            "(`training=False, with_info=True`)."
        )
    metrics = coco_ap(coco.ground_truth(), detections, image_ids)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        from keras_sge.training.files import write_json_atomically

        write_json_atomically(os.path.join(output_dir, "results.json"), metrics)
        write_json_atomically(os.path.join(output_dir, "detections.json"), detections)
    return metrics


def format_metrics(metrics: dict) -> str:
    """One line of the six metrics, in percent as COCO tables print them."""

    def shown(value: float) -> str:
        return "n/a" if value < 0 else f"{100 * value:.1f}"  # -1: no object of that size

    return "  ".join(f"{name} {shown(metrics[name])}" for name in METRIC_NAMES)
