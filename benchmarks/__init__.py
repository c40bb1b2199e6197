"""Benchmarks of the SGE layer, the networks and the input pipeline; reference networks.

Not part of the installed package: run from the repository root
(`python -m benchmarks.compare_backends`, `python -m benchmarks.benchmark_input`);
the tests import it from there too. `torch_resnet` is the authors' architecture
in plain PyTorch, the independent reference of the Keras models.

`timing`, `layer_benchmark` and `model_benchmark` run in the active backend;
`compare_backends` runs one worker process per backend and gathers their
results, which `format_table` and `plot_report` present.
"""

from benchmarks.compare import (
    BACKENDS,
    RESNET_DEPTHS,
    CompareConfig,
    backend_installed,
    compare_backends,
    quick_config,
)
from benchmarks.layer_benchmark import (
    benchmark_layer,
    forward_backward_function,
    forward_function,
)
from benchmarks.model_benchmark import (
    benchmark_keras_model,
    benchmark_torch_module,
    compile_for_training,
)
from benchmarks.report import format_table, plot_report, save_json
from benchmarks.timing import (
    Timing,
    compile_function,
    device_name,
    synchronize,
    time_function,
)

__all__ = [
    "BACKENDS",
    "RESNET_DEPTHS",
    "CompareConfig",
    "Timing",
    "backend_installed",
    "benchmark_keras_model",
    "benchmark_layer",
    "benchmark_torch_module",
    "compare_backends",
    "compile_for_training",
    "compile_function",
    "device_name",
    "format_table",
    "forward_backward_function",
    "forward_function",
    "plot_report",
    "quick_config",
    "save_json",
    "synchronize",
    "time_function",
]
