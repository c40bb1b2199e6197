"""ImageNet, tensorflow-datasets, image-folder and demo input pipelines.

Every loader returns a batched `tf.data.Dataset` of `(images, int32 labels)`
ready for `model.fit` / `model.evaluate` on any Keras backend: images
normalised as the official SGE-ResNet weights expect (RGB, ImageNet mean/std)
in `keras.config.image_data_format()` layout.

The names below are imported on first use, so `import keras_sge` does not
import TensorFlow when the Keras backend is JAX or PyTorch and no data is
loaded.
"""

import importlib

_EXPORTS = {
    "load": "loader",
    "load_demo": "demo",
    "prepare_demo": "demo",
    "load_image_folder": "image_folder",
    "load_imagenet": "tfds_datasets",
    "load_tfds": "tfds_datasets",
    "DatasetInfo": "pipeline",
    "IMAGENET_MEAN": "preprocessing",
    "IMAGENET_STD": "preprocessing",
    "decode_image": "preprocessing",
    "normalize_images": "preprocessing",
    "preprocess_for_eval": "preprocessing",
    "preprocess_for_train": "preprocessing",
    "random_crop_window": "preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_sge.data' has no attribute {name!r}")
    module = importlib.import_module(f"keras_sge.data.{_EXPORTS[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
