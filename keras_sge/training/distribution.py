"""Data-parallel training on one host or several: the cluster a process trains in.

Several hosts ("workers") run the same program; each is told its place in the
cluster by environment variables:

- TensorFlow: `TF_CONFIG` (read by `tf.distribute.MultiWorkerMirroredStrategy`);
- JAX: `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES`,
  `KERAS_DISTRIBUTION_PROCESS_ID` (read by `keras.distribution.initialize`).

`initialize_multi_worker()` starts that runtime and returns the `Cluster` this
process joined; it must run before anything touches the devices, which is why
`train` calls it first. `Cluster()` is a process training alone. Everything
that differs on several workers is a method of the cluster, so that the
trainer has no branch of its own for it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import sys
import tempfile
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


def has_accelerator() -> bool:
    """Whether the current Keras backend sees a GPU or TPU."""
    backend = keras.backend.backend()
    if backend in ("jax", "tensorflow"):
        return not keras.distribution.list_devices()[0].lower().startswith("cpu")
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


class Cluster:
    """The workers that train together; this class itself is a process training alone.

    What differs on several workers is asked of the cluster: which worker
    writes the shared outputs (`is_chief`, `announce`), where a worker keeps
    files of its own (`backup_path`, `scratch_path`), values that every worker
    must see alike (`gather`, `from_chief`, `agree`), how each worker reads and
    feeds its share of the data (`shard`, `input_batch_size`,
    `input_batches_per_step`, `distribute_input`, `equal_steps`), the
    callbacks that keep the workers' models identical (`callbacks`) and the
    scope in which to build and fit the model (`data_parallel`).

    A process alone is worker 0 of 1 and the chief: it writes every output in
    place, gathers only its own values and feeds the global batch to its
    devices. `initialize_multi_worker()` returns the cluster of several
    workers (a `TensorFlowCluster` or a `JaxCluster`).

    Example:

    >>> cluster = Cluster()
    >>> (cluster.index, cluster.count, cluster.is_chief)
    (0, 1, True)
    >>> with cluster.data_parallel() as replicas:
    ...     model = build_model()
    ...     model.compile(...)
    ...     model.fit(cluster.distribute_input(make_dataset))
    """

    index: int = 0  # this worker's index, 0 .. count - 1
    count: int = 1  # the number of workers

    def __repr__(self) -> str:
        return f"{type(self).__name__}(index={self.index}, count={self.count})"

    @property
    def is_chief(self) -> bool:
        """Whether this worker writes the shared outputs (worker 0)."""
        return self.index == 0

    @property
    def shard(self) -> tuple[int, int]:
        """`(index, count)`: this worker's shard of every split (`keras_sge.data.load`)."""
        return self.index, self.count

    def announce(self, message: str) -> None:
        """Prints `message` once for the whole cluster (on the chief)."""
        if self.is_chief:
            print(message)

    def gather(self, value: int) -> list[int]:
        """Every worker's `value`, in worker order (a collective: all workers must call it).

        Args:
            value: an integer of this worker.

        Returns:
            The values of workers `0 .. count - 1`.
        """
        return [int(value)]

    def from_chief(self, value: int) -> int:
        """The chief's `value` on every worker (a collective: all workers must call it)."""
        return self.gather(value)[0]

    def agree(self, prepare: Callable[[], int], what: str) -> int:
        """Runs `prepare()` on every worker and checks that all return the same integer.

        A collective: every worker must call it. A worker whose `prepare`
        raised re-raises its error; the others raise an error naming that
        worker, rather than waiting for it forever.

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
        values = self.gather(value)
        if error is not None:
            raise error
        failed = [i for i, v in enumerate(values) if v < 0]
        if failed:
            raise RuntimeError(
                f"Worker(s) {failed} failed while preparing to train; see their logs."
            )
        if len(set(values)) > 1:
            raise RuntimeError(
                f"The workers disagree on {what}: {values} (worker order). Each worker's "
                "backup is the same state (training is synchronous): copy the chief's "
                "backup folder over the others' and start again."
            )
        return value

    def backup_path(self, path: str) -> str:
        """Where this worker keeps the state that is its own, e.g. its resume backup.

        `path` on the chief; a worker-specific sibling (`path-worker-<i>`)
        elsewhere, so that workers sharing one output directory never write
        the same file.
        """
        return path if self.is_chief else f"{path}-worker-{self.index}"

    def scratch_path(self, path: str, run_dir: str) -> str:
        """Where this worker saves the shared output `path` of the run in `run_dir`.

        `path` on the chief. Every worker saves the model (in Keras saving is
        a cross-worker operation); another worker saves into a folder of the
        system's temporary directory (created here), the same for each rerun
        of the run, so that killed workers leave no more than one.
        """
        if self.is_chief:
            return path
        run = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:12]
        folder = os.path.join(tempfile.gettempdir(), f"keras_sge-{run}-worker-{self.index}")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, os.path.basename(path))

    def input_batch_size(self, global_batch_size: int, replicas: int) -> int:
        """Batch size of each batch of this worker's input pipeline.

        A process alone: the global batch (Keras splits it across the devices).

        Args:
            global_batch_size: examples per optimizer step over all devices.
            replicas: the number of replicas `data_parallel` yielded.

        Returns:
            The batch size to build this worker's `tf.data` pipeline with.
        """
        del replicas
        return global_batch_size

    def input_batches_per_step(self, replicas: int) -> int:
        """Batches this worker's input pipeline gives for one optimizer step."""
        del replicas
        return 1

    def distribute_input(self, make_dataset: Callable[[], Any]) -> Any:
        """This worker's dataset `make_dataset()`, ready for `fit` under `data_parallel`.

        Args:
            make_dataset: `() -> tf.data.Dataset`, batched by `input_batch_size`.

        Returns:
            A `tf.data.Dataset` or a `tf.distribute.DistributedDataset`.
        """
        return make_dataset()

    def equal_steps(self, dataset: Any, steps: int | None, batches_per_step: int, what: str):
        """`dataset` as every worker runs it in step with the others, `steps` steps of it.

        A process alone runs `dataset` as it is. On several workers it is cut
        to `steps` steps, and a shorter shard goes on with empty batches
        (zeros: zero sample weights when the last element is the weight), so
        that every worker runs every step.

        Args:
            dataset: this worker's `tf.data.Dataset` of an evaluation split,
                in batches of one static size (padded).
            steps: steps per pass (the most any worker's shard needs), or
                `None` when unknown, which several workers refuse.
            batches_per_step: `input_batches_per_step(replicas)`.
            what: the split, named in the error.

        Returns:
            A `tf.data.Dataset`.
        """
        if self.count == 1:
            return dataset
        if steps is None:
            raise ValueError(
                f"The size of {what} is unknown; with several workers pass "
                "validation_steps (--validation-steps)."
            )
        import tensorflow as tf

        empty = tuple(tf.zeros(spec.shape, spec.dtype) for spec in dataset.element_spec)
        filler = tf.data.Dataset.from_tensors(empty).repeat()
        return dataset.concatenate(filler).take(steps * batches_per_step)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks that keep the workers' models identical; to run first, on every worker."""
        return []

    @contextlib.contextmanager
    def data_parallel(self, devices: int | None = None) -> Iterator[int]:
        """Context in which to build, compile and fit a model data-parallel over the cluster.

        A process alone, over its chosen devices:
        - JAX: `keras.distribution.DataParallel` (on one device: nothing);
        - TensorFlow: `tf.distribute.MirroredStrategy` over the chosen GPUs
          (or logical CPUs; on one device: nothing);
        - torch: one device; asking for more raises `ValueError`.

        Args:
            devices: how many devices of this worker to use; `None` means
                every GPU/TPU, or one CPU device when there is no accelerator.

        Yields:
            The number of replicas the global batch is split across (over
            all workers).
        """
        local = {"jax": _local_jax_data_parallel, "tensorflow": _local_mirrored}
        with local.get(keras.backend.backend(), _one_device)(devices) as replicas:
            yield replicas


