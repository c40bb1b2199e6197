"""Training a RetinaNet end to end: data, the recipe, resumable outputs, COCO AP."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras

from keras_sge.detection.demo import DEMO_ANCHOR_SIZE, DEMO_HEAD_CONVS, DEMO_IMAGES
from keras_sge.detection.evaluation import evaluate_detector
from keras_sge.detection.pipeline import DetectionSet, ImageSize, input_shape, load_coco_dataset
from keras_sge.detection.retinanet import (
    build_retinanet,
    compile_retinanet,
    needs_eager_execution,
)
from keras_sge.detection.sources import load_detection_split
from keras_sge.training.distribution import Cluster
from keras_sge.training.files import run_lock, write_json_atomically
from keras_sge.training.run import (
    OutputPaths,
    check_saved_settings,
    complete_ended_run,
    ended,
    epoch_callbacks,
    finish_run,
    prepare_output_dir,
    setting_differences,
)


@dataclasses.dataclass
class DetectorConfig:
    """What `train_detector` trains.

    Attributes:
        output_dir: run folder (the training room's layout: `config.json`,
            `metrics.csv`, `curves.png`, `checkpoints/last.keras`, `backup/`
            for resuming, `run.lock`; at the end `model.keras` and
            `results.json`).
        dataset: `"demo"`, `"coco/2017"` (tfds, prepared in `data_dir`) or
            a COCO folder (`annotations/instances_<split>.json` beside the
            `<split>/` image folders).
        train_split, val_split: split names (`None`: `train2017` / `val2017`
            of a COCO folder, tfds' `train` / `validation`).
        depth, attention: the backbone (`attention=False`: plain ResNet).
        weights: backbone start (`"imagenet"`, a checkpoint, a `.keras` /
            `.weights.h5` of a classification model) or a whole detector
            `.keras` file to continue from.
        image_size: square input side (images fitted keeping aspect), or a
            `(long, short)` scale such as the recipe's `(1333, 800)` (see
            `detection_dataset`: a canvas per orientation, multiples of 32).
        batch_size, epochs, learning_rate (`None`: the recipe's, scaled to
            the batch), warmup_steps (`None`: the recipe's 500).
        optimizer: `"sgd"` (the recipe's) or `"adam"` (the demo's: a few
            hundred SGD steps leave the classifier at its prior); Adam warms up
            linearly from a tenth of `learning_rate`, then decays by a cosine.
        anchor_size: anchor octave base (`None`: the recipe's 4; the demo's 2).
        head_convs: convolutions per head (`None`: the recipe's 4; the demo's 2).
        pretrain_epochs: on the demo with no `weights`, epochs of the
            classification demo (`keras_sge.training.train`, same backbone)
            run first into `<output_dir>/backbone/`, whose weights start the
            detector's backbone; 0 starts from random weights.
        data_dir: cache root of the demo files; tfds' data directory.
        demo_images: training and held-out images of the demo set.
        devices: data-parallel devices (`None`: every accelerator, or one CPU).
        seed: initialisation and shuffling seed.
        verbose: `model.fit`'s verbosity.
        overwrite: remove an earlier run's outputs in `output_dir` first.
    """

    output_dir: str
    dataset: str = "demo"
    train_split: str | None = None
    val_split: str | None = None
    depth: int = 18
    attention: bool = True
    weights: str | None = None
    image_size: ImageSize = 64
    batch_size: int = 16
    epochs: int = 2
    learning_rate: float | None = 3e-4
    optimizer: str = "adam"
    warmup_steps: int | None = 10
    anchor_size: float | None = None
    head_convs: int | None = None
    pretrain_epochs: int = 2
    data_dir: str | None = None
    demo_images: tuple[int, int] = DEMO_IMAGES
    devices: int | None = None
    seed: int = 0
    verbose: int = 2
    overwrite: bool = False

    def differences(self, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Settings (other than output_dir/verbose/overwrite) that differ from a
        saved `config.json`'s, as `{field: (mine, saved)}`."""
        mine = json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as saved: lists
        return setting_differences(mine, saved)


def _split(config: DetectorConfig, training: bool) -> DetectionSet:
    """The training or held-out split of the run's dataset."""
    return load_detection_split(
        config.dataset,
        config.train_split if training else config.val_split,
        training=training,
        data_dir=config.data_dir,
        demo_images=config.demo_images,
    )


def _demo_backbone(config: DetectorConfig) -> str:
    """Trains (or finds finished) the classification demo model of the
    detector's backbone and returns its `model.keras`."""
    from keras_sge.training import RunSettingsMismatchError, TrainConfig, train

    prefix = "sge_" if config.attention else ""
    folder = os.path.join(config.output_dir, "backbone")
    pretraining = TrainConfig(
        dataset="demo",
        data_dir=config.data_dir,
        model=f"{prefix}resnet{config.depth}",
        epochs=config.pretrain_epochs,
        output_dir=folder,
        seed=config.seed,
        verbose=2,
    )
    try:
        train(pretraining)
    except RunSettingsMismatchError:
        # Pretrained for other detector settings (before an --overwrite): this
        # folder belongs to the detector run, so it is pretrained again.
        train(dataclasses.replace(pretraining, overwrite=True))
    return os.path.join(folder, "model.keras")


def _backbone_start(config: DetectorConfig) -> str | None:
    if config.weights is None and config.dataset == "demo" and config.pretrain_epochs > 0:
        return _demo_backbone(config)
    return config.weights


def _detector(config: DetectorConfig, num_classes: int, weights: str | None) -> keras.Model:
    if weights and weights.endswith(".keras"):
        loaded = keras.saving.load_model(weights, compile=False)
        if hasattr(loaded, "anchor_generator"):  # a whole detector
            return loaded
    demo = config.dataset == "demo"
    anchor_size = config.anchor_size
    if anchor_size is None and demo:
        anchor_size = DEMO_ANCHOR_SIZE
    head_convs = config.head_convs or (DEMO_HEAD_CONVS if demo else 4)
    return build_retinanet(
        num_classes,
        config.depth,
        config.attention,
        image_shape=input_shape(config.image_size),
        weights=weights,
        anchor_size=anchor_size,
        head_convs=head_convs,
        seed=config.seed,
    )


def _optimizer(config: DetectorConfig, total_steps: int) -> keras.optimizers.Optimizer | None:
    if config.optimizer == "sgd":
        return None  # the recipe's
    if config.optimizer == "adam":
        rate = config.learning_rate or 3e-4
        warmup = min(config.warmup_steps or 0, total_steps - 1)
        schedule = keras.optimizers.schedules.CosineDecay(
            rate / 10 if warmup else rate,
            decay_steps=total_steps - warmup,
            warmup_target=rate if warmup else None,
            warmup_steps=warmup,
        )
        return keras.optimizers.Adam(schedule, global_clipnorm=35.0)
    raise ValueError(f"`optimizer` must be 'sgd' or 'adam'. Received: {config.optimizer!r}")


def _fit(
    config: DetectorConfig, paths: OutputPaths, cluster: Cluster, train_set: DetectionSet
) -> keras.Model:
    """Builds (or restores) the detector and fits it, resuming from `backup/`."""
    resume_epoch = prepare_output_dir(
        paths, cluster, overwrite=config.overwrite, differences=config.differences
    )
    weights = _backbone_start(config)
    keras.utils.set_random_seed(config.seed)
    with cluster.data_parallel(config.devices) as replicas:
        del replicas
        detector = _detector(config, len(train_set.class_names), weights)
        steps = len(train_set) // config.batch_size
        compile_retinanet(
            detector,
            batch_size=config.batch_size,
            steps_per_epoch=steps,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_steps,
            epochs=config.epochs,
            optimizer=_optimizer(config, steps * config.epochs),
            run_eagerly=needs_eager_execution(config.image_size),
        )
        derived = {"class_names": list(train_set.class_names), "steps_per_epoch": steps}
        write_json_atomically(paths.config, {**dataclasses.asdict(config), "derived": derived})
        train = load_coco_dataset(
            train_set,
            training=True,
            shuffle_seed=config.seed,
            batch_size=config.batch_size,
            image_size=config.image_size,
        )
        detector.fit(
            train,
            epochs=config.epochs,
            verbose=config.verbose,
            callbacks=epoch_callbacks(
                paths, cluster, epochs=config.epochs, resume_epoch=resume_epoch
            ),
        )
    return detector


def _finish(config: DetectorConfig, paths: OutputPaths, detector: keras.Model | None) -> None:
    """`finish_run` with the held-out COCO AP of the last epoch's detector."""

    def results(trained: dict[str, Any]) -> dict[str, Any]:
        model = detector or keras.saving.load_model(paths.model, compile=False)
        val_set = _split(config, training=False)
        val = load_coco_dataset(
            val_set,
            training=False,
            with_info=True,
            batch_size=config.batch_size,
            image_size=config.image_size,
        )
        metrics = evaluate_detector(model, val_set, val)
        return {"finished": True, **metrics, "fit_wall_time_s": trained["fit_wall_time_s"]}

    finish_run(paths, results)


def train_detector(config: DetectorConfig) -> dict:
    """Trains and evaluates a RetinaNet; resumable by calling it again.

    The run folder, its resume and its finish are the training room's
    (`keras_sge.training.run`): a call after a kill resumes from the last
    finished epoch (`backup/`; `metrics.csv` keeps its rows), completes a
    finish a kill interrupted, and on a finished run (`results.json`) says
    so and returns the stored metrics without training or writing anything.

    Args:
        config: the `DetectorConfig`.

    Returns:
        The held-out COCO metrics (also in `<output_dir>/results.json`), with
        `fit_wall_time_s`.

    Raises:
        RunInProgressError: another process is training in `output_dir`.
        NonFiniteLossError: the training loss became NaN or infinite.
        InsufficientSpaceError: the disk cannot hold the next epoch's files.

    Example:

    >>> metrics = train_detector(DetectorConfig(output_dir="runs/demo_detector"))
    >>> metrics["AP50"]
    """
    cluster = Cluster()
    paths = OutputPaths(config.output_dir)
    os.makedirs(paths.root, exist_ok=True)
    with run_lock(paths.lock):
        if config.overwrite or not ended(paths):
            _finish(config, paths, _fit(config, paths, cluster, _split(config, training=True)))
        else:
            check_saved_settings(paths, config.differences, finished=True)
            complete_ended_run(paths, lambda: _finish(config, paths, None))
    with open(paths.results) as f:
        return json.load(f)
