"""A run's output folder: its files, the callbacks that make epochs resumable, its finish.

Shared by every trainer of the package (classification, detection): a run
writes its per-epoch state atomically, resumes from `backup/` after a kill,
and after the last epoch goes through a finish whose steps are each
idempotent, so a kill at any point and a rerun give the same outputs.

The states of a folder: running (`backup/`), trained (`trained.json`: the
last epoch is trained, the finish may be incomplete) and finished
(`results.json`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_sge.training.callbacks import (
    LearningRateLogger,
    RecordTrained,
    RequireFreeSpace,
    StopOnNonFiniteLoss,
    TrainingCurves,
    keep_epochs_before,
    plot_training_curves,
)
from keras_sge.training.distribution import Cluster
from keras_sge.training.files import (
    AtomicCSVLogger,
    AtomicModelCheckpoint,
    check_backup,
    copy_atomically,
    remove_partial_files,
    require_free_space,
    write_json_atomically,
)


class OutputPaths:
    """Where a run writes, under `root` (`for_worker`: where one worker of a cluster writes)."""

    def __init__(self, root: str):
        self.root = root
        self.config = os.path.join(root, "config.json")
        self.results = os.path.join(root, "results.json")
        self.metrics = os.path.join(root, "metrics.csv")
        self.curves = os.path.join(root, "curves.png")
        self.model = os.path.join(root, "model.keras")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.best = os.path.join(self.checkpoints, "best.keras")
        self.last = os.path.join(self.checkpoints, "last.keras")
        self.backup = os.path.join(root, "backup")
        self.tensorboard = os.path.join(root, "tensorboard")
        self.lock = os.path.join(root, "run.lock")
        # Written when `fit` has trained its last epoch, before `backup/` is
        # removed; removed once `results.json` is written.
        self.trained = os.path.join(root, "trained.json")

    def for_worker(self, cluster: Cluster) -> OutputPaths:
        """Where this worker of `cluster` writes: the chief writes the shared outputs;
        another worker keeps its own backup and saves its (identical) checkpoints
        and model where `cluster.scratch_path` says."""
        paths = copy.copy(self)
        paths.backup = cluster.backup_path(self.backup)
        paths.best, paths.last, paths.model = (
            cluster.scratch_path(path, self.root) for path in (self.best, self.last, self.model)
        )
        return paths


# Settings that may change between an interrupted run and its resumption.
RESUME_INDEPENDENT = ("output_dir", "verbose", "overwrite")


def setting_differences(mine: dict[str, Any], saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings of a run that differ from a saved run's and so forbid a resume.

    Args:
        mine: this run's settings, `{field: value}`.
        saved: the saved run's; a field it lacks counts as `None`.

    Returns:
        `{field: (mine, saved)}` for each field of `mine` outside
        `RESUME_INDEPENDENT` whose values differ.

    Example:

    >>> setting_differences({"seed": 1, "verbose": 2}, {"seed": 0, "verbose": 0})
    {'seed': (1, 0)}
    """
    return {
        key: (value, saved.get(key))
        for key, value in mine.items()
        if key not in RESUME_INDEPENDENT and value != saved.get(key)
    }


class RunSettingsMismatchError(ValueError):
    """The output directory holds a run with other settings than this one's."""


def check_saved_settings(
    paths: OutputPaths,
    differences: Callable[[dict[str, Any]], dict[str, tuple[Any, Any]]],
    *,
    finished: bool,
    start_afresh: str = "overwrite=True (--overwrite)",
) -> None:
    """Refuses to resume or reuse a run in `paths.root` saved with other settings.

    Args:
        paths: the run's `OutputPaths`; nothing is checked without its `config.json`.
        differences: as for `prepare_output_dir`.
        finished: whether the saved run trained its last epoch (for the message).
        start_afresh: the argument (and flag) that trains it again, for the message.

    Raises:
        RunSettingsMismatchError: naming each differing setting, this run's
            value and the saved one.
    """
    if not os.path.exists(paths.config):
        return
    with open(paths.config) as f:
        saved = json.load(f)
    saved.pop("derived", None)
    changed = differences(saved)
    if not changed:
        return
    listed = ", ".join(f"{k}: {new!r} (saved: {old!r})" for k, (new, old) in changed.items())
    if finished:
        advice = f"Pass {start_afresh} to train it again with these settings"
    else:
        advice = f"Rerun with the same settings to resume, or pass {start_afresh} to start afresh"
    raise RunSettingsMismatchError(
        f"{paths.root} holds {'a finished' if finished else 'an unfinished'} run with another "
        f"configuration ({listed}). {advice}, or choose another output directory (--output-dir)."
    )


