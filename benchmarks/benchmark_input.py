"""Benchmark the input pipeline: images/s per CPU core, next to a baseline.

    python -m benchmarks.benchmark_input                # 224 px, 1 thread
    python -m benchmarks.benchmark_input --threads 2    # all of a 2-core machine

Prints the throughput of the training and evaluation preprocessing of
keras_sge.data and of a plain JPEG decode + resize, measured in the same run
on generated JPEGs of ImageNet-like size (500x375): images per wall-clock
second, and images per CPU-second (= per fully used core).
"""

import argparse
import os
import platform

from benchmarks import input_benchmark as benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224, help="output side (default 224)")
    parser.add_argument(
        "--threads", type=int, default=1, help="tf.data threads = cores used (default 1)"
    )
    parser.add_argument(
        "--num-images", type=int, default=64, help="distinct JPEGs generated (default 64)"
    )
    parser.add_argument(
        "--repeats", type=int, default=4, help="passes over them per round (default 4)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, best kept (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--source-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs (default 500x375)"
    )
    args = parser.parse_args()
    try:
        width, height = (int(v) for v in args.source_size.lower().split("x"))
    except ValueError:
        parser.error(f"--source-size must look like 500x375, got {args.source_size!r}")
    results = benchmark.benchmark_input(
        image_size=args.image_size,
        num_images=args.num_images,
        repeats=args.repeats,
        batch_size=args.batch_size,
        threads=args.threads,
        rounds=args.rounds,
        source_size=(width, height),
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; "
        f"{args.threads} thread(s), {width}x{height} JPEGs -> {args.image_size} px"
    )
    print(benchmark.format_results(results))


if __name__ == "__main__":
    main()
