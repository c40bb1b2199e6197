"""SGE-ResNet and ResNet baselines, preprocessing and checkpoint loading."""

from keras_sge.applications.checkpoint import load_pytorch_checkpoint
from keras_sge.applications.imagenet import decode_predictions, imagenet_classes
from keras_sge.applications.loading import create_model
from keras_sge.applications.preprocessing import preprocess_input
from keras_sge.applications.registry import MODELS, ModelSpec, model_spec
from keras_sge.applications.resnet import (
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    SGEResNet18,
    SGEResNet34,
    SGEResNet50,
    SGEResNet101,
    build_resnet,
    load_weights,
    pyramid_outputs,
)
from keras_sge.applications.transfer import TransferReport, transfer_weights

__all__ = [
    "MODELS",
    "ModelSpec",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "SGEResNet18",
    "SGEResNet34",
    "SGEResNet50",
    "SGEResNet101",
    "TransferReport",
    "build_resnet",
    "create_model",
    "decode_predictions",
    "imagenet_classes",
    "load_pytorch_checkpoint",
    "load_weights",
    "model_spec",
    "preprocess_input",
    "pyramid_outputs",
    "transfer_weights",
]
