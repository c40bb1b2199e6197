"""The 1000 ImageNet (ILSVRC 2012) classes, offline, and `decode_predictions`.

`data/imagenet_class_names.tsv` holds one line per class, in label order:
the WordNet synset id and its first WordNet lemma (`n02099601\tgolden
retriever`). Label order is the sorted synset ids, the order of
tensorflow-datasets' `imagenet2012` labels and of the authors' (torchvision
`ImageFolder`) training. The file was built from timm 1.0.31 (Apache-2.0),
`timm/data/_info/imagenet_synsets.txt` (the ids) and
`imagenet_synset_to_lemma.txt` (the lemmas, taken from WordNet 3.0, under the
WordNet licence); only the first lemma of each synset is kept.
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np

NUM_CLASSES = 1000


@functools.cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 `(synset id, name)` pairs in label order.

    Returns:
        A tuple of `(wnid, name)`, e.g. `classes[207] == ("n02099601",
        "golden retriever")`.

    Example:

    >>> keras_sge.applications.imagenet_classes()[207]
    ('n02099601', 'golden retriever')
    """
    text = (
        importlib.resources.files("keras_sge.applications")
        .joinpath("data/imagenet_class_names.tsv")
        .read_text(encoding="utf-8")
    )
    return tuple(tuple(line.split("\t")) for line in text.splitlines() if line)


def decode_predictions(preds, top: int = 5, class_names=None) -> list[list[tuple]]:
    """Decodes the predictions of an ImageNet model, like keras.applications'.

    Args:
        preds: Array of shape `(batch, 1000)` (probabilities or logits; the
            values are returned as they are), NumPy or a backend tensor.
        top: How many classes to return per image, best first.
        class_names: Optional list of the model's own class names (e.g. of a
            fine-tuned model); then `preds` may have any width and each tuple
            is `(index as str, name, score)`.

    Returns:
        One list per image of `(synset id, name, score)` tuples, e.g.
        `("n02099601", "golden retriever", 0.87)`.

    Example:

    >>> preds = np.zeros((1, 1000)); preds[0, 207] = 1.0
    >>> keras_sge.applications.decode_predictions(preds, top=1)
    [[('n02099601', 'golden retriever', 1.0)]]
    """
    preds = np.asarray(preds if isinstance(preds, np.ndarray) else _to_numpy(preds))
    if class_names is None:
        labels = imagenet_classes()
        expected = NUM_CLASSES
    else:
        labels = tuple((str(i), str(name)) for i, name in enumerate(class_names))
        expected = len(labels)
    if preds.ndim != 2 or preds.shape[1] != expected:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions of shape "
            f"(samples, {expected})"
            + (" (ImageNet's 1000 classes)" if class_names is None else " (one per class name)")
            + f". Received: preds.shape={preds.shape}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"`top` must be a positive integer. Received: top={top!r}")
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(*labels[i], float(row[i])) for i in best])
    return results


def _to_numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)
