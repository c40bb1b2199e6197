"""The benchmarking library, in-process on the active backend (tiny shapes, no timing claims)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import benchmarks
from benchmarks import worker
from keras_sge.applications import variants
from keras_sge.layers import SpatialGroupEnhance
from tests.helpers import BACKEND, subprocess_env
from tests.reference import sge_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_time_function_counts_repeats_and_validates():
    calls = []
    timing = benchmarks.time_function(
        lambda x: calls.append(1) or x * x, keras.ops.ones((4, 4)), warmup=2, repeats=3
    )
    assert len(calls) == 5
    assert len(timing.seconds) == 3
    assert timing.minimum <= timing.median
    assert set(timing.to_dict()) == {"median_s", "min_s", "repeats"}
    with pytest.raises(ValueError, match="repeats"):
        benchmarks.time_function(lambda: None, repeats=0)


def test_compiled_functions_compute_the_layer_and_its_gradients(rng):
    x = rng.normal(size=(2, 6, 5, 16)).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    layer = SpatialGroupEnhance(4)
    layer.build(x.shape)
    gamma, beta = rng.normal(size=(2, 4)).astype("float32")
    layer.set_weights([gamma, beta])

    forward = benchmarks.forward_function(layer)
    y = keras.ops.convert_to_numpy(forward(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(y, sge_reference(x, gamma, beta, 4), rtol=1e-5, atol=1e-5)

    grads = benchmarks.forward_backward_function(layer)(
        keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(dy)
    )
    dx, dgamma, dbeta = (keras.ops.convert_to_numpy(g) for g in grads)
    assert dx.shape == x.shape and dgamma.shape == (4,) and dbeta.shape == (4,)
    # d/dbeta of sum(dy * y) by central differences of the float64 reference.
    step = 1e-3
    for k in range(4):
        shift = np.zeros(4)
        shift[k] = step
        plus = np.sum(dy * sge_reference(x, gamma, beta + shift, 4))
        minus = np.sum(dy * sge_reference(x, gamma, beta - shift, 4))
        np.testing.assert_allclose(dbeta[k], (plus - minus) / (2 * step), rtol=2e-3, atol=2e-3)


def test_benchmark_layer_reports_ratios():
    result = benchmarks.benchmark_layer(SpatialGroupEnhance(8), (2, 8, 8, 32), warmup=1, repeats=2)
    for key in ("multiply", "forward", "forward_backward"):
        assert result[key]["repeats"] == 2 and result[key]["median_s"] > 0
    assert result["forward_ratio"] == pytest.approx(
        result["forward"]["median_s"] / result["multiply"]["median_s"]
    )


@pytest.fixture
def definition_calls(monkeypatch):
    """Counts the calls of SGE's definition (the kernel switch looks it up per call)."""
    from keras_sge.ops import sge

    calls = []
    definition = sge.definition

    def counted(*args, **kwargs):
        calls.append(1)
        return definition(*args, **kwargs)

    monkeypatch.setattr(sge, "definition", counted)
    return calls


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_benchmark_layer_times_the_definition_beside_the_kernel(definition_calls, data_format):
    # On the CPU every backend has a kernel for both layouts: only the
    # definition variant runs the definition.
    shape = (2, 8, 8, 32) if data_format == "channels_last" else (2, 32, 8, 8)
    layer = SpatialGroupEnhance(8, data_format=data_format)
    benchmarks.benchmark_layer(layer, shape, warmup=1, repeats=2)
    assert not definition_calls
    result = benchmarks.benchmark_layer(layer, shape, warmup=1, repeats=2, with_definition=True)
    assert definition_calls
    for key in ("forward", "forward_backward"):
        assert result["definition"][key]["repeats"] == 2
        assert result["definition"][f"{key}_ratio"] == pytest.approx(
            result["definition"][key]["median_s"] / result["multiply"]["median_s"]
        )


def test_benchmark_keras_model_trains_and_reports_throughput(rng):
    inputs = keras.Input((8, 8, 16))
    x = SpatialGroupEnhance(4)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = rng.normal(size=(4, 8, 8, 16)).astype("float32")
    labels = np.array([0, 1, 2, 1], "int32")
    before = [w.copy() for w in model.get_weights()]
    result = benchmarks.benchmark_keras_model(model, images, labels, warmup=1, repeats=2)
    assert result["inference"]["images_per_s"] > 0
    assert result["training"]["images_per_s"] > 0
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights())), (
        "the training steps did not update the model"
    )


