"""Compares TensorFlow, JAX and PyTorch on the SGE layer and SGE-ResNet50.

Each backend runs in its own process on the same inputs and weights. Prints a
table and writes `comparison.json` and `comparison.png` to `--output-dir`.

Examples:

    python -m benchmarks.compare_backends --quick
    python -m benchmarks.compare_backends --layer-only
    python -m benchmarks.compare_backends --backends jax torch --batch-size 16
    python -m benchmarks.compare_backends --with-definition --batch-size 8
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

# This process only starts one worker process per backend and computes
# nothing itself, so unless the user chose a backend its Keras import uses the
# quickest to load: JAX takes about 4 s on a 2-core CPU, TensorFlow about 8 s
# (and importing JAX claims no GPU memory).
if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("jax"):
    os.environ["KERAS_BACKEND"] = "jax"

import benchmarks  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="compare_backends_output")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=list(benchmarks.BACKENDS),
        choices=benchmarks.BACKENDS,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small shapes (layer 8x28x28x256, ResNet-18 at batch 4 and 64 px); "
        "under two minutes on 2 CPU cores",
    )
    parser.add_argument(
        "--layer-only",
        action="store_true",
        help="only the SGE layer benchmark (forward, forward+backward vs x * x)",
    )
    parser.add_argument("--layer-shape", type=int, nargs=4, metavar=("N", "H", "W", "C"))
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument(
        "--depth",
        type=int,
        choices=benchmarks.RESNET_DEPTHS,
        help="ResNet depth (default: 50; 18 with --quick)",
    )
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument(
        "--mixed-precision",
        nargs="?",
        const="float16",
        choices=("float16", "bfloat16"),
        help="mixed precision compute dtype (float16 if given without a value)",
    )
    parser.add_argument(
        "--data-format",
        default="auto",
        choices=("auto", "channels_last", "channels_first"),
        help="auto: channels_first on torch, channels_last on tensorflow and jax",
    )
    parser.add_argument("--no-training", action="store_true", help="skip training steps")
    parser.add_argument("--no-torch-reference", action="store_true")
    parser.add_argument("--torch-compile", action="store_true")
    parser.add_argument(
        "--with-definition",
        action="store_true",
        help="also time the layer and SGE-ResNet with SGE's definition in place of "
        "the backend kernels, alternating with them in one process",
    )
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--min-seconds",
        type=float,
        help="keep repeating each measurement until this many seconds have "
        "passed (steadier medians on GPUs, whose clocks ramp up under load)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds each backend's process may run (default: an hour); one "
        "that runs longer is reported as timed out and the others still run",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {
        key: value
        for key, value in dict(
            layer_shape=args.layer_shape,
            batch_size=args.batch_size,
            image_size=args.image_size,
            depth=args.depth,
            warmup=args.warmup,
            repeats=args.repeats,
            min_seconds=args.min_seconds,
            timeout=args.timeout,
        ).items()
        if value is not None
    }
    settings = dict(
        backends=args.backends,
        groups=args.groups,
        classes=args.classes,
        mixed_precision=args.mixed_precision,
        data_format=args.data_format,
        layer_only=args.layer_only,
        training=not args.no_training,
        torch_reference=not args.no_torch_reference,
        torch_compile=args.torch_compile,
        with_definition=args.with_definition,
        seed=args.seed,
        **overrides,
    )
    try:
        if args.quick:
            config = benchmarks.quick_config(args.output_dir, **settings)
        else:
            config = benchmarks.CompareConfig(output_dir=args.output_dir, **settings)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = benchmarks.compare_backends(config)
    print(benchmarks.format_table(report))
    benchmarks.save_json(report, os.path.join(args.output_dir, "comparison.json"))
    benchmarks.plot_report(report, os.path.join(args.output_dir, "comparison.png"))
    print(f"\nwrote {args.output_dir}/comparison.json and comparison.png")
    return 0 if any(r["status"] == "ok" for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
