"""Throughput of Keras models (inference, training step) and of plain PyTorch ones."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import keras
import numpy as np

from benchmarks.timing import run_definition_only, time_alternating, time_function


def compile_for_training(model: keras.Model, torch_compile: bool = False) -> None:
    """Compiles `model` with the paper's optimizer and a logits loss.

    `jit_compile` is Keras' default (XLA on JAX, and on TensorFlow where it
    sees a GPU, not on a machine with only CPUs; eager on PyTorch) unless
    `torch_compile` asks for `torch.compile` on PyTorch.

    Args:
        model: A classifier that outputs logits.
        torch_compile: On the torch backend, compile with `torch.compile`.
    """
    jit_compile = True if (torch_compile and keras.backend.backend() == "torch") else "auto"
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def benchmark_keras_model(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    **options: Any,
) -> dict[str, Any]:
    """Measures inference and training-step throughput of one compiled model.

    Args:
        model: A classifier with logits outputs; compiled here if it is not.
        images: One batch of inputs, in the model's data format.
        labels: Its integer labels.
        **options: As for `benchmark_keras_models`.

    Returns:
        A dict with `inference` (and `training`) timings, each with
        `median_s`, `min_s`, `repeats` and `images_per_s`.
    """
    return benchmark_keras_models({"model": model}, images, labels, **options)["model"]


def benchmark_keras_models(
    models: dict[str, keras.Model],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    warmup: int = 2,
    repeats: int = 5,
    min_seconds: float = 0.0,
    training: bool = True,
    torch_compile: bool = False,
    definition: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """Measures the throughput of several compiled models in alternating calls.

    Inference is `model.predict_on_batch` and a training step is
    `model.train_on_batch` (forward, backward, SGD update), both with the
    functions Keras compiles for `fit`/`predict`. Each round calls every
    model once (A, B, A, B, ...), so that their ratio sees the same load.

    Args:
        models: Name -> a classifier with logits outputs; compiled here if it is not.
        images: One batch of inputs, in the models' data format.
        labels: Its integer labels.
        warmup: Untimed rounds first (compilation happens there).
        repeats: Timed rounds; the median is reported.
        min_seconds: Minimum time spent on each measurement.
        training: Also time the training step.
        torch_compile: On the torch backend, compile with `torch.compile`.
        definition: Names of models whose calls run SGE as its definition
            (`keras_sge.backend.definition_only`) instead of the backend
            kernels; give them models of their own, whose functions are
            first traced there.

    Returns:
        Name -> a dict with `inference` (and `training`) timings, each with
        `median_s`, `min_s`, `repeats` and `images_per_s`.
    """
    for model in models.values():
        if not model.compiled:
            compile_for_training(model, torch_compile=torch_compile)
    batch = int(images.shape[0])
    x = keras.ops.convert_to_tensor(images)
    y = keras.ops.convert_to_tensor(labels)
    timed = dict(warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    kinds = {"inference": lambda model: (model.predict_on_batch, (x,))}
    if training:
        kinds["training"] = lambda model: (model.train_on_batch, (x, y))

    def call(kind, name):
        function, arguments = kinds[kind](models[name])
        return (run_definition_only(function) if name in definition else function), arguments

    results = {name: {} for name in models}
    for kind in kinds:
        timings = time_alternating({name: call(kind, name) for name in models}, **timed)
        for name, timing in timings.items():
            results[name][kind] = dict(timing.to_dict(), images_per_s=batch / timing.median)
    return results


def benchmark_torch_module(
    module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    warmup: int = 2,
    repeats: int = 5,
    min_seconds: float = 0.0,
    training: bool = True,
    device: str | None = None,
    autocast_dtype: str | None = None,
) -> dict[str, Any]:
    """Measures a plain `torch.nn.Module` classifier the same way.

    Inference runs in `eval()` mode under `torch.inference_mode()`; a
    training step is forward, cross-entropy, backward and an SGD (momentum
    0.9) update in `train()` mode. With `autocast_dtype`, both run under
    `torch.autocast` (PyTorch's mixed precision, the counterpart of Keras'
    `mixed_*` policies), and float16 training scales the loss with
    `torch.amp.GradScaler` as Keras' `LossScaleOptimizer` does.

    Args:
        module: A `torch.nn.Module` mapping NCHW images to logits.
        images: One batch of NCHW float32 images.
        labels: Its integer labels.
        warmup: Untimed calls first.
        repeats: Timed calls; the median is reported.
        min_seconds: Minimum time spent on each measurement.
        training: Also time the training step.
        device: Where to run (e.g. `"cuda"`); the module is moved there.
            `None` keeps the module's own device.
        autocast_dtype: `None` (float32), `"float16"` or `"bfloat16"`.

    Returns:
        The same structure as `benchmark_keras_model`.
    """
    import contextlib

    import torch

    if device is not None:
        module.to(device)
    placement = next(module.parameters()).device
    x = torch.as_tensor(images, device=placement)
    y = torch.as_tensor(labels, dtype=torch.long, device=placement)
    batch = int(x.shape[0])

    def precision():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(placement.type, dtype=getattr(torch, autocast_dtype))

    def infer(x):
        with torch.inference_mode(), precision():
            return module(x)

    def sync_after(fn):
        def wrapped(*args):
            out = fn(*args)
            if placement.type == "cuda":
                torch.cuda.synchronize()
            return out

        return wrapped

    timed = dict(warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    results = {}
    module.eval()
    inference = time_function(sync_after(infer), x, **timed)
    results["inference"] = dict(inference.to_dict(), images_per_s=batch / inference.median)
    if training:
        module.train()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        scaler = torch.amp.GradScaler(placement.type, enabled=autocast_dtype == "float16")

        def train_step(x, y):
            optimizer.zero_grad(set_to_none=True)
            with precision():
                loss = loss_fn(module(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss.detach()

        step = time_function(sync_after(train_step), x, y, **timed)
        results["training"] = dict(step.to_dict(), images_per_s=batch / step.median)
        module.eval()
    return results