class TensorFlowCluster(Cluster):
    """The workers of a `tf.distribute.MultiWorkerMirroredStrategy` (`TF_CONFIG`).

    Each worker's input pipeline gives per-replica batches of its shard, which
    the strategy feeds to the worker's replicas in turn; BatchNorm's moving
    statistics, updated per replica, are averaged before each validation.
    Made by `initialize_multi_worker()`.

    Args:
        strategy: the strategy, already created.
        index: this worker's index (a `chief` task of `TF_CONFIG` is worker 0
            and the `worker` tasks follow it).
        count: the number of workers.
    """

    def __init__(self, strategy: Any, index: int, count: int):
        self.strategy, self.index, self.count = strategy, index, count

    def gather(self, value: int) -> list[int]:
        import tensorflow as tf

        strategy = self.strategy
        # One copy per replica, replicas in worker order: keep each worker's first.
        gathered = tf.function(
            lambda: strategy.gather(
                strategy.run(lambda: tf.constant([int(value)], tf.int64)), axis=0
            )
        )()
        return [int(v) for v in tf.reshape(gathered, [self.count, -1])[:, 0].numpy()]

    def input_batch_size(self, global_batch_size: int, replicas: int) -> int:
        return global_batch_size // replicas

    def input_batches_per_step(self, replicas: int) -> int:
        return replicas // self.count

    def distribute_input(self, make_dataset: Callable[[], Any]) -> Any:
        # From a function: the strategy does not shard the worker's shard again.
        return self.strategy.distribute_datasets_from_function(lambda _: make_dataset())

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [AverageMovingStatistics()]

    @contextlib.contextmanager
    def data_parallel(self, devices: int | None = None) -> Iterator[int]:
        """The strategy's scope: every GPU of every worker (`devices` must be `None`)."""
        if devices is not None:
            raise ValueError(
                "MultiWorkerMirroredStrategy uses every GPU of every worker; choose them "
                f"with CUDA_VISIBLE_DEVICES instead of devices={devices}."
            )
        with self.strategy.scope():
            yield self.strategy.num_replicas_in_sync


