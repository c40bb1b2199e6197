"""One backend's side of the backend comparison, run in its own process.

The parent (`benchmarks.compare`) writes the shared inputs and a
JSON spec, then runs `python -m benchmarks.worker SPEC RESULT`
once per backend with `KERAS_BACKEND` set. The first backend also creates
the shared weights; every later one loads them, so all backends compute with
the same numbers. The worker writes its timings to the RESULT JSON file and
its outputs (in channels_last layout) to an `.npz` file for the agreement.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import sys
from typing import Any

# Files shared by all workers, inside `WorkerSpec.work_dir`.
LAYER_INPUT = "layer_input.npy"
IMAGES = "images.npy"
LABELS = "labels.npy"
LAYER_WEIGHTS = "sge_layer.weights.h5"
SGE_RESNET_WEIGHTS = "sge_resnet.weights.h5"
RESNET_WEIGHTS = "resnet.weights.h5"


@dataclasses.dataclass
class WorkerSpec:
    """What one worker measures.

    Attributes:
        work_dir: Folder with the shared inputs and weights.
        outputs_path: Where to write this backend's outputs (`.npz`).
        groups: SGE groups of the layer benchmark.
        depth: ResNet depth of the network benchmark (50 for the paper).
        classes: Classifier width.
        data_format: `"channels_last"`, `"channels_first"`, or `"auto"`
            (channels_first on PyTorch, whose convolutions are NCHW;
            channels_last elsewhere).
        dtype_policy: Keras dtype policy, e.g. `"float32"`, `"mixed_bfloat16"`.
        create_weights: Create and save the shared weights (first backend).
        layer: Run the layer benchmark.
        models: Run the network benchmark.
        training: Time training steps too.
        torch_reference: On PyTorch, also time the plain-PyTorch network.
        torch_compile: On PyTorch, use `torch.compile`.
        with_definition: Also time the layer and SGE-ResNet with the
            definition in place of the backend kernels, alternating with them.
        warmup: Untimed calls before each measurement.
        repeats: Timed calls per measurement.
        min_seconds: Minimum time per measurement.
        seed: Seed of the created weights.
    """

    work_dir: str
    outputs_path: str
    groups: int = 64
    depth: int = 50
    classes: int = 1000
    data_format: str = "auto"
    dtype_policy: str = "float32"
    create_weights: bool = False
    layer: bool = True
    models: bool = True
    training: bool = True
    torch_reference: bool = True
    torch_compile: bool = False
    with_definition: bool = False
    warmup: int = 2
    repeats: int = 5
    min_seconds: float = 0.0
    seed: int = 0


def resolve_data_format(data_format: str, backend: str) -> str:
    """Returns the layout to run in: `"auto"` picks the backend's native one.

    Args:
        data_format: `"auto"`, `"channels_last"` or `"channels_first"`.
        backend: The Keras backend name.

    Returns:
        `"channels_last"` or `"channels_first"`.
    """
    if data_format == "auto":
        return "channels_first" if backend == "torch" else "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'auto', 'channels_last' or 'channels_first'. "
            f"Received: {data_format!r}"
        )
    return data_format


def _to_layout(x, data_format):
    import numpy as np

    if data_format == "channels_last":
        return x
    # Contiguous, so PyTorch sees a plain NCHW tensor, not a channels_last one.
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def _from_layout(x, data_format):
    import numpy as np

    return x if data_format == "channels_last" else np.transpose(x, (0, 2, 3, 1))


def _versions(backend: str) -> dict[str, str]:
    import keras
    import numpy as np

    module = importlib.import_module(backend)  # each backend is named after its library
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        backend: getattr(module, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def _randomize_sge(model, rng) -> None:
    """Gives every SGE layer random gamma/beta, so the attention matters."""
    from keras_sge.layers import SpatialGroupEnhance

    for layer in model.layers:
        if isinstance(layer, SpatialGroupEnhance):
            layer.set_weights(
                [
                    rng.normal(size=layer.groups).astype("float32"),
                    rng.normal(size=layer.groups).astype("float32"),
                ]
            )


def _layer_benchmark(spec: WorkerSpec, data_format: str, outputs: dict) -> dict:
    import keras
    import numpy as np

    from benchmarks.layer_benchmark import benchmark_layer
    from keras_sge.layers import SpatialGroupEnhance

    x = _to_layout(np.load(os.path.join(spec.work_dir, LAYER_INPUT)), data_format)
    inputs = keras.Input(x.shape[1:])
    layer = SpatialGroupEnhance(spec.groups, data_format=data_format, name="sge")
    holder = keras.Model(inputs, layer(inputs))
    weights_path = os.path.join(spec.work_dir, LAYER_WEIGHTS)
    if spec.create_weights:
        _randomize_sge(holder, np.random.default_rng(spec.seed))
        holder.save_weights(weights_path)
    else:
        holder.load_weights(weights_path)
    compute_dtype = keras.config.dtype_policy().compute_dtype
    y = layer(keras.ops.convert_to_tensor(x, dtype=compute_dtype))
    outputs["layer"] = _from_layout(
        keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")), data_format
    )
    result = benchmark_layer(
        layer,
        x.shape,
        dtype=compute_dtype,
        warmup=spec.warmup,
        repeats=max(spec.repeats, 5),
        min_seconds=spec.min_seconds,
        torch_compile=spec.torch_compile,
        with_definition=spec.with_definition,
        seed=spec.seed,
    )
    result["data_format"] = data_format
    return result


def _build_models(spec: WorkerSpec, image_shape):
    import keras

    from keras_sge.applications import build_resnet

    keras.utils.set_random_seed(spec.seed)
    common = dict(input_shape=image_shape, classes=spec.classes, classifier_activation=None)
    sge = build_resnet(spec.depth, True, name="sge_resnet", **common)
    plain = build_resnet(spec.depth, False, name="resnet", **common)
    return sge, plain


def _model_benchmark(spec: WorkerSpec, data_format: str, outputs: dict) -> dict:
    import keras
    import numpy as np

    from benchmarks.model_benchmark import benchmark_keras_models

    images = _to_layout(np.load(os.path.join(spec.work_dir, IMAGES)), data_format)
    labels = np.load(os.path.join(spec.work_dir, LABELS))
    sge, plain = _build_models(spec, images.shape[1:])
    sge_path = os.path.join(spec.work_dir, SGE_RESNET_WEIGHTS)
    plain_path = os.path.join(spec.work_dir, RESNET_WEIGHTS)
    if spec.create_weights:
        _randomize_sge(sge, np.random.default_rng(spec.seed))
        sge.save_weights(sge_path)
        plain.save_weights(plain_path)
    else:
        sge.load_weights(sge_path)
        plain.load_weights(plain_path)
    models = {"sge_resnet": sge, "resnet": plain}
    if spec.with_definition:
        # Its own model, so that its compiled functions are traced with the definition.
        models["sge_resnet_definition"] = keras.models.clone_model(sge)
        models["sge_resnet_definition"].set_weights(sge.get_weights())
    logits = sge.predict_on_batch(keras.ops.convert_to_tensor(images))
    outputs["sge_resnet"] = np.asarray(keras.ops.convert_to_numpy(logits), "float32")

    timed = dict(
        warmup=spec.warmup,
        repeats=spec.repeats,
        min_seconds=spec.min_seconds,
        training=spec.training,
        torch_compile=spec.torch_compile,
        definition=("sge_resnet_definition",) if spec.with_definition else (),
    )
    results = {
        "depth": spec.depth,
        "batch_size": int(images.shape[0]),
        "image_size": int(images.shape[2] if data_format == "channels_last" else images.shape[3]),
        "data_format": data_format,
        # In alternating calls, so that the overhead sees one load.
        **benchmark_keras_models(models, images, labels, **timed),
    }

    def overhead_percent(name):
        return {
            kind: 100.0
            * (results["resnet"][kind]["images_per_s"] / results[name][kind]["images_per_s"] - 1.0)
            for kind in results[name]
        }

    results["sge_overhead_percent"] = overhead_percent("sge_resnet")
    if spec.with_definition:
        results["definition_overhead_percent"] = overhead_percent("sge_resnet_definition")
    return results


def _torch_reference_benchmark(spec: WorkerSpec, keras_results: dict) -> dict:
    """Times the plain-PyTorch networks next to the Keras ones.

    They run on the device Keras placed its tensors on, in the same
    precision (`torch.autocast` for a mixed policy).
    """
    import keras
    import numpy as np

    from benchmarks.model_benchmark import benchmark_torch_module

    try:
        from benchmarks import torch_resnet as networks
    except ImportError as error:
        return {"status": f"unavailable: {error}"}
    images = _to_layout(np.load(os.path.join(spec.work_dir, IMAGES)), "channels_first")
    labels = np.load(os.path.join(spec.work_dir, LABELS))
    policy = keras.config.dtype_policy()
    timed = dict(
        warmup=spec.warmup,
        repeats=spec.repeats,
        min_seconds=spec.min_seconds,
        training=spec.training,
        device=str(keras.ops.convert_to_tensor(labels).device),
        autocast_dtype=(
            policy.compute_dtype if policy.compute_dtype != policy.variable_dtype else None
        ),
    )
    results: dict[str, Any] = {"status": "ok"}
    for key, attention in (("sge_resnet", True), ("resnet", False)):
        builder = getattr(networks, f"{'sge_' if attention else ''}resnet{spec.depth}")
        module = builder(num_classes=spec.classes)
        measured = benchmark_torch_module(module, images, labels, **timed)
        for kind, timing in measured.items():
            timing["keras_slowdown"] = (
                timing["images_per_s"] / keras_results[key][kind]["images_per_s"]
            )
        results[key] = measured
    return results


def run_worker(spec: WorkerSpec) -> dict[str, Any]:
    """Runs one backend's measurements (the active `KERAS_BACKEND`).

    Args:
        spec: What to measure and where the shared files are.

    Returns:
        A JSON-ready dict: `backend`, `versions`, `device`, `dtype_policy`,
        and the `layer`, `models` and `torch_reference` results asked for.
        The outputs for the agreement check go to `spec.outputs_path`.
    """
    import keras
    import numpy as np

    from benchmarks.timing import device_name

    backend = keras.backend.backend()
    data_format = resolve_data_format(spec.data_format, backend)
    keras.config.set_dtype_policy(spec.dtype_policy)
    keras.config.set_image_data_format(data_format)
    result: dict[str, Any] = {
        "backend": backend,
        "status": "ok",
        "versions": _versions(backend),
        "device": device_name(),
        "dtype_policy": spec.dtype_policy,
        "data_format": data_format,
    }
    outputs: dict[str, np.ndarray] = {}
    if spec.layer:
        result["layer"] = _layer_benchmark(spec, data_format, outputs)
    if spec.models:
        result["models"] = _model_benchmark(spec, data_format, outputs)
        if spec.torch_reference and backend == "torch":
            result["torch_reference"] = _torch_reference_benchmark(spec, result["models"])
    np.savez(spec.outputs_path, **outputs)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m benchmarks.worker SPEC.json RESULT.json`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = WorkerSpec(**json.load(f))
    result = run_worker(spec)
    with open(argv[1], "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
