"""Boxes with class names and scores drawn on images, saved as PNG (matplotlib)."""

from __future__ import annotations

import numpy as np

from keras_sge._lazy import require


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    class_names,
    path: str,
    min_score: float = 0.3,
) -> int:
    """Draws `xyxy` boxes labelled `name score` on an RGB image and saves a PNG.

    Args:
        image: `(H, W, 3)` RGB, uint8 or floats in [0, 255].
        boxes: `(n, 4)` `xyxy` pixel boxes (padding rows have label -1).
        labels: `(n,)` class indices.
        scores: `(n,)` confidences.
        class_names: names by class index.
        path: the PNG file.
        min_score: boxes below this score are not drawn.

    Returns:
        The number of boxes drawn.
    """
    require("matplotlib", "viz", "keras_sge.detection.drawing")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[:2]
    figure, axes = plt.subplots(figsize=(width / 50 + 1, height / 50 + 1), dpi=100)
    axes.imshow(np.clip(image, 0, 255).astype("uint8"))
    axes.set_axis_off()
    drawn = 0
    colours = plt.get_cmap("tab10")
    for box, label, score in zip(boxes, labels, scores):
        if label < 0 or score < min_score:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        colour = colours(int(label) % 10)
        axes.add_patch(
            plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2)
        )
        axes.text(
            x0,
            y0,
            f"{class_names[int(label)]} {score:.2f}",
            color="white",
            fontsize=7,
            bbox={"facecolor": colour, "pad": 1, "edgecolor": "none"},
            va="bottom",
        )
        drawn += 1
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return drawn
