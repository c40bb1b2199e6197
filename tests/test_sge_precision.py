"""SGE's precision against float64, and its backend kernels against the definition.

The yardstick is the authors' formulation of SGE in float32 under torch
autograd: on the same inputs, the layer's output and gradients (input, gamma,
beta) may be at most twice as far from float64 as that module's, on every
backend, in both layouts, eagerly and compiled (and on TensorFlow in a `tf.function`
without XLA, as `model.fit` runs on the CPU).

"As far" is the root-mean-square error over every element of four random
inputs per case. The largest error of a single element of one input is
luck: on JAX, whose sums are as careful as torch's, it ranged from 0.2x to
3.9x the authors' module's across seeds.
"""

import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from keras_sge import backend
from keras_sge.backend import jax as jax_backend
from keras_sge.backend import torch as torch_backend
from keras_sge.layers import SpatialGroupEnhance
from keras_sge.ops import spatial_group_enhance
from keras_sge.ops.sge import definition, sum_over_positions
from tests.helpers import BACKEND, subprocess_env

torch = pytest.importorskip("torch")

FORMATS = ("channels_last", "channels_first")


def authors_sge(x, gamma, beta, groups):
    """The authors' SGE formulation on an NCHW torch tensor (any float dtype)."""
    n, c, h, w = x.shape
    grouped = x.reshape(n * groups, -1, h, w)
    similarity = (grouped * grouped.mean(dim=(2, 3), keepdim=True)).sum(dim=1, keepdim=True)
    t = similarity.view(n * groups, -1)
    t = t - t.mean(dim=1, keepdim=True)
    t = t / (t.std(dim=1, keepdim=True) + 1e-5)
    t = t.view(n, groups, h, w) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    gate = torch.sigmoid(t.view(n * groups, 1, h, w))
    return (grouped * gate).reshape(n, c, h, w)


def authors_outputs(x_nchw, gamma, beta, dy_nchw, groups, dtype):
    """y, dx, d_gamma, d_beta of `authors_sge` under autograd, as float64 NumPy."""
    x, gamma, beta = (
        torch.tensor(v, dtype=dtype, requires_grad=True) for v in (x_nchw, gamma, beta)
    )
    y = authors_sge(x, gamma, beta, groups)
    grads = torch.autograd.grad(y, [x, gamma, beta], torch.tensor(dy_nchw, dtype=dtype))
    return [t.detach().double().numpy() for t in (y, *grads)]


def ill_conditioned(rng, shape_nchw, groups, small_groups=8):
    """Random normal x in which a few groups have spatial means of 2.5e-5 to 3e-3.

    Their similarity's spread then comes close to epsilon, so t, and above all
    the input gradient, amplify rounding.
    """
    x = rng.normal(size=shape_nchw)
    n, c = shape_nchw[:2]
    per_group = c // groups
    chosen = rng.choice(groups, size=small_groups, replace=False)
    for k, mean in zip(chosen, np.geomspace(2.5e-5, 3e-3, small_groups)):
        block = x[:, k * per_group : (k + 1) * per_group]
        block -= block.mean(axis=(2, 3), keepdims=True)
        block += mean
    return x.astype("float32")


def random_case(rng, shape_nchw, groups, conditioning):
    if conditioning == "ill":
        x = ill_conditioned(rng, shape_nchw, groups)
    else:
        x = rng.normal(size=shape_nchw).astype("float32")
    gamma = rng.normal(scale=1.5, size=groups).astype("float32")
    beta = rng.normal(size=groups).astype("float32")
    dy = rng.normal(size=shape_nchw).astype("float32")
    return x, gamma, beta, dy


def _nhwc(t):
    return np.transpose(t, (0, 2, 3, 1))


def op_outputs(function, x_nchw, gamma, beta, dy_nchw, groups, data_format, mode):
    """y, dx, d_gamma, d_beta of an SGE kernel on the active backend, NCHW float64 NumPy.

    `function` has the signature of `keras_sge.ops.spatial_group_enhance`.
    """
    to_layout = (lambda t: t) if data_format == "channels_first" else _nhwc
    x, dy = to_layout(x_nchw), to_layout(dy_nchw)

    def sge(x, gamma, beta):
        return function(x, gamma, beta, groups=groups, data_format=data_format)

    y, *grads = _value_and_grads(sge, x, gamma, beta, dy, mode)
    dx, d_gamma, d_beta = (np.asarray(ops.convert_to_numpy(t), np.float64) for t in grads)
    y = np.asarray(ops.convert_to_numpy(y), np.float64)
    if data_format == "channels_last":
        y, dx = (np.transpose(t, (0, 3, 1, 2)) for t in (y, dx))
    return [y, dx, d_gamma, d_beta]


