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
        builder: The `keras_sge.applications` function that builds it.
        name, depth, attention, params, paper_top1, paper_top5: Its row of
            `keras_sge.applications.variants.VARIANTS` (see `Variant`).
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
