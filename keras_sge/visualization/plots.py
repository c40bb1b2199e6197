"""Matplotlib figures of SGE gates, feature norms and activation statistics."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from keras_sge.constants import IMAGENET_MEAN, IMAGENET_STD
from keras_sge.visualization.gates import GateResult
from keras_sge.visualization.statistics import ActivationStatistics


def denormalize_images(
    images,
    data_format: str | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Undoes the ImageNet normalisation for display.

    Args:
        images: `(N, H, W, 3)` or `(N, 3, H, W)` batch normalised as
            `(pixels / 255 - mean) / std`.
        data_format: Layout of `images`. Defaults to
            `keras.config.image_data_format()`.
        mean: Per-channel RGB mean of the normalisation.
        std: Per-channel RGB standard deviation of the normalisation.

    Returns:
        `(N, H, W, 3)` float32 RGB in [0, 1].
    """
    images = np.asarray(images, dtype="float32")
    data_format = data_format or keras.config.image_data_format()
    if images.ndim != 4:
        raise ValueError(f"Expected a batch of images of rank 4; received shape {images.shape}.")
    if data_format == "channels_first":
        images = np.transpose(images, (0, 2, 3, 1))
    if images.shape[-1] != len(mean):
        raise ValueError(
            f"Expected {len(mean)} colour channels ({data_format}); received "
            f"a batch of shape {images.shape}."
        )
    pixels = images * np.asarray(std, "float32") + np.asarray(mean, "float32")
    return np.clip(pixels, 0.0, 1.0)


def most_varied_groups(gate: np.ndarray, count: int) -> np.ndarray:
    """Indices of the groups whose gate varies most over the positions.

    Args:
        gate: `(H, W, G)` gate of one image.
        count: How many groups to return.

    Returns:
        `(count,)` group indices, most varied first.
    """
    variance = gate.reshape(-1, gate.shape[-1]).var(axis=0)
    return np.argsort(-variance, kind="stable")[:count]