@pytest.mark.skipif(BACKEND != "torch", reason="plain PyTorch module; torch pass only")
def test_benchmark_torch_module_reports_throughput(rng):
    import torch

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    images = rng.normal(size=(2, 3, 4, 4)).astype("float32")
    result = benchmarks.benchmark_torch_module(
        module, images, np.array([1, 4]), warmup=1, repeats=2
    )
    assert result["inference"]["images_per_s"] > 0
    assert result["training"]["images_per_s"] > 0


@pytest.mark.skipif(BACKEND != "torch", reason="plain PyTorch module; torch pass only")
@pytest.mark.parametrize("autocast_dtype", ["bfloat16", "float16"])
def test_benchmark_torch_module_runs_in_the_mixed_precision_asked_for(rng, autocast_dtype):
    import torch

    linear = torch.nn.Linear(3 * 4 * 4, 5)
    module = torch.nn.Sequential(torch.nn.Flatten(), linear)
    seen = []
    linear.register_forward_hook(lambda _, __, output: seen.append(output.dtype))
    before = linear.weight.detach().clone()
    images = rng.normal(size=(2, 3, 4, 4)).astype("float32")
    benchmarks.benchmark_torch_module(
        module,
        images,
        np.array([1, 4]),
        warmup=1,
        repeats=2,
        device="cpu",
        autocast_dtype=autocast_dtype,
    )
    assert set(seen) == {getattr(torch, autocast_dtype)}
    assert linear.weight.dtype == torch.float32
    assert not torch.equal(before, linear.weight), "the training steps did not update it"


def test_resolve_data_format():
    assert worker.resolve_data_format("auto", "torch") == "channels_first"
    assert worker.resolve_data_format("auto", "jax") == "channels_last"
    assert worker.resolve_data_format("channels_first", "jax") == "channels_first"
    with pytest.raises(ValueError, match="NCHW"):
        worker.resolve_data_format("NCHW", "jax")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(backends=("theano",)), "backends"),
        (dict(layer_shape=(2, 8, 8)), "layer_shape"),
        (dict(layer_shape=(2, 8, 8, 30), groups=4), "divisible"),
        (dict(mixed_precision="float8"), "mixed_precision"),
        (dict(image_size=16), "image_size"),
        (dict(depth=20), "depth"),
        (dict(timeout=0), "timeout"),
        (dict(min_seconds=-1), "min_seconds"),
    ],
)
def test_compare_config_rejects_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        benchmarks.CompareConfig(output_dir=str(tmp_path), **kwargs)


@pytest.mark.backend_independent
def test_compare_backends_reports_missing_and_timed_out_backends(tmp_path, monkeypatch):
    # Neither stops the run: each becomes its entry's status, and the table,
    # the JSON and the chart are still written.
    monkeypatch.setattr(benchmarks.compare, "backend_installed", lambda name: name != "tensorflow")
    config = benchmarks.quick_config(
        str(tmp_path), backends=("tensorflow", "jax"), layer_only=True, timeout=0.5
    )
    report = benchmarks.compare_backends(config)
    assert [(r["backend"], r["status"]) for r in report["results"]] == [
        ("tensorflow", "not installed"),
        ("jax", "timed out after 0.5 s"),
    ]
    assert report["agreement"] == {}
    table = benchmarks.format_table(report)
    assert "not installed" in table and "timed out after 0.5 s" in table
    benchmarks.save_json(report, str(tmp_path / "comparison.json"))
    benchmarks.plot_report(report, str(tmp_path / "comparison.png"))
    assert (tmp_path / "comparison.png").stat().st_size > 0


def test_compare_depths_are_the_builders():
    assert benchmarks.RESNET_DEPTHS == tuple(sorted(variants.ARCHITECTURES))


def test_quick_config_uses_resnet18_unless_told_otherwise(tmp_path):
    quick = benchmarks.quick_config(str(tmp_path))
    assert (quick.depth, quick.batch_size, quick.image_size) == (18, 4, 64)
    assert benchmarks.quick_config(str(tmp_path), depth=50).depth == 50


