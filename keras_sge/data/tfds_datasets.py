"""tensorflow-datasets sources: ImageNet (`imagenet2012`) and any image classifier."""

from __future__ import annotations

import os
import tarfile

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_sge.data import pipeline

IMAGENET_ARCHIVES = {
    "train": "ILSVRC2012_img_train.tar",
    "validation": "ILSVRC2012_img_val.tar",
}
DEFAULT_SHUFFLE_BUFFER = 10_000


def _split_names(split: str) -> set[str]:
    """`"train[:1%]+validation"` -> `{"train", "validation"}`."""
    return {part.split("[")[0].strip() for part in str(split).split("+")}


def _check_split(builder: tfds.core.DatasetBuilder, split: str) -> None:
    available = set(builder.info.splits.keys())
    missing = _split_names(split) - available
    if available and missing:
        raise ValueError(
            f"Dataset {builder.name!r} has no split {sorted(missing)} (from "
            f"split={split!r}); available: {sorted(available)}."
        )


def _classification_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
    """Returns the image and label feature names, refusing other datasets.

    Args:
        builder: a tfds builder whose supervised keys (default `image`,
            `label`) must be an `Image` and a `ClassLabel` feature.

    Returns:
        `(image_key, label_key)`.
    """
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    features = builder.info.features
    if not isinstance(features[image_key], tfds.features.Image) or not isinstance(
        features[label_key], tfds.features.ClassLabel
    ):
        raise ValueError(
            f"Dataset {builder.name!r} is not an image classification dataset: "
            f"expected an Image feature {image_key!r} and a ClassLabel feature "
            f"{label_key!r}, got {features}."
        )
    return image_key, label_key


def _read_encoded_examples(
    builder: tfds.core.DatasetBuilder,
    split: str,
    image_key: str,
    *,
    training: bool,
    seed: int | None,
    sample_seed: int | None,
    shuffle_buffer_size: int | None,
) -> tf.data.Dataset:
    """Reads `(encoded image, label)` pairs of `split`, images left undecoded.

    Args:
        builder: the prepared tfds builder.
        split: the tfds split of this shard.
        image_key: the image feature, read with `tfds.decode.SkipDecoding`.
        training: shuffle the files with `seed`.
        seed: seed of the file shuffle when training.
        sample_seed: fixed order for evaluation (files and examples).
        shuffle_buffer_size: buffer of the evaluation sample order.

    Returns:
        The dataset of `(bytes, label)`.
    """
    sampled = sample_seed is not None and not training
    read_config = tfds.ReadConfig(
        shuffle_seed=sample_seed if sampled else seed,
        shuffle_reshuffle_each_iteration=not sampled,
    )
    sources = builder.as_dataset(
        split=split,
        shuffle_files=training or sampled,
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=read_config,
        as_supervised=True,
    )
    if sampled:
        # The same order on every pass: a fixed sample for a partial evaluation.
        sources = sources.shuffle(
            shuffle_buffer_size or DEFAULT_SHUFFLE_BUFFER,
            seed=sample_seed,
            reshuffle_each_iteration=False,
        )
    return sources


def _shard_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    shard_index: int,
    shard_count: int,
    training: bool,
) -> tuple[str, int | None]:
    """This shard's part of `split` and its example count.

    Args:
        builder: the prepared tfds builder.
        split: the tfds split, slicing included.
        shard_index, shard_count: this shard.
        training: cut equal shards (every process runs the same number of
            steps); else every example is read exactly once over all shards.

    Returns:
        `(split, num_examples)`, `num_examples` `None` when unknown.
    """
    if shard_count > 1:
        split = tfds.even_splits(split, n=shard_count, drop_remainder=training)[shard_index]
    # Known once the dataset is prepared; unknown for split-less metadata
    # (e.g. under tfds.testing.mock_data).
    num_examples = builder.info.splits[split].num_examples if builder.info.splits else None
    return split, num_examples


def _load_from_builder(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    batch_size: int,
    image_size: int,
    training: bool | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    with_info: bool = False,
    shuffle_buffer_size: int | None = None,
    shard: tuple[int, int] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    min_crop_area: float = 0.08,
    sample_seed: int | None = None,
):
    """The pipeline of a prepared tfds builder; arguments as `keras_sge.data.load`."""
    pipeline.check_image_size(image_size)
    pipeline.check_min_crop_area(min_crop_area)
    batch_size, shard_index, shard_count = pipeline.resolve_sharding(
        batch_size, shard, input_context
    )
    _check_split(builder, split)
    if training is None:
        training = pipeline.is_training_split(split)
    image_key, label_key = _classification_keys(builder)
    split, num_examples = _shard_split(
        builder, split, shard_index=shard_index, shard_count=shard_count, training=training
    )
    sources = _read_encoded_examples(
        builder,
        split,
        image_key,
        training=training,
        seed=seed,
        sample_seed=sample_seed,
        shuffle_buffer_size=shuffle_buffer_size,
    )
    dataset = pipeline.build_dataset(
        sources,
        from_files=False,
        training=training,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        dtype=dtype,
        shuffle_buffer_size=shuffle_buffer_size
        or max(1, min(num_examples or DEFAULT_SHUFFLE_BUFFER, DEFAULT_SHUFFLE_BUFFER)),
        min_crop_area=min_crop_area,
    )
    return pipeline.with_dataset_info(
        dataset,
        with_info,
        class_names=list(builder.info.features[label_key].names),
        num_examples=num_examples,
        batch_size=batch_size,
        training=training,
    )


