"""Callbacks and plots of the training program."""

from __future__ import annotations

import csv
import math
import os
import time

import keras
import numpy as np

from keras_sge.training.files import (
    require_free_space,
    write_atomically,
    write_json_atomically,
    write_text_atomically,
)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """`keras.callbacks.TerminateOnNaN(raise_error=True)` with a message saying what to do.

    Raising from the batch (rather than stopping at the epoch's end) means the
    epoch never ends: the checkpoints and the `BackupAndRestore` state stay
    those of the last good epoch. Raises `NonFiniteLossError`.
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        try:
            super().on_batch_end(batch, logs)
        except RuntimeError:
            raise NonFiniteLossError(
                f"Training stopped: the loss became {float(np.asarray(logs['loss']))} at epoch "
                f"{self._epoch + 1}, batch {batch + 1}. The checkpoints and the "
                "backup hold the last finished epoch. Lower the learning rate "
                "(--lr), add warmup (--warmup-epochs), or use float32/bfloat16 "
                "instead of float16."
            ) from None


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate`, the rate of each epoch's first step, to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self._rate


class RequireFreeSpace(keras.callbacks.Callback):
    """Stops `fit` before an epoch's files are written if the disk lacks room.

    Put it first in the callback list: at the end of each epoch (and before
    the first) it checks that `folder`'s disk has room for `files_per_epoch`
    copies of the model's and optimizer's variables (the checkpoints and the
    backup, each written beside the previous one) and raises
    `InsufficientSpaceError` otherwise, before any other callback writes.

    Args:
        folder: the run's output folder.
        files_per_epoch: how many model-sized files an epoch's end may write.
    """

    def __init__(self, folder: str, files_per_epoch: int = 3):
        super().__init__()
        self.folder = folder
        self.files_per_epoch = files_per_epoch

    def _check(self) -> None:
        variables = list(self.model.variables)
        if self.model.optimizer is not None:
            variables += list(self.model.optimizer.variables)
        state_bytes = sum(math.prod(v.shape) * _itemsize(v.dtype) for v in variables)
        require_free_space(
            self.folder,
            self.files_per_epoch * state_bytes,
            f"the checkpoints and backup of an epoch ({self.files_per_epoch} files of "
            f"{state_bytes / 2**20:.0f} MiB)",
        )

    def on_train_begin(self, logs=None):
        self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()


def _itemsize(dtype: str) -> int:
    """Bytes per element from a Keras dtype name (`"float32"` -> 4, `"bool"` -> 1)."""
    bits = "".join(c for c in str(dtype) if c.isdigit())
    return max(int(bits or 8) // 8, 1)


class RecordTrained(keras.callbacks.Callback):
    """Writes `trained.json` when `fit` ends after the run's last epoch.

    Comes just before `keras.callbacks.BackupAndRestore`, whose `on_train_end`
    removes the backup: from then on the run is in the "trained" state, and
    `train` completes the finish instead of training again.

    Args:
        path: the state file.
        epochs: the run's number of epochs.
        resume_epoch: the epochs finished before this `fit` (from the backup).
    """

    def __init__(self, path: str, epochs: int, resume_epoch: int):
        super().__init__()
        self.path = path
        self.epochs = epochs
        self.finished_epochs = resume_epoch

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.finished_epochs = epoch + 1

    def on_train_end(self, logs=None):
        # The frozen phase of a fine-tuning run ends before the last epoch.
        if self.finished_epochs >= self.epochs or self.model.stop_training:
            wall_time = round(time.perf_counter() - self._start, 2)
            write_json_atomically(self.path, {"fit_wall_time_s": wall_time})


def read_metrics(csv_path: str) -> list[dict[str, float]]:
    """Reads a `keras.callbacks.CSVLogger` file into a list of rows (one per epoch).

    Args:
        csv_path: path of the CSV file.

    Returns:
        One dict per epoch, values as floats (`epoch` as the 0-based index),
        without the metrics missing in that epoch; an empty list when the file
        is missing or empty.
    """
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{key: float(value) for key, value in row.items() if _is_number(value)} for row in rows]


def _is_number(text: str | None) -> bool:
    """CSVLogger writes "NA" for a metric missing in an epoch."""
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def keep_epochs_before(csv_path: str, epoch: int) -> None:
    """Drops the rows of epochs `>= epoch` (0-based) from a CSVLogger file.

    Used on resumption, so an epoch whose row was written but whose backup was
    not is logged once, when it is trained again.

    Args:
        csv_path: path of the CSV file.
        epoch: first epoch to drop.
    """
    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    kept = [
        row
        for row in rows
        if _is_number(row.split(",")[0]) and int(float(row.split(",")[0])) < epoch
    ]
    if len(kept) != len(rows):
        write_text_atomically(csv_path, "".join([header] + kept))


# Panel titles of the classification metrics; any other metric is titled by its name.
_TITLES = {"loss": "loss", "top1": "top-1 accuracy", "top5": "top-5 accuracy"}


def plot_training_curves(csv_path: str, png_path: str) -> None:
    """Plots each metric of the CSV per epoch, train and validation in one panel.

    Args:
        csv_path: a `keras.callbacks.CSVLogger` file (e.g. `loss`, `top1`,
            `top5` and their `val_` counterparts; `learning_rate` is left out).
        png_path: where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = read_metrics(csv_path)
    if not rows:
        return
    epochs = [row["epoch"] + 1 for row in rows]
    logged = [
        k for k in rows[0] if k not in ("epoch", "learning_rate") and not k.startswith("val_")
    ]
    names = [k for k in _TITLES if k in logged] + [k for k in logged if k not in _TITLES]
    figure, axes = plt.subplots(1, len(names), figsize=(14 * len(names) / 3, 4), squeeze=False)
    for axis, key in zip(axes[0], names):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [row.get(prefix + key, float("nan")) for row in rows]
            axis.plot(epochs, values, marker="o", label=label)
        axis.set_title(_TITLES.get(key, key.replace("_", " ")))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    write_atomically(png_path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    plt.close(figure)


class TrainingCurves(keras.callbacks.Callback):
    """Redraws the training-curve PNG from the metrics CSV after every epoch.

    Must come after the `CSVLogger` in the callback list.

    Args:
        csv_path: the `CSVLogger` file.
        png_path: the PNG to write.
    """

    def __init__(self, csv_path: str, png_path: str):
        super().__init__()
        self.csv_path = csv_path
        self.png_path = png_path

    def on_epoch_end(self, epoch, logs=None):
        plot_training_curves(self.csv_path, self.png_path)
