"""An offline demo dataset: coloured shapes on cluttered, textured backgrounds.

Each image holds one object of its class (a filled shape of random size,
position and rotation, in a saturated colour from the class's own quarter of
the hue circle) on a background of smooth colour noise crossed
by random line segments and dots, so the class is decided by a region of the
image that the network has to locate: what spatial attention is for.

The images are generated with NumPy and Pillow from a seed (identical for the
same seed and sizes), in a few seconds, and written once as JPEG files in the
image-folder layout (`train/<class>/*.jpg`, `val/<class>/*.jpg`) under a cache
directory. `load_demo` then reads them with `load_image_folder`, through the
very decode and augmentation code used for ImageNet.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from keras_sge.data import image_folder

DEMO_VERSION = 3
CLASS_NAMES = ("circle", "cross", "square", "triangle")
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_VALIDATION = 400
DEFAULT_MIN_CROP_AREA = 0.35
MIN_SIDE, MAX_SIDE = 72, 112
ENV_DATA_DIR = "KERAS_SGE_DATA_DIR"
_COMPLETE_MARKER = "COMPLETE"
_SPLIT_IDS = {"train": 0, "val": 1}


def default_data_dir() -> str:
    """`$KERAS_SGE_DATA_DIR`, else `~/.cache/keras_sge`."""
    return os.environ.get(ENV_DATA_DIR) or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_sge"
    )


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Muted texture: grey-ish smooth noise, grain, and dull lines and dots."""
    base = rng.uniform(70, 185) + rng.uniform(-20, 20, size=3)
    coarse = rng.normal(0.0, 30.0, size=(height // 12 + 2, width // 12 + 2, 1))
    coarse = coarse + rng.normal(0.0, 8.0, size=coarse.shape[:2] + (3,))
    smooth = np.stack(
        [
            np.asarray(
                Image.fromarray(coarse[..., c].astype(np.float32), mode="F").resize(
                    (width, height), Image.BILINEAR
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )
    grain = rng.normal(0.0, 8.0, size=(height, width, 1))
    pixels = np.clip(base + smooth + grain, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(6, 13)):
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        draw.line([(x0, y0), (x1, y1)], fill=_muted_colour(rng), width=int(rng.integers(1, 3)))
    for _ in range(rng.integers(4, 10)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(1, 3)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_muted_colour(rng))
    return image


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    grey = rng.uniform(30, 225)
    return tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-25, 25, size=3))


def _rotated(points, angle: float, cx: float, cy: float):
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _shape_polygons(name: str, radius: float):
    """Polygons (vertex lists around the origin) drawing one class shape."""
    r = radius
    if name == "square":
        s = r * 0.8
        return [[(-s, -s), (s, -s), (s, s), (-s, s)]]
    if name == "triangle":
        r *= 1.2  # an inscribed triangle is small: match the other areas
        return [
            [
                (r * math.cos(a), r * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
            ]
        ]
    if name == "cross":
        t = r * 0.3
        return [[(-r, -t), (r, -t), (r, t), (-r, t)], [(-t, -r), (t, -r), (t, r), (-t, r)]]
    raise ValueError(name)


def _object_colour(rng: np.random.Generator, label: int) -> tuple[int, int, int]:
    """A saturated colour from the class's own quarter of the hue circle.

    Colour is a second, easy cue next to the shape, so a network from scratch
    learns the classes within minutes; finding it still means finding the
    object, the only saturated region of the image.
    """
    hue = (label + rng.uniform(0.15, 0.85)) / len(CLASS_NAMES)
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    return tuple(int(round(255 * v)) for v in rgb)


def render_example(seed: int, split: str, index: int, label: int) -> Image.Image:
    """Renders demo image `index` of `split` with class `label`, deterministically.

    Args:
        seed: dataset seed.
        split: `"train"` or `"val"`.
        index: example number within the split.
        label: index into `CLASS_NAMES`.

    Returns:
        An RGB `PIL.Image` of a random size between 72 and 112 pixels a side.
    """
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    height, width = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    image = _background(rng, height, width)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.24, 0.36) * min(height, width)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    colour = _object_colour(rng, label)
    name = CLASS_NAMES[label]
    if name == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        for polygon in _shape_polygons(name, radius):
            draw.polygon(_rotated(polygon, angle, cx, cy), fill=colour)
    return image


def _write_split(root: str, seed: int, split: str, count: int) -> None:
    for name in CLASS_NAMES:
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
    for index in range(count):
        label = index % len(CLASS_NAMES)
        image = render_example(seed, split, index, label)
        path = os.path.join(root, split, CLASS_NAMES[label], f"{split}_{index:05d}.jpg")
        image.save(path, format="JPEG", quality=90)


def prepare_demo(
    data_dir: str | None = None,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_validation: int = DEFAULT_NUM_VALIDATION,
    seed: int = 0,
) -> str:
    """Writes the demo dataset once and returns its folder.

    The folder is `<data_dir>/demo-v3-seed<seed>-<num_train>-<num_validation>`
    with `train/<class>/` and `val/<class>/` sub-folders of JPEGs. It is
    written to a temporary folder next to it and renamed into place, so
    concurrent callers never see a half-written dataset; the first rename
    wins and the others discard their copy.

    Args:
        data_dir: cache root; default `$KERAS_SGE_DATA_DIR` or
            `~/.cache/keras_sge`.
        num_train: training images (classes balanced, round-robin).
        num_validation: validation images.
        seed: generator seed; the same seed gives the same images.

    Returns:
        The dataset folder.

    Example:

    >>> folder = prepare_demo()
    >>> sorted(os.listdir(folder))
    ['COMPLETE', 'train', 'val']
    """
    for arg, value in (("num_train", num_train), ("num_validation", num_validation)):
        if not isinstance(value, int) or value < len(CLASS_NAMES):
            raise ValueError(
                f"{arg} must be an integer >= {len(CLASS_NAMES)} (one image per "
                f"class), got {value!r}."
            )
    root = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    folder = os.path.join(root, f"demo-v{DEMO_VERSION}-seed{seed}-{num_train}-{num_validation}")

    def write(staging: str) -> None:
        _write_split(staging, seed, "train", num_train)
        _write_split(staging, seed, "val", num_validation)

    return write_folder_once(folder, write, f"keras_sge demo dataset v{DEMO_VERSION}")


def write_folder_once(folder: str, write: Callable[[str], None], description: str) -> str:
    """Creates `folder` whole or not at all, once, however many processes race for it.

    `write(staging)` fills a hidden staging folder beside `folder`, which gets a
    `COMPLETE` marker and is renamed into place; a folder with the marker is
    kept as it is.

    Args:
        folder: the folder to create.
        write: fills the folder it is given.
        description: the marker file's text.

    Returns:
        `folder`.
    """
    if os.path.exists(os.path.join(folder, _COMPLETE_MARKER)):
        return folder
    root = os.path.dirname(folder)
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=root)
    try:
        write(staging)
        with open(os.path.join(staging, _COMPLETE_MARKER), "w") as f:
            f.write(description + "\n")
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process renamed its copy first (or an incomplete folder
            # is in the way, which is an error worth surfacing).
            if not os.path.exists(os.path.join(folder, _COMPLETE_MARKER)):
                raise
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_demo(
    split: str,
    *,
    batch_size: int,
    image_size: int = 224,
    data_dir: str | None = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_validation: int = DEFAULT_NUM_VALIDATION,
    demo_seed: int = 0,
    **pipeline_options,
):
    """Loads the offline demo dataset (4 classes of shapes), generating it once.

    Read by `load_image_folder`: batched `(images, int32 labels)`, ImageNet
    normalisation, augmentation iff training. Small image sizes (e.g. 64)
    suit it: the JPEGs are 72-112 pixels a side.

    Args:
        split: `"train"` or `"validation"` (alias `"val"`).
        batch_size: examples per batch.
        image_size: side of the square images.
        data_dir: cache root of the generated files; default
            `$KERAS_SGE_DATA_DIR` or `~/.cache/keras_sge`.
        num_train: size of the generated training split.
        num_validation: size of the generated validation split.
        demo_seed: seed of the generated images.
        **pipeline_options: `training`, `seed`, `dtype`, `with_info`, `shard`,
            `input_context`, `min_crop_area` (0.35 here by default: ImageNet's
            0.08 crops often miss the one object of a demo image and so teach
            noise), `sample_seed`, as documented in `keras_sge.data.load`.

    Returns:
        A `tf.data.Dataset`, or `(dataset, info)` with `with_info=True`.

    Example:

    >>> train = load_demo("train", batch_size=32, image_size=64)
    >>> model.fit(train, validation_data=load_demo("validation", batch_size=32, image_size=64))
    """
    if split not in ("train", "validation", "val"):
        raise ValueError(f"The demo dataset has splits 'train' and 'validation', got {split!r}.")
    folder = prepare_demo(
        data_dir, num_train=num_train, num_validation=num_validation, seed=demo_seed
    )
    pipeline_options.setdefault("min_crop_area", DEFAULT_MIN_CROP_AREA)
    return image_folder.load_image_folder(
        folder, split, batch_size=batch_size, image_size=image_size, **pipeline_options
    )