def prepare_output_dir(
    paths: OutputPaths,
    cluster: Cluster,
    *,
    overwrite: bool,
    differences: Callable[[dict[str, Any]], dict[str, tuple[Any, Any]]],
) -> int:
    """Checks the output directory against the run; returns the epoch to resume from.

    The chief's; another worker only reads, and owns nothing but its backup.

    Args:
        paths: the run's `OutputPaths`.
        cluster: the run's `Cluster`.
        overwrite: remove an earlier run's outputs first.
        differences: from the saved `config.json` (without its `derived`
            entry) to `{field: (this run's value, saved value)}` of the
            settings that must agree for a resume.

    Raises:
        RunSettingsMismatchError: the folder holds an unfinished run with other settings.
    """
    if not cluster.is_chief:
        if overwrite:
            shutil.rmtree(paths.backup, ignore_errors=True)
        return check_backup(paths.backup)
    if overwrite:
        for name in ("config", "results", "metrics", "curves", "model", "trained"):
            if os.path.exists(getattr(paths, name)):
                os.remove(getattr(paths, name))
        for name in ("checkpoints", "backup", "tensorboard"):
            shutil.rmtree(getattr(paths, name), ignore_errors=True)
    os.makedirs(paths.checkpoints, exist_ok=True)
    # Left by a killed run; this process holds the lock, so nobody writes them.
    for folder in (paths.root, paths.checkpoints):
        remove_partial_files(folder)
    resume_epoch = check_backup(paths.backup)
    if resume_epoch:
        check_saved_settings(paths, differences, finished=False)
    keep_epochs_before(paths.metrics, resume_epoch)
    return resume_epoch


# Callbacks of the chief alone. Every worker saves the model (in Keras saving
# is a cross-worker operation); the others save into a scratch folder.
_CHIEF_CALLBACKS = (
    RecordTrained,
    keras.callbacks.CSVLogger,
    keras.callbacks.TensorBoard,
    TrainingCurves,
)


def epoch_callbacks(
    paths: OutputPaths,
    cluster: Cluster,
    *,
    epochs: int,
    resume_epoch: int,
    checkpoints: Sequence[keras.callbacks.Callback] = (),
    extra: Sequence[keras.callbacks.Callback] = (),
) -> list[keras.callbacks.Callback]:
    """The run's callbacks, in the order their writes must happen.

    Args:
        paths: the run's `OutputPaths` (this worker's).
        cluster: the run's `Cluster`; only the chief's callbacks write the
            shared files.
        epochs: the run's number of epochs.
        resume_epoch: epochs finished before this `fit`.
        checkpoints: further checkpoints saved before `checkpoints/last.keras`
            (e.g. the best epoch's).
        extra: the caller's callbacks, run after the built-in ones.

    Returns:
        The callbacks for `fit`.
    """
    callbacks = [
        # First: it checks the disk before this epoch's files are written.
        RequireFreeSpace(paths.root),
        *cluster.callbacks(),
        LearningRateLogger(),
        StopOnNonFiniteLoss(),
        AtomicCSVLogger(paths.metrics),
        *checkpoints,
        AtomicModelCheckpoint(paths.last),
        keras.callbacks.TensorBoard(paths.tensorboard, profile_batch=0),
        TrainingCurves(paths.metrics, paths.curves),
        RecordTrained(paths.trained, epochs, resume_epoch),
        # Last, so that its "epoch finished" record is written after every other
        # output of the epoch. Two states: a kill while the newest is written
        # leaves the previous.
        keras.callbacks.BackupAndRestore(paths.backup, double_checkpoint=True),
        *extra,
    ]
    if not cluster.is_chief:
        callbacks = [c for c in callbacks if not isinstance(c, _CHIEF_CALLBACKS)]
    return callbacks


def ended(paths: OutputPaths) -> bool:
    """Whether the run in `paths.root` trained its last epoch (finished or not)."""
    return os.path.exists(paths.results) or os.path.exists(paths.trained)


def ended_whole(paths: OutputPaths) -> bool:
    """Whether the run in `paths.root` is finished, with its `model.keras`."""
    return os.path.exists(paths.results) and os.path.exists(paths.model)


def finish_run(paths: OutputPaths, results: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The steps after the last epoch, each idempotent: a kill at any point
    and a rerun (which calls this again) give the same outputs.

    `model.keras` is the model after the last epoch, which the per-epoch
    checkpoint `checkpoints/last.keras` holds whole (with its optimizer).

    Args:
        paths: the run's `OutputPaths`.
        results: from the `trained.json` record (`fit_wall_time_s`) to what
            `results.json` holds; called after `model.keras` is written.
    """
    with open(paths.trained) as f:
        trained = json.load(f)
    require_free_space(paths.root, os.path.getsize(paths.last), "model.keras")
    copy_atomically(paths.last, paths.model)
    shutil.rmtree(paths.backup, ignore_errors=True)
    plot_training_curves(paths.metrics, paths.curves)
    write_json_atomically(paths.results, results(trained))
    os.remove(paths.trained)


def complete_ended_run(paths: OutputPaths, finish: Callable[[], None]) -> None:
    """Runs what a kill left undone of an ended run's `finish`, or says it is whole.

    Args:
        paths: the run's `OutputPaths`.
        finish: the run's finish (`finish_run` with its results).
    """
    if not os.path.exists(paths.results):
        print(f"{paths.root}: the run trained its last epoch; completing its outputs.")
        for folder in (paths.root, paths.checkpoints):
            remove_partial_files(folder)
        finish()
        return
    # Left by a kill between `results.json` and the state file's removal.
    with contextlib.suppress(FileNotFoundError):
        os.remove(paths.trained)
    print(
        f"{paths.root} already holds a finished run ({paths.results}); nothing to do. "
        "Pass overwrite=True (--overwrite) to train it again, or choose another "
        "output directory (--output-dir)."
    )
