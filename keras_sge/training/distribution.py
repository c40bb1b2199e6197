"""Data-parallel setup per Keras backend, on one host or several.

Several hosts ("workers") run the same program; each is told its place in the
cluster by environment variables:

- TensorFlow: `TF_CONFIG` (read by `tf.distribute.MultiWorkerMirroredStrategy`);
- JAX: `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES`,
  `KERAS_DISTRIBUTION_PROCESS_ID` (read by `keras.distribution.initialize`).

`initialize_multi_worker()` starts that runtime; it must run before anything
touches the devices, which is why `train` calls it first.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras

JAX_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\' on host0, "index": 1 on host1'
)
_JAX_EXAMPLE = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES=host0:12345,host1:12345 "
    "KERAS_DISTRIBUTION_NUM_PROCESSES=2 KERAS_DISTRIBUTION_PROCESS_ID=0 on host0 "
    "(PROCESS_ID=1 on host1)"
)
_TOUCHED = (
    "Start it first: call keras_sge.training.initialize_multi_worker() (train() does) "
    "before any device query (keras.distribution.list_devices, "
    "tf.config.list_logical_devices, jax.devices), tensor, dataset or model of your own "
    "code, e.g. at the top of your script."
)

# How long a worker waits for the others to join (a few minutes: hosts start unevenly).
DEFAULT_WORKER_TIMEOUT_S = 180.0

# The running cluster: {"backend", "strategy" (TensorFlow), "index", "count"}.
_cluster: dict[str, Any] = {}


def has_accelerator() -> bool:
    """Whether the current Keras backend sees a GPU or TPU."""
    backend = keras.backend.backend()
    if backend in ("jax", "tensorflow"):
        return not keras.distribution.list_devices()[0].lower().startswith("cpu")
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def _tf_cluster_from_environment() -> tuple[int, list[str]]:
    """Checks `TF_CONFIG`; returns `(this worker's index, every worker's address)`."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "Multi-worker training on TensorFlow reads the cluster from the TF_CONFIG "
            "environment variable, which is not set. Set it on every host, e.g. "
            f"{_TF_CONFIG_EXAMPLE}."
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, task_index = task["type"], int(task["index"])
        tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        addresses = [str(a) for a in [*cluster.get("chief", []), *cluster.get("worker", [])]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a valid cluster description ({error!r}); expected JSON with "
            f"'cluster' and 'task', e.g. {_TF_CONFIG_EXAMPLE}. Received: {text!r}"
        ) from None
    if (task_type, task_index) not in tasks:
        raise ValueError(
            f"TF_CONFIG's task {task!r} is not in its cluster {cluster!r} (task type "
            f"'chief' or 'worker', index below the number of addresses of that type), "
            f"e.g. {_TF_CONFIG_EXAMPLE}."
        )
    return tasks.index((task_type, task_index)), addresses


def _jax_cluster_from_environment() -> tuple[int, int, str]:
    """Checks the `KERAS_DISTRIBUTION_*` variables; returns `(index, count, coordinator)`."""
    missing = [name for name in JAX_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"Multi-worker training on JAX reads the cluster from {', '.join(JAX_VARIABLES)}; "
            f"{', '.join(missing)} not set. Set them on every host, e.g. {_JAX_EXAMPLE}."
        )
    addresses = os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")
    try:
        count = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
        index = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    except ValueError:
        count = index = -1
    if count < 1 or not 0 <= index < count or len(addresses) not in (1, count):
        values = {name: os.environ[name] for name in JAX_VARIABLES}
        raise ValueError(
            f"Inconsistent cluster variables {values}: expected NUM_PROCESSES >= 1, "
            "0 <= PROCESS_ID < NUM_PROCESSES, and JOB_ADDRESSES holding the coordinator "
            f"(process 0) address or one address per process, e.g. {_JAX_EXAMPLE}."
        )
    return index, count, addresses[0]


