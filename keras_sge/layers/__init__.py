"""Keras layers of keras-sge."""

from keras_sge.layers.spatial_group_enhance import SpatialGroupEnhance, check_groups

__all__ = ["SpatialGroupEnhance", "check_groups"]