def test_run_worker_measures_the_networks_and_saves_outputs(tmp_path, definition_calls):
    # Tiny ResNet18 at 64 px (the smallest size whose last stage is 2x2).
    rng = np.random.default_rng(0)
    np.save(tmp_path / worker.LAYER_INPUT, rng.normal(size=(2, 6, 6, 64)).astype("float32"))
    np.save(tmp_path / worker.IMAGES, rng.normal(size=(2, 64, 64, 3)).astype("float32"))
    np.save(tmp_path / worker.LABELS, np.array([3, 7], "int32"))
    spec = worker.WorkerSpec(
        work_dir=str(tmp_path),
        outputs_path=str(tmp_path / "outputs.npz"),
        depth=18,
        classes=10,
        create_weights=True,
        training=False,
        with_definition=True,
        warmup=0,
        repeats=1,
    )
    result = worker.run_worker(spec)
    assert result["backend"] == BACKEND and result["status"] == "ok"
    assert (tmp_path / worker.SGE_RESNET_WEIGHTS).exists()
    models = result["models"]
    assert models["depth"] == 18 and models["batch_size"] == 2
    assert models["image_size"] == 64
    for key in ("sge_resnet", "resnet", "sge_resnet_definition"):
        assert models[key]["inference"]["images_per_s"] > 0
    assert set(models["sge_overhead_percent"]) == {"inference"}
    assert set(models["definition_overhead_percent"]) == {"inference"}
    assert definition_calls and "definition" in result["layer"]
    with np.load(tmp_path / "outputs.npz") as outputs:
        assert outputs["layer"].shape == (2, 6, 6, 64)
        assert outputs["sge_resnet"].shape == (2, 10)
        assert np.all(np.isfinite(outputs["sge_resnet"]))
    # The saved layer weights are the random ones the outputs were made with.
    reloaded = keras.Model(*_sge_holder())
    reloaded.load_weights(str(tmp_path / worker.LAYER_WEIGHTS))
    gamma, beta = reloaded.get_layer("sge").get_weights()
    x = np.load(tmp_path / worker.LAYER_INPUT)
    with np.load(tmp_path / "outputs.npz") as outputs:
        np.testing.assert_allclose(
            outputs["layer"], sge_reference(x, gamma, beta, 64), rtol=1e-5, atol=1e-5
        )
    if BACKEND == "torch":
        reference = result["torch_reference"]
        assert reference["status"] == "ok", reference
        assert reference["sge_resnet"]["inference"]["keras_slowdown"] > 0


def _sge_holder():
    inputs = keras.Input((6, 6, 64))
    layer = SpatialGroupEnhance(64, data_format="channels_last", name="sge")
    return inputs, layer(inputs)


@pytest.mark.backend_independent
def test_compare_backends_program_quick_layer_only(tmp_path):
    # Spawns every backend itself, so it runs once (in the tensorflow pass).
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "benchmarks.compare_backends",
        "--quick",
        "--layer-only",
        "--with-definition",
        "--output-dir",
        str(out),
        "--layer-shape",
        "2",
        "8",
        "8",
        "64",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--min-seconds",
        "0.01",
        "--timeout",
        "300",
    ]
    process = subprocess.run(
        command,
        env=subprocess_env("tensorflow"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "SGE layer" in process.stdout and "agreement" in process.stdout
    assert "jax definition" in process.stdout
    report = json.loads((out / "comparison.json").read_text())
    assert (out / "comparison.png").stat().st_size > 0
    assert [r["status"] for r in report["results"]] == ["ok"] * 3, report["results"]
    assert report["agreement"]["reference_backend"] == "tensorflow"
    assert (report["config"]["min_seconds"], report["config"]["timeout"]) == (0.01, 300)
    for result in report["results"]:
        assert report["agreement"][result["backend"]]["layer"]["max_abs_diff"] < 1e-5
        assert result["layer"]["input_shape"] in ([2, 8, 8, 64], [2, 64, 8, 8])
        assert result["layer"]["forward_ratio"] > 0
        assert result["layer"]["definition"]["forward_backward_ratio"] > 0