class JaxCluster(Cluster):
    """The processes of JAX's multi-process runtime (`jax.distributed`).

    One program runs over the chosen devices of every process; each process
    reads its own shard and feeds its share of the global batch,
    `global / count`. Made by `initialize_multi_worker()`, after which its
    index and count are `jax.process_index()` and `jax.process_count()`.
    """

    def __init__(self):
        import jax

        self.index, self.count = jax.process_index(), jax.process_count()

    def gather(self, value: int) -> list[int]:
        import numpy as np
        from jax.experimental import multihost_utils

        return [int(v) for v in np.ravel(multihost_utils.process_allgather(np.int64(value)))]

    def input_batch_size(self, global_batch_size: int, replicas: int) -> int:
        return global_batch_size // self.count

    @contextlib.contextmanager
    def data_parallel(self, devices: int | None = None) -> Iterator[int]:
        """`keras.distribution.DataParallel` over the first `devices` devices of every process."""
        chosen = _jax_worker_devices(devices)
        # Each worker reads its own shard already (see `input_batch_size`).
        parallel = keras.distribution.DataParallel(devices=chosen, auto_shard_dataset=False)
        with _keras_distribution(parallel):
            yield len(chosen)


def initialize_multi_worker(timeout: float = DEFAULT_WORKER_TIMEOUT_S) -> Cluster:
    """Joins the multi-worker runtime of the current backend; returns this process's cluster.

    - TensorFlow: creates the `tf.distribute.MultiWorkerMirroredStrategy` of
      `TF_CONFIG`, held by the returned `TensorFlowCluster`.
    - JAX: selects the CPU collectives implementation (gloo) unless another one
      was chosen, then `keras.distribution.initialize()` from the
      `KERAS_DISTRIBUTION_*` variables (`jax.distributed.initialize`); returns
      a `JaxCluster`.

    It waits up to `timeout` seconds for the other workers. TensorFlow: until
    every worker's address answers, else `WorkersNotJoinedError` names the
    workers not reached and their addresses. JAX: JAX's own wait, which
    cannot be interrupted, so after `timeout` the process prints the same
    kind of message and ends with exit status 1 (JAX itself aborts at 300 s:
    the timeout is at most 290 s). An address of this host that another
    process holds is refused before anything starts.

    Call it at the start of the program, before anything touches the devices
    (device queries, tensors, datasets, models). The runtime starts once per
    process: calling it again returns the same cluster at once.

    Args:
        timeout: seconds to wait for the other workers.

    Returns:
        The `Cluster` of the workers.

    Raises:
        ValueError: the cluster variables are missing or inconsistent, or
            the backend is torch.
        OSError: this worker's address (TensorFlow) or the coordinator's
            (JAX, worker 0) is in use on this host.
        WorkersNotJoinedError: (TensorFlow) a worker did not answer in time.
        RuntimeError: the devices were already in use.

    Example:

    >>> cluster = initialize_multi_worker()  # first thing in the program
    >>> if cluster.is_chief:
    ...     print("I write the outputs")
    """
    if not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds. Received: {timeout!r}")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _join_tensorflow(timeout)
    if backend == "jax":
        return _join_jax(timeout)
    raise ValueError(
        f"The {backend} backend trains on one device here (Keras has no data-parallel "
        "fit for it); use KERAS_BACKEND=jax or tensorflow for several hosts."
    )


