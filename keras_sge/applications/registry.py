"""The models keras-sge builds, by name: one table for every program and API.

Training, evaluation, the programs, the checkpoint converter and the
benchmarks all look a model up here, so a new model is added in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from keras_sge.applications import resnet


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One buildable model.

    Attributes:
        name: The name used by the programs and configs, e.g. `"sge_resnet50"`.
        builder: The `keras_sge.applications` function that builds it.
        depth: ResNet depth (18, 34, 50 or 101).
        attention: Whether every block has a `SpatialGroupEnhance` layer.
        params: Trainable parameters with the 1000-class head.
        paper_top1: ImageNet validation top-1 (fraction) reported by the
            authors (single 224 centre crop), or `None` if they report none.
        paper_top5: The same for top-5.
    """

    name: str
    builder: Callable[..., keras.Model]
    depth: int
    attention: bool
    params: int
    paper_top1: float | None = None
    paper_top5: float | None = None


_SPECS = (
    ModelSpec("sge_resnet50", resnet.SGEResNet50, 50, True, 25_559_080, 0.77584, 0.93664),
    ModelSpec("sge_resnet101", resnet.SGEResNet101, 101, True, 44_553_384, 0.78798, 0.94368),
    ModelSpec("resnet50", resnet.ResNet50, 50, False, 25_557_032, 0.76384, 0.92908),
    ModelSpec("resnet101", resnet.ResNet101, 101, False, 44_549_160, 0.78200, 0.93906),
    ModelSpec("sge_resnet18", resnet.SGEResNet18, 18, True, 11_690_536),
    ModelSpec("sge_resnet34", resnet.SGEResNet34, 34, True, 21_799_720),
    ModelSpec("resnet18", resnet.ResNet18, 18, False, 11_689_512),
    ModelSpec("resnet34", resnet.ResNet34, 34, False, 21_797_672),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def model_spec(name: str) -> ModelSpec:
    """Looks a model up by name.

    Args:
        name: A key of `MODELS`, e.g. `"sge_resnet50"`.

    Returns:
        Its `ModelSpec`.

    Example:

    >>> keras_sge.applications.model_spec("sge_resnet50").builder
    <function SGEResNet50 ...>
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; expected one of {list(MODELS)}.")
    return MODELS[name]
