"""`weights="imagenet"`: the authors' ImageNet files, from a local cache.

The authors host their checkpoints on Google Drive and Baidu Drive (links in
the README of https://github.com/implus/PytorchInsight, "Results of SGENet"),
which cannot be downloaded without a browser, so keras-sge never downloads
them: a user saves each file once into the cache folder under the name below.
Their sizes and checksums are not published by the authors and were not
measured here (the files could not be fetched), so none are checked.
"""

from __future__ import annotations

import dataclasses
import os

WEIGHTS_DIR_VARIABLE = "KERAS_SGE_WEIGHTS_DIR"


@dataclasses.dataclass(frozen=True)
class PretrainedFile:
    """One of the authors' ImageNet checkpoints.

    Attributes:
        filename: Name to save it under in the cache folder.
        google_drive: The authors' Google Drive link.
        baidu_drive: The authors' Baidu Drive link.
        baidu_code: Extraction code of the Baidu link.
    """

    filename: str
    google_drive: str
    baidu_drive: str
    baidu_code: str


PRETRAINED: dict[str, PretrainedFile] = {
    "resnet50": PretrainedFile(
        "resnet50.pth.tar",
        "https://drive.google.com/file/d/1ijUOmyDCSQTU9JaNwOu4_fs1cBXHnHPF/view?usp=sharing",
        "https://pan.baidu.com/s/1gwvuaqlRT9Sl4rDI9SWn_Q",
        "zuvx",
    ),
    "sge_resnet50": PretrainedFile(
        "sge_resnet50.pth.tar",
        "https://drive.google.com/open?id=13HPCjrEle6aFbiCo8Afkr2jJssdNwdRn",
        "https://pan.baidu.com/s/11bb2XBGkTqIoOunaSXOOTg",
        "gxo9",
    ),
    "resnet101": PretrainedFile(
        "resnet101.pth.tar",
        "https://drive.google.com/file/d/1125qwL4psGqJWrPDtSoxfBRLPMAnRzx4/view?usp=sharing",
        "https://pan.baidu.com/s/1gjPo1OQ2DFnJCU1qq39v-g",
        "js5t",
    ),
    "sge_resnet101": PretrainedFile(
        "sge_resnet101.pth.tar",
        "https://drive.google.com/file/d/1ihu0NVvVJZEv0zj49izapn4V0FhwxCh6/view?usp=sharing",
        "https://pan.baidu.com/s/1X_qZbmC1G2qqdzbIx6C0cQ",
        "wqn6",
    ),
}


def weights_dir() -> str:
    """The cache folder: `$KERAS_SGE_WEIGHTS_DIR`, else Keras' `~/.keras/models`.

    `~/.keras` follows `$KERAS_HOME` when set, as Keras' own cache does.

    Returns:
        The folder's path (it may not exist).
    """
    if os.environ.get(WEIGHTS_DIR_VARIABLE):
        return os.environ[WEIGHTS_DIR_VARIABLE]
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "models")


def imagenet_weights_path(model_name: str) -> str:
    """The cached ImageNet weights of a model, or an error saying how to get them.

    A converted `<name>.weights.h5` (from `applications/convert_checkpoint.py`,
    no torch needed to load it) is preferred to the authors' `.pth.tar`.

    Args:
        model_name: A model name, e.g. `"sge_resnet50"`.

    Returns:
        The path of the file.

    Raises:
        ValueError: The model has no published ImageNet weights.
        FileNotFoundError: The file is not in the cache; the message gives
            the download links, the file name and the folder.

    Example:

    >>> keras_sge.applications.pretrained.imagenet_weights_path("sge_resnet50")
    '/home/me/.keras/models/sge_resnet50.pth.tar'
    """
    if model_name not in PRETRAINED:
        raise ValueError(
            f"The authors published ImageNet weights for {sorted(PRETRAINED)} "
            f"only; there are none for {model_name!r}. Use weights=None or a file."
        )
    spec = PRETRAINED[model_name]
    folder = weights_dir()
    converted = os.path.join(folder, f"{model_name}.weights.h5")
    for path in (converted, os.path.join(folder, spec.filename)):
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"The ImageNet weights of {model_name} are not in the weights cache "
        f"{folder!r}. keras-sge cannot download the authors' files itself. "
        + fetch_instructions(model_name)
    )


def fetch_instructions(model_name: str) -> str:
    """How to put a model's ImageNet weights into the cache (for error messages).

    Args:
        model_name: A key of `PRETRAINED`, e.g. `"sge_resnet50"`.

    Returns:
        The authors' download links, the file name and folder to save it
        under, and how to convert it to a `.weights.h5` file.
    """
    spec = PRETRAINED[model_name]
    folder = weights_dir()
    converted = os.path.join(folder, f"{model_name}.weights.h5")
    return (
        "Download the checkpoint once from the authors (PytorchInsight README, "
        f"'Results of SGENet'): Google Drive {spec.google_drive} or Baidu Drive "
        f"{spec.baidu_drive} (code {spec.baidu_code}), and save it as "
        f"{os.path.join(folder, spec.filename)!r} (set ${WEIGHTS_DIR_VARIABLE} "
        "to use another folder). Its size and checksum are unknown (the "
        "authors publish none). Reading a .pth.tar needs torch; "
        f"applications/convert_checkpoint.py can write {converted!r} instead, "
        "which loads without torch."
    )


def damaged_cache_error(model_name: str, path: str, error: Exception) -> ValueError:
    """The error for a cached ImageNet file that cannot be read.

    Args:
        model_name: A key of `PRETRAINED`.
        path: The cached file.
        error: What reading it raised.

    Returns:
        A `ValueError` naming the file, the cache folder and how to fetch the
        file again.
    """
    return ValueError(
        f"The cached ImageNet weights {path!r} of {model_name} (weights cache "
        f"{weights_dir()!r}) could not be read: {error} The file is damaged or "
        "incomplete: delete it and fetch it again. " + fetch_instructions(model_name)
    )
