"""Compares the Keras backends side by side: one subprocess per backend.

Used by `benchmarks/compare_backends.py`. Nothing here computes in a Keras
backend: each backend runs `benchmarks.worker` in a process of its own with
`KERAS_BACKEND` set, on inputs and weights shared through files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import worker
from keras_sge.applications.registry import MODELS

BACKENDS = ("tensorflow", "jax", "torch")
RESNET_DEPTHS = tuple(sorted({spec.depth for spec in MODELS.values()}))
# The worker runs as `python -m benchmarks.worker`: from the repository root.
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MIXED_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass
class CompareConfig:
    """Settings of one backend comparison.

    Attributes:
        output_dir: Where the JSON, the PNG chart and the shared files go.
        backends: Backends to compare, in order; the first one that runs is
            the reference of the agreement check.
        layer_shape: Input of the layer benchmark, `(N, H, W, C)`.
        groups: SGE groups.
        batch_size: Network batch size.
        image_size: Network input height and width.
        depth: ResNet depth (50 for the paper's SGE-ResNet50).
        classes: Classifier width.
        mixed_precision: `None` (float32), `"float16"` or `"bfloat16"`.
        data_format: `"auto"` (each backend's native layout),
            `"channels_last"` or `"channels_first"`.
        layer_only: Only the layer benchmark (no networks).
        training: Time network training steps too.
        torch_reference: Time the plain-PyTorch network on the torch backend.
        torch_compile: Use `torch.compile` on the torch backend.
        with_definition: Also time the layer and SGE-ResNet with the
            definition in place of the backend kernels
            (`keras_sge.backend.definition_only`), in the same alternating
            rounds as with them.
        warmup: Untimed calls before each measurement.
        repeats: Timed calls per measurement (medians are reported).
        min_seconds: Minimum time per measurement.
        seed: Seed of inputs and weights.
        timeout: Seconds each backend's process may run.
    """

    output_dir: str
    backends: Sequence[str] = BACKENDS
    layer_shape: Sequence[int] = (32, 56, 56, 256)
    groups: int = 64
    batch_size: int = 32
    image_size: int = 224
    depth: int = 50
    classes: int = 1000
    mixed_precision: str | None = None
    data_format: str = "auto"
    layer_only: bool = False
    training: bool = True
    torch_reference: bool = True
    torch_compile: bool = False
    with_definition: bool = False
    warmup: int = 2
    repeats: int = 5
    min_seconds: float = 0.0
    seed: int = 0
    timeout: float = 3600.0

    def __post_init__(self):
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise ValueError(
                f"`backends` must be a non-empty subset of {BACKENDS}. "
                f"Received: {list(self.backends)}"
            )
        if len(self.layer_shape) != 4 or any(int(d) < 1 for d in self.layer_shape):
            raise ValueError(
                "`layer_shape` must be 4 positive sizes (N, H, W, C). "
                f"Received: {tuple(self.layer_shape)}"
            )
        if self.layer_shape[-1] % self.groups:
            raise ValueError(
                f"The layer's channels ({self.layer_shape[-1]}) must be divisible "
                f"by `groups` ({self.groups})."
            )
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"`depth` must be one of {RESNET_DEPTHS}. Received: {self.depth!r}")
        if self.mixed_precision not in (None, *_MIXED_POLICIES):
            raise ValueError(
                "`mixed_precision` must be None, 'float16' or 'bfloat16'. "
                f"Received: {self.mixed_precision!r}"
            )
        if self.batch_size < 1 or self.image_size < 32:
            raise ValueError(
                "`batch_size` must be >= 1 and `image_size` >= 32 (ResNet's "
                f"minimum). Received: batch_size={self.batch_size}, "
                f"image_size={self.image_size}"
            )
        if self.repeats < 1:
            raise ValueError(f"`repeats` must be >= 1. Received: {self.repeats}")
        if self.min_seconds < 0:
            raise ValueError(f"`min_seconds` must be >= 0. Received: {self.min_seconds}")
        if not self.timeout > 0:
            raise ValueError(
                f"`timeout` must be a positive number of seconds. Received: {self.timeout}"
            )

    @property
    def dtype_policy(self) -> str:
        if self.mixed_precision is None:
            return "float32"
        return _MIXED_POLICIES[self.mixed_precision]


def quick_config(output_dir: str, **overrides) -> CompareConfig:
    """Small shapes that finish within two minutes on a 2-core CPU.

    The networks are ResNet-18 / SGE-ResNet-18 (same builder, basic blocks):
    on the CPU, compiling ResNet-50's training step on TensorFlow and JAX
    alone takes longer than that.

    Args:
        output_dir: Where results go.
        **overrides: Any other `CompareConfig` field.

    Returns:
        A `CompareConfig`.
    """
    settings = dict(
        layer_shape=(8, 28, 28, 256),
        batch_size=4,
        image_size=64,
        depth=18,
        warmup=1,
        repeats=3,
    )
    settings.update(overrides)
    return CompareConfig(output_dir=output_dir, **settings)


def backend_installed(backend: str) -> bool:
    """Whether the library behind a Keras backend (named after it) can be imported."""
    return importlib.util.find_spec(backend) is not None


def _write_inputs(config: CompareConfig) -> None:
    rng = np.random.default_rng(config.seed)
    layer_input = rng.standard_normal(tuple(config.layer_shape), dtype=np.float32)
    np.save(os.path.join(config.output_dir, worker.LAYER_INPUT), layer_input)
    if not config.layer_only:
        images = rng.standard_normal(
            (config.batch_size, config.image_size, config.image_size, 3),
            dtype=np.float32,
        )
        labels = rng.integers(0, config.classes, size=(config.batch_size,))
        np.save(os.path.join(config.output_dir, worker.IMAGES), images)
        np.save(os.path.join(config.output_dir, worker.LABELS), labels.astype("int32"))


def _run_backend(config: CompareConfig, backend: str, create_weights: bool) -> dict:
    """Runs one worker process; a failure becomes a result with its error."""
    prefix = os.path.join(config.output_dir, backend)
    spec = worker.WorkerSpec(
        work_dir=config.output_dir,
        outputs_path=f"{prefix}_outputs.npz",
        groups=config.groups,
        depth=config.depth,
        classes=config.classes,
        data_format=config.data_format,
        dtype_policy=config.dtype_policy,
        create_weights=create_weights,
        layer=True,
        models=not config.layer_only,
        training=config.training,
        torch_reference=config.torch_reference,
        torch_compile=config.torch_compile,
        with_definition=config.with_definition,
        warmup=config.warmup,
        repeats=config.repeats,
        min_seconds=config.min_seconds,
        seed=config.seed,
    )
    spec_path, result_path = f"{prefix}_spec.json", f"{prefix}_result.json"
    with open(spec_path, "w") as f:
        json.dump(dataclasses.asdict(spec), f, indent=2)
    path = os.pathsep.join(filter(None, [_REPOSITORY, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=path)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", spec_path, result_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=config.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"backend": backend, "status": f"timed out after {config.timeout:g} s"}
    if process.returncode != 0 or not os.path.exists(result_path):
        tail = (process.stderr or process.stdout).strip().splitlines()[-15:]
        return {
            "backend": backend,
            "status": f"failed (exit code {process.returncode})",
            "error": "\n".join(tail),
        }
    with open(result_path) as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - started
    return result


def _agreement(config: CompareConfig, results: list[dict]) -> dict[str, Any]:
    """Max abs differences of each backend's outputs against the first one's."""
    ran = [r for r in results if r["status"] == "ok"]
    if not ran:
        return {}
    reference_backend = ran[0]["backend"]
    path = os.path.join(config.output_dir, f"{reference_backend}_outputs.npz")
    with np.load(path) as reference:
        reference = dict(reference)
    agreement: dict[str, Any] = {"reference_backend": reference_backend}
    for result in ran:
        path = os.path.join(config.output_dir, f"{result['backend']}_outputs.npz")
        with np.load(path) as outputs:
            agreement[result["backend"]] = {
                name: {
                    "max_abs_diff": float(np.max(np.abs(outputs[name] - reference[name]))),
                    "max_abs_value": float(np.max(np.abs(reference[name]))),
                }
                for name in reference
            }
    return agreement


def compare_backends(config: CompareConfig) -> dict[str, Any]:
    """Runs every backend in its own process and collects the comparison.

    The first backend that is installed creates the shared weights; the
    others load them. A backend that is not installed, or whose process
    fails, is reported in its entry's `status` instead of stopping the run.

    Args:
        config: What to compare.

    Returns:
        A JSON-ready dict with `config`, `machine`, `results` (one entry per
        backend, in `config.backends` order) and `agreement`.

    Example:

    >>> report = compare_backends(quick_config("/tmp/sge", layer_only=True))
    >>> print(format_table(report))
    """
    os.makedirs(config.output_dir, exist_ok=True)
    _write_inputs(config)
    results = []
    weights_created = False
    for backend in config.backends:
        if not backend_installed(backend):
            results.append({"backend": backend, "status": "not installed"})
            continue
        result = _run_backend(config, backend, create_weights=not weights_created)
        weights_created = weights_created or result["status"] == "ok"
        results.append(result)
    return {
        "config": dataclasses.asdict(config) | {"dtype_policy": config.dtype_policy},
        "machine": {
            "platform": sys.platform,
            "machine": os.uname().machine,
            "cpu_count": os.cpu_count(),
        },
        "results": results,
        "agreement": _agreement(config, results),
    }
