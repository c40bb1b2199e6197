"""Operations of keras-sge: pure functions of tensors, on every Keras backend."""

from keras_sge.ops.sge import spatial_group_enhance, spatial_group_enhance_gate

__all__ = ["spatial_group_enhance", "spatial_group_enhance_gate"]
