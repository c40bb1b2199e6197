"""`train(config)`: the recipes with `model.fit`, resumable, on one device or many."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras

from keras_sge.applications.registry import model_spec
from keras_sge.losses import SparseCategoricalCrossentropyWithSmoothing
from keras_sge.optimizers import SGDWithL2
from keras_sge.optimizers.schedules import make_schedule
from keras_sge.training import finetune
from keras_sge.training.callbacks import read_metrics
from keras_sge.training.config import TrainConfig
from keras_sge.training.distribution import Cluster, has_accelerator, initialize_multi_worker
from keras_sge.training.files import AtomicModelCheckpoint, run_lock, write_json_atomically
from keras_sge.training.run import (
    OutputPaths,
    check_saved_settings,
    complete_ended_run,
    ended,
    ended_whole,
    epoch_callbacks,
    finish_run,
    prepare_output_dir,
)

ModelFn = Callable[[tuple, int], keras.Model]


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        config: the resolved configuration.
        output_dir: the output directory.
        best: `{"epoch", "val_top1", "val_top5", "val_loss"}` of the best
            validation top-1 epoch (epochs are 1-based).
        last: the same for the last epoch.
        history: one dict per epoch, as in `metrics.csv`.
        model: the trained model.
        wall_time_s: seconds spent in `model.fit` by this call.
    """

    config: TrainConfig
    output_dir: str
    best: dict[str, float]
    last: dict[str, float]
    history: list[dict[str, float]]
    model: keras.Model
    wall_time_s: float


def build_model(
    name: str,
    *,
    input_shape: tuple,
    num_classes: int,
    groups: int = 64,
    sge_options: dict | None = None,
) -> keras.Model:
    """Builds an untrained classifier of `keras_sge.applications` by name.

    Args:
        name: a key of `keras_sge.applications.MODELS` (e.g. `sge_resnet50`).
        input_shape: image shape in `keras.config.image_data_format()` layout.
        num_classes: size of the softmax head.
        groups: SGE groups (SGE models only).
        sge_options: extra `SpatialGroupEnhance` arguments (SGE models only).

    Returns:
        A `keras.Model` with a softmax head.
    """
    spec = model_spec(name)
    kwargs: dict[str, Any] = {"weights": None, "input_shape": input_shape, "classes": num_classes}
    if spec.attention:
        kwargs.update(groups=groups, sge_options=sge_options)
    return spec.builder(**kwargs)


def accuracy_metrics(num_classes: int) -> list[keras.metrics.Metric]:
    """Top-1 and top-5 accuracy metrics, named `top1` and `top5`.

    With fewer than 5 classes, `top5` is top-`num_classes` (always 1).

    Args:
        num_classes: number of classes of the classifier.

    Returns:
        The two metrics.
    """
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
    ]


def _pad_batches(dataset, batch_size: int):
    """Pads every batch to `batch_size` with zero-weight examples (for sharding)."""
    import tensorflow as tf

    def pad(images, labels):
        count = tf.shape(images)[0]
        missing = batch_size - count
        images = tf.pad(images, [[0, missing]] + [[0, 0]] * (len(images.shape) - 1))
        weights = tf.pad(tf.ones([count], tf.float32), [[0, missing]])
        labels = tf.pad(labels, [[0, missing]] + [[0, 0]] * (len(labels.shape) - 1))
        # Every batch is full now: say so in the static shapes.
        return tuple(
            tf.ensure_shape(t, [batch_size, *t.shape[1:]]) for t in (images, labels, weights)
        )

    return dataset.map(pad)


def _load_datasets(config: TrainConfig, cluster: Cluster, replicas: int):
    """This worker's `(train, validation, info, steps, validation_steps)`.

    With several workers each reads its own shard of both splits; validation
    batches are padded (zero-weight examples, then zero-weight batches) so that
    every worker runs the same number of steps and every image counts once.
    """
    from keras_sge import data

    batch_size = cluster.input_batch_size(config.batch_size, replicas)
    per_step = cluster.input_batches_per_step(replicas)
    common = dict(
        batch_size=batch_size,
        image_size=config.image_size,
        seed=config.seed,
        with_info=True,
        shard=cluster.shard,
    )
    # Only the sources that take them get the folders (the demo has no manual_dir).
    if config.data_dir is not None:
        common["data_dir"] = config.data_dir
    if config.manual_dir is not None:
        common["manual_dir"] = config.manual_dir
    train_ds, info = data.load(
        config.dataset, config.train_split, training=config.train_augmentation, **common
    )
    partial = config.validation_steps is not None
    # A partial validation reads a fixed random sample, not the first files of
    # a split stored class by class.
    val_ds, val_info = data.load(
        config.dataset,
        config.val_split,
        training=False,
        **common,
        **({"sample_seed": config.seed} if partial else {}),
    )
    steps = config.steps_per_epoch
    if steps is None:
        if not info.num_examples:
            raise ValueError(
                f"The size of {config.dataset!r}/{config.train_split} is unknown; "
                "pass steps_per_epoch (--steps-per-epoch)."
            )
        steps = info.num_examples // (batch_size * per_step)
        if steps < 1:
            raise ValueError(
                f"The training split has {info.num_examples} examples, fewer than one "
                f"batch of {config.batch_size}; lower batch_size (--batch-size)."
            )
    val_ds, val_steps = _validation_batches(config, cluster, val_ds, val_info, batch_size, replicas)
    train_ds = train_ds.repeat()
    return (
        cluster.distribute_input(lambda: train_ds),
        cluster.distribute_input(lambda: val_ds),
        info,
        steps,
        val_steps,
    )