def load_tfds(
    name: str,
    split: str,
    *,
    batch_size: int,
    image_size: int = 224,
    data_dir: str | None = None,
    download: bool = True,
    **pipeline_options,
):
    """Loads a tensorflow-datasets image classification dataset for `model.fit`.

    Works for any tfds dataset with an image and a class label as supervised
    keys (`imagenette/320px`, `imagenet_resized/64x64`, `cifar10`, ...). The
    encoded images are read without decoding (`tfds.decode.SkipDecoding`) so
    training decodes only the random crop of each JPEG.

    Args:
        name: tfds name, e.g. `"imagenette/320px"`.
        split: tfds split, slicing included (`"train[:10%]"`).
        batch_size: examples per batch (global batch with `input_context`).
        image_size: side of the square images.
        data_dir: tfds data folder (default `~/tensorflow_datasets` or
            `$TFDS_DATA_DIR`).
        download: download and prepare the dataset if needed.
        **pipeline_options: `training`, `seed`, `dtype`, `with_info`,
            `shuffle_buffer_size`, `shard`, `input_context`, `min_crop_area`,
            `sample_seed`, as documented in `keras_sge.data.load`.

    Returns:
        A batched `tf.data.Dataset` of `(images, labels)`, or
        `(dataset, info)` with `with_info=True`.

    Example:

    >>> train = load_tfds("imagenette/320px", "train", batch_size=64, image_size=160)
    """
    pipeline.hide_gpus_from_tensorflow()
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    return _load_from_builder(
        builder, split, batch_size=batch_size, image_size=image_size, **pipeline_options
    )


def default_manual_dir(data_dir: str | None = None) -> str:
    """Where tfds looks for the ImageNet archives: `<data_dir>/downloads/manual`."""
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    # builder.data_dir is <root>/imagenet2012/<version>.
    root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
    return os.path.join(root, "downloads", "manual")


def load_imagenet(
    split: str,
    *,
    batch_size: int,
    image_size: int = 224,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    **pipeline_options,
):
    """Loads ImageNet (ILSVRC 2012) through the tfds `imagenet2012` builder.

    On first use tfds prepares the dataset (about 150 GB of TFRecords, hours
    on one machine) from the two archives downloaded by hand from
    https://image-net.org: `ILSVRC2012_img_train.tar` and
    `ILSVRC2012_img_val.tar`, looked for in `manual_dir` (default
    `<data_dir>/downloads/manual`, i.e. `~/tensorflow_datasets/downloads/manual`).
    Later calls read the prepared files.

    Args:
        split: `"train"` or `"validation"`, slicing included (`"train[:1%]"`).
        batch_size: examples per batch (global batch with `input_context`).
        image_size: side of the square images.
        data_dir: tfds data folder (default `~/tensorflow_datasets` or
            `$TFDS_DATA_DIR`).
        manual_dir: folder holding the two archives.
        **pipeline_options: `training`, `seed`, `dtype`, `with_info` (1000
            classes, WordNet ids as names), `shuffle_buffer_size` (default
            10000 encoded images, about 1.1 GB), `shard`, `input_context`,
            `min_crop_area`, `sample_seed`, as documented in
            `keras_sge.data.load`.

    Returns:
        A batched `tf.data.Dataset` of `(images, labels)`, or
        `(dataset, info)` with `with_info=True`.

    Raises:
        FileNotFoundError: the dataset is not prepared and the archive of the
            requested split is not in `manual_dir`.

    Example:

    >>> model.fit(
    ...     load_imagenet("train", batch_size=256),
    ...     validation_data=load_imagenet("validation", batch_size=256),
    ...     epochs=100,
    ... )
    """
    pipeline.hide_gpus_from_tensorflow()
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if not builder.is_prepared():
        manual_dir = os.fspath(manual_dir) if manual_dir else default_manual_dir(data_dir)
        wanted = _split_names(split)
        unknown = wanted - set(IMAGENET_ARCHIVES)
        if unknown:
            raise ValueError(f"ImageNet splits are 'train' and 'validation', got split={split!r}.")
        missing = [
            IMAGENET_ARCHIVES[s]
            for s in sorted(wanted)
            if not os.path.exists(os.path.join(manual_dir, IMAGENET_ARCHIVES[s]))
        ]
        if missing:
            raise FileNotFoundError(
                f"ImageNet is not prepared in {os.fspath(builder.data_dir)!r} and "
                f"{' and '.join(missing)} is missing from {manual_dir!r}. Download "
                "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
                "https://image-net.org/download-images into that directory, or "
                "pass the directory that holds them with manual_dir= "
                "(--manual-dir in the programs)."
            )
        archives = [
            path
            for path in (os.path.join(manual_dir, name) for name in IMAGENET_ARCHIVES.values())
            if os.path.exists(path)
        ]
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except (AssertionError, tarfile.TarError, EOFError) as error:
            # tfds says "No examples were yielded" or tarfile.ReadError without a path.
            raise ValueError(
                f"Preparing ImageNet from {' and '.join(archives)} failed "
                f"({type(error).__name__}: {error}): an archive is empty, cut short or "
                "not a tar file. Download it again from https://image-net.org."
            ) from error
    return _load_from_builder(
        builder, split, batch_size=batch_size, image_size=image_size, **pipeline_options
    )
