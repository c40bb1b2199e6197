"""ImageNet class names shipped with the package, and decode_predictions."""

import os

import numpy as np
import pytest

from keras_sge import applications


def test_synset_ids_follow_the_tfds_label_order():
    tfds = pytest.importorskip("tensorflow_datasets")
    labels = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    with open(labels) as f:
        expected = [line.strip() for line in f if line.strip()]
    classes = applications.imagenet_classes()
    assert [wnid for wnid, _ in classes] == expected
    assert all(name and "\t" not in name for _, name in classes)


@pytest.mark.parametrize(
    "index, wnid, name",
    [
        (0, "n01440764", "tench"),
        (207, "n02099601", "golden retriever"),
        (999, "n15075141", "toilet tissue"),
    ],
)
def test_decode_one_hot(index, wnid, name):
    preds = np.full((2, 1000), 1e-4, "float32")
    preds[0, index] = 0.9
    preds[1, (index + 1) % 1000] = 0.8
    decoded = applications.decode_predictions(preds, top=3)
    assert len(decoded) == 2 and len(decoded[0]) == 3
    assert decoded[0][0][:2] == (wnid, name)
    assert decoded[0][0][2] == pytest.approx(0.9)
    assert decoded[1][0][0] != wnid


def test_decode_with_own_class_names_and_bad_shapes():
    decoded = applications.decode_predictions(
        np.array([[0.1, 0.7, 0.2]]), top=2, class_names=["ant", "bee", "cat"]
    )
    assert decoded == [[("1", "bee", pytest.approx(0.7)), ("2", "cat", pytest.approx(0.2))]]
    with pytest.raises(ValueError, match="1000"):
        applications.decode_predictions(np.zeros((1, 10)))
