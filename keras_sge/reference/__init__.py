"""Independent plain-PyTorch reference implementations.

`keras_sge.reference.torch_resnet` holds the authors' SGE-ResNet / ResNet
architecture written in plain PyTorch (no Keras). It is the reference the
Keras models are tested against and the plain-PyTorch speed baseline; it is
not imported here, so `import keras_sge` never needs torch.
"""
