"""Crash-safe outputs: atomic file writes, checkpoints, the backup check, the run lock.

Every file a training run writes is first written under a temporary name in
the same folder and then renamed over the old one (`os.replace`, atomic on
POSIX and Windows): a kill or a full disk at any moment leaves either the
previous complete file or the new complete one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import keras


def _temporary_path(path: str, kind: str = "partial") -> str:
    """A hidden name beside `path`, keeping its extension (Keras checks it)."""
    folder, name = os.path.split(path)
    _, extension = os.path.splitext(name)
    return os.path.join(folder, f".{name}.{os.getpid()}.{kind}{extension}")


def remove_partial_files(folder: str) -> list[str]:
    """Removes the temporary files an interrupted writer left in `folder` (not recursive).

    Only safe while no other process writes there (hold `run_lock`).

    Args:
        folder: the folder.

    Returns:
        The removed paths.
    """
    if not os.path.isdir(folder):
        return []
    removed = []
    for entry in os.scandir(folder):
        if (
            entry.is_file()
            and entry.name.startswith(".")
            and (".partial" in entry.name or ".working" in entry.name)
        ):
            os.remove(entry.path)
            removed.append(entry.path)
    return removed


def write_atomically(path: str, write: Callable[[str], Any]) -> None:
    """Calls `write(temporary_path)`, then renames the result to `path`.

    If `write` raises (a full disk, a bad object, ...), the temporary file is
    removed and `path` keeps its previous content.

    Args:
        path: the final file.
        write: a function that writes the whole file at the path it is given.

    Example:

    >>> write_atomically("model.keras", model.save)
    """
    temporary = _temporary_path(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_atomically(path, write)


def write_json_atomically(path: str, value: Any) -> None:
    """Writes `value` as indented JSON to `path` through a temporary file."""
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")


# Room kept free beyond the estimated size of the next files (TensorBoard events,
# metrics.csv, curves.png, the file system's own overhead).
SPACE_MARGIN_BYTES = 64 * 2**20


class InsufficientSpaceError(OSError):
    """The disk lacks room for the next files of a run (checked before writing)."""


def require_free_space(folder: str, needed_bytes: int, what: str) -> None:
    """Raises before a write that `folder`'s disk has no room for.

    Checking first keeps a full disk from cutting a file short inside a native
    writer (h5py can crash the process then); files already written stay as
    they are.

    Args:
        folder: where the files go.
        needed_bytes: their estimated size.
        what: what would be written, for the message.

    Raises:
        InsufficientSpaceError: less than `needed_bytes + SPACE_MARGIN_BYTES` free.
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes + SPACE_MARGIN_BYTES:
        raise InsufficientSpaceError(
            errno.ENOSPC,
            f"Not enough free space in {folder!r} for {what}: {_mib(free)} free, "
            f"{_mib(needed_bytes + SPACE_MARGIN_BYTES)} needed. Nothing written before was "
            "lost: free some space and run the same command again to continue",
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def copy_atomically(source: str, destination: str) -> None:
    """Copies `source` over `destination` through a temporary file."""
    write_atomically(destination, lambda temporary: shutil.copyfile(source, temporary))


def save_model_atomically(model: keras.Model, path: str) -> None:
    """`model.save(path)` through a temporary file and a rename."""
    write_atomically(path, model.save)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` whose file is replaced atomically.

    Keras saves to a temporary name beside `filepath`; the file is renamed
    into place once complete, so a kill or a full disk while saving leaves
    the previous checkpoint intact. Takes `ModelCheckpoint`'s arguments
    (with `save_freq="epoch"` and a fixed `filepath`, without `{epoch}`).

    Args:
        filepath: the checkpoint file (`.keras`, or `.weights.h5` with
            `save_weights_only=True`).
        **kwargs: `keras.callbacks.ModelCheckpoint` arguments.
    """

    def __init__(self, filepath: str, **kwargs):
        if kwargs.get("save_freq", "epoch") != "epoch":
            raise ValueError("AtomicModelCheckpoint saves once per epoch (save_freq='epoch').")
        filepath = os.fspath(filepath)
        self.final_path = filepath
        self.partial_path = _temporary_path(filepath)
        super().__init__(self.partial_path, **kwargs)

    def _discard_partial(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.partial_path)

    def on_epoch_begin(self, epoch, logs=None):
        # A partial file of an earlier, interrupted save must not be published.
        self._discard_partial()
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        try:
            super().on_epoch_end(epoch, logs)
        except BaseException:
            self._discard_partial()
            raise
        if os.path.exists(self.partial_path):
            os.replace(self.partial_path, self.final_path)


class AtomicCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` (in append mode) that publishes atomically.

    Keras appends rows to a working copy; after every epoch the working copy
    replaces `filename` through a temporary file, so `filename` always holds
    whole rows and one header.

    Args:
        filename: the CSV file (rows are appended to what it holds).
        separator: column separator.
    """

    def __init__(self, filename: str, separator: str = ","):
        self.published_path = os.fspath(filename)
        self.working_path = _temporary_path(self.published_path, "working")
        super().__init__(self.working_path, separator=separator, append=True)

    def on_train_begin(self, logs=None):
        if os.path.exists(self.published_path):
            shutil.copyfile(self.published_path, self.working_path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.working_path)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        copy_atomically(self.working_path, self.published_path)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.working_path)


# File names of `keras.callbacks.BackupAndRestore(double_checkpoint=True)`.
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
PREVIOUS_SUFFIX = ".bkp"


def _backup_problem(weights: str, metadata: str) -> str | None:
    """Why a backup (weights + metadata) cannot be resumed from, or `None`."""
    import h5py
    import numpy as np

    try:
        with open(metadata) as f:
            epoch = json.load(f)["epoch"]
        if not isinstance(epoch, int) or epoch < 0:
            return f"{metadata} holds no epoch number"
    except FileNotFoundError:
        return f"{metadata} is missing"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{metadata} is unreadable ({type(error).__name__}: {error})"

    def read(name, item) -> None:
        if isinstance(item, h5py.Dataset):
            np.asarray(item[()])

    try:
        with h5py.File(weights, "r") as f:
            # Reading every array finds a file cut short after its header.
            f.visititems(read)
    except FileNotFoundError:
        return f"{weights} is missing"
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError...
        return f"{weights} is unreadable ({type(error).__name__}: {error})"
    return None


def check_backup(backup_dir: str) -> int:
    """Checks a `BackupAndRestore(double_checkpoint=True)` folder before resuming.

    When the newest backup is unreadable (a kill or a full disk while it was
    written) and the previous one is whole, the previous one is put back in
    its place, with a warning on stderr: the run resumes one epoch earlier.

    Args:
        backup_dir: the `backup_dir` of the callback.

    Returns:
        The epoch training resumes from (0 without a backup).

    Raises:
        RuntimeError: neither the newest nor the previous backup is readable.
    """
    weights = os.path.join(backup_dir, BACKUP_WEIGHTS)
    metadata = os.path.join(backup_dir, BACKUP_METADATA)
    previous = [path + PREVIOUS_SUFFIX for path in (weights, metadata)]
    if not any(os.path.exists(path) for path in [weights, metadata, *previous]):
        return 0
    problem = _backup_problem(weights, metadata)
    if problem is not None and not any(os.path.exists(path) for path in previous):
        # Killed while the first backup was written: nothing to resume from.
        print(
            f"WARNING keras_sge.training: the only backup is unusable ({problem}); "
            "starting from epoch 1.",
            file=sys.stderr,
        )
        shutil.rmtree(backup_dir)
        return 0
    if problem is not None:
        previous_problem = _backup_problem(*previous)
        if previous_problem is not None:
            raise RuntimeError(
                f"Cannot resume from {backup_dir}: the newest backup is unusable "
                f"({problem}) and so is the previous one ({previous_problem}). "
                "Remove the folder to restart from epoch 1 (or pass --overwrite)."
            )
        copy_atomically(previous[0], weights)
        copy_atomically(previous[1], metadata)
        print(
            f"WARNING keras_sge.training: the newest backup is unusable ({problem}); "
            "resuming from the previous one, one epoch earlier.",
            file=sys.stderr,
        )
    with open(metadata) as f:
        return int(json.load(f)["epoch"])


class RunInProgressError(RuntimeError):
    """Raised when another process holds the run lock of an output directory."""


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


@contextlib.contextmanager
def run_lock(path: str) -> Iterator[dict[str, Any]]:
    """Holds a lock file naming this process for the duration of a run.

    The file holds the process id, host and start time. A lock held by a live
    process (or by a process on another host, whose state cannot be checked)
    is refused at once with `RunInProgressError` naming it; the lock of a dead
    process on this host (a killed run) is taken over with a warning. The
    file is removed on exit. Only the process that writes the outputs (the
    chief, in multi-worker training) should take it.

    Args:
        path: the lock file.

    Yields:
        What the lock file holds (`pid`, `host`, `started`).

    Example:

    >>> with run_lock("runs/train/run.lock"):
    ...     model.fit(...)
    """
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(2):
        if _try_create_lock(path, mine):
            break
        holder = _read_lock(path)
        if holder is None:
            # Empty or unreadable: left by a kill while it was written.
            print(
                f"WARNING keras_sge.training: removing the unreadable lock file {path}.",
                file=sys.stderr,
            )
        elif holder.get("host") == mine["host"] and not _process_is_alive(
            int(holder.get("pid", -1))
        ):
            print(
                f"WARNING keras_sge.training: taking over the lock {path} of process "
                f"{holder.get('pid')}, which no longer runs (started {holder.get('started')}).",
                file=sys.stderr,
            )
        else:
            raise RunInProgressError(
                f"{os.path.dirname(path) or '.'} is in use by another run: process "
                f"{holder.get('pid')} on host {holder.get('host')!r}, started "
                f"{holder.get('started')} (lock file {path}). Wait for it to finish or "
                "choose another output directory (--output-dir). If that process is "
                "gone (e.g. its machine stopped), delete the lock file."
            )
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        raise RunInProgressError(f"Another run took the lock {path} at the same time.")
    try:
        yield mine
    finally:
        if _read_lock(path) == mine:
            os.remove(path)


def _try_create_lock(path: str, content: dict[str, Any]) -> bool:
    """Creates `path` whole with `content` unless it exists (link is atomic)."""
    temporary = _temporary_path(path)
    with open(temporary, "w") as f:
        json.dump(content, f)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(temporary)


def _read_lock(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
