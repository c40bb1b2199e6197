"""Backend-aware timing helpers: compile, synchronise, warm up, take medians."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import keras


@dataclasses.dataclass
class Timing:
    """Wall-clock seconds of repeated calls of one function.

    Attributes:
        seconds: Every timed repeat, in seconds, in the order they ran.
    """

    seconds: list[float]

    @property
    def median(self) -> float:
        """The median of the repeats, in seconds."""
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        """The fastest repeat, in seconds."""
        return min(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.minimum,
            "repeats": len(self.seconds),
        }


def device_name() -> str:
    """Returns a short description of the device the active backend runs on.

    Returns:
        `"gpu: <name>"` when the backend sees a GPU, otherwise `"cpu"`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return "cpu"
        return f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"gpu: {torch.cuda.get_device_name(0)}"
        return "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"gpu: {details.get('device_name', gpus[0].name)}"
        return "cpu"
    return "unknown"


def synchronize(outputs: Any = None) -> None:
    """Waits until the backend has finished computing `outputs`.

    CPU execution of TensorFlow and PyTorch is synchronous already; JAX
    dispatches asynchronously everywhere, and GPUs do on every backend.

    Args:
        outputs: The (nested) result of the call being timed.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.block_until_ready(outputs)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.test.experimental.sync_devices()


def compile_function(fn: Callable, torch_compile: bool = False) -> Callable:
    """Compiles `fn` the way Keras compiles a model's functions by default.

    Args:
        fn: A function of backend tensors.
        torch_compile: On the torch backend, wrap `fn` in `torch.compile`
            (eager otherwise, which is what Keras uses by default).

    Returns:
        `jax.jit(fn)` on JAX; on TensorFlow `tf.function(fn)`, with XLA
        only where TensorFlow sees a GPU or other accelerator (Keras'
        `jit_compile="auto"` turns XLA off on machines with only CPUs); and
        `fn` itself (or `torch.compile(fn)`) on PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        accelerated = any(
            device.device_type != "CPU" for device in tf.config.list_physical_devices()
        )
        return tf.function(fn, jit_compile=accelerated, reduce_retracing=True)
    if backend == "torch" and torch_compile:
        import torch

        return torch.compile(fn)
    return fn


def run_definition_only(fn: Callable) -> Callable:
    """`fn` with every call run inside `keras_sge.backend.definition_only()`.

    A compiled function traced on its first call keeps the definition; an
    eager one runs it on every call.
    """
    from keras_sge.backend import definition_only

    def in_definition_only(*args):
        with definition_only():
            return fn(*args)

    return in_definition_only


def time_function(
    fn: Callable,
    *args: Any,
    warmup: int = 2,
    repeats: int = 10,
    min_seconds: float = 0.0,
) -> Timing:
    """Times `fn(*args)`, synchronising the device after every call.

    Args:
        fn: The function to time (already compiled).
        *args: Its arguments.
        warmup: Untimed calls first (the first one compiles).
        repeats: Timed calls (at least).
        min_seconds: Keep timing beyond `repeats` until this much time has
            been spent, to steady very short measurements.

    Returns:
        A `Timing` of the repeats.

    Example:

    >>> timing = time_function(lambda x: x * x, keras.ops.ones((8, 8)))
    >>> timing.median > 0
    True
    """
    timed = dict(warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    return time_alternating({"fn": (fn, args)}, **timed)["fn"]


def time_alternating(
    calls: dict[str, tuple[Callable, tuple]],
    *,
    warmup: int = 2,
    repeats: int = 10,
    min_seconds: float = 0.0,
) -> dict[str, Timing]:
    """Times several functions in turn, one call of each per round (A, B, A, B, ...).

    Alternating cancels most of a shared machine's drifting load from the
    comparison: every function sees the same stretch of it.

    Args:
        calls: Name -> (function, arguments), each already compiled.
        warmup: Untimed rounds first (the first one compiles).
        repeats: Timed rounds (at least).
        min_seconds: Keep timing rounds until this much time has passed.

    Returns:
        Name -> `Timing` of that function's calls.

    Example:

    >>> x = keras.ops.ones((8, 8))
    >>> timings = time_alternating({"square": (lambda t: t * t, (x,)),
    ...                             "sum": (lambda t: t + t, (x,))}, repeats=3)
    >>> sorted(timings)
    ['square', 'sum']
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be at least 1. Received: {repeats}")
    for _ in range(max(warmup, 0)):
        for fn, args in calls.values():
            synchronize(fn(*args))
    seconds = {name: [] for name in calls}
    started = time.perf_counter()
    while len(seconds[next(iter(calls))]) < repeats or time.perf_counter() - started < min_seconds:
        for name, (fn, args) in calls.items():
            begin = time.perf_counter()
            synchronize(fn(*args))
            seconds[name].append(time.perf_counter() - begin)
    return {name: Timing(values) for name, values in seconds.items()}