def _join_tensorflow(timeout: float) -> TensorFlowCluster:
    if not _tensorflow_joined():
        index, addresses = _tf_cluster_from_environment()
        _wait_for_tf_peers(index, addresses, timeout)
    return _tensorflow_cluster()


@functools.cache
def _tensorflow_cluster() -> TensorFlowCluster:
    """This process's TensorFlow cluster, made once: TensorFlow configures its
    collective operations once per process (a failed attempt is not kept)."""
    index, addresses = _tf_cluster_from_environment()
    try:
        strategy = _multi_worker_strategy()
    except RuntimeError as error:
        raise RuntimeError(
            "TensorFlow was already initialised in this process, so its collective "
            f"operations can no longer be configured ({error}). {_TOUCHED}"
        ) from error
    return TensorFlowCluster(strategy, index, len(addresses))


def _tensorflow_joined() -> bool:
    return _tensorflow_cluster.cache_info().currsize > 0


def _join_jax(timeout: float) -> JaxCluster:
    import jax

    if jax.distributed.is_initialized():
        return JaxCluster()
    index, count, coordinator = _jax_cluster_from_environment()
    if index == 0:  # the coordinator's service will listen there
        _listen_on(coordinator, index).close()
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
    return JaxCluster()


def _joined_cluster() -> Cluster:
    """The cluster this process joined (`initialize_multi_worker`), else a process alone.

    Asks the runtime, so it touches no device before the cluster starts.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow" and _tensorflow_joined():
        return _tensorflow_cluster()
    if backend == "jax":
        import jax

        if jax.distributed.is_initialized():
            return JaxCluster()
    return Cluster()


def num_workers() -> int:
    """Number of workers (hosts/processes) of the running cluster; 1 without one."""
    return _joined_cluster().count


def worker_index() -> int:
    """This worker's index, `0 .. num_workers() - 1`; 0 without a cluster.

    On TensorFlow, a `chief` task of `TF_CONFIG` is worker 0 and the `worker`
    tasks follow it; on JAX it is `jax.process_index()`.
    """
    return _joined_cluster().index


def is_chief() -> bool:
    """Whether this worker writes the shared outputs (worker 0; `True` without a cluster)."""
    return _joined_cluster().is_chief


@contextlib.contextmanager
def data_parallel(devices: int | None = None, multi_worker: bool = False) -> Iterator[int]:
    """Context in which to build, compile and fit a data-parallel model.

    - JAX: `keras.distribution.DataParallel` over the chosen local devices;
      with `multi_worker`, over the chosen devices of every worker (after
      `initialize_multi_worker()`), each worker feeding its own share of the
      global batch (see `Cluster.input_batch_size`).
    - TensorFlow: `tf.distribute.MirroredStrategy` over the chosen GPUs (or
      logical CPUs), or with `multi_worker` the
      `tf.distribute.MultiWorkerMirroredStrategy` of `TF_CONFIG` (every GPU of
      every worker).
    - torch: one device; asking for more raises `ValueError`.

    The global batch given to `fit` is split evenly across the devices. It is
    `Cluster.data_parallel` of `initialize_multi_worker()` (with
    `multi_worker`) or of `Cluster()`.

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
    cluster = initialize_multi_worker() if multi_worker else Cluster()
    with cluster.data_parallel(devices) as replicas:
        yield replicas


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
def _keras_distribution(distribution: keras.distribution.Distribution) -> Iterator[None]:
    """Keras' global distribution set to `distribution`, restored after."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def _local_jax_data_parallel(devices: int | None) -> Iterator[int]:
    pool = keras.distribution.list_devices()
    chosen = _choose(pool, devices, pool[0].split(":")[0].lower())
    if len(chosen) == 1:
        yield 1
        return
    with _keras_distribution(keras.distribution.DataParallel(devices=chosen)):
        yield len(chosen)


@contextlib.contextmanager
def _local_mirrored(devices: int | None) -> Iterator[int]:
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    chosen = _choose(gpus, devices, "gpu") if gpus else _choose(cpus, devices, "cpu")
    if len(chosen) == 1:
        yield 1
        return
    strategy = tf.distribute.MirroredStrategy(devices=chosen)
    with strategy.scope():
        yield strategy.num_replicas_in_sync


@contextlib.contextmanager
def _one_device(devices: int | None) -> Iterator[int]:
    """A backend without Keras data parallelism (torch): one device, or an error."""
    if (devices or 1) > 1:
        raise ValueError(
            f"The {keras.backend.backend()} backend trains on one device here (Keras has "
            "no data-parallel training for it); use the jax or tensorflow backend for "
            f"several devices. Received: devices={devices}."
        )
    yield 1
