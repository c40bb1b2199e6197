"""Object detection with SGE-ResNet backbones on keras-hub's RetinaNet.

Needs the `detection` extra (`pip install "keras-sge[detection]"`: keras-hub
and pycocotools). `import keras_sge` does not import this package (keras-hub
imports TensorFlow); it only registers the backbone's name, so a saved
detector loads after `import keras_sge` alone.
"""

from keras_sge._lazy import require

require("keras_hub", "detection", "keras_sge.detection")

from keras_sge.detection.backbone import SGEResNetBackbone, freeze_stages
from keras_sge.detection.retinanet import (
    DETECTION_RECIPE,
    DetectionRecipe,
    build_retinanet,
    compile_retinanet,
)

__all__ = [
    "DETECTION_RECIPE",
    "DetectionRecipe",
    "SGEResNetBackbone",
    "build_retinanet",
    "compile_retinanet",
    "freeze_stages",
]
