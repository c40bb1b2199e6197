"""Keras layers of keras-sge."""

from keras_sge.layers.spatial_group_enhance import SpatialGroupEnhance

__all__ = ["SpatialGroupEnhance"]
