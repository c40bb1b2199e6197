"""Input-pipeline throughput: images per second per CPU core.

Measures the training and evaluation preprocessing of `keras_sge.data` next
to a plain baseline (full JPEG decode + bilinear resize to the output size,
no augmentation) in the same run, on JPEGs of ImageNet-like size generated
in memory. Each pipeline is a `tf.data` map + batch + normalise over encoded
bytes held in memory (no disk reads), run on `threads` tf.data threads.
Images per CPU-second (process CPU time, all threads) is the per-core rate.
"""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from keras_sge.data import preprocessing


@dataclasses.dataclass(frozen=True)
class InputBenchmarkResult:
    """One pipeline's throughput (best of the rounds).

    Attributes:
        name: `"baseline decode+resize"`, `"train"` or `"eval"`.
        images_per_second: images through the pipeline per wall-clock second.
        images_per_cpu_second: images per second of CPU time used by the
            process (all threads): images/s per fully used core, steady on a
            shared machine where wall-clock rates depend on the other load.
        relative_to_baseline: `images_per_cpu_second` / the baseline's.
    """

    name: str
    images_per_second: float
    images_per_cpu_second: float
    relative_to_baseline: float


def make_test_jpegs(
    count: int, width: int = 500, height: int = 375, seed: int = 0, quality: int = 90
) -> list[bytes]:
    """Photograph-like JPEGs (smooth shading, edges and grain), ~ImageNet size.

    Args:
        count: number of images.
        width: image width in pixels.
        height: image height in pixels.
        seed: NumPy seed.
        quality: JPEG quality.

    Returns:
        The encoded images.
    """
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, size=(height // 25 + 2, width // 25 + 2, 3)).astype(np.uint8)
        picture = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        draw = ImageDraw.Draw(picture)
        for _ in range(30):
            x0, x1 = sorted(rng.uniform(0, width, 2))
            y0, y1 = sorted(rng.uniform(0, height, 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.rectangle([x0, y0, x1, y1], outline=fill, width=2)
        pixels = np.asarray(picture, np.float64) + rng.normal(0, 8, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            buffer, format="JPEG", quality=quality
        )
        images.append(buffer.getvalue())
    return images


def _baseline(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    return tf.cast(tf.image.resize(image, [image_size, image_size]), tf.uint8)


_graph = tf.autograph.experimental.do_not_convert  # plain graph code, no AutoGraph


def _pipeline(
    jpegs: list[bytes], kind: str, image_size: int, batch_size: int, repeats: int, threads: int
) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat(repeats)
    if kind == "train":
        seeds = tf.data.Dataset.random(seed=0).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            _graph(lambda b, s: preprocessing.preprocess_for_train(b, image_size, seed=s)),
            num_parallel_calls=threads,
        )
    elif kind == "eval":
        ds = ds.map(
            _graph(lambda b: preprocessing.preprocess_for_eval(b, image_size)),
            num_parallel_calls=threads,
        )
    else:
        ds = ds.map(_graph(lambda b: _baseline(b, image_size)), num_parallel_calls=threads)
    ds = ds.batch(batch_size).map(_graph(preprocessing.normalize_images))
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(2)


def _rates(dataset: tf.data.Dataset) -> tuple[float, float]:
    """`(images per wall-clock second, images per CPU second)` of one pass."""
    iterator = iter(dataset)
    next(iterator)  # warm-up: tracing, thread start
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for images in iterator:
        count += int(images.shape[0])
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


PIPELINES = (("baseline decode+resize", "baseline"), ("train", "train"), ("eval", "eval"))


def benchmark_input(
    *,
    image_size: int = 224,
    num_images: int = 64,
    repeats: int = 4,
    batch_size: int = 32,
    threads: int = 1,
    rounds: int = 3,
    source_size: tuple[int, int] = (500, 375),
) -> list[InputBenchmarkResult]:
    """Times the baseline, training and evaluation preprocessing in one run.

    The pipelines are timed in turn, `rounds` times over, and each keeps its
    best round, so a burst of load from other processes hits all of them
    alike.

    Args:
        image_size: output side (224 for ImageNet training).
        num_images: distinct JPEGs generated.
        repeats: passes over them per timed round.
        batch_size: batch size of the timed pipelines.
        threads: tf.data threads (and so CPU cores) used.
        rounds: timed rounds per pipeline.
        source_size: `(width, height)` of the generated JPEGs.

    Returns:
        Results for `"baseline decode+resize"`, `"train"` and `"eval"`.

    Example:

    >>> for r in benchmark_input(threads=1):
    ...     print(r.name, round(r.images_per_cpu_second))
    """
    if threads < 1 or rounds < 1:
        raise ValueError(f"threads and rounds must be >= 1, got {threads} and {rounds}.")
    jpegs = make_test_jpegs(num_images, *source_size)
    datasets = {
        name: _pipeline(jpegs, kind, image_size, batch_size, repeats, threads)
        for name, kind in PIPELINES
    }
    best = {name: (0.0, 0.0) for name in datasets}
    for _ in range(rounds):
        for name, dataset in datasets.items():
            wall, cpu = _rates(dataset)
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    baseline = best["baseline decode+resize"][1]
    return [
        InputBenchmarkResult(name, wall, cpu, cpu / baseline) for name, (wall, cpu) in best.items()
    ]


def format_results(results: list[InputBenchmarkResult]) -> str:
    """A plain-text table of `benchmark_input` results."""
    lines = [f"{'pipeline':<24}{'images/s (wall)':>16}{'images/CPU-s':>14}{'vs baseline':>13}"]
    for r in results:
        lines.append(
            f"{r.name:<24}{r.images_per_second:>16.1f}{r.images_per_cpu_second:>14.1f}"
            f"{r.relative_to_baseline:>12.2f}x"
        )
    return "\n".join(lines)
