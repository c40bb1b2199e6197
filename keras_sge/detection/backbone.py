"""`SGEResNetBackbone`: keras_sge's (SGE-)ResNets as a keras-hub pyramid backbone."""

from __future__ import annotations

import os

import keras
import keras_hub

from keras_sge.applications import build_resnet, pyramid_outputs, transfer_weights

REGISTERED_NAME = "keras_sge>SGEResNetBackbone"


@keras.saving.register_keras_serializable(package="keras_sge")
class SGEResNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """An (SGE-)ResNet from `keras_sge.applications` with P2-P5 pyramid outputs.

    The network is `keras_sge.applications.build_resnet(depth, attention,
    include_top=False)` itself: same layers, same names, so its weights are
    the classification model's, and `pyramid_outputs["P2".."P5"]` are that
    model's stage outputs C2-C5 (strides 4 to 32). With `attention=False` it
    is the plain ResNet baseline of the paper, from the same class.

    Args:
        depth: 18, 34, 50 or 101.
        attention: Whether each block holds an SGE layer.
        groups: SGE groups (the paper's 64).
        image_shape: Input shape without the batch axis; `(None, None, 3)`
            takes any image size (at least 32 pixels a side).
        weights: Optional start: `"imagenet"` (the authors' checkpoint from
            the weights cache), an authors' PyTorch checkpoint, or a `.keras`
            / `.weights.h5` file of a `keras_sge.applications` model (its
            classifier head is skipped). Not part of the config: a saved
            backbone holds its weights.
        include_preprocessing: Whether the backbone normalises [0, 255] RGB
            inputs itself (ImageNet mean and std), as the classification
            models' option of the same name.
        **kwargs: `name`, `dtype`, `trainable` (keras-hub `Backbone`).

    Example:

    >>> backbone = SGEResNetBackbone(depth=18, image_shape=(64, 64, 3))
    >>> sorted(backbone.pyramid_outputs)
    ['P2', 'P3', 'P4', 'P5']
    """

    def __init__(
        self,
        depth: int = 50,
        attention: bool = True,
        groups: int = 64,
        image_shape: tuple = (None, None, 3),
        weights: str | os.PathLike | None = None,
        include_preprocessing: bool = False,
        **kwargs,
    ):
        resnet = build_resnet(
            depth,
            attention,
            include_top=False,
            input_shape=tuple(image_shape),
            groups=groups,
            include_preprocessing=include_preprocessing,
        )
        if weights == "imagenet":
            weights = _imagenet_path(depth, attention)
        if weights is not None:
            transfer_weights(resnet, weights, allow_missing_sge=False)
        stages = pyramid_outputs(resnet)
        kwargs.setdefault("name", resnet.name)
        super().__init__(inputs=resnet.inputs, outputs=stages["C5"], **kwargs)
        self.depth = depth
        self.attention = attention
        self.groups = groups
        self.image_shape = tuple(image_shape)
        self.include_preprocessing = include_preprocessing
        self.pyramid_outputs = {f"P{level}": stages[f"C{level}"] for level in (2, 3, 4, 5)}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "depth": self.depth,
                "attention": self.attention,
                "groups": self.groups,
                "image_shape": self.image_shape,
                "include_preprocessing": self.include_preprocessing,
            }
        )
        return config


def _imagenet_path(depth: int, attention: bool) -> str:
    from keras_sge.applications import pretrained

    return pretrained.imagenet_weights_path(f"{'sge_' if attention else ''}resnet{depth}")


def freeze_stages(backbone: keras.Model, frozen_stages: int = 1) -> list[str]:
    """Freezes the stem and the first stages, and every BatchNorm.

    The authors' fine-tuning (mmdetection's `frozen_stages=1`, `norm_eval`):
    the stem (`conv1`, `bn1`) and stages `layer1..layer{frozen_stages}` stop
    training, and all BatchNorm layers run in inference mode with fixed
    statistics (a non-trainable Keras BatchNorm does both).

    Args:
        backbone: An `SGEResNetBackbone` (or a `keras_sge.applications` ResNet).
        frozen_stages: Stages frozen after the stem: 0 (stem only) to 4.

    Returns:
        The names of the layers made non-trainable.
    """
    if frozen_stages not in range(5):
        raise ValueError(f"`frozen_stages` must be 0 to 4. Received: {frozen_stages!r}")
    prefixes = ("conv1", "bn1") + tuple(f"layer{s}_" for s in range(1, frozen_stages + 1))
    frozen = []
    for layer in backbone.layers:
        if layer.name.startswith(prefixes) or isinstance(layer, keras.layers.BatchNormalization):
            if layer.weights:
                layer.trainable = False
                frozen.append(layer.name)
    return frozen