def _validation_batches(
    config: TrainConfig, cluster: Cluster, val_ds, val_info, batch_size: int, replicas: int
):
    """The validation split as `fit` reads it, and its steps per pass.

    Padded (zero-weight examples, then zero-weight batches) on several devices
    and workers so that every worker runs every step and every image counts
    once; repeated, since `fit` keeps one validation iterator for all epochs.
    """
    per_step = cluster.input_batches_per_step(replicas)
    partial = config.validation_steps is not None
    if replicas > 1:
        val_ds = _pad_batches(val_ds, batch_size)
    val_steps = config.validation_steps
    if val_steps is None and val_info.num_examples:
        # The longest shard's: every worker runs every step.
        val_steps = max(cluster.gather(math.ceil(val_info.num_examples / (batch_size * per_step))))
    val_ds = cluster.equal_steps(
        val_ds, val_steps, per_step, f"{config.dataset!r}/{config.val_split}"
    )
    if partial:
        # The same `val_steps` batches in every epoch, so epochs compare.
        val_ds = val_ds.take(val_steps * per_step).repeat()
        cluster.announce(
            f"Validation is partial: {val_steps} batches of {config.batch_size} images "
            f"(of {val_info.num_examples or 'unknown'}) of {config.val_split}, a fixed "
            f"random sample (seed {config.seed}), the same every epoch."
        )
    elif val_steps is not None:
        # `fit` keeps one validation iterator for all epochs: repeat the split and
        # give the number of batches per pass, so every epoch validates on it all.
        val_ds = val_ds.repeat()
    return val_ds, val_steps


def _worker_result(config, paths, cluster, fitted, model, wall_time) -> TrainResult:
    """`TrainResult` of a worker other than the chief, from the epochs it ran."""
    history = [
        {"epoch": float(epoch), **{key: float(values[i]) for key, values in fitted.history.items()}}
        for i, epoch in enumerate(fitted.epoch)
    ]
    if not history:
        raise RuntimeError(f"Worker {cluster.index} ran no epoch.")
    return _result(config, paths, history, model, wall_time)


def _result(config, paths, history, model, wall_time) -> TrainResult:
    """`TrainResult` from the run's per-epoch rows (`read_metrics`' form)."""
    return TrainResult(
        config=config,
        output_dir=paths.root,
        best=_best(history),
        last=_summary(history[-1]),
        history=history,
        model=model,
        wall_time_s=wall_time,
    )


def _summary(row: dict[str, float]) -> dict[str, float]:
    return {
        "epoch": int(row["epoch"]) + 1,
        "val_top1": row.get("val_top1"),
        "val_top5": row.get("val_top5"),
        "val_loss": row.get("val_loss"),
    }


