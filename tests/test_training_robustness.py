"""What a training run leaves behind when it is killed, runs out of disk, or meets another run."""

import errno
import json
import os
import shutil
import socket
import subprocess

import keras
import numpy as np
import pytest

from keras_sge.training import (
    InsufficientSpaceError,
    RunInProgressError,
    RunSettingsMismatchError,
    make_schedule,
    read_metrics,
    run_lock,
    train,
)
from keras_sge.training.files import write_json_atomically
from tests.helpers import tiny_config, tiny_model


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, not even `except Exception`."""


def _partial_files(folder):
    return [name for _, _, names in os.walk(folder) for name in names if ".partial" in name]


def test_kill_while_the_backup_is_written_resumes_from_the_previous_one(tmp_path, capfd):
    out = tmp_path / "run"
    config = tiny_config(out, epochs=3, steps_per_epoch=3, lr=0.5, warmup_epochs=0)

    def model_killed_in_second_backup(input_shape, num_classes):
        model = tiny_model(input_shape, num_classes)
        save_weights, calls = model.save_weights, []

        def killed_half_way(filepath, *args, **kwargs):
            calls.append(filepath)
            save_weights(filepath, *args, **kwargs)
            if len(calls) == 2:  # end of epoch 2: the file is half written when the kill comes
                with open(filepath, "r+b") as f:
                    f.truncate(os.path.getsize(filepath) // 2)
                raise Killed()

        model.save_weights = killed_half_way
        return model

    with pytest.raises(Killed):
        train(config, model_fn=model_killed_in_second_backup)
    capfd.readouterr()
    # What a real kill would leave too: a half-written checkpoint of another process.
    (out / "checkpoints" / ".last.keras.999999.partial.keras").write_bytes(b"PK")

    result = train(config, model_fn=tiny_model)
    assert "resuming from the previous one" in capfd.readouterr().err
    rows = read_metrics(str(out / "metrics.csv"))
    assert [row["epoch"] for row in rows] == [0, 1, 2]  # epoch 2 redone, logged once
    # The optimizer state is the one after epoch 1: the schedule goes on from step 3.
    schedule = make_schedule(
        "cosine", peak_learning_rate=0.5 * 16 / 256, steps_per_epoch=3, epochs=3
    )
    np.testing.assert_allclose(
        [row["learning_rate"] for row in rows], [float(schedule(s)) for s in (0, 3, 6)], rtol=1e-5
    )
    assert result.last["epoch"] == 3
    assert (out / "metrics.csv").read_text().count("epoch,") == 1
    assert not _partial_files(out)


def test_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path):
    out = tmp_path / "run"
    config = tiny_config(out, epochs=2, steps_per_epoch=3, validation_steps=1)

    def model_on_a_full_disk(input_shape, num_classes):
        model = tiny_model(input_shape, num_classes)
        save, calls = model.save, []

        def fills_the_disk(filepath, *args, **kwargs):
            calls.append(filepath)
            if "last" in os.path.basename(filepath) and sum("last" in c for c in calls) == 2:
                with open(filepath, "wb") as f:
                    f.write(b"PK\x03\x04 cut short")
                raise OSError(errno.ENOSPC, "No space left on device", filepath)
            return save(filepath, *args, **kwargs)

        model.save = fills_the_disk
        return model

    with pytest.raises(OSError, match="No space left"):
        train(config, model_fn=model_on_a_full_disk)
    last = keras.saving.load_model(str(out / "checkpoints" / "last.keras"))
    assert int(keras.ops.convert_to_numpy(last.optimizer.iterations)) == 3  # epoch 1
    keras.saving.load_model(str(out / "checkpoints" / "best.keras"))
    assert not _partial_files(out)


@pytest.mark.backend_independent
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomically(str(path), {"finished": True})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        write_json_atomically(str(path), {"finished": Unserialisable()})
    assert json.loads(path.read_text()) == {"finished": True}
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_second_run_in_the_same_directory_is_refused_and_the_first_finishes(tmp_path):
    out = tmp_path / "run"
    config = tiny_config(out, validation_steps=1)
    refusals = []

    class SecondRun(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                try:
                    train(config, model_fn=tiny_model)
                except RunInProgressError as error:
                    refusals.append(str(error))

    result = train(config, model_fn=tiny_model, callbacks=[SecondRun()])
    assert len(refusals) == 1
    assert f"process {os.getpid()} on host {socket.gethostname()!r}" in refusals[0]
    assert result.last["epoch"] == 2 and json.loads((out / "results.json").read_text())["finished"]
    assert [row["epoch"] for row in read_metrics(str(out / "metrics.csv"))] == [0, 1]
    assert (out / "metrics.csv").read_text().count("epoch,") == 1
    assert not (out / "run.lock").exists()  # released


@pytest.mark.backend_independent
def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capfd):
    finished = subprocess.Popen(["true"])
    finished.wait()
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": finished.pid, "host": socket.gethostname(), "started": "x"}))
    with run_lock(str(lock)) as mine:
        assert json.loads(lock.read_text()) == mine and mine["pid"] == os.getpid()
        with pytest.raises(RunInProgressError, match=f"process {os.getpid()}"):
            with run_lock(str(lock)):
                pass
    assert f"taking over the lock {lock} of process {finished.pid}" in capfd.readouterr().err
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": 1, "host": "another-host", "started": "x"}))
    with pytest.raises(RunInProgressError, match="host 'another-host'"):
        with run_lock(str(lock)):
            pass


@pytest.mark.backend_independent
def test_train_program_refuses_a_directory_in_use(tmp_path, capsys):
    from tests.helpers import load_program

    out = tmp_path / "run"
    out.mkdir()
    with run_lock(str(out / "run.lock")):
        assert load_program("train").main(["--output-dir", str(out), "--epochs", "1"]) == 2
    assert f"is in use by another run: process {os.getpid()}" in capsys.readouterr().err
    assert os.listdir(out) == []  # nothing touched


def _file_states(folder):
    """`{relative path: (size, mtime_ns)}` of every file under `folder`."""
    states = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            states[os.path.relpath(path, folder)] = (
                os.path.getsize(path),
                os.stat(path).st_mtime_ns,
            )
    return states


def test_a_kill_at_any_write_of_the_finish_never_loses_the_run(tmp_path, monkeypatch, capsys):
    """From the last epoch's backup to `results.json`, the output folder is copied
    after every file operation (what a kill at that instant leaves); a rerun in
    each copy trains no epoch, keeps the metrics and checkpoints, and finishes."""
    out = tmp_path / "run"
    config = tiny_config(out, epochs=2, steps_per_epoch=1, validation_steps=1)
    snapshots = []

    def snapshot():
        copy = tmp_path / f"killed-{len(snapshots)}"
        shutil.copytree(out, copy)
        # The lock of a killed process is taken over (tested above).
        (copy / "run.lock").unlink(missing_ok=True)
        snapshots.append(copy)

    class KillPoints(keras.callbacks.Callback):
        """Armed after the last epoch's backup (it runs after `BackupAndRestore`)."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch == config.epochs - 1:
                snapshot()
                for module, name in ((os, "replace"), (os, "remove"), (shutil, "rmtree")):
                    monkeypatch.setattr(module, name, then_snapshot(getattr(module, name)))

    def then_snapshot(operation):
        def operation_then_snapshot(path, *args, **kwargs):
            operation(path, *args, **kwargs)
            if str(out) in os.path.abspath(args[0] if args else path):
                snapshot()

        return operation_then_snapshot

    train(config, model_fn=tiny_model, callbacks=[KillPoints()])
    monkeypatch.undo()
    finished = _file_states(out)
    # trained.json, backup removal, model.keras, backup removal, curves, results, trained.json
    assert len(snapshots) >= 6, snapshots

    class CountEpochs(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_begin(self, epoch, logs=None):
            CountEpochs.epochs += 1

    for killed in snapshots:
        config = tiny_config(killed, epochs=2, steps_per_epoch=1, validation_steps=1)
        best = (killed / "checkpoints" / "best.keras").read_bytes()
        result = train(config, model_fn=tiny_model, callbacks=[CountEpochs()])
        assert CountEpochs.epochs == 0, killed  # nothing trained again
        assert [row["epoch"] for row in read_metrics(str(killed / "metrics.csv"))] == [0, 1]
        assert (killed / "checkpoints" / "best.keras").read_bytes() == best
        assert json.loads((killed / "results.json").read_text())["epochs"] == 2
        # The same files (a rerun through `fit` adds a TensorBoard event file).
        outputs = {path for path in _file_states(killed) if not path.startswith("tensorboard")}
        assert outputs == {path for path in finished if not path.startswith("tensorboard")}
        assert result.last["epoch"] == 2 and not _partial_files(killed)
        model = keras.saving.load_model(str(killed / "model.keras"))
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2

    # A rerun of a finished run says so and rewrites nothing.
    capsys.readouterr()
    again = train(tiny_config(out, epochs=2, steps_per_epoch=1, validation_steps=1))
    assert "already holds a finished run" in capsys.readouterr().out
    assert _file_states(out) == finished
    assert again.last == json.loads((out / "results.json").read_text())["last"]
    # One with other settings is refused, naming them, and rewrites nothing either.
    refusal = r"holds a finished run with another configuration \(seed: 7 \(saved: 0\)\)"
    with pytest.raises(RunSettingsMismatchError, match=refusal):
        train(tiny_config(out, epochs=2, steps_per_epoch=1, validation_steps=1, seed=7))
    assert _file_states(out) == finished


@pytest.mark.parametrize("full_at", ["second epoch's end", "finish"])
def test_a_full_disk_stops_before_writing_and_the_rerun_continues(tmp_path, monkeypatch, full_at):
    """The disk is checked before each epoch's files and before `model.keras`; when it is
    full, the run stops with a message naming the folder, and nothing written is lost."""
    out = tmp_path / "run"
    config = tiny_config(out, epochs=2, steps_per_epoch=1, validation_steps=1)
    real_disk_usage = shutil.disk_usage
    checks = []
    # Checks in order: training begins, epoch 1 ends, epoch 2 ends, the finish.
    full_from = {"second epoch's end": 3, "finish": 4}[full_at]

    def disk_usage(path):
        checks.append(path)
        usage = real_disk_usage(path)
        return usage._replace(free=0) if len(checks) >= full_from else usage

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    with pytest.raises(InsufficientSpaceError, match="Not enough free space in") as error:
        train(config, model_fn=tiny_model)
    assert str(out) in str(error.value) and "0 MiB free" in str(error.value)
    assert checks and all(path == str(out) for path in checks)
    trained_epochs = 1 if full_at == "second epoch's end" else 2
    assert [row["epoch"] for row in read_metrics(str(out / "metrics.csv"))] == list(
        range(trained_epochs)
    )
    last = (out / "checkpoints" / "last.keras").read_bytes()
    assert not (out / "model.keras").exists() and not (out / "results.json").exists()

    monkeypatch.undo()
    result = train(config, model_fn=tiny_model)
    assert [row["epoch"] for row in result.history] == [0, 1]
    if full_at == "finish":  # nothing trained again: model.keras is the saved last epoch
        assert (out / "model.keras").read_bytes() == last
    assert json.loads((out / "results.json").read_text())["finished"]
