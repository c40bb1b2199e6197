"""The models keras-sge builds, by name, with their builders (from `variants.VARIANTS`).

Training, evaluation, the programs, the checkpoint converter and the
benchmarks all look a model up here, so a new model is added in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from keras_sge.applications import resnet
from keras_sge.applications.variants import VARIANTS


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


_SPECS = tuple(
    ModelSpec(
        name=variant.name,
        builder=getattr(resnet, variant.function),
        depth=variant.depth,
        attention=variant.attention,
        params=variant.params,
        paper_top1=variant.paper_top1,
        paper_top5=variant.paper_top5,
    )
    for variant in VARIANTS
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
