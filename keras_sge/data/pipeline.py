"""The dataset contract shared by every source: shuffling, sharding, batching.

Every loader in `keras_sge.data` turns its source into a `tf.data.Dataset` of
`(encoded image bytes or file path, label)` and hands it to `build_dataset`,
which applies the same policy everywhere:

- training: seeded shuffle that reshuffles every epoch, per-example stateless
  random seeds for the augmentation (reproducible when a seed is given),
  `preprocess_for_train`, batches that drop the remainder;
- evaluation: fixed order, `preprocess_for_eval`, every example exactly once
  (the last batch may be smaller);
- both: parallel maps and prefetch with AUTOTUNE, normalisation per batch in
  `keras.config.image_data_format()` layout, no `repeat()`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_sge.data import preprocessing

AUTOTUNE = tf.data.AUTOTUNE

# Bytes at the end of a file searched for the JPEG end-of-image marker / PNG
# IEND chunk: a file without them was cut short (an interrupted copy).
_TAIL_BYTES = 1024
# Format: (signature at the start, marker that must be in the last _TAIL_BYTES bytes, or None).
IMAGE_FORMATS = {
    "JPEG": (b"\xff\xd8\xff", b"\xff\xd9"),
    "PNG": (b"\x89PNG\r\n\x1a\n", b"IEND"),
    "GIF": (b"GIF8", None),
    "BMP": (b"BM", None),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a loader knows about the dataset it returned.

    Attributes:
        num_classes: number of classes (labels are `0 .. num_classes - 1`).
        class_names: class name of each label, or `None` when the source has
            no names.
        num_examples: examples in this split (and shard) before batching, or
            `None` when unknown. For image folders this counts the listed
            files, unreadable ones included.
        num_batches: batches per epoch, or `None` when unknown.
        label_of: mapping class name -> label (empty when there are no names).
    """

    num_classes: int
    class_names: list[str] | None
    num_examples: int | None
    num_batches: int | None = None

    @property
    def label_of(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names or [])}


def hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow (used only for input) off the GPUs of JAX / torch.

    With the TensorFlow backend the model and the input pipeline share
    TensorFlow, so nothing changes. Otherwise TensorFlow would reserve most of
    every GPU's memory on first use, starving the JAX or PyTorch model.
    """
    if keras.backend.backend() == "tensorflow":
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # TensorFlow already initialised its devices (the caller used it
        # before); nothing can be changed any more.
        pass


def resolve_sharding(
    batch_size: int,
    shard: tuple[int, int] | None,
    input_context: tf.distribute.InputContext | None,
) -> tuple[int, int, int]:
    """Returns `(batch_size, shard_index, shard_count)` for this pipeline.

    `input_context` (from `tf.distribute.Strategy.distribute_datasets_from_function`)
    turns the global `batch_size` into the per-replica one and selects this
    input pipeline's shard; `shard=(index, count)` selects a shard and keeps
    `batch_size` as given (e.g. `(jax.process_index(), jax.process_count())`
    with a per-process batch size).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if shard is not None and input_context is not None:
        raise ValueError("Pass either shard=(index, count) or input_context, not both.")
    if input_context is not None:
        return (
            input_context.get_per_replica_batch_size(batch_size),
            input_context.input_pipeline_id,
            input_context.num_input_pipelines,
        )
    if shard is None:
        return batch_size, 0, 1
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (index, count), got {shard!r}.") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"shard=(index, count) needs count >= 1 and 0 <= index < count, got {shard!r}."
        )
    return batch_size, index, count


def check_min_crop_area(min_crop_area: float) -> None:
    if not 0.0 < min_crop_area <= 1.0:
        raise ValueError(f"min_crop_area must be in (0, 1], got {min_crop_area!r}.")


def check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")


def is_training_split(split: str) -> bool:
    """`True` for `train`, `train[:10%]`, `train+validation`...: augment."""
    return str(split).strip().lower().startswith("train")


def _tail_contains(tail: tf.Tensor, pattern: bytes) -> tf.Tensor:
    n = tf.shape(tail)[0] - len(pattern) + 1
    matches = tf.ones([tf.maximum(n, 0)], tf.bool)
    for i, byte in enumerate(pattern):
        matches = tf.logical_and(matches, tf.equal(tail[i : i + tf.maximum(n, 0)], byte))
    return tf.reduce_any(matches)


