"""keras_sge.training.train / evaluate on the demo data with a tiny model.

Multi-process checks (resume after SIGKILL, data parallel) run in subprocesses:
the data-parallel ones only for jax and tensorflow (torch trains on one device).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from keras_sge import data
from keras_sge.training import (
    NonFiniteLossError,
    evaluate,
    make_schedule,
    read_metrics,
    train,
)
from tests.helpers import (
    BACKEND,
    SIZE,
    load_in_fresh_process,
    subprocess_env,
    tiny_config,
    tiny_model,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_on_demo_writes_every_output(tmp_path):
    # validation_steps=None: the whole validation split, in every epoch.
    config = tiny_config(
        tmp_path / "run",
        recipe="fast",
        lr=0.8,
        warmup_epochs=0.5,
        validation_steps=None,
        batch_size=40,
    )
    result = train(config, model_fn=tiny_model)

    out = tmp_path / "run"
    for name in (
        "config.json",
        "metrics.csv",
        "curves.png",
        "model.keras",
        "results.json",
        "checkpoints/best.keras",
        "checkpoints/last.keras",
    ):
        assert (out / name).is_file(), name
    for split in ("train", "validation"):
        assert list((out / "tensorboard" / split).glob("events.out.tfevents.*")), split
    assert not (out / "backup").exists()  # removed once the run finished
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "fast" and saved["label_smoothing"] == 0.1 and saved["epochs"] == 2
    assert saved["derived"]["peak_learning_rate"] == pytest.approx(0.8 * 40 / 256)
    assert saved["derived"]["validation_steps"] == 10  # 400 images / 40
    assert saved["derived"]["num_classes"] == 4 and saved["derived"]["backend"] == BACKEND

    rows = read_metrics(str(out / "metrics.csv"))
    assert [row["epoch"] for row in rows] == [0, 1]
    for key in ("loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "learning_rate"):
        assert all(np.isfinite(row[key]) for row in rows), key
    # Rate of each epoch's first step, from the cosine schedule over iterations.
    schedule = make_schedule(
        "cosine", peak_learning_rate=0.125, steps_per_epoch=3, epochs=2, warmup_epochs=0.5
    )
    np.testing.assert_allclose(
        [row["learning_rate"] for row in rows], [float(schedule(0)), float(schedule(3))], rtol=1e-5
    )

    results = json.loads((out / "results.json").read_text())
    best_row = max(rows, key=lambda row: row["val_top1"])
    assert results["finished"] and results["last"]["epoch"] == 2
    assert results["best"]["val_top1"] == pytest.approx(best_row["val_top1"])
    assert results["last"]["val_top5"] == pytest.approx(rows[-1]["val_top5"])
    assert result.best == results["best"] and len(result.history) == 2

    # The saved model reloads without running code and predicts as the trained one.
    reloaded = keras.saving.load_model(str(out / "model.keras"), safe_mode=True)
    batch = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(
        reloaded.predict(batch, verbose=0),
        result.model.predict(batch, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    assert type(reloaded.optimizer).__name__ == "SGDWithL2"
    # Optimizer state is saved too (what resuming relies on): 2 epochs x 3 steps.
    assert int(keras.ops.convert_to_numpy(reloaded.optimizer.iterations)) == 6
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded.optimizer.momentums[0]),
        keras.ops.convert_to_numpy(result.model.optimizer.momentums[0]),
        rtol=1e-6,
    )

    # Every model file of the run loads in a fresh process with `import keras_sge` and
    # `keras.saving.load_model` alone: compiled, with the optimizer's state.
    model_files = ["model.keras", "checkpoints/best.keras", "checkpoints/last.keras"]
    loaded = load_in_fresh_process([out / name for name in model_files])
    for name in model_files:
        assert loaded[str(out / name)]["optimizer"] == "SGDWithL2", name
        assert loaded[str(out / name)]["loss"] == "SparseCategoricalCrossentropyWithSmoothing"
    assert loaded[str(out / "model.keras")]["iterations"] == 6
    assert loaded["imported"] == []  # no TensorFlow, matplotlib or keras-hub for loading

    again = train(config, model_fn=tiny_model)  # finished: read back, not trained again
    assert again.history == result.history and again.best == result.best


def test_evaluate_matches_numpy_on_a_tiny_split():
    images, info = data.load("demo", "validation", batch_size=20, image_size=SIZE, with_info=True)
    images = images.take(2)
    model = tiny_model((SIZE, SIZE, 3), info.num_classes)
    x = np.concatenate([b[0].numpy() for b in images])
    y = np.concatenate([b[1].numpy() for b in images])
    probs = model.predict(x, verbose=0).astype("float64")
    expected_top1 = np.mean(np.argmax(probs, -1) == y)
    expected_loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
    measured = evaluate(model, images, verbose=0)
    assert measured["top1"] == pytest.approx(expected_top1, abs=1e-4)
    assert measured["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert measured["top5"] == pytest.approx(1.0)  # 4 classes


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    config = tiny_config(
        tmp_path / "nan", recipe="paper", lr=1e30, epochs=1, steps_per_epoch=6, warmup_epochs=0
    )
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf) at epoch 1, batch \d"):
        train(config, model_fn=tiny_model)
    assert not (tmp_path / "nan" / "checkpoints" / "last.keras").exists()


def test_resume_mismatch_and_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "backup").mkdir()
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    with h5py.File(out / "backup" / "latest.weights.h5", "w") as f:
        f["w"] = np.zeros(3)
    resolved = tiny_config(out, lr=0.5).resolved(accelerator=False)  # an earlier run
    (out / "config.json").write_text(resolved.to_json())
    with pytest.raises(ValueError, match=r"another configuration \(lr: 0.1 \(saved: 0.5\)\)"):
        train(tiny_config(out, lr=0.1), model_fn=tiny_model)


_RESUME_SCRIPT = textwrap.dedent(
    """
    import os, sys, keras
    sys.path.insert(0, {root!r})
    from tests.helpers import tiny_model, tiny_config
    from keras_sge.training import train

    class KillMidEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:  # epoch 0 finished, mid-epoch 1
                os.kill(os.getpid(), 9)
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    kill = sys.argv[2] == "kill"
    train(tiny_config(sys.argv[1], epochs=3, steps_per_epoch=4, lr=0.5, warmup_epochs=0),
          model_fn=tiny_model, callbacks=[KillMidEpoch()] if kill else [])
    """
)


@pytest.mark.skipif(
    BACKEND != "jax",
    reason="two training processes: run in the jax pass only; BackupAndRestore, the CSV "
    "and config checks are backend-independent, and the backend-specific part (optimizer "
    "state saved and restored) is checked on every backend by "
    "test_train_on_demo_writes_every_output",
)
def test_resume_after_kill_continues_from_last_finished_epoch(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(_RESUME_SCRIPT.format(root=ROOT))
    out = str(tmp_path / "run")
    env = subprocess_env(BACKEND)
    killed = subprocess.run(
        [sys.executable, str(script), out, "kill"], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [row["epoch"] for row in read_metrics(os.path.join(out, "metrics.csv"))] == [0]
    assert os.path.exists(os.path.join(out, "backup"))

    resumed = subprocess.run(
        [sys.executable, str(script), out, "run"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = read_metrics(os.path.join(out, "metrics.csv"))
    assert [row["epoch"] for row in rows] == [0, 1, 2]  # each epoch once
    # The optimizer's iteration count survived the kill: the cosine schedule goes on.
    schedule = make_schedule(
        "cosine", peak_learning_rate=0.5 * 16 / 256, steps_per_epoch=4, epochs=3
    )
    np.testing.assert_allclose(
        [row["learning_rate"] for row in rows], [float(schedule(s)) for s in (0, 4, 8)], rtol=1e-5
    )
    results = json.loads(open(os.path.join(out, "results.json")).read())
    assert results["finished"] and results["epochs"] == 3


_DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {root!r})
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
    from functools import partial
    from tests.helpers import tiny_model, tiny_config
    from keras_sge.training import train

    histories = {{}}
    for devices in (1, 2):
        # No BatchNorm: its batch statistics are per device under MirroredStrategy.
        # No augmentation: the same images in the same order for both runs (the
        # random augmentation of a distributed tf.data pipeline differs).
        result = train(tiny_config(os.path.join(sys.argv[1], str(devices)), devices=devices,
                                   epochs=2, steps_per_epoch=3, validation_steps=3,
                                   recipe="paper", lr=0.5, warmup_epochs=0,
                                   train_augmentation=False),
                       model_fn=partial(tiny_model, batch_norm=False))
        derived = json.load(open(os.path.join(sys.argv[1], str(devices), "config.json")))["derived"]
        histories[devices] = {{"replicas": derived["replicas"], "history": result.history}}
    print("RESULT" + json.dumps(histories))
    """
)


@pytest.mark.skipif(
    BACKEND == "torch", reason="torch trains on one device (no Keras data parallelism)"
)
def test_data_parallel_on_two_cpu_devices_matches_one_device(tmp_path):
    script = tmp_path / "dp.py"
    script.write_text(_DATA_PARALLEL_SCRIPT.format(root=ROOT))
    env = subprocess_env(BACKEND)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    histories = json.loads(done.stdout.split("RESULT")[-1])
    one, two = histories["1"], histories["2"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    for a, b in zip(one["history"], two["history"]):
        for key in ("loss", "top1", "val_loss", "val_top1"):
            np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=1e-5, err_msg=key)
    # Training changed the model (the comparison is not between two untrained nets).
    assert one["history"][0]["val_loss"] != pytest.approx(one["history"][1]["val_loss"], rel=1e-3)
