"""Training on several workers: two local processes act as two hosts.

TensorFlow (`TF_CONFIG`, MultiWorkerMirroredStrategy) and JAX
(`KERAS_DISTRIBUTION_*`, jax.distributed with gloo on the CPU); torch trains on
one device. The data is a tiny image folder whose images are constant colours:
the red channel is the image's id (3 * id), which survives any crop, flip and
resize, so the ids of every image a worker's pipeline gives can be read back.
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

from keras_sge import data
from keras_sge.training import (
    Cluster,
    data_parallel,
    is_chief,
    num_workers,
    read_metrics,
    worker_index,
)
from tests.helpers import BACKEND, subprocess_env

multi_process = pytest.mark.skipif(
    BACKEND == "torch", reason="torch trains on one device (no Keras multi-worker fit)"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_VAL = 64, 21  # 21: shards of 11 and 10, the last batches padded
GLOBAL_BATCH = 8
TIMEOUT_S = 240


def _make_folder(root):
    rng = np.random.default_rng(7)
    ids = {"train": range(NUM_TRAIN), "val": range(NUM_TRAIN, NUM_TRAIN + NUM_VAL)}
    for split, split_ids in ids.items():
        for i in split_ids:
            label = int(rng.integers(2))
            colour = (3 * i, int(rng.integers(256)), int(rng.integers(256)))
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 40), colour).save(folder / f"{i:03d}.png")


def _ids(red):
    """Image ids from the normalised red values of constant-colour images."""
    return [int(v) for v in np.round((np.asarray(red) * 0.229 + 0.485) * 255 / 3)]


_WORKER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {root!r})
    # The user's imports come first; train() must still start the cluster in time.
    import keras
    import numpy as np
    from keras_sge.training import train, TrainConfig, is_chief, worker_index, num_workers
    from keras_sge.training import initialize_multi_worker
    from keras_sge.training import trainer
    from keras_sge.training.distribution import data_parallel
    from tests.helpers import tiny_model

    data_dir, out, results, mode = sys.argv[1:5]

    class Record(keras.callbacks.Callback):
        epochs = []
        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)
        def on_train_batch_end(self, batch, logs=None):
            if mode == "kill" and is_chief() and self.epochs[-1] == 1 and batch == 2:
                os.kill(os.getpid(), 9)  # mid-epoch 1, after epoch 0 finished

    config = TrainConfig(dataset=data_dir, image_size=32, epochs=2, batch_size={batch},
                         recipe="paper", lr=0.5, warmup_epochs=0, multi_worker=True,
                         output_dir=out, verbose=0)
    result = train(config, model_fn=tiny_model, callbacks=[Record()])
    # The exact per-worker pipeline train() fed to fit: the ids of one epoch.
    import tensorflow as tf
    # Joined once per process: a second call returns the cluster train() joined.
    cluster = initialize_multi_worker()
    assert (cluster.index, cluster.count) == (worker_index(), num_workers()), cluster
    with data_parallel(None, True) as replicas:
        train_ds, _, _, steps, _ = trainer._load_datasets(result.config, cluster, replicas)
        local = tf.distribute.get_strategy().experimental_local_results
        ids = []
        for images, labels in train_ds.take(steps) if hasattr(train_ds, "take") else train_ds:
            for part in local(images):
                ids.extend(np.asarray(part)[:, 0, 0, 0].tolist())
            if len(ids) >= steps * {batch} // num_workers():
                break
    i = worker_index()
    np.savez(os.path.join(results, f"weights{{i}}.npz"), *result.model.get_weights())
    with open(os.path.join(results, f"worker{{i}}.json"), "w") as f:
        json.dump({{"epochs": Record.epochs, "steps": steps, "pixels": ids,
                   "workers": num_workers()}}, f)
    """
)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cluster_env(index, ports):
    env = subprocess_env(BACKEND)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)  # one CPU device per worker
    addresses = [f"localhost:{p}" for p in ports]
    if BACKEND == "tensorflow":
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        )
    else:
        env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = ",".join(addresses)
        env["KERAS_DISTRIBUTION_NUM_PROCESSES"] = str(len(ports))
        env["KERAS_DISTRIBUTION_PROCESS_ID"] = str(index)
    return env


def _run_workers(script, args, mode):
    ports = _free_ports(2)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *map(str, args), mode],
            env=_cluster_env(i, ports),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for i, proc in enumerate(procs):
            if mode == "kill" and i == 1:
                # Its peer died: it may wait on a collective; stop it as a crash would.
                try:
                    outputs.append(proc.communicate(timeout=20)[0])
                except subprocess.TimeoutExpired:
                    proc.kill()
                    outputs.append(proc.communicate()[0])
            else:
                outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return [proc.returncode for proc in procs], outputs