def looks_complete(image_bytes: tf.Tensor) -> tf.Tensor:
    """Cheap check that bytes are a whole JPEG, PNG, GIF or BMP file.

    Reads only the first bytes (format signature) and the last kilobyte
    (JPEG end-of-image marker, PNG `IEND` chunk), by the rules of
    `IMAGE_FORMATS`. Never raises.
    """
    length = tf.strings.length(image_bytes)
    start = tf.maximum(length - _TAIL_BYTES, 0)
    tail = tf.io.decode_raw(tf.strings.substr(image_bytes, start, _TAIL_BYTES), tf.uint8)
    cases = []
    for signature, end_marker in IMAGE_FORMATS.values():
        matches = tf.equal(tf.strings.substr(image_bytes, 0, len(signature)), signature)
        if end_marker is None:
            cases.append((matches, lambda: tf.constant(True)))
        else:
            cases.append((matches, lambda marker=end_marker: _tail_contains(tail, marker)))
    return tf.case(cases, default=lambda: tf.constant(False))


def file_looks_complete(path: str) -> str | None:
    """`looks_complete` for a file on disk, reading only its head and tail.

    Args:
        path: the image file.

    Returns:
        `None` when the file passes, else why not (for a message).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - _TAIL_BYTES, 0))
            tail = f.read()
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if not head:
        return "empty"
    for signature, end_marker in IMAGE_FORMATS.values():
        if head.startswith(signature):
            if end_marker is None or end_marker in tail:
                return None
            return "cut short (no end marker)"
    return "not a JPEG/PNG/GIF/BMP"


def _graph_function(function):
    """Marks a map function as plain graph code: it has no Python control flow
    on tensors (conditions are `tf.cond`), so AutoGraph's conversion, which
    costs seconds per pipeline, is skipped."""
    return tf.autograph.experimental.do_not_convert(function)


def _read_checked(path: tf.Tensor, label: tf.Tensor, seed: tf.Tensor):
    image_bytes = tf.io.read_file(path)
    return image_bytes, path, label, seed


def _keep_readable(image_bytes, path, label, seed) -> tf.Tensor:
    ok = looks_complete(image_bytes)

    def warn():
        tf.print(
            "WARNING keras_sge.data: skipping unreadable or truncated image file",
            path,
            output_stream=sys.stderr,
        )
        return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), warn)


# `(image_bytes, label, seed) -> (image, int32 label)`, the per-example step.
_ExamplePreprocessor = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def _example_preprocessor(
    training: bool, image_size: int, min_crop_area: float
) -> _ExamplePreprocessor:
    """Returns the per-example step `(image_bytes, label, seed) -> (image, label)`.

    Args:
        training: augment with a seeded random crop and flip, else resize and
            center-crop.
        image_size: side of the square images.
        min_crop_area: smallest area fraction of the training crop.

    Returns:
        A function for `tf.data.Dataset.map`; labels come out as int32.
    """
    if training:

        def preprocess(image_bytes, label, example_seed):
            return preprocessing.preprocess_for_train(
                image_bytes, image_size, seed=example_seed, min_crop_area=min_crop_area
            ), tf.cast(label, tf.int32)
    else:

        def preprocess(image_bytes, label, example_seed):
            del example_seed
            return preprocessing.preprocess_for_eval(image_bytes, image_size), tf.cast(
                label, tf.int32
            )

    return preprocess


def _decode_examples(
    ds: tf.data.Dataset,
    preprocess: _ExamplePreprocessor,
    *,
    from_files: bool,
    deterministic: bool,
) -> tf.data.Dataset:
    """Maps `((image or path, label), seed)` elements to `(image, label)`.

    Args:
        ds: the zipped sources and per-example seeds.
        preprocess: the step made by `_example_preprocessor`.
        from_files: read each path first, skipping unreadable files.
        deterministic: keep the element order of the parallel maps.

    Returns:
        The dataset of preprocessed, unbatched examples.
    """
    if from_files:
        ds = ds.map(
            _graph_function(
                lambda item, example_seed: _read_checked(item[0], item[1], example_seed)
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
        ds = ds.filter(_graph_function(_keep_readable))
        ds = ds.map(
            _graph_function(
                lambda image_bytes, path, label, example_seed: preprocess(
                    image_bytes, label, example_seed
                )
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
        # Safety net for damage the cheap check cannot see: TensorFlow logs
        # the decoder error and the example is dropped, the epoch goes on.
        ds = ds.ignore_errors(log_warning=True)
    else:
        ds = ds.map(
            _graph_function(lambda item, example_seed: preprocess(item[0], item[1], example_seed)),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
    return ds


def build_dataset(
    sources: tf.data.Dataset,
    *,
    from_files: bool,
    training: bool,
    batch_size: int,
    image_size: int,
    seed: int | None,
    dtype: str | None,
    shuffle_buffer_size: int,
    num_examples: int | None = None,
    min_crop_area: float = preprocessing.AREA_RANGE[0],
) -> tf.data.Dataset:
    """Turns `(bytes or path, label)` elements into batches for `model.fit`.

    Args:
        sources: dataset of `(image, label)` where `image` is encoded bytes,
            or a file path when `from_files`.
        from_files: read `image` as a path; then unreadable or truncated
            files are skipped with a warning naming the file. Training
            epochs keep `num_examples // batch_size` batches (topped up from
            the next pass); evaluation keeps every readable file once, so
            its cardinality is unknown.
        training: augment, shuffle, drop the last partial batch.
        batch_size: examples per batch.
        image_size: side of the square images.
        seed: seed of the shuffle and augmentation; `None` for a fresh
            random order and augmentation every run.
        dtype: dtype of the images (default float32).
        shuffle_buffer_size: shuffle buffer, in examples (training only).
        num_examples: number of files listed (`from_files` training).
        min_crop_area: smallest area fraction of the training crop.

    Returns:
        A dataset of `(images, int32 labels)`.
    """
    data_format = preprocessing.standardize_data_format(None)
    deterministic = (not training) or seed is not None
    if training:
        sources = sources.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    else:
        seeds = tf.data.Dataset.from_tensors(tf.zeros([2], tf.int64)).repeat()
    ds = tf.data.Dataset.zip(sources, seeds)

    preprocess = _example_preprocessor(training, image_size, min_crop_area)
    ds = _decode_examples(ds, preprocess, from_files=from_files, deterministic=deterministic)
    if from_files and training:
        # Skipped files would make the epoch length unknown (and Keras warn
        # that the input "ran out of data"): top the epoch up from the next,
        # reshuffled pass instead, so it always has len(files) // batch_size
        # batches. `repeat` stops by itself if no file at all is readable.
        ds = ds.repeat().batch(batch_size, drop_remainder=True)
        ds = ds.take(num_examples // batch_size)
    else:
        ds = ds.batch(batch_size, drop_remainder=training)
    ds = ds.map(
        _graph_function(
            lambda images, labels: (
                preprocessing.normalize_images(images, data_format, dtype),
                labels,
            )
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    return ds.prefetch(AUTOTUNE)


def num_batches(num_examples: int | None, batch_size: int, training: bool) -> int | None:
    if num_examples is None:
        return None
    if training:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def with_dataset_info(
    dataset: tf.data.Dataset,
    with_info: bool,
    *,
    class_names: list[str],
    num_examples: int | None,
    batch_size: int,
    training: bool,
) -> tf.data.Dataset | tuple[tf.data.Dataset, DatasetInfo]:
    """What a loader returns: `dataset`, or `(dataset, DatasetInfo)` when `with_info`.

    Args:
        dataset: the batched dataset.
        with_info: whether the caller asked for the `DatasetInfo` too.
        class_names: class name of each label.
        num_examples: examples before batching, or `None` when unknown.
        batch_size: examples per batch.
        training: whether the last partial batch is dropped.

    Returns:
        `dataset` or `(dataset, info)`.
    """
    if not with_info:
        return dataset
    info = DatasetInfo(
        num_classes=len(class_names),
        class_names=class_names,
        num_examples=num_examples,
        num_batches=num_batches(num_examples, batch_size, training),
    )
    return dataset, info
