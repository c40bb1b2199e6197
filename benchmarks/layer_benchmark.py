"""Times a layer's forward and forward+backward pass against an elementwise multiply."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from benchmarks.timing import compile_function, run_definition_only, time_alternating, time_function


def forward_function(layer: keras.layers.Layer, torch_compile: bool = False) -> Callable:
    """Returns a compiled `f(x) -> layer(x)` for the active backend.

    On JAX the layer's weights are passed to `stateless_call` (not baked in as
    constants); on PyTorch the call runs under `torch.no_grad()`.

    Args:
        layer: A built layer.
        torch_compile: Use `torch.compile` on the torch backend.

    Returns:
        A function of one backend tensor.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def jax_forward(trainable, non_trainable, x):
            return layer.stateless_call(trainable, non_trainable, x)[0]

        return lambda x: jax_forward(trainable, non_trainable, x)
    if backend == "torch":
        import torch

        call = compile_function(layer, torch_compile=torch_compile)

        def torch_forward(x):
            with torch.no_grad():
                return call(x)

        return torch_forward
    return compile_function(lambda x: layer(x))


def forward_backward_function(layer: keras.layers.Layer, torch_compile: bool = False) -> Callable:
    """Returns a compiled `f(x, dy) -> (dx, *dweights)`: one forward+backward.

    The backward pass is the vector-Jacobian product of the layer output with
    the cotangent `dy`, taken with respect to the input and every trainable
    weight, as in a training step.

    Args:
        layer: A built layer.
        torch_compile: Use `torch.compile` on the torch backend.

    Returns:
        A function of two backend tensors of the layer's input/output shape.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def jax_forward_backward(trainable, x, dy):
            def forward(trainable, x):
                return layer.stateless_call(trainable, non_trainable, x)[0]

            _, vjp = jax.vjp(forward, trainable, x)
            d_trainable, dx = vjp(dy)
            return (dx, *d_trainable)

        return lambda x, dy: jax_forward_backward(trainable, x, dy)
    if backend == "tensorflow":
        import tensorflow as tf

        def tf_forward_backward(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            sources = [x, *layer.trainable_variables]
            return tape.gradient(y, sources, output_gradients=dy)

        return compile_function(tf_forward_backward)
    if backend == "torch":
        import torch

        call = compile_function(layer, torch_compile=torch_compile)
        weights = [v.value for v in layer.trainable_variables]

        def torch_forward_backward(x, dy):
            x = x.detach().requires_grad_(True)
            y = call(x)
            return torch.autograd.grad(y, [x, *weights], grad_outputs=dy)

        return torch_forward_backward
    raise ValueError(f"Unsupported Keras backend: {backend!r}")


def benchmark_layer(
    layer: keras.layers.Layer,
    input_shape: Sequence[int],
    *,
    dtype: str = "float32",
    warmup: int = 3,
    repeats: int = 20,
    min_seconds: float = 0.0,
    torch_compile: bool = False,
    with_definition: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Times `layer` forward and forward+backward next to `x * x`.

    The three timings run in this process on the same input, so their ratios
    cancel most of the machine's speed and load.

    Args:
        layer: The layer to time; built here if needed.
        input_shape: Full input shape, batch included.
        dtype: Input dtype.
        warmup: Untimed calls before timing (compilation happens there).
        repeats: Timed calls per measurement; the median is reported.
        min_seconds: Minimum time spent on each measurement.
        torch_compile: Use `torch.compile` on the torch backend.
        with_definition: Also time the layer with SGE's definition in place
            of the backend kernels (`keras_sge.backend.definition_only`),
            each pass alternating with the kernels' in the same rounds.
        seed: Seed of the random input.

    Returns:
        A dict with `multiply`, `forward` and `forward_backward` timings
        (each a dict with `median_s`, `min_s`, `repeats`) and the ratios
        `forward_ratio` and `forward_backward_ratio` of the medians to the
        multiply's median; with `with_definition`, also `definition`: the
        same timings and ratios of the definition.

    Example:

    >>> from keras_sge.layers import SpatialGroupEnhance
    >>> result = benchmark_layer(SpatialGroupEnhance(4), (2, 8, 8, 16), repeats=2)
    >>> sorted(result)[:2]
    ['forward', 'forward_backward']
    """
    input_shape = tuple(int(d) for d in input_shape)
    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(rng.standard_normal(input_shape, dtype=np.float32), dtype=dtype)
    dy = keras.ops.convert_to_tensor(
        rng.standard_normal(input_shape, dtype=np.float32), dtype=dtype
    )
    if not layer.built:
        layer.build(input_shape)

    timed = dict(warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    multiply = time_function(
        compile_function(lambda t: t * t, torch_compile=torch_compile), x, **timed
    )
    passes = {
        "forward": (forward_function, (x,)),
        "forward_backward": (forward_backward_function, (x, dy)),
    }
    variants = ("kernel", "definition") if with_definition else ("kernel",)
    timings = {variant: {} for variant in variants}
    for name, (build, arguments) in passes.items():
        # Each variant compiles a function of its own, traced on its first call.
        calls = {"kernel": (build(layer, torch_compile), arguments)}
        if with_definition:
            calls["definition"] = (run_definition_only(build(layer, torch_compile)), arguments)
        for variant, timing in time_alternating(calls, **timed).items():
            timings[variant][name] = timing

    def summary(timed_passes):
        return {
            **{name: timing.to_dict() for name, timing in timed_passes.items()},
            **{f"{name}_ratio": t.median / multiply.median for name, t in timed_passes.items()},
        }

    result = {
        "input_shape": list(input_shape),
        "dtype": dtype,
        "multiply": multiply.to_dict(),
        **summary(timings["kernel"]),
    }
    if with_definition:
        result["definition"] = summary(timings["definition"])
    return result
