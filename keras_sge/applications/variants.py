"""The model variants keras-sge builds: one table, read by the builders and the registry.

Each row names a variant and its depth, attention, parameter count and the
accuracy its authors report. `keras_sge.applications.SGEResNet50` and its
siblings build from their row; `MODELS` lists the rows with their builders.
"""

from __future__ import annotations

import dataclasses

# depth -> (block kind, blocks per stage): the ResNet v1.5 architectures.
ARCHITECTURES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model variant.

    Attributes:
        name: The name used by the programs and configs, e.g. `"sge_resnet50"`.
        function: The name of its builder in `keras_sge.applications`.
        depth: ResNet depth (18, 34, 50 or 101).
        attention: Whether every block has a `SpatialGroupEnhance` layer.
        params: Trainable parameters with the 1000-class head.
        paper_top1: ImageNet validation top-1 (fraction) reported by the
            authors (single 224 centre crop), or `None` if they report none.
        paper_top5: The same for top-5.
    """

    name: str
    function: str
    depth: int
    attention: bool
    params: int
    paper_top1: float | None = None
    paper_top5: float | None = None

    @property
    def block(self) -> str:
        """The residual block: `"basic"` (18, 34 layers) or `"bottleneck"` (50, 101)."""
        return ARCHITECTURES[self.depth][0]


VARIANTS: tuple[Variant, ...] = (
    Variant("sge_resnet50", "SGEResNet50", 50, True, 25_559_080, 0.77584, 0.93664),
    Variant("sge_resnet101", "SGEResNet101", 101, True, 44_553_384, 0.78798, 0.94368),
    Variant("resnet50", "ResNet50", 50, False, 25_557_032, 0.76384, 0.92908),
    Variant("resnet101", "ResNet101", 101, False, 44_549_160, 0.78200, 0.93906),
    Variant("sge_resnet18", "SGEResNet18", 18, True, 11_690_536),
    Variant("sge_resnet34", "SGEResNet34", 34, True, 21_799_720),
    Variant("resnet18", "ResNet18", 18, False, 11_689_512),
    Variant("resnet34", "ResNet34", 34, False, 21_797_672),
)

VARIANTS_BY_NAME: dict[str, Variant] = {variant.name: variant for variant in VARIANTS}