def train(
    config: TrainConfig,
    *,
    model_fn: ModelFn | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Trains a classifier with `model.fit` following `config`.

    Writes under `config.output_dir`: `config.json` (the resolved configuration
    and derived values), `metrics.csv` (one row per epoch, 0-based `epoch`),
    `curves.png`, `tensorboard/` (when the `tensorboard` package is installed),
    `checkpoints/best.keras` (best validation top-1) and `checkpoints/last.keras`,
    `backup/` (`BackupAndRestore`: calling `train` again with the same
    configuration after an interruption resumes from the last finished epoch;
    removed when the run ends), and at the end
    `model.keras` and `results.json` (best and last validation top-1/top-5).
    Every file is replaced atomically (a kill or a full disk leaves the
    previous version), and `run.lock` keeps a second run out of the directory
    while this one runs.

    With `config.multi_worker` the cluster runtime starts first; only the
    chief writes those outputs, every other worker keeps its resume state in
    `backup-worker-<i>/` and returns the epochs it ran as `history`.

    Args:
        config: the run's `TrainConfig`.
        model_fn: optional `(input_shape, num_classes) -> keras.Model` used
            instead of `config.model` (the model must end in a softmax).
        callbacks: extra Keras callbacks, run after the built-in ones.

    Returns:
        A `TrainResult`.

    Raises:
        NonFiniteLossError: the training loss became NaN or infinite.
        RunSettingsMismatchError: `output_dir` holds a run with other settings
            and `overwrite` is off (a finished run with the same settings is
            returned as it is).
        RunInProgressError: another process is training in `output_dir`.

    Example:

    >>> result = train(TrainConfig(dataset="demo", epochs=2, output_dir="runs/demo"))
    >>> result.best["val_top1"]
    """
    # First: the cluster runtime must start before any device query.
    cluster = initialize_multi_worker(config.worker_timeout) if config.multi_worker else Cluster()
    config = config.resolved(accelerator=has_accelerator())
    paths = OutputPaths(config.output_dir).for_worker(cluster)
    os.makedirs(paths.root, exist_ok=True)
    # Only the chief writes the shared outputs, so only it holds the lock.
    with run_lock(paths.lock) if cluster.is_chief else contextlib.nullcontext():
        if not config.overwrite and ended(paths):
            return _end_of_ended_run(config, paths, cluster, model_fn)
        return _train_in(config, paths, cluster, model_fn, callbacks)


def _end_of_ended_run(
    config: TrainConfig, paths: OutputPaths, cluster: Cluster, model_fn: ModelFn | None
) -> TrainResult:
    """`train` of a run that trained its last epoch with the same settings: the
    chief finishes it if a kill interrupted its finish; returns its result
    without training again."""
    check_saved_settings(OutputPaths(paths.root), config.differences, finished=True)
    if cluster.is_chief:
        complete_ended_run(paths, lambda: _finish(paths, config, model_fn))
    shared = OutputPaths(paths.root)
    model = keras.saving.load_model(shared.model if ended_whole(shared) else shared.last)
    return _result_from_files(config, shared, model)


def _finish(paths: OutputPaths, config: TrainConfig, model_fn: ModelFn | None) -> None:
    """`finish_run` with the classification results: best and last validation epochs."""
    model_name = "custom" if model_fn is not None else config.model

    def results(trained: dict[str, Any]) -> dict[str, Any]:
        history = read_metrics(paths.metrics)
        with open(paths.config) as f:
            derived = json.load(f)["derived"]
        return {
            "finished": True,
            "model": model_name,
            "best": _best(history),
            "last": _summary(history[-1]),
            "epochs": len(history),
            "fit_wall_time_s": trained["fit_wall_time_s"],
            "derived": derived,
        }

    finish_run(paths, results)


def _best(history: list[dict[str, float]]) -> dict[str, float]:
    return _summary(max(history, key=lambda row: row.get("val_top1", float("-inf"))))


def _result_from_files(config: TrainConfig, paths: OutputPaths, model: keras.Model) -> TrainResult:
    """The `TrainResult` of the run whose outputs `paths` holds."""
    history = read_metrics(paths.metrics)
    record = paths.results if os.path.exists(paths.results) else paths.trained
    with open(record) as f:
        wall_time = json.load(f)["fit_wall_time_s"]
    return _result(config, paths, history, model, wall_time)


def _train_in(
    config: TrainConfig,
    paths: OutputPaths,
    cluster: Cluster,
    model_fn: ModelFn | None,
    callbacks: Sequence[keras.callbacks.Callback],
) -> TrainResult:
    """`train` in an output directory whose run lock this process holds (or its chief).

    The steps: prepare the output folder (agreeing with the other workers on
    the epoch to resume from); in the data-parallel scope, load the data,
    build and compile the model, record the configuration and fit; then finish.
    """
    resume_epoch = cluster.agree(
        lambda: prepare_output_dir(
            paths,
            cluster,
            overwrite=config.overwrite,
            differences=config.differences,
        ),
        "the epoch to resume from",
    )
    keras.utils.set_random_seed(config.seed)
    with (
        _dtype_policy(config.mixed_precision),
        cluster.data_parallel(config.devices) as replicas,
    ):
        if config.batch_size % replicas:
            raise ValueError(
                f"The global batch size {config.batch_size} must be divisible by "
                f"the number of devices ({replicas})."
            )
        train_ds, val_ds, info, steps, val_steps = _load_datasets(config, cluster, replicas)
        model = _build(config, model_fn, info.num_classes)
        tuning = finetune.prepare(model, config)
        _compile(model, config, info.num_classes, steps, tuning)
        if cluster.is_chief:
            derived = _derived(config, replicas, info, steps, val_steps)
            write_json_atomically(paths.config, {**dataclasses.asdict(config), "derived": derived})
        fit = model.fit if tuning is None else functools.partial(tuning.fit, model, resume_epoch)
        start = time.perf_counter()
        fitted = fit(
            train_ds,
            epochs=config.epochs,
            steps_per_epoch=steps,
            validation_data=val_ds,
            validation_steps=val_steps,
            shuffle=False,  # the tf.data pipeline shuffles
            callbacks=_callbacks(config, paths, cluster, resume_epoch, callbacks),
            verbose=config.verbose,
        )
        wall_time = time.perf_counter() - start

    if not cluster.is_chief:
        shutil.rmtree(os.path.dirname(paths.model), ignore_errors=True)  # its scratch folder
        return _worker_result(config, paths, cluster, fitted, model, wall_time)
    if not os.path.exists(paths.trained):
        # Defensive: `fit` returned without `RecordTrained` seeing the end;
        # `BackupAndRestore` removed the backup, so the run ends here.
        write_json_atomically(paths.trained, {"fit_wall_time_s": round(wall_time, 2)})
    _finish(paths, config, model_fn)
    return _result_from_files(config, paths, model)


@contextlib.contextmanager
def _dtype_policy(mixed_precision: str) -> Iterator[None]:
    """Keras' global dtype policy for the run (`"none"`: left as it is), restored after."""
    previous = keras.config.dtype_policy()
    if mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _build(config: TrainConfig, model_fn: ModelFn | None, num_classes: int) -> keras.Model:
    """The run's model, in Keras' image data format."""
    size = config.image_size
    channels_first = keras.config.image_data_format() == "channels_first"
    input_shape = (3, size, size) if channels_first else (size, size, 3)
    if model_fn is not None:
        return model_fn(input_shape, num_classes)
    return build_model(
        config.model,
        input_shape=input_shape,
        num_classes=num_classes,
        groups=config.groups,
        sge_options=config.sge_options,
    )


def _compile(model: keras.Model, config: TrainConfig, num_classes: int, steps: int, tuning) -> None:
    """Compiles with the recipe: coupled-L2 SGD on the schedule, the (smoothed) loss."""
    schedule = make_schedule(
        config.schedule,
        peak_learning_rate=config.peak_learning_rate,
        steps_per_epoch=steps,
        epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
        milestones=config.lr_milestones,
        factor=config.lr_decay_factor,
    )
    optimizer = SGDWithL2(
        learning_rate=schedule,
        momentum=config.momentum,
        l2=config.weight_decay,
        decay_vectors=config.decay_all_parameters,
        lr_multipliers=None if tuning is None else tuning.lr_multipliers,
    )
    if config.label_smoothing:
        loss = SparseCategoricalCrossentropyWithSmoothing(config.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    # mixed_float16 models get a keras.optimizers.LossScaleOptimizer here.
    model.compile(
        optimizer=optimizer,
        loss=loss,
        # Weighted: padded validation examples (weight 0) must not count.
        weighted_metrics=accuracy_metrics(num_classes),
        jit_compile="auto" if config.jit is None else config.jit,
    )


def _derived(config: TrainConfig, replicas: int, info, steps: int, val_steps) -> dict[str, Any]:
    """The values the run derived from its configuration, for `config.json`."""
    return {
        "backend": keras.backend.backend(),
        "replicas": replicas,
        "per_device_batch_size": config.batch_size // replicas,
        "peak_learning_rate": config.peak_learning_rate,
        "steps_per_epoch": steps,
        "validation_steps": val_steps,
        "validation_partial": config.validation_steps is not None,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names) if info.class_names else None,
        "train_examples": info.num_examples,
        "image_data_format": keras.config.image_data_format(),
    }


def _callbacks(
    config: TrainConfig,
    paths: OutputPaths,
    cluster: Cluster,
    resume_epoch: int,
    extra: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """The run's callbacks (`epoch_callbacks`) with the best validation top-1 checkpoint."""
    earlier = [row["val_top1"] for row in read_metrics(paths.metrics) if "val_top1" in row]
    # The chief's best so far, so that every worker saves the same epochs; in
    # billionths, rounded up, so that no tie counts as better.
    best = cluster.from_chief(math.ceil(max(earlier) * 1e9) if earlier else -1)
    best_checkpoint = AtomicModelCheckpoint(
        paths.best,
        monitor="val_top1",
        mode="max",
        save_best_only=True,
        initial_value_threshold=best / 1e9 if best >= 0 else None,
    )
    return epoch_callbacks(
        paths,
        cluster,
        epochs=config.epochs,
        resume_epoch=resume_epoch,
        checkpoints=[best_checkpoint],
        extra=extra,
    )