def _value_and_grads(sge, x, gamma, beta, dy, mode):
    """(y, dx, d_gamma, d_beta) of `sge(x, gamma, beta)` with cotangent dy.

    `mode` is "eager", "compiled" (XLA on TensorFlow and JAX, torch.compile),
    or on TensorFlow "function" (`tf.function` without XLA).
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def step(x, gamma, beta, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, gamma, beta])
                y = sge(x, gamma, beta)
            return (y, *tape.gradient(y, [x, gamma, beta], dy))

        if mode != "eager":
            step = tf.function(step, jit_compile=mode == "compiled")
        return step(*(tf.constant(t) for t in (x, gamma, beta, dy)))
    if BACKEND == "jax":
        import jax

        def step(x, gamma, beta, dy):
            y, vjp = jax.vjp(sge, x, gamma, beta)
            return (y, *vjp(dy))

        if mode == "compiled":
            step = jax.jit(step)
        return step(x, gamma, beta, dy)
    x, gamma, beta = (torch.tensor(t, requires_grad=True) for t in (x, gamma, beta))
    call = torch.compile(sge) if mode == "compiled" else sge
    y = call(x, gamma, beta)
    grads = torch.autograd.grad(y, [x, gamma, beta], torch.tensor(dy))
    return (y.detach(), *grads)


def pooled_errors(gots, wants):
    """The RMS error (up to a constant factor) of each of y, dx, d_gamma, d_beta.

    `gots` and `wants` hold one (y, dx, d_gamma, d_beta) per input; the
    squared errors of all inputs are pooled.
    """
    return np.sqrt(
        sum(
            np.array([np.sum(np.square(g - w)) for g, w in zip(got, want)])
            for got, want in zip(gots, wants)
        )
    )


CASES = {
    # The ill-conditioned case: one channel per group, eight groups with
    # spatial means of 2.5e-5 to 3e-3.
    "ill_conditioned_1_channel": ("ill", (2, 64, 56, 56), 64),
    # The same with four channels per group.
    "ill_conditioned_4_channels": ("ill", (2, 256, 28, 28), 64),
    "normal": ("normal", (2, 128, 24, 24), 32),
}
SEEDS = (0, 1, 2, 3)
QUANTITIES = ("y", "dx", "d_gamma", "d_beta")


def _cases(name):
    """The four inputs of case `name`, each as (x, gamma, beta, dy, groups)."""
    conditioning, shape, groups = CASES[name]
    return [
        (*random_case(np.random.default_rng(seed), shape, groups, conditioning), groups)
        for seed in SEEDS
    ]


@pytest.fixture(scope="module")
def references():
    """Per case: the float64 outputs per input and the authors' float32 RMS error."""
    cache = {}

    def get(name):
        if name not in cache:
            inputs = _cases(name)
            wants = [authors_outputs(*case, torch.float64) for case in inputs]
            gots = [authors_outputs(*case, torch.float32) for case in inputs]
            cache[name] = wants, pooled_errors(gots, wants)
        return cache[name]

    return get


def outputs_for_case(name, data_format, mode, function=spatial_group_enhance):
    """The (y, dx, d_gamma, d_beta) of `function` on each input of case `name`."""
    return [
        op_outputs(function, x, gamma, beta, dy, groups, data_format, mode)
        for x, gamma, beta, dy, groups in _cases(name)
    ]


# torch runs eagerly, as Keras runs torch models by default; torch.compile
# takes minutes on a small CPU.
MODES = {
    "tensorflow": ("eager", "function", "compiled"),
    "jax": ("eager", "compiled"),
    "torch": ("eager",),
}[BACKEND]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_as_close_to_float64_as_the_authors_float32(references, case, data_format, mode):
    wants, authors = references(case)
    errors = pooled_errors(outputs_for_case(case, data_format, mode), wants)
    for name, error, reference in zip(QUANTITIES, errors, authors):
        assert error <= 2.0 * reference, (
            f"{name}: {error / reference:.2f}x the authors' float32 error from float64"
        )


