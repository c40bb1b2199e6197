"""`load`: one entry point over every data source."""

from __future__ import annotations

import os

from keras_sge.data import demo, image_folder, tfds_datasets


def load(dataset: str, split: str, *, batch_size: int, image_size: int = 224, **kwargs):
    """Loads a dataset by name or folder, for `model.fit` / `model.evaluate`.

    Dispatches on `dataset`:

    - `"demo"`: the offline demo dataset (`load_demo`);
    - `"imagenet2012"` (alias `"imagenet"`): ImageNet through tfds (`load_imagenet`);
    - an existing folder: an image folder (`load_image_folder`);
    - anything else: a tensorflow-datasets name (`load_tfds`).

    The pipeline options below are the same for every source; the sources'
    own arguments (`data_dir`, `manual_dir`, `download`, `validation_fraction`,
    the demo's sizes) are passed through to their loaders.

    Args:
        dataset: source name or folder path.
        split: split name, e.g. `"train"`, `"validation"`, `"train[:1%]"`.
        batch_size: examples per batch (the global batch with
            `input_context`).
        image_size: side of the square images.
        **kwargs: the source's own arguments and these pipeline options:
            - `training`: shuffle, augment (random resized crop, flip) and
              drop the remainder; default: iff `split` is a training split.
              Otherwise the evaluation crop: short side to
              `image_size / 0.875`, central crop.
            - `seed`: makes file order, shuffle and augmentation reproducible.
            - `dtype`: image dtype, default float32 (e.g. `"bfloat16"`).
            - `with_info`: also return a `DatasetInfo` (classes, names, size).
            - `shard`: `(index, count)`: read only this shard (e.g. one JAX
              process's).
            - `input_context`: a `tf.distribute.InputContext`: per-replica
              batch and shard.
            - `min_crop_area`: smallest area fraction of the training random
              crop (0.08, as Inception and the authors).
            - `sample_seed`: evaluation only: read the split in a fixed random
              order drawn from this seed, the same on every pass, so that its
              first batches are a class-balanced sample (for a partial
              validation, e.g. `model.evaluate(..., steps=N)`).
            - `shuffle_buffer_size` (tfds sources): training shuffle buffer in
              examples (default `min(num_examples, 10000)` encoded images).

    Returns:
        A batched `tf.data.Dataset` of `(images, int32 labels)`, or
        `(dataset, info)` with `with_info=True`.

    Example:

    >>> train, info = load("demo", "train", batch_size=32, image_size=64, with_info=True)
    >>> val = load("/data/imagenet", "validation", batch_size=256)
    """
    if not isinstance(dataset, (str, os.PathLike)) or not str(dataset):
        raise ValueError(
            "dataset must be 'demo', 'imagenet2012', a tfds name or an image "
            f"folder path, got {dataset!r}."
        )
    common = dict(batch_size=batch_size, image_size=image_size, **kwargs)
    if dataset == "demo":
        return demo.load_demo(split, **common)
    if dataset in ("imagenet2012", "imagenet"):
        return tfds_datasets.load_imagenet(split, **common)
    folder = os.path.expanduser(os.fspath(dataset))
    if os.path.isdir(folder):
        return image_folder.load_image_folder(folder, split, **common)
    if _looks_like_a_path(str(dataset)):
        raise FileNotFoundError(
            f"No folder {os.fspath(dataset)!r} (dataset names a path, not a "
            "tensorflow-datasets name): check the path."
        )
    return tfds_datasets.load_tfds(str(dataset), split, **common)


def _looks_like_a_path(dataset: str) -> bool:
    """tfds names are `name`, `name/config`, `name:version`: never `./x`, `~/x`, `/x`,
    nor `a/b` where the folder `a` exists."""
    if dataset.startswith((".", "~", os.sep)):
        return True
    parent = os.path.dirname(dataset)
    return bool(parent) and os.path.isdir(parent)
