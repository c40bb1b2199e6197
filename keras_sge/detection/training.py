"""Training a RetinaNet end to end: data, the recipe, resumable outputs, COCO AP."""

from __future__ import annotations

import dataclasses
import os
import time

import keras

from keras_sge.detection.coco import CocoSet, find_coco_split, read_coco
from keras_sge.detection.demo import DEMO_ANCHOR_SIZE, prepare_detection_demo
from keras_sge.detection.evaluation import evaluate_detector
from keras_sge.detection.pipeline import load_coco_dataset
from keras_sge.detection.retinanet import build_retinanet, compile_retinanet


@dataclasses.dataclass
class DetectorConfig:
    """What `train_detector` trains.

    Attributes:
        output_dir: run folder (`model.keras`, `metrics.csv`, `results.json`,
            `backup/` for resuming, `lock`).
        dataset: `"demo"` or a COCO folder (`annotations/instances_<split>.json`
            beside the `<split>/` image folders).
        train_split, val_split: split names of a COCO folder.
        depth, attention: the backbone (`attention=False`: plain ResNet).
        weights: backbone start (`"imagenet"`, a checkpoint, a `.keras` /
            `.weights.h5` of a classification model) or a whole detector
            `.keras` file to continue from.
        image_size: square input side (images fitted keeping aspect).
        batch_size, epochs, learning_rate (`None`: the recipe's, scaled to
            the batch), warmup_steps (`None`: the recipe's 500).
        optimizer: `"sgd"` (the recipe's) or `"adam"` (the demo's: a few
            hundred SGD steps leave the classifier at its prior).
        anchor_size: anchor octave base (`None`: the recipe's 4; the demo's 3).
        data_dir: cache root of the demo files.
        demo_images: training and held-out images of the demo set.
        devices: data-parallel devices (`None`: every accelerator, or one CPU).
        seed: initialisation and shuffling seed.
    """

    output_dir: str
    dataset: str = "demo"
    train_split: str = "train2017"
    val_split: str = "val2017"
    depth: int = 18
    attention: bool = True
    weights: str | None = None
    image_size: int = 96
    batch_size: int = 16
    epochs: int = 4
    learning_rate: float | None = 1e-3
    optimizer: str = "adam"
    warmup_steps: int | None = 50
    anchor_size: float | None = None
    data_dir: str | None = None
    demo_images: tuple[int, int] = (1200, 200)
    devices: int | None = None
    seed: int = 0


def _datasets(config: DetectorConfig) -> tuple[CocoSet, CocoSet]:
    if config.dataset == "demo":
        num_train, num_validation = config.demo_images
        folder = prepare_detection_demo(
            config.data_dir, num_train=num_train, num_validation=num_validation
        )
        return (read_coco(*find_coco_split(folder, s)) for s in ("train", "val"))
    return (
        read_coco(*find_coco_split(config.dataset, s))
        for s in (config.train_split, config.val_split)
    )


def _detector(config: DetectorConfig, num_classes: int) -> keras.Model:
    if config.weights and config.weights.endswith(".keras"):
        loaded = keras.saving.load_model(config.weights, compile=False)
        if hasattr(loaded, "anchor_generator"):  # a whole detector
            return loaded
    anchor_size = config.anchor_size
    if anchor_size is None and config.dataset == "demo":
        anchor_size = DEMO_ANCHOR_SIZE
    return build_retinanet(
        num_classes,
        config.depth,
        config.attention,
        image_shape=(config.image_size, config.image_size, 3),
        weights=config.weights,
        anchor_size=anchor_size,
        seed=config.seed,
    )


def _optimizer(config: DetectorConfig) -> keras.optimizers.Optimizer | None:
    if config.optimizer == "sgd":
        return None  # the recipe's
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate or 1e-3, global_clipnorm=35.0)
    raise ValueError(f"`optimizer` must be 'sgd' or 'adam'. Received: {config.optimizer!r}")


def train_detector(config: DetectorConfig) -> dict:
    """Trains and evaluates a RetinaNet; resumable by calling it again.

    Args:
        config: the `DetectorConfig`.

    Returns:
        The held-out COCO metrics (also in `<output_dir>/results.json`), with
        `train_seconds`.

    Example:

    >>> metrics = train_detector(DetectorConfig(output_dir="runs/demo_detector"))
    >>> metrics["AP50"]
    """
    from keras_sge.training import data_parallel
    from keras_sge.training.files import (
        AtomicCSVLogger,
        run_lock,
        save_model_atomically,
        write_json_atomically,
    )

    os.makedirs(config.output_dir, exist_ok=True)
    with run_lock(os.path.join(config.output_dir, "lock")):
        train_set, val_set = _datasets(config)
        keras.utils.set_random_seed(config.seed)
        with data_parallel(config.devices) as replicas:
            del replicas
            detector = _detector(config, len(train_set.class_names))
            steps = len(train_set) // config.batch_size
            compile_retinanet(
                detector,
                batch_size=config.batch_size,
                steps_per_epoch=steps,
                learning_rate=config.learning_rate,
                warmup_steps=config.warmup_steps,
                epochs=config.epochs,
                optimizer=_optimizer(config),
            )
            options = {"batch_size": config.batch_size, "image_size": config.image_size}
            train = load_coco_dataset(train_set, training=True, shuffle_seed=config.seed, **options)
            started = time.time()
            detector.fit(
                train,
                epochs=config.epochs,
                verbose=2,
                callbacks=[
                    keras.callbacks.BackupAndRestore(os.path.join(config.output_dir, "backup")),
                    AtomicCSVLogger(os.path.join(config.output_dir, "metrics.csv")),
                ],
            )
            seconds = time.time() - started
            save_model_atomically(detector, os.path.join(config.output_dir, "model.keras"))
            val = load_coco_dataset(val_set, training=False, **options)
            metrics = evaluate_detector(detector, val_set, val, config.image_size)
        metrics = {**metrics, "train_seconds": round(seconds, 1)}
        write_json_atomically(os.path.join(config.output_dir, "results.json"), metrics)
    return metrics
