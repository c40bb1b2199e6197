"""tensorflow-datasets sources: a miniature ImageNet through the real
`imagenet2012` builder, and `tfds.testing.mock_data` for `load_tfds`."""

import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_sge import data

from .test_data import MEAN, STD, encode, smooth_image

# First synsets of tfds' labels.txt (ImageNet class ids 0, 1, 2).
TRAIN_SYNSETS = {"n01440764": 0, "n01443537": 1, "n01484850": 2}
# tfds labels validation images by sorted file name against its shipped
# validation_labels.txt, whose first lines are these well-known classes:
# 65 sea snake, 970 alp, 230 Shetland sheepdog, 809 soup bowl.
VALIDATION_LABELS = [65, 970, 230, 809]
IMAGE_SIZE = 32


def _tar_bytes(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _reference_eval(image_bytes):
    """torchvision Resize(int(32 / 0.875)) + CenterCrop(32) with Pillow."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    width, height = image.size
    short = 36
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    image = image.resize(size, Image.BILINEAR)
    left = int(round((size[0] - IMAGE_SIZE) / 2))
    top = int(round((size[1] - IMAGE_SIZE) / 2))
    return np.asarray(image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE)), np.float64)


@pytest.fixture(scope="module")
def mini_imagenet(tmp_path_factory):
    """Archives in the real layout, with the odd files real ImageNet has."""
    rng = np.random.default_rng(7)
    manual_dir = tmp_path_factory.mktemp("manual")
    train_images = {}
    synset_tars = []
    odd = {0: ("JPEG", "L"), 1: ("JPEG", "CMYK"), 2: ("PNG", None)}  # grey, CMYK, PNG
    for synset, label in TRAIN_SYNSETS.items():
        members = []
        for i in range(3):
            fmt, mode = odd[label] if i == 0 else ("JPEG", None)
            payload = encode(smooth_image(rng, 40 + 4 * i, 56), fmt, mode)
            name = f"{synset}_{100 + i}.JPEG"  # PNG keeps the .JPEG name
            members.append((name, payload))
            train_images[name] = (payload, label)
        synset_tars.append((f"{synset}.tar", _tar_bytes(members)))
    (manual_dir / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(synset_tars))
    val_members = [
        (f"ILSVRC2012_val_{i:08d}.JPEG", encode(smooth_image(rng, 48, 40 + 6 * i)))
        for i in range(1, 5)
    ]
    # Stored out of order: tfds must label by sorted name, not tar order.
    (manual_dir / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(val_members[::-1]))
    val_images = {
        name: (payload, label) for (name, payload), label in zip(val_members, VALIDATION_LABELS)
    }
    data_dir = tmp_path_factory.mktemp("tfds")
    return str(data_dir), str(manual_dir), train_images, val_images


def _denormalize(images):
    return (images * STD + MEAN) * 255.0


def _match_references(images, labels, references):
    """Pairs every output image with the closest reference; checks labels."""
    expected = {name: _reference_eval(payload) for name, (payload, _) in references.items()}
    matched = []
    for image, label in zip(_denormalize(images), labels):
        errors = {name: np.abs(image - ref).mean() for name, ref in expected.items()}
        name = min(errors, key=errors.get)
        assert errors[name] < 1.5, errors
        assert label == references[name][1], name
        matched.append(name)
    return matched


@pytest.mark.backend_independent
def test_load_imagenet_prepares_the_archives_with_the_real_builder(mini_imagenet):
    data_dir, manual_dir, train_images, val_images = mini_imagenet
    val, info = data.load_imagenet(
        "validation",
        batch_size=3,
        image_size=IMAGE_SIZE,
        data_dir=data_dir,
        manual_dir=manual_dir,
        with_info=True,
    )
    assert info.num_classes == 1000 and info.class_names[65] == "n01751748"
    assert info.num_examples == 4 and info.num_batches == 2
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in val])
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and labels.dtype == np.int32
    assert sorted(_match_references(images, labels, val_images)) == sorted(val_images)

    # The train split, evaluated without augmentation: the greyscale, CMYK and
    # PNG-named-.JPEG files decode to the right RGB pictures.
    train_eval = data.load_imagenet(
        "train", batch_size=4, image_size=IMAGE_SIZE, data_dir=data_dir, training=False
    )
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in train_eval])
    matched = _match_references(np.concatenate(images), np.concatenate(labels), train_images)
    assert sorted(matched) == sorted(train_images)

    train, train_info = data.load_imagenet(
        "train", batch_size=4, image_size=IMAGE_SIZE, data_dir=data_dir, seed=0, with_info=True
    )
    assert train_info.num_examples == 9 and train.cardinality() == 2
    batches = [x.numpy() for x, _ in train]
    assert [b.shape for b in batches] == [(4, IMAGE_SIZE, IMAGE_SIZE, 3)] * 2

    sliced, sliced_info = data.load_imagenet(
        "train[:4]", batch_size=2, image_size=IMAGE_SIZE, data_dir=data_dir, with_info=True
    )
    assert sliced_info.num_examples == 4 and sliced.cardinality() == 2

    shards = [
        data.load_imagenet(
            "validation",
            batch_size=3,
            image_size=IMAGE_SIZE,
            data_dir=data_dir,
            shard=(i, 2),
            with_info=True,
        )
        for i in range(2)
    ]
    assert sum(info.num_examples for _, info in shards) == 4
    shard_labels = np.concatenate([y.numpy() for ds, _ in shards for _, y in ds])
    assert sorted(shard_labels) == sorted(VALIDATION_LABELS)


@pytest.mark.backend_independent
def test_a_sampled_evaluation_reads_a_fixed_shuffle_of_the_split(mini_imagenet):
    data_dir, _, _, _ = mini_imagenet

    def labels(**kwargs):
        ds = data.load_imagenet(
            "train",
            batch_size=9,
            image_size=IMAGE_SIZE,
            data_dir=data_dir,
            training=False,
            **kwargs,
        )
        return [y.numpy().tolist() for _, y in ds][0]

    in_order, sampled = labels(), labels(sample_seed=3)
    assert sampled != in_order and sorted(sampled) == sorted(in_order)
    assert labels(sample_seed=3) == sampled  # the same sample on every call and pass


@pytest.mark.backend_independent
def test_load_imagenet_missing_archives_error_names_files_and_directory(tmp_path):
    empty = tmp_path / "manual"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        data.load_imagenet(
            "train[:1%]", batch_size=2, data_dir=str(tmp_path / "tfds"), manual_dir=str(empty)
        )
    message = str(error.value)
    for needle in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", str(empty), "manual_dir="):
        assert needle in message
    with pytest.raises(FileNotFoundError, match="downloads"):
        data.load("imagenet2012", "validation", batch_size=2, data_dir=str(tmp_path / "tfds"))


@pytest.mark.backend_independent
def test_load_tfds_with_mock_data():
    with tfds.testing.mock_data(num_examples=10):
        train, info = data.load(
            "cifar10", "train", batch_size=4, image_size=24, seed=0, with_info=True
        )
        evaluation = data.load_tfds("cifar10", "test", batch_size=4, image_size=24)
        assert info.num_classes == 10
        batches = list(train)
        assert len(batches) == 2  # 10 examples, remainder dropped
        for images, labels in batches:
            assert images.shape == (4, 24, 24, 3) and images.dtype == tf.float32
            assert labels.dtype == tf.int32
            assert ((0 <= labels.numpy()) & (labels.numpy() < 10)).all()
        sizes = [int(x.shape[0]) for x, _ in evaluation]
        assert sizes == [4, 4, 2]  # every example once
        first = np.concatenate([x.numpy() for x, _ in evaluation])
        second = np.concatenate([x.numpy() for x, _ in evaluation])
        np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="count >= 1"):
        data.load_tfds("cifar10", "train", batch_size=4, shard=(0, 0), download=False)


@pytest.mark.backend_independent
def test_load_tfds_refuses_a_dataset_without_image_and_class_label():
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(
            ValueError, match=r"'imdb_reviews' is not an image classification.*'text'"
        ):
            data.load_tfds("imdb_reviews", "train", batch_size=2)