# Where the backend kernels run: TensorFlow outside XLA (eagerly, and in a
# `tf.function`, where the kernel compiles the definition with XLA), torch
# eagerly, JAX compiled.
KERNEL_MODES = {
    "tensorflow": ("eager", "function"),
    "jax": ("compiled",),
    "torch": ("eager",),
}[BACKEND]
# Each may be twice as far from float64 as the authors' float32 module (the
# bound above), so they may differ by four times that.
KERNEL_TOLERANCE = 4.0
KERNELS = {
    data_format: kernel
    for data_format, kernel in backend.select_kernels(BACKEND).items()
    if kernel is not definition
}


@pytest.mark.parametrize("mode", KERNEL_MODES)
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_backend_kernel_matches_definition(references, case, data_format, mode):
    if data_format not in KERNELS:
        pytest.skip(f"no {BACKEND} kernel for {data_format} on this device")
    _, authors = references(case)
    kernel = outputs_for_case(case, data_format, mode, KERNELS[data_format])
    plain = outputs_for_case(case, data_format, mode, definition)
    for name, error, reference in zip(QUANTITIES, pooled_errors(kernel, plain), authors):
        assert error <= KERNEL_TOLERANCE * reference, (
            f"{name}: kernel and definition differ by {error / reference:.2f}x the authors' error"
        )


def test_kernels_chosen_once_and_plain_forces_the_definition():
    for data_format in FORMATS:
        assert backend.select_kernels(BACKEND, plain=True)[data_format] is definition
        assert backend.kernel(data_format) is backend.kernel(data_format)
    # The kernels that measured faster than the definition: TensorFlow, JAX on
    # the CPU, torch on the CPU.
    jax_cpu = BACKEND == "jax" and jax_backend.on_cpu()
    torch_cpu = BACKEND == "torch" and torch_backend.on_cpu()
    expected = {"tensorflow": 2, "jax": 2 if jax_cpu else 0, "torch": 2 if torch_cpu else 0}
    expected = expected[BACKEND]
    assert len(KERNELS) == expected


def test_definition_only_holds_inside_the_block():
    selected = {f: backend.kernel(f) for f in FORMATS}
    with pytest.raises(RuntimeError, match="inside"):
        with backend.definition_only():
            assert {backend.kernel(f) for f in FORMATS} == {definition}
            raise RuntimeError("inside")
    assert {f: backend.kernel(f) for f in FORMATS} == selected


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow's kernel runs on every device")
def test_on_a_gpu_the_switch_picks_the_definition(monkeypatch):
    # On an H200 the JAX and torch kernels measured no faster than the
    # definition (docs/performance.md, "GPU"): they are for the CPU only.
    module = jax_backend if BACKEND == "jax" else torch_backend
    monkeypatch.setattr(module, "on_cpu", lambda: False)
    assert set(backend.select_kernels(BACKEND).values()) == {definition}


@pytest.mark.parametrize(
    "flags, off",
    [
        ("", False),
        ("--xla_cpu_experimental_ynn_fusion_type=", True),
        ("--xla_cpu_multi_thread_eigen=false --xla_cpu_experimental_ynn_fusion_type= ", True),
        ("--xla_cpu_experimental_ynn_fusion_type=-individual_dot", False),
        ("--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_ynn_fusion_type=x", False),
        ("--xla_cpu_experimental_ynn_fusion_typo=", False),
    ],
)
def test_the_jax_kernels_give_way_where_the_ynn_fusions_are_off(monkeypatch, flags, off):
    # The JAX kernels are arranged for XLA:CPU's YNNPACK fusions; without them
    # the definition ran faster (docs/performance.md).
    assert jax_backend.ynn_fusions_off(flags) is off
    if BACKEND == "jax" and jax_backend.on_cpu():
        monkeypatch.setenv("XLA_FLAGS", flags)
        chosen = set(backend.select_kernels("jax").values())
        assert (chosen == {definition}) is off


def test_plain_environment_variable_is_read_once_at_import(monkeypatch):
    # The switch reads KERAS_SGE_PLAIN when it is imported, not per call.
    script = (
        "import os, keras_sge; from keras_sge import backend; "
        "os.environ['KERAS_SGE_PLAIN'] = '0'; "
        "assert backend.PLAIN; "
        "assert {backend.kernel(f) for f in ('channels_last', 'channels_first')} "
        "== {keras_sge.ops.sge.definition}"
    )
    env = subprocess_env(BACKEND)
    env["KERAS_SGE_PLAIN"] = "1"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)


