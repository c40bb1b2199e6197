"""Image folders: one sub-folder of images per class (the extracted-ImageNet layout)."""

from __future__ import annotations

import concurrent.futures
import os
import sys

import numpy as np
import tensorflow as tf

from keras_sge.data import pipeline

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".gif", ".bmp")

# Sub-folder names tried, in order, for each split when `directory` holds the
# splits side by side.
SPLIT_DIRECTORIES = {
    "train": ("train",),
    "validation": ("val", "validation"),
    "test": ("test",),
}
_PARTITION_SEED = 20190520


def list_class_folder(
    directory: str, class_names: list[str] | None = None
) -> tuple[list[str], list[int], list[str]]:
    """Lists the image files of a class-per-sub-folder directory.

    Files are listed, never opened. Classes are the sub-folder names sorted,
    unless `class_names` fixes them (so a validation folder uses the training
    folder's labels). Hidden sub-folders (`.ipynb_checkpoints`, ...) and
    sub-folders without image files are not classes; the empty ones are named
    in a warning. Names that are not UTF-8 are read as they are (they are
    named in a warning, since TensorFlow prints them as raw bytes).

    Args:
        directory: folder holding one sub-folder per class.
        class_names: optional class list; sub-folders not in it are an error.

    Returns:
        `(paths, labels, class_names)`, paths sorted by class, then name.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image folder {directory!r} does not exist.")
    files_of = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        files_of[entry.name] = sorted(_image_files(entry.path))
    empty = [name for name, files in files_of.items() if not files]
    if empty:
        print(
            f"WARNING keras_sge.data: ignoring sub-folders of {directory!r} without "
            f"image files (not classes): {empty}",
            file=sys.stderr,
        )
    found = [name for name, files in files_of.items() if files]
    if not found and not files_of:
        raise ValueError(
            f"Image folder {directory!r} has no class sub-folders; expected "
            "one sub-folder of images per class, e.g. "
            f"{os.path.join(directory, 'n01440764', 'image.JPEG')}."
        )
    if class_names is None:
        class_names = found
    else:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(
                f"Image folder {directory!r} has class sub-folders {unknown} that "
                f"are not among the training classes {class_names}."
            )
    label_of = {name: i for i, name in enumerate(class_names)}
    paths, labels = [], []
    for name in found:
        files = files_of[name]
        paths.extend(os.path.join(directory, name, f) for f in files)
        labels.extend([label_of[name]] * len(files))
    not_utf8 = [path for path in paths if not _is_utf8(path)]
    if not_utf8:
        print(
            f"WARNING keras_sge.data: {len(not_utf8)} file names in {directory!r} are "
            f"not UTF-8 (read as they are), e.g. {not_utf8[0]!r}",
            file=sys.stderr,
        )
    if not paths:
        raise ValueError(
            f"Image folder {directory!r} has no image files (extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders."
        )
    return paths, labels, list(class_names)


def _image_files(directory: str) -> list[str]:
    """Names of the image files in `directory`; entries that cannot be examined (a
    symbolic link to itself, a dangling one) are skipped with a warning naming them."""
    names = []
    for entry in os.scandir(directory):
        if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        try:
            is_file = entry.is_file()
        except OSError as error:
            print(
                f"WARNING keras_sge.data: skipping {entry.path!r}: {error.strerror or error}",
                file=sys.stderr,
            )
            continue
        if is_file:
            names.append(entry.name)
        elif entry.is_symlink():
            print(
                f"WARNING keras_sge.data: skipping {entry.path!r}: a link to nothing",
                file=sys.stderr,
            )
    return names


def keep_readable_files(
    paths: list[str],
    labels: list[int],
    class_names: list[str],
    directory: str,
    needed: int,
    what: str,
) -> tuple[list[str], list[int]]:
    """Drops the files that are not whole images; refuses too few, or a class with none.

    Each file's head and tail are read (`pipeline.file_looks_complete`: two small
    reads, 16 at a time); the dropped files are summarised in one warning.

    Args:
        paths: the listed image files.
        labels: their labels.
        class_names: names of the labels, for the message.
        directory: the folder, for the message.
        needed: how many must be readable.
        what: what needs them, for the message (e.g. "one batch of 32").

    Returns:
        `(paths, labels)` of the readable files.

    Raises:
        ValueError: fewer readable files than needed, or a class without one
            (naming its folder).
    """
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        reasons = list(pool.map(pipeline.file_looks_complete, paths))
    rejected: dict[str, list[str]] = {}
    for path, reason in zip(paths, reasons):
        if reason is not None:
            rejected.setdefault(reason, []).append(path)
    kept = [i for i, reason in enumerate(reasons) if reason is None]
    if len(kept) < needed:
        raise ValueError(
            f"{directory!r} has {len(kept)} readable image files of {len(paths)} listed, "
            f"fewer than {what}. Rejected: {_summary(rejected)}."
        )
    if rejected:
        print(
            f"WARNING keras_sge.data: skipping {len(paths) - len(kept)} of {len(paths)} "
            f"image files in {directory!r}: {_summary(rejected)}",
            file=sys.stderr,
        )
    empty = sorted(set(labels) - {labels[i] for i in kept})
    if empty:
        folders = [os.path.dirname(paths[labels.index(label)]) for label in empty]
        raise ValueError(
            f"Class {class_names[empty[0]]!r} has no readable image: every file in "
            f"{folders[0]!r} was rejected ({len(empty)} such classes: {folders}). Remove "
            "the folder or put readable JPEG/PNG/GIF/BMP images in it."
        )
    return [paths[i] for i in kept], [labels[i] for i in kept]


def _summary(rejected: dict[str, list[str]]) -> str:
    """`"2 empty (e.g. '/a.jpg'); 1 cut short (...)"`, or "none"."""
    return (
        "; ".join(
            f"{len(files)} {reason} (e.g. {files[0]!r})" for reason, files in rejected.items()
        )
        or "none"
    )


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as surrogates
        return False
    return True


def _unreadable_reason(path: str) -> str | None:
    """Why the training pipeline would skip `path` (`None`: it decodes)."""
    from keras_sge.data import preprocessing

    reason = pipeline.file_looks_complete(path)
    if reason is not None:
        return reason
    with open(path, "rb") as f:
        image_bytes = f.read()
    try:
        preprocessing.decode_image(tf.constant(image_bytes))
    except tf.errors.InvalidArgumentError:
        return "the decoder rejects it"
    return None


def require_readable(paths: list[str], needed: int, directory: str, what: str) -> None:
    """Decodes files until `needed` decode; else raises naming what was rejected.

    Reads only as many files as it takes (one batch on a healthy folder).

    Args:
        paths: the image files.
        needed: how many must decode.
        directory: the folder, for the message.
        what: what needs them, for the message (e.g. "one batch of 32").

    Raises:
        ValueError: fewer than `needed` of `paths` decode.
    """
    readable, rejected = 0, {}
    for path in paths:
        reason = _unreadable_reason(path)
        if reason is None:
            readable += 1
            if readable >= needed:
                return
        else:
            rejected.setdefault(reason, []).append(path)
    raise ValueError(
        f"{directory!r} has {readable} readable image files of {len(paths)} listed, "
        f"fewer than {what}. Rejected: {_summary(rejected)}."
    )


def _split_directory(directory: str, split: str) -> str | None:
    for name in SPLIT_DIRECTORIES.get(split, (split,)):
        candidate = os.path.join(directory, name)
        if os.path.isdir(candidate):
            return candidate
    return None


def _partition(labels: list[int], fraction: float, take_validation: bool) -> list[int]:
    """Indices of a fixed, per-class stratified train/validation partition."""
    generator = np.random.default_rng(_PARTITION_SEED)
    labels_array = np.asarray(labels)
    chosen = []
    for label in np.unique(labels_array):
        members = np.flatnonzero(labels_array == label)
        members = members[generator.permutation(len(members))]
        n_val = int(round(len(members) * fraction))
        chosen.extend(members[:n_val] if take_validation else members[n_val:])
    return sorted(int(i) for i in chosen)


def _list_split(
    directory: str, split: str | None, validation_fraction: float | None
) -> tuple[list[str], list[int], list[str]]:
    """Lists the image files of `split` in one of the three folder layouts.

    Args:
        directory: the folder given to `load_image_folder`.
        split: the canonical split name (`"val"` already mapped), or `None`.
        validation_fraction: carve validation out of the training images.

    Returns:
        `(paths, labels, class_names)`, labels indexing the sorted class names.
    """
    if validation_fraction is not None:
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be between 0 and 1, got {validation_fraction!r}."
            )
        if split not in ("train", "validation"):
            raise ValueError(
                f"With validation_fraction, split must be 'train' or 'validation', got {split!r}."
            )
        root = _split_directory(directory, "train") or directory
        paths, labels, class_names = list_class_folder(root)
        keep = _partition(labels, validation_fraction, take_validation=split == "validation")
        paths = [paths[i] for i in keep]
        labels = [labels[i] for i in keep]
    elif split is None:
        paths, labels, class_names = list_class_folder(directory)
    else:
        split_dir = _split_directory(directory, split)
        if split_dir is None:
            tried = ", ".join(
                os.path.join(directory, n) for n in SPLIT_DIRECTORIES.get(split, (split,))
            )
            raise FileNotFoundError(
                f"No folder for split {split!r} in {directory!r} (tried {tried}). "
                "Put the splits side by side (train/, val/): the training programs "
                "need them. In Python, load_image_folder(..., validation_fraction=0.1) "
                "carves validation out of train/, and split=None reads a single "
                "folder of class sub-folders."
            )
        train_dir = _split_directory(directory, "train")
        class_names = list_class_folder(train_dir)[2] if train_dir else None
        paths, labels, class_names = list_class_folder(split_dir, class_names)

    return paths, labels, class_names


def _files_to_read(
    paths: list[str],
    labels: list[int],
    class_names: list[str],
    *,
    batch_size: int,
    training: bool,
    shard_index: int,
    shard_count: int,
    sample_seed: int | None,
    directory: str,
) -> tuple[list[str], list[int]]:
    """The readable files of this shard, evaluation files in `sample_seed` order.

    Args:
        paths, labels, class_names: the listed files, their labels and the
            class names (unreadable files are skipped with one warning).
        batch_size: examples per batch; training needs one readable batch.
        training: whether the files feed a training pipeline; training
            shards are cut equal.
        shard_index, shard_count: this shard.
        sample_seed: fixed order for evaluation files, or `None`.
        directory: the folder, named when the shard is empty.

    Returns:
        The `(paths, labels)` this pipeline reads.

    Raises:
        ValueError: when a class, the shard or the first batch has no
            readable file.
    """
    folder = os.path.dirname(os.path.dirname(paths[0]))
    needed, what = (batch_size, f"one batch of {batch_size}") if training else (1, "one")
    paths, labels = keep_readable_files(paths, labels, class_names, folder, needed, what)
    if shard_count > 1:
        indices = list(range(shard_index, len(paths), shard_count))
        if training:
            indices = indices[: len(paths) // shard_count]
        paths = [paths[i] for i in indices]
        labels = [labels[i] for i in indices]
    if not paths:
        raise ValueError(f"Shard {shard_index} of {shard_count} of {directory!r} is empty.")
    if sample_seed is not None and not training:
        order = np.random.default_rng(sample_seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        labels = [labels[i] for i in order]
    require_readable(paths, needed, folder, what)
    return paths, labels


def _file_dataset(paths: list[str], labels: list[int], **pipeline_options) -> tf.data.Dataset:
    """The batched pipeline that reads, decodes and preprocesses `paths`.

    Args:
        paths, labels: the files to read and their labels.
        **pipeline_options: `training`, `batch_size`, `image_size`, `seed`,
            `dtype`, `min_crop_area`, as in `pipeline.build_dataset`.

    Returns:
        The batched `tf.data.Dataset` of `(images, labels)`.
    """
    sources = tf.data.Dataset.from_tensor_slices(
        # Bytes: file names need not be UTF-8.
        (tf.constant([os.fsencode(p) for p in paths]), tf.constant(labels, tf.int32))
    )
    return pipeline.build_dataset(
        sources,
        from_files=True,
        shuffle_buffer_size=len(paths),
        num_examples=len(paths),
        **pipeline_options,
    )


def load_image_folder(
    directory: str,
    split: str | None = None,
    *,
    batch_size: int,
    image_size: int = 224,
    training: bool | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    with_info: bool = False,
    validation_fraction: float | None = None,
    shard: tuple[int, int] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    min_crop_area: float = 0.08,
    sample_seed: int | None = None,
):
    """Loads a folder of images, one sub-folder per class, for `model.fit`.

    Three layouts:

    - `split` given and `directory/train/`, `directory/val/` (or
      `validation/`) exist: the split's sub-folder is read; class names come
      from `train/`, so labels agree between splits.
    - `validation_fraction` given: `directory` (or `directory/train/` when it
      exists) is divided per class into a fixed validation part of that
      fraction and a training part; `split` is `"train"` or `"validation"`.
    - `split=None`: `directory` itself holds the class sub-folders.

    Classes are the sorted sub-folder names; `info.class_names[label]` is the
    mapping. **Unreadable files** (not an image, empty, truncated, a link to
    nothing or to itself) are skipped with one warning on stderr counting and
    naming them (each file's head and tail are read once, at the start); a
    class left without a readable file is refused, naming its folder.
    `info.num_examples` counts the readable files. A file that becomes
    unreadable later is skipped by the pipeline with a warning; an epoch never
    stops on it and it never reaches the model.
    Before any batch is made, files are opened until one batch (training) or
    one image (evaluation) decodes; a folder with fewer readable files is
    refused with a `ValueError` counting the rejected files and why.
    Training epochs still have `len(files) // batch_size` batches (topped up
    from the next shuffled pass); evaluation yields every readable file once.

    Args:
        directory: the folder (see layouts above).
        split: `"train"`, `"validation"` (alias `"val"`), `"test"`, or `None`.
        batch_size: examples per batch (global batch with `input_context`).
        image_size: side of the square images.
        validation_fraction: carve the validation split out of the training
            images (between 0 and 1).
        training, seed, dtype, with_info, shard, input_context,
            min_crop_area, sample_seed: the pipeline options, as documented
            in `keras_sge.data.load` (`shard` splits the file list).

    Returns:
        A batched `tf.data.Dataset` of `(images, labels)`, or
        `(dataset, info)` with `with_info=True`.

    Example:

    >>> train = load_image_folder("/data/imagenet", "train", batch_size=256)
    >>> val = load_image_folder("/data/imagenet", "validation", batch_size=256)
    """
    pipeline.hide_gpus_from_tensorflow()
    pipeline.check_image_size(image_size)
    pipeline.check_min_crop_area(min_crop_area)
    batch_size, shard_index, shard_count = pipeline.resolve_sharding(
        batch_size, shard, input_context
    )
    directory = os.fspath(directory)
    split = "validation" if split == "val" else split
    if training is None:
        training = split is not None and pipeline.is_training_split(split)

    paths, labels, class_names = _list_split(directory, split, validation_fraction)
    paths, labels = _files_to_read(
        paths,
        labels,
        class_names,
        batch_size=batch_size,
        training=training,
        shard_index=shard_index,
        shard_count=shard_count,
        sample_seed=sample_seed,
        directory=directory,
    )
    dataset = _file_dataset(
        paths,
        labels,
        training=training,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        dtype=dtype,
        min_crop_area=min_crop_area,
    )
    return pipeline.with_dataset_info(
        dataset,
        with_info,
        class_names=class_names,
        num_examples=len(paths),
        batch_size=batch_size,
        training=training,
    )
