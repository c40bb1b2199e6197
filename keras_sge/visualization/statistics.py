"""Per-group activation statistics before and after SGE over a dataset."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_sge.visualization.gates import FeatureTaps, select_sge_layers, sge_gates


@dataclasses.dataclass
class ActivationStatistics:
    """Per-group variance of the activations before and after SGE.

    For every image and every group, the variance is taken over the group's
    activations (all its positions and channels); the arrays hold its mean
    over the images. A constant gate `c` would scale the variance by `c**2`,
    so `contrast_gain` compares the output's variance with that of a uniform
    gate of the same mean: above 1, SGE kept the large activations and
    pushed the small ones towards 0, as the paper argues.

    Attributes:
        layer_names: The SGE layers, one row of each array per layer.
        variance_before: `(layers, groups)` mean per-image group variance of
            the layer's input.
        variance_after: The same for the layer's output.
        mean_gate: `(layers, groups)` mean gate value.
        contrast_gain: `(layers, groups)` mean over the images of
            `var(x * a) / (mean(a)**2 * var(x))`.
        num_images: Number of images the statistics are averaged over.
    """

    layer_names: list[str]
    variance_before: np.ndarray
    variance_after: np.ndarray
    mean_gate: np.ndarray
    contrast_gain: np.ndarray
    num_images: int

    def as_dict(self) -> dict:
        """A JSON-serialisable dict of the statistics."""
        return {
            "layer_names": list(self.layer_names),
            "variance_before": self.variance_before.tolist(),
            "variance_after": self.variance_after.tolist(),
            "mean_gate": self.mean_gate.tolist(),
            "contrast_gain": self.contrast_gain.tolist(),
            "num_images": self.num_images,
        }


def group_variances(features: np.ndarray, groups: int) -> np.ndarray:
    """Per-image, per-group variance of channels_last features.

    Args:
        features: `(N, H, W, C)` array; group `k` holds the contiguous
            channels `[k * C / groups, (k + 1) * C / groups)`.
        groups: Number of groups.

    Returns:
        `(N, groups)` float64 variances over each group's positions and
        channels.
    """
    n, h, w, c = features.shape
    grouped = features.astype("float64").reshape(n, h, w, groups, c // groups)
    return grouped.var(axis=(1, 2, 4))


def _batches(dataset, max_images: int | None):
    """Yields image batches from a dataset of images or (images, labels)."""
    seen = 0
    for batch in dataset:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images = np.asarray(images)
        if max_images is not None:
            images = images[: max_images - seen]
        if len(images) == 0:
            break
        yield images
        seen += len(images)
        if max_images is not None and seen >= max_images:
            break


def activation_statistics(
    model: keras.Model,
    dataset,
    stage: str | None = None,
    max_images: int | None = None,
) -> ActivationStatistics:
    """Per-group activation variance before and after SGE over a dataset.

    Args:
        model: A functional model containing SpatialGroupEnhance layers.
        dataset: An iterable of image batches or of `(images, labels)`
            batches, e.g. `keras_sge.data.load("demo", "validation",
            batch_size=16)`, or a list of arrays.
        stage: Which SGE layers: a stage such as `"layer4"` or a layer name
            (see `select_sge_layers`). Defaults to the last stage.
        max_images: Stop after this many images. Defaults to the whole
            dataset.

    Returns:
        An `ActivationStatistics`.

    Example:

    >>> stats = activation_statistics(model, dataset, stage="layer4")
    >>> stats.variance_before.shape
    (3, 64)
    """
    layer_names = select_sge_layers(model, stage)
    taps = FeatureTaps(model, layer_names)  # one extractor for every batch
    sums = None
    num_images = 0
    for images in _batches(dataset, max_images):
        results = sge_gates(model, images, return_features=True, taps=taps)
        groups = {r.groups for r in results.values()}
        if len(groups) != 1:
            raise ValueError(
                f"The layers of stage {stage!r} have different group counts "
                f"{sorted(groups)}; pass a single layer name as `stage`."
            )
        per_layer = []
        for name in layer_names:
            result = results[name]
            before = group_variances(result.features_before, result.groups)
            after = group_variances(result.features_after, result.groups)
            mean_gate = result.gate.astype("float64").mean(axis=(1, 2))
            # A uniform gate c gives var(c x) = c**2 var(x).
            uniform = np.square(mean_gate) * before
            gain = np.divide(after, uniform, out=np.ones_like(after), where=uniform > 0)
            per_layer.append(np.stack([before, after, mean_gate, gain]).sum(axis=1))
        batch_sums = np.stack(per_layer, axis=1)  # (4, layers, groups)
        sums = batch_sums if sums is None else sums + batch_sums
        num_images += len(images)
    if num_images == 0:
        raise ValueError("The dataset yielded no images.")
    means = sums / num_images
    return ActivationStatistics(
        layer_names=layer_names,
        variance_before=means[0],
        variance_after=means[1],
        mean_gate=means[2],
        contrast_gain=means[3],
        num_images=num_images,
    )
