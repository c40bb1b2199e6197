"""Data-parallel setup per Keras backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras


def has_accelerator() -> bool:
    """Whether the current Keras backend sees a GPU or TPU."""
    backend = keras.backend.backend()
    if backend in ("jax", "tensorflow"):
        return not keras.distribution.list_devices()[0].lower().startswith("cpu")
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


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


@contextlib.contextmanager
def data_parallel(devices: int | None = None, multi_worker: bool = False) -> Iterator[int]:
    """Context in which to build, compile and fit a data-parallel model.

    - JAX: `keras.distribution.DataParallel` over the chosen local devices
      (after `keras.distribution.initialize()` when `multi_worker`; every
      process then sees the global device list).
    - TensorFlow: `tf.distribute.MirroredStrategy` over the chosen GPUs (or
      logical CPUs), or `tf.distribute.MultiWorkerMirroredStrategy` configured
      from `TF_CONFIG` when `multi_worker`.
    - torch: one device; asking for more raises `ValueError`.

    The global batch given to `fit` is split evenly across the devices.

    Args:
        devices: how many devices to use; `None` means every GPU/TPU, or one
            CPU device when there is no accelerator.
        multi_worker: train across several hosts.

    Yields:
        The number of replicas the global batch is split across.

    Example:

    >>> with data_parallel() as replicas:
    ...     model = build_model()
    ...     model.compile(...)
    ...     model.fit(dataset)
    """
    backend = keras.backend.backend()
    if backend == "jax":
        if multi_worker:
            keras.distribution.initialize()
        pool = keras.distribution.list_devices()
        kind = pool[0].split(":")[0].lower()
        chosen = _choose(pool, devices, kind)
        if len(chosen) == 1 and not multi_worker:
            yield 1
            return
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=chosen))
        try:
            yield len(chosen)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        import tensorflow as tf

        if multi_worker:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
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