@pytest.mark.parametrize("data_format", FORMATS)
def test_tensorflow_kernel_inside_and_outside_xla(data_format):
    # In a traced function without XLA the kernel runs its forward and
    # backward passes compiled with XLA (channels_last's backward in two
    # halves); inside a function compiled with XLA they are part of that
    # compilation; layers alike share one compiled function per pass, each
    # with its own weights.
    if BACKEND != "tensorflow":
        pytest.skip("TensorFlow backend only")
    import tensorflow as tf

    from keras_sge.backend import tensorflow as tf_kernels

    rng = np.random.default_rng(5)
    # A shape no other test uses, so that this test traces the passes.
    shape = (2, 5, 9, 12) if data_format == "channels_last" else (2, 12, 5, 9)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    first, second = (SpatialGroupEnhance(4, data_format=data_format) for _ in range(2))
    for layer in (first, second):
        layer.build(x.shape)
        layer.set_weights([rng.normal(size=4).astype("float32") for _ in range(2)])

    def traced(x):
        with tf.GradientTape(persistent=True) as tape:
            outputs = [first(x), second(x)]
            losses = [tf.reduce_sum(y * y) for y in outputs]
        grads = [
            tape.gradient(loss, [layer.gamma.value, layer.beta.value])
            for loss, layer in zip(losses, (first, second))
        ]
        return outputs, grads

    eager_outputs, eager_grads = traced(x)
    passes = (
        tf_kernels._forward_with_xla,
        tf_kernels._similarity_gradient_with_xla,
        tf_kernels._view_gradient_with_xla,
        tf_kernels._whole_backward_with_xla,
    )
    traces = [f.experimental_get_tracing_count() for f in passes]
    for jit_compile in (False, True):
        outputs, grads = tf.function(traced, jit_compile=jit_compile)(x)
        for got, want in zip(outputs + sum(grads, []), eager_outputs + sum(eager_grads, [])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    counts = [f.experimental_get_tracing_count() - before for f, before in zip(passes, traces)]
    assert max(counts) <= 1
    # The forward pass and the backward pass of this layout were traced.
    assert counts[0] == 1 and sum(counts[1:]) == (2 if data_format == "channels_last" else 1)
    assert not np.allclose(outputs[0], outputs[1])


@pytest.mark.parametrize("data_format", FORMATS)
def test_nan_stays_in_its_own_group(data_format):
    # A NaN at one position and channel poisons its group of that sample
    # (through the group's mean) and nothing else.
    x = np.random.default_rng(3).normal(size=(2, 8, 5, 5)).astype("float32")
    x[0, 2, 1, 3] = np.nan  # channel 2: group 1 of 4
    x = x if data_format == "channels_first" else _nhwc(x)
    y = ops.convert_to_numpy(SpatialGroupEnhance(4, data_format=data_format)(x))
    y = y if data_format == "channels_first" else np.transpose(y, (0, 3, 1, 2))
    poisoned = np.zeros(y.shape, bool)
    poisoned[0, 2:4] = True
    assert np.all(np.isnan(y[0, 2:4]))
    assert np.all(np.isfinite(y[~poisoned]))


@pytest.mark.parametrize("seed", range(4))
def test_sum_over_positions_rounds_like_a_pairwise_sum(seed):
    """On sizes drawn from a seed (primes, odd sizes, 112x112), with a large common offset.

    A sum that adds the positions one after another would carry up to H*W
    roundings of the running total; a pairwise one about log2(H*W).
    """
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 64)), int(rng.integers(64, 4096)), 97 * 89, 112 * 112]
    for size in sizes:
        values = (1000.0 + rng.normal(size=(2, size, 3, 2))).astype("float32")
        got = ops.convert_to_numpy(sum_over_positions(ops.convert_to_tensor(values), 1))
        want = values.astype(np.float64).sum(axis=1, keepdims=True)
        relative = np.max(np.abs(got - want) / np.abs(want))
        bound = 2.0 * np.log2(size) * np.finfo(np.float32).eps
        assert relative <= bound, (size, relative / np.finfo(np.float32).eps)