def test_without_a_cluster_this_process_is_the_only_worker_and_the_chief():
    assert (worker_index(), num_workers(), is_chief()) == (0, 1, True)
    if BACKEND == "torch":
        with pytest.raises(ValueError, match="one device"):
            with data_parallel(multi_worker=True):
                pass


@multi_process
def test_two_workers_train_in_sync_shard_the_data_and_resume(tmp_path):
    _make_folder(tmp_path / "images")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(root=ROOT, batch=GLOBAL_BATCH))
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    args = (tmp_path / "images", out, results)

    # Killed mid-epoch 1: epoch 0 is recorded once, by the chief.
    codes, logs = _run_workers(script, args, "kill")
    assert codes[0] == -9, logs[0][-3000:]
    assert codes[1] != 0, logs[1][-3000:]
    assert [row["epoch"] for row in read_metrics(str(out / "metrics.csv"))] == [0]

    codes, logs = _run_workers(script, args, "run")
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    workers = [json.loads((results / f"worker{i}.json").read_text()) for i in range(2)]
    # Both resumed at epoch 1 (the last finished was 0); each epoch once in the CSV.
    assert [w["epochs"] for w in workers] == [[1], [1]]
    assert [w["workers"] for w in workers] == [2, 2]
    rows = read_metrics(str(out / "metrics.csv"))
    assert [row["epoch"] for row in rows] == [0, 1]

    # Synchronous: the same weights on both workers, and training changed them.
    first, second = (np.load(results / f"weights{i}.npz") for i in range(2))
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    saved = keras.saving.load_model(str(out / "model.keras"))
    for key, value in zip(first.files, saved.get_weights()):
        np.testing.assert_allclose(first[key], value, rtol=1e-6, atol=1e-7, err_msg=key)

    # Every training image exactly once per epoch across the workers.
    assert workers[0]["steps"] == workers[1]["steps"] == NUM_TRAIN // GLOBAL_BATCH
    seen = [_ids(w["pixels"]) for w in workers]
    assert len(seen[0]) == len(seen[1]) == NUM_TRAIN // 2
    assert sorted(seen[0] + seen[1]) == list(range(NUM_TRAIN))

    # Validation counted every image once: equals one process evaluating the model.
    val = data.load(str(tmp_path / "images"), "validation", batch_size=5, image_size=32)
    labels = np.concatenate([y.numpy() for _, y in val])
    predicted = np.argmax(saved.predict(val, verbose=0), -1)
    expected = float(np.mean(predicted == labels))
    assert len(labels) == NUM_VAL
    assert rows[-1]["val_top1"] == pytest.approx(expected, abs=1e-6)

    # Only the chief wrote into the shared output directory, and nothing is left over.
    assert sorted(os.listdir(out)) == sorted(
        [
            "checkpoints",
            "config.json",
            "curves.png",
            "metrics.csv",
            "model.keras",
            "results.json",
            "tensorboard",
        ]
    )
    assert sorted(os.listdir(out / "checkpoints")) == ["best.keras", "last.keras"]


@multi_process
@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, "not set"),
        (
            {
                "TF_CONFIG": "{not json",
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1",
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                "KERAS_DISTRIBUTION_PROCESS_ID": "2",
            },
            "(not a valid cluster|Inconsistent cluster variables)",
        ),
    ],
)
def test_missing_or_inconsistent_cluster_variables_are_named(variables, message):
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from keras_sge.training import initialize_multi_worker\n"
        "initialize_multi_worker()\n"
    )
    env = subprocess_env(BACKEND)
    for name in (
        "TF_CONFIG",
        "KERAS_DISTRIBUTION_JOB_ADDRESSES",
        "KERAS_DISTRIBUTION_NUM_PROCESSES",
        "KERAS_DISTRIBUTION_PROCESS_ID",
    ):
        env.pop(name, None)
    env.update(variables)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("ValueError")
    assert ("TF_CONFIG" if BACKEND == "tensorflow" else "KERAS_DISTRIBUTION_") in error
    assert "e.g." in error  # an example follows
    assert re.search(message, error), error


@multi_process
def test_devices_touched_before_the_cluster_started_is_a_clear_error():
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "import keras\n"
        "keras.distribution.list_devices()\n"
        "from keras_sge.training import initialize_multi_worker\n"
        "initialize_multi_worker()\n"
    )
    ports = _free_ports(2)
    with socket.socket() as peer:  # worker 1's address answers (TensorFlow waits for it)
        peer.bind(("", ports[1]))
        peer.listen()
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=_cluster_env(0, ports),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("RuntimeError") and "initialize_multi_worker()" in error, error


