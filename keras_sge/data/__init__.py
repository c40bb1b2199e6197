"""ImageNet, tensorflow-datasets, image-folder and demo input pipelines.

Every loader returns a batched `tf.data.Dataset` of `(images, int32 labels)`
ready for `model.fit` / `model.evaluate` on any Keras backend: images
normalised as the official SGE-ResNet weights expect (RGB, ImageNet mean/std)
in `keras.config.image_data_format()` layout.

Needs the `data` extra (TensorFlow, tensorflow-datasets, Pillow). The names
below are imported on first use, so tensorflow-datasets is imported only by
the tfds loaders.
"""

from keras_sge._lazy import lazy_exports, require

require("tensorflow", "data", "keras_sge.data")

_EXPORTS = {
    "load": "loader",
    "load_demo": "demo",
    "prepare_demo": "demo",
    "load_image_folder": "image_folder",
    "load_imagenet": "tfds_datasets",
    "load_tfds": "tfds_datasets",
    "DatasetInfo": "pipeline",
    "decode_image": "preprocessing",
    "normalize_images": "preprocessing",
    "preprocess_for_eval": "preprocessing",
    "preprocess_for_train": "preprocessing",
    "random_crop_window": "preprocessing",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
