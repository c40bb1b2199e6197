"""Loading images for display and writing the figures of one model."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import keras
import numpy as np

from keras_sge.visualization.gates import find_sge_layers, sge_gates
from keras_sge.visualization.plots import plot_activation_statistics, plot_attention_maps
from keras_sge.visualization.statistics import activation_statistics


def load_images(
    paths: Sequence[str], image_size: int = 224, data_format: str | None = None
) -> np.ndarray:
    """Reads image files as the evaluation pipeline does.

    Each image is resized (short side `image_size / 0.875`), centre-cropped
    to `image_size` and normalised with the ImageNet mean and std, exactly
    as `keras_sge.data` prepares validation images.

    Args:
        paths: JPEG, PNG, GIF or BMP files.
        image_size: Side of the square crops.
        data_format: Layout of the result; defaults to Keras' setting.

    Returns:
        A float32 batch `(N, image_size, image_size, 3)` (or channels first).

    Example:

    >>> images = load_images(["dog.jpg", "cat.png"], 224)
    """
    import tensorflow as tf

    from keras_sge.data import normalize_images, preprocess_for_eval

    if not paths:
        raise ValueError("Expected at least one image file.")
    crops = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file not found: {path!r}.")
        try:
            crops.append(preprocess_for_eval(tf.io.read_file(path), image_size))
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(
                f"Could not decode {path!r} as a JPEG, PNG, GIF or BMP image."
            ) from error
    return np.asarray(normalize_images(tf.stack(crops), data_format=data_format))


def write_report(
    model: keras.Model,
    images,
    output_dir: str,
    statistics_data: Iterable | None = None,
    captions: Sequence[str] | None = None,
    layer: str | None = None,
    stage: str | None = None,
    num_groups: int = 4,
    max_statistics_images: int | None = None,
) -> dict[str, str]:
    """Writes the attention-map grid and the activation statistics of a model.

    Files written in `output_dir`: `attention_maps.png` (each image beside
    the gates of its most varied groups and the norm heat maps before and
    after `layer`), `activation_statistics.png` (histograms over `stage`)
    and `activation_statistics.json` (the numbers).

    Args:
        model: A functional model containing SpatialGroupEnhance layers.
        images: The preprocessed batch to show.
        output_dir: Folder of the outputs.
        statistics_data: Batches (or `(images, labels)` batches) for the
            statistics; defaults to `images`.
        captions: Text shown above each image.
        layer: The SGE layer of the map grid; defaults to the last one.
        stage: Stage (or layer name) of the statistics; defaults to the
            stage of the last SGE layer.
        num_groups: Gate maps per image.
        max_statistics_images: Use at most this many statistics images.

    Returns:
        A dict from output kind to path.
    """
    names = find_sge_layers(model)
    if not names:
        raise ValueError(f"Model {model.name!r} contains no SpatialGroupEnhance layer.")
    layer = layer or names[-1]
    results = sge_gates(model, images, layer_names=layer)
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "attention_maps": plot_attention_maps(
            images,
            results[layer],
            os.path.join(output_dir, "attention_maps.png"),
            num_groups=num_groups,
            max_images=len(images),
            captions=captions,
        )
    }
    statistics = activation_statistics(
        model,
        [images] if statistics_data is None else statistics_data,
        stage=stage,
        max_images=max_statistics_images,
    )
    label = getattr(model, "name", "") or ""
    paths["activation_statistics"] = plot_activation_statistics(
        {label: statistics}, os.path.join(output_dir, "activation_statistics.png")
    )
    paths["statistics_json"] = os.path.join(output_dir, "activation_statistics.json")
    with open(paths["statistics_json"], "w") as f:
        json.dump(statistics.as_dict(), f, indent=1)
    return paths