def test_agreement_of_a_single_worker_returns_its_value_or_raises_its_error():
    assert Cluster().agree(lambda: 3, "the epoch") == 3

    def fails():
        raise FileExistsError("finished run")

    with pytest.raises(FileExistsError, match="finished run"):
        Cluster().agree(fails, "the epoch")


class _SecondOfThree(Cluster):
    """Worker 1 of 3 as the trainer sees it (its collectives answer for all three)."""

    index, count = 1, 3

    def gather(self, value):
        return [7, int(value), 5]


def test_a_process_alone_is_the_chief_and_writes_and_reads_everything_itself(tmp_path):
    alone = Cluster()
    assert (alone.index, alone.count, alone.is_chief, alone.shard) == (0, 1, True, (0, 1))
    path = str(tmp_path / "backup")
    assert alone.backup_path(path) == alone.scratch_path(path, str(tmp_path)) == path
    assert (alone.input_batch_size(64, 4), alone.input_batches_per_step(4)) == (64, 1)
    assert alone.from_chief(9) == 9 and alone.callbacks() == []
    dataset = [1, 2]  # a process alone runs its dataset as it is, of any length
    assert alone.equal_steps(dataset, None, 1, "x") is dataset


def test_another_worker_keeps_its_own_files_and_runs_as_many_steps_as_the_others(tmp_path):
    import tensorflow as tf

    worker = _SecondOfThree()
    assert (worker.is_chief, worker.shard, worker.from_chief(1)) == (False, (1, 3), 7)
    backup, model = str(tmp_path / "backup"), str(tmp_path / "model.keras")
    assert worker.backup_path(backup) == backup + "-worker-1"
    scratch = worker.scratch_path(model, str(tmp_path))
    assert os.path.basename(scratch) == "model.keras" and os.path.isdir(os.path.dirname(scratch))
    assert worker.scratch_path(model, str(tmp_path)) == scratch  # the same for a rerun
    assert "worker-1" in scratch and not scratch.startswith(str(tmp_path))
    os.rmdir(os.path.dirname(scratch))

    # Two padded batches of 2, run for 3 steps of 2 batches: the rest is empty.
    images = tf.reshape(tf.range(1, 9, dtype=tf.float32), [4, 2])
    batches = tf.data.Dataset.from_tensor_slices((images, tf.ones([4]))).batch(2, True)
    equal = list(worker.equal_steps(batches, 3, 2, "'x'/validation"))
    assert len(equal) == 6
    np.testing.assert_array_equal(np.concatenate([b[0] for b in equal[:2]]), images)
    assert not any(np.any(b[0]) or np.any(b[1]) for b in equal[2:])
    assert len(list(worker.equal_steps(batches, 1, 1, "'x'/validation"))) == 1
    with pytest.raises(ValueError, match=r"size of 'x'/validation is unknown.*--validation-steps"):
        worker.equal_steps(batches, None, 1, "'x'/validation")
    with pytest.raises(RuntimeError, match=r"disagree on the epoch: \[7, 3, 5\]"):
        worker.agree(lambda: 3, "the epoch")


def _start_one_worker(index, ports, timeout_s=4):
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from keras_sge.training import initialize_multi_worker\n"
        f"initialize_multi_worker(timeout={timeout_s})\n"
        "print('joined')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        env=_cluster_env(index, ports),
        capture_output=True,
        text=True,
        timeout=120,
    )


@multi_process
@pytest.mark.parametrize("index", [0, 1])
def test_a_worker_whose_peers_never_start_names_them_and_exits(index):
    ports = _free_ports(2)
    done = _start_one_worker(index, ports)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"worker {index}: waiting for all 2 workers (up to 4 s)" in done.stdout
    assert "joined" not in done.stdout
    assert f"worker {index} of 2: not every worker joined within 4 s" in done.stderr
    other = 1 - index
    if BACKEND == "tensorflow":
        assert f"Not reachable: worker {other} at localhost:{ports[other]}." in done.stderr
    elif index == 1:
        assert f"Not reachable: worker 0 (the coordinator) at localhost:{ports[0]}" in done.stderr
    else:
        assert "did not see all 2 workers: one of workers [1]" in done.stderr
    assert "--worker-timeout" in done.stderr


@multi_process
def test_an_address_in_use_on_this_host_is_named():
    ports = _free_ports(2)
    with socket.socket() as holder:
        holder.bind(("", ports[0]))
        holder.listen()
        done = _start_one_worker(0, ports)
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("OSError") and f"address localhost:{ports[0]}" in error, error
    assert f"port {ports[0]} is taken on this host" in error