def _overlay(axis, picture, heat, title, cmap):
    """Shows `heat` stretched over `picture`, with its range in the title."""
    height, width = picture.shape[:2]
    axis.imshow(picture, extent=(0, width, height, 0))
    low, high = float(heat.min()), float(heat.max())
    axis.imshow(
        heat,
        cmap=cmap,
        alpha=0.55,
        interpolation="bilinear",
        extent=(0, width, height, 0),
        vmin=low,
        vmax=high if high > low else low + 1e-6,
    )
    axis.set_title(f"{title}\n[{low:.3g}, {high:.3g}]", fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_attention_maps(
    images,
    result: GateResult,
    path: str,
    num_groups: int = 4,
    max_images: int = 8,
    captions: Sequence[str] | None = None,
    data_format: str | None = None,
) -> str:
    """Saves the image grid: image, its most varied gates, norms before/after.

    One row per image: the (de-normalised) image, the gates of the
    `num_groups` groups whose gate varies most over that image, and heat
    maps of the feature norm before and after the layer. Each heat map is
    stretched over the image with its own colour range, printed in its
    title.

    Args:
        images: The preprocessed batch given to `sge_gates`.
        result: The `GateResult` of one layer (usually the last SGE layer).
        path: Where to write the PNG.
        num_groups: Number of gate maps per image.
        max_images: At most this many rows.
        captions: Optional text per image (e.g. file names or labels).
        data_format: Layout of `images`; defaults to Keras' setting.

    Returns:
        `path`.

    Example:

    >>> gates = sge_gates(model, images)
    >>> plot_attention_maps(images, gates["layer4_2_sge"], "gates.png")
    'gates.png'
    """
    pictures = denormalize_images(images, data_format)
    rows = min(len(pictures), max_images, len(result.gate))
    num_groups = min(num_groups, result.groups)
    columns = num_groups + 3
    figure = Figure(figsize=(1.9 * columns, 2.1 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    gray = pictures.mean(axis=-1)
    for row in range(rows):
        axes[row, 0].imshow(pictures[row])
        caption = captions[row] if captions is not None else f"image {row}"
        axes[row, 0].set_title(caption, fontsize=8)
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        backdrop = np.repeat(gray[row][..., None], 3, axis=-1)
        gate = result.gate[row]
        for column, group in enumerate(most_varied_groups(gate, num_groups), 1):
            _overlay(axes[row, column], backdrop, gate[..., group], f"gate, group {group}", "jet")
        _overlay(
            axes[row, num_groups + 1],
            backdrop,
            result.norm_before[row],
            "norm before SGE",
            "magma",
        )
        _overlay(
            axes[row, num_groups + 2],
            backdrop,
            result.norm_after[row],
            "norm after SGE",
            "magma",
        )
    figure.suptitle(
        f"{result.layer_name}: gates of the most varied groups "
        f"({result.gate.shape[1]}x{result.gate.shape[2]} positions, "
        f"{result.groups} groups)",
        fontsize=10,
    )
    figure.tight_layout()
    _save(figure, path)
    return path


def plot_activation_statistics(
    statistics: ActivationStatistics | Mapping[str, ActivationStatistics],
    path: str,
    bins: int = 30,
) -> str:
    """Saves histograms of the per-group activation variance.

    Left: the variance of each group's activations before and after SGE
    (every layer and group of the statistics is one count). Right: the
    contrast gain `var(x * a) / (mean(a)**2 var(x))`; above 1, SGE spread the
    activations more than a uniform gate would.

    Args:
        statistics: One `ActivationStatistics`, or a dict from a label
            (e.g. a model name) to statistics, to compare models.
        path: Where to write the PNG.
        bins: Number of histogram bins.

    Returns:
        `path`.
    """
    if isinstance(statistics, ActivationStatistics):
        statistics = {"": statistics}
    if not statistics:
        raise ValueError("Expected at least one ActivationStatistics to plot.")
    variances = np.concatenate(
        [np.ravel(s.variance_before) for s in statistics.values()]
        + [np.ravel(s.variance_after) for s in statistics.values()]
    )
    positive = variances[variances > 0]
    if positive.size:
        edges = np.geomspace(positive.min(), positive.max() * 1.0001, bins + 1)
    else:
        edges = bins
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    _plot_group_histograms(left, right, statistics, edges, bins)
    _label_statistics_axes(
        left, right, next(iter(statistics.values())), log_scale=bool(positive.size)
    )
    figure.tight_layout()
    _save(figure, path)
    return path


def _plot_group_histograms(
    left: Axes,
    right: Axes,
    statistics: Mapping[str, ActivationStatistics],
    edges: np.ndarray | int,
    bins: int,
) -> None:
    """Draws each model's variance (left) and contrast gain (right) histograms.

    Args:
        left, right: the two matplotlib axes.
        statistics: label -> statistics; an empty label adds no prefix.
        edges: the variance bins (edges, or a count).
        bins: number of contrast gain bins.
    """
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, stats) in enumerate(statistics.items()):
        prefix = f"{label}: " if label else ""
        before_colour = colours[(2 * index) % len(colours)]
        after_colour = colours[(2 * index + 1) % len(colours)]
        left.hist(
            np.ravel(stats.variance_before),
            bins=edges,
            alpha=0.5,
            color=before_colour,
            label=prefix + "before SGE",
        )
        left.hist(
            np.ravel(stats.variance_after),
            bins=edges,
            alpha=0.5,
            color=after_colour,
            label=prefix + "after SGE",
        )
        right.hist(
            np.ravel(stats.contrast_gain),
            bins=bins,
            alpha=0.6,
            color=after_colour,
            label=f"{prefix}median {np.median(stats.contrast_gain):.4f}",
        )


def _label_statistics_axes(
    left: Axes, right: Axes, first: ActivationStatistics, log_scale: bool
) -> None:
    """Titles, axis labels, the uniform-gate line and the legends.

    Args:
        left, right: the two matplotlib axes.
        first: the statistics whose layers and image count the titles name.
        log_scale: draw the variance axis on a log scale.
    """
    if log_scale:
        left.set_xscale("log")
    left.set_xlabel("per-group activation variance")
    left.set_ylabel("number of groups")
    right.axvline(1.0, color="black", linestyle="--", linewidth=1, label="uniform gate")
    right.set_xlabel("contrast gain  var(x a) / (mean(a)^2 var(x))")
    right.set_ylabel("number of groups")
    layers = ", ".join(first.layer_names)
    left.set_title(f"Variance per group ({layers})", fontsize=9)
    right.set_title(f"Gain over a uniform gate ({first.num_images} images)", fontsize=9)
    left.legend(fontsize=8)
    right.legend(fontsize=8)


def _save(figure: Figure, path: str) -> None:
    """Writes a figure (no pyplot state, so no GUI backend is touched)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=100)