def _multi_worker_strategy():
    """`tf.distribute.MultiWorkerMirroredStrategy()` with the `reduce` Keras' `fit` expects.

    Keras reduces its first (nested) batch with the strategy before building
    the model, which the multi-worker strategy (unlike `MirroredStrategy`) does
    one value at a time; and it reduces scalar logs with `axis=0`, which means
    "across replicas" only for values with a batch axis.
    """
    import tensorflow as tf

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            reduce = super().reduce

            def one(v):
                scalar = len(self.experimental_local_results(v)[0].shape) == 0
                return reduce(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return Strategy()


def initialize_multi_worker(timeout: float = DEFAULT_WORKER_TIMEOUT_S) -> None:
    """Starts the multi-worker runtime of the current backend (once per process).

    - TensorFlow: creates the `tf.distribute.MultiWorkerMirroredStrategy` of
      `TF_CONFIG` (`data_parallel(multi_worker=True)` then uses it).
    - JAX: selects the CPU collectives implementation (gloo) unless another one
      was chosen, then `keras.distribution.initialize()` from the
      `KERAS_DISTRIBUTION_*` variables (`jax.distributed.initialize`).

    It waits up to `timeout` seconds for the other workers. TensorFlow: until
    every worker's address answers, else `WorkersNotJoinedError` names the
    workers not reached and their addresses. JAX: JAX's own wait, which
    cannot be interrupted, so after `timeout` the process prints the same
    kind of message and ends with exit status 1 (JAX itself aborts at 300 s:
    the timeout is at most 290 s). An address of this host that another
    process holds is refused before anything starts.

    Call it at the start of the program, before anything touches the devices
    (device queries, tensors, datasets, models). Calling it again does nothing.

    Args:
        timeout: seconds to wait for the other workers.

    Raises:
        ValueError: the cluster variables are missing or inconsistent, or
            the backend is torch.
        OSError: this worker's address (TensorFlow) or the coordinator's
            (JAX, worker 0) is in use on this host.
        WorkersNotJoinedError: (TensorFlow) a worker did not answer in time.
        RuntimeError: the devices were already in use.

    Example:

    >>> from keras_sge.training import initialize_multi_worker, is_chief
    >>> initialize_multi_worker()  # first thing in the program
    >>> if is_chief():
    ...     print("I write the outputs")
    """
    if not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds. Received: {timeout!r}")
    backend = keras.backend.backend()
    if _cluster:
        return
    if backend == "tensorflow":
        index, addresses = _tf_cluster_from_environment()
        _wait_for_tf_peers(index, addresses, timeout)
        try:
            strategy = _multi_worker_strategy()
        except RuntimeError as error:
            raise RuntimeError(
                "TensorFlow was already initialised in this process, so its collective "
                f"operations can no longer be configured ({error}). {_TOUCHED}"
            ) from error
        _cluster.update(backend=backend, strategy=strategy, index=index, count=len(addresses))
    elif backend == "jax":
        index, count, coordinator = _jax_cluster_from_environment()
        if index == 0:  # the coordinator's service will listen there
            _listen_on(coordinator, index).close()
        import jax

        if jax.config.jax_cpu_collectives_implementation not in ("gloo", "mpi", "megascale"):
            # Without it, JAX on CPUs fails at the first cross-process operation.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        missing = lambda: _jax_missing(index, count, coordinator)  # noqa: E731
        with _joined_within(min(timeout, 290.0), index, count, missing):
            try:
                keras.distribution.initialize()
            except RuntimeError as error:
                raise RuntimeError(
                    f"JAX's backend was already initialised in this process ({error}). {_TOUCHED}"
                ) from error
        _cluster.update(backend=backend, index=jax.process_index(), count=jax.process_count())
    else:
        raise ValueError(
            f"The {backend} backend trains on one device here (Keras has no data-parallel "
            "fit for it); use KERAS_BACKEND=jax or tensorflow for several hosts."
        )


class WorkersNotJoinedError(TimeoutError):
    """Not every worker of the cluster joined within the timeout."""


def _not_joined_message(index: int, count: int, timeout: float, missing: str) -> str:
    return (
        f"worker {index} of {count}: not every worker joined within {timeout:.0f} s. "
        f"{missing} Start every worker, or allow more time (--worker-timeout)."
    )


def _listen_on(address: str, index: int) -> socket.socket:
    """A socket listening on this worker's port; refuses a port another process holds."""
    port = int(address.rsplit(":", 1)[-1])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as error:
        listener.close()
        raise OSError(
            error.errno,
            f"Worker {index}'s address {address} cannot be used: port {port} is taken on "
            f"this host ({error.strerror}). Stop the process that holds it (a previous "
            "run?) or give this worker a free port in the cluster variables.",
        ) from None
    listener.listen()
    return listener


def _wait_for_tf_peers(index: int, addresses: list[str], timeout: float) -> None:
    """Returns once every other worker's address answers; raises after `timeout` s.

    TensorFlow's own wait for the cluster holds the interpreter and cannot be
    timed out from Python, so the workers meet first here: each listens on its
    own port (TensorFlow's server takes it over next) and polls the others'.
    """
    listener = _listen_on(addresses[index], index)
    print(
        f"worker {index}: waiting for all {len(addresses)} workers (up to {timeout:.0f} s)",
        flush=True,
    )
    deadline = time.monotonic() + timeout
    waiting = {i: a for i, a in enumerate(addresses) if i != index}
    try:
        while waiting:
            waiting = {i: a for i, a in waiting.items() if not _answers(a)}
            if waiting and time.monotonic() > deadline:
                silent = ", ".join(f"worker {i} at {a}" for i, a in waiting.items())
                raise WorkersNotJoinedError(
                    _not_joined_message(index, len(addresses), timeout, f"Not reachable: {silent}.")
                )
            time.sleep(0.2 if waiting else 0)
    finally:
        listener.close()


@contextlib.contextmanager
def _joined_within(timeout: float, index: int, count: int, missing: Callable[[], str]):
    """Ends the process (exit status 1) if the block has not returned in `timeout` s
    (for JAX, whose wait releases the interpreter but cannot be interrupted)."""

    def give_up() -> None:
        message = _not_joined_message(index, count, timeout, missing())
        print(f"\nerror: {message}", file=sys.stderr, flush=True)
        os._exit(1)

    print(f"worker {index}: waiting for all {count} workers (up to {timeout:.0f} s)", flush=True)
    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _jax_missing(index: int, count: int, coordinator: str) -> str:
    if index != 0 and not _answers(coordinator):
        return f"Not reachable: worker 0 (the coordinator) at {coordinator}."
    others = [i for i in range(count) if i != index]
    return (
        f"The coordinator at {coordinator} did not see all {count} workers: one of "
        f"workers {others} (KERAS_DISTRIBUTION_PROCESS_ID) has not started or cannot reach it."
    )


def num_workers() -> int:
    """Number of workers (hosts/processes) of the running cluster; 1 without one."""
    return _cluster.get("count", 1)


def worker_index() -> int:
    """This worker's index, `0 .. num_workers() - 1`; 0 without a cluster.

    On TensorFlow, a `chief` task of `TF_CONFIG` is worker 0 and the `worker`
    tasks follow it; on JAX it is `jax.process_index()`.
    """
    return _cluster.get("index", 0)


def is_chief() -> bool:
    """Whether this worker writes the shared outputs (worker 0; `True` without a cluster)."""
    return worker_index() == 0


def gather_from_workers(value: int) -> list[int]:
    """Every worker's `value`, in worker order (a collective: all workers must call it).

    Args:
        value: an integer of this worker.

    Returns:
        The list of the values of workers `0 .. num_workers() - 1`.
    """
    if num_workers() == 1:
        return [int(value)]
    if _cluster["backend"] == "jax":
        import numpy as np
        from jax.experimental import multihost_utils

        return [int(v) for v in np.ravel(multihost_utils.process_allgather(np.int64(value)))]
    import tensorflow as tf

    strategy = _cluster["strategy"]
    # One copy per replica, replicas in worker order: keep each worker's first.
    gathered = tf.function(
        lambda: strategy.gather(strategy.run(lambda: tf.constant([int(value)], tf.int64)), axis=0)
    )()
    return [int(v) for v in tf.reshape(gathered, [num_workers(), -1])[:, 0].numpy()]


def worker_path(path: str) -> str:
    """`path` on the chief; a worker-specific sibling (`path-worker-<i>`) elsewhere.

    For the state every worker keeps for itself (e.g. its resume backup), so
    that workers sharing one output directory never write the same file.
    """
    return path if is_chief() else f"{path}-worker-{worker_index()}"


def from_chief(value: int) -> int:
    """The chief's `value` on every worker (a collective: all workers must call it)."""
    return gather_from_workers(value)[0]


def agree_across_workers(prepare: Callable[[], int], what: str) -> int:
    """Runs `prepare()` on every worker and checks that all return the same integer.

    A collective: every worker must call it. A worker whose `prepare` raised
    re-raises its error; the others raise an error naming that worker, rather
    than waiting for it forever.

    Args:
        prepare: `() -> int` (>= 0), run on this worker.
        what: what the integer is, for the error messages.

    Returns:
        The agreed value.
    """
    error = None
    try:
        value = int(prepare())
    except Exception as caught:  # re-raised below, after the others heard of it
        error, value = caught, -1
    values = gather_from_workers(value)
    if error is not None:
        raise error
    failed = [i for i, v in enumerate(values) if v < 0]
    if failed:
        raise RuntimeError(f"Worker(s) {failed} failed while preparing to train; see their logs.")
    if len(set(values)) > 1:
        raise RuntimeError(
            f"The workers disagree on {what}: {values} (worker order). Each worker's "
            "backup is the same state (training is synchronous): copy the chief's "
            "backup folder over the others' and start again."
        )
    return value


class AverageMovingStatistics(keras.callbacks.Callback):
    """Averages the float non-trainable variables (BatchNorm moving statistics) across workers.

    Under `tf.distribute.MultiWorkerMirroredStrategy` each replica updates its
    own copy of the moving statistics from its own batches; this makes every
    worker hold their mean before each validation (and so at every epoch end),
    so that all workers validate and save the same model. Collective: it must
    run on every worker. (Under JAX's `DataParallel` the statistics are global.)
    """

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        variables = [v for v in self.model.non_trainable_variables if "float" in str(v.dtype)]

        @tf.function
        def average():
            means = strategy.reduce(
                "MEAN", strategy.run(lambda: [tf.identity(v.value) for v in variables]), axis=None
            )
            for variable, mean in zip(variables, means):
                variable.assign(mean)

        self._average = average if variables else None

    def on_test_begin(self, logs=None):
        if self._average is not None:
            self._average()


def worker_callbacks() -> list[keras.callbacks.Callback]:
    """Callbacks that keep the workers' models identical; to run first, on every worker."""
    if num_workers() > 1 and _cluster["backend"] == "tensorflow":
        return [AverageMovingStatistics()]
    return []


def input_batch_size(global_batch_size: int, replicas: int) -> int:
    """Batch size of each batch of this worker's input pipeline.

    Single host: the global batch (Keras splits it across the devices).
    Several workers, TensorFlow: the per-replica batch (the pipeline feeds the
    worker's replicas in turn); JAX: the worker's share, `global / workers`.

    Args:
        global_batch_size: examples per optimizer step over all devices.
        replicas: the number of replicas `data_parallel` yielded.

    Returns:
        The batch size to build this worker's `tf.data` pipeline with.
    """
    if num_workers() == 1:
        return global_batch_size
    if _cluster["backend"] == "tensorflow":
        return global_batch_size // replicas
    return global_batch_size // num_workers()


def input_batches_per_step(replicas: int) -> int:
    """Batches this worker's input pipeline gives for one optimizer step."""
    if num_workers() > 1 and _cluster["backend"] == "tensorflow":
        return replicas // num_workers()
    return 1


def distribute_input(make_dataset: Callable[[], Any]) -> Any:
    """This worker's dataset, ready for `model.fit` under `data_parallel`.

    With several TensorFlow workers, `make_dataset()` (a per-replica-batch
    pipeline of this worker's shard) goes through
    `tf.distribute.Strategy.distribute_datasets_from_function`, so the
    strategy does not shard it again; otherwise the dataset is returned as is.

    Args:
        make_dataset: `() -> tf.data.Dataset`.

    Returns:
        A `tf.data.Dataset` or a `tf.distribute.DistributedDataset`.
    """
    if num_workers() > 1 and _cluster["backend"] == "tensorflow":
        return _cluster["strategy"].distribute_datasets_from_function(lambda _: make_dataset())
    return make_dataset()


def _choose(pool: list[str], devices: int | None, kind: str) -> list[str]:
    if devices is None:
        # Every accelerator; on a CPU-only machine a single CPU device.
        return pool if kind != "cpu" else pool[:1]
    if devices > len(pool):
        raise ValueError(
            f"Asked for {devices} devices but only {len(pool)} {kind} device(s) "
            f"are visible: {pool}."
        )
    return pool[:devices]


def _jax_worker_devices(devices: int | None) -> list[str]:
    """The first `devices` local devices of every worker (all processes)."""
    import jax

    local = sorted(jax.local_devices(), key=lambda d: d.id)
    count = len(_choose([str(d) for d in local], devices, local[0].platform))
    every = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    by_process: dict[int, list] = {}
    for device in every:
        by_process.setdefault(device.process_index, []).append(device)
    return [f"{d.platform}:{d.id}" for ds in by_process.values() for d in ds[:count]]


@contextlib.contextmanager
def data_parallel(devices: int | None = None, multi_worker: bool = False) -> Iterator[int]:
    """Context in which to build, compile and fit a data-parallel model.

    - JAX: `keras.distribution.DataParallel` over the chosen local devices;
      with `multi_worker`, over the chosen devices of every worker (after
      `initialize_multi_worker()`), each worker feeding its own share of the
      global batch (see `input_batch_size`).
    - TensorFlow: `tf.distribute.MirroredStrategy` over the chosen GPUs (or
      logical CPUs), or with `multi_worker` the
      `tf.distribute.MultiWorkerMirroredStrategy` of `TF_CONFIG` (every GPU of
      every worker).
    - torch: one device; asking for more raises `ValueError`.

    The global batch given to `fit` is split evenly across the devices.

    Args:
        devices: how many devices to use (per worker with `multi_worker`);
            `None` means every GPU/TPU, or one CPU device when there is no
            accelerator.
        multi_worker: train across several workers (hosts or processes).

    Yields:
        The number of replicas the global batch is split across (all workers).

    Example:

    >>> with data_parallel() as replicas:
    ...     model = build_model()
    ...     model.compile(...)
    ...     model.fit(dataset)
    """
    backend = keras.backend.backend()
    if multi_worker and backend in ("jax", "tensorflow"):
        initialize_multi_worker()
    if backend == "jax":
        if multi_worker:
            chosen = _jax_worker_devices(devices)
        else:
            pool = keras.distribution.list_devices()
            chosen = _choose(pool, devices, pool[0].split(":")[0].lower())
        if len(chosen) == 1 and not multi_worker:
            yield 1
            return
        previous = keras.distribution.distribution()
        # Each worker reads its own shard already (see `input_batch_size`).
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=chosen, auto_shard_dataset=not multi_worker)
        )
        try:
            yield len(chosen)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        import tensorflow as tf

        if multi_worker:
            if devices is not None:
                raise ValueError(
                    "MultiWorkerMirroredStrategy uses every GPU of every worker; choose them "
                    f"with CUDA_VISIBLE_DEVICES instead of devices={devices}."
                )
            strategy = _cluster["strategy"]
        else:
            gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            chosen = _choose(gpus, devices, "gpu") if gpus else _choose(cpus, devices, "cpu")
            if len(chosen) == 1:
                yield 1
                return
            strategy = tf.distribute.MirroredStrategy(devices=chosen)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    else:
        if multi_worker or (devices or 1) > 1:
            raise ValueError(
                f"The {backend} backend trains on one device here (Keras has no "
                "data-parallel training for it); use the jax or tensorflow backend "
                f"for several devices. Received: devices={devices}, "
                f"multi_worker={multi_worker}."
            )
        yield 1
