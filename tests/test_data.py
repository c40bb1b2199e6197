"""Preprocessing, image folders and the demo dataset (keras_sge.data).

The references are Pillow decodes/resizes and NumPy arithmetic, i.e. what
the official PyTorch pipeline (torchvision on PIL images) computes.
"""

import io
import os
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_sge import data
from keras_sge.data import demo, preprocessing

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def smooth_image(rng, height, width):
    """A smooth RGB test picture (resampling differences stay small)."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    channels = [
        127.5 + 120 * np.sin(2 * np.pi * (1.5 + c) * (xx + 0.7 * yy) + phases[c]) for c in range(3)
    ]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def encode(array, fmt="JPEG", mode=None, **kwargs):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def pil_rgb(image_bytes):
    return np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), np.float64)


# --- decoding ---------------------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("JPEG", None),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("PNG", None),
        ("PNG", "RGBA"),
        ("PNG", "L"),
        ("GIF", "P"),
        ("BMP", None),
    ],
)
def test_decode_image_gives_rgb_like_pillow(rng, fmt, mode):
    image_bytes = encode(smooth_image(rng, 40, 56), fmt, mode)
    decoded = data.decode_image(tf.constant(image_bytes)).numpy()
    assert decoded.dtype == np.uint8 and decoded.shape == (40, 56, 3)
    # Pillow's own RGB conversion is the reference (CMYK included): the same
    # libjpeg IDCT gives the same pixels.
    diff = np.abs(decoded.astype(np.float64) - pil_rgb(image_bytes))
    assert diff.max() <= 1.0, diff.max()


# --- training preprocessing --------------------------------------------------


@pytest.mark.backend_independent
def test_random_crop_window_respects_area_and_aspect_ranges():
    shape = tf.constant([375, 500])
    windows = np.stack(
        [preprocessing.random_crop_window(shape, tf.constant([i, 7])).numpy() for i in range(100)]
    )
    y, x, h, w = windows.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 375).all() and (x + w <= 500).all()
    area = h * w / (375 * 500)
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert area.min() < 0.2 and area.max() > 0.7  # the whole range is used
    aspect = w / h
    assert aspect.min() >= 0.75 * 0.95 and aspect.max() <= 4 / 3 * 1.05
    assert len({tuple(v) for v in windows}) > 95  # seeds matter
    demo_areas = [
        np.prod(preprocessing.random_crop_window(shape, tf.constant([i, 7]), 0.35).numpy()[2:])
        for i in range(20)
    ]
    assert min(demo_areas) >= 0.35 * 375 * 500 * 0.99


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "shape,expected", [((400, 20), (186, 0, 27, 20)), ((20, 400), (0, 186, 20, 27))]
)
def test_random_crop_window_falls_back_to_clamped_centre_crop(shape, expected):
    # No 8%-area window with aspect 3/4..4/3 fits such images: torchvision's
    # fallback takes the central window with the aspect ratio clamped.
    window = preprocessing.random_crop_window(tf.constant(shape), tf.constant([3, 4]))
    assert tuple(window.numpy()) == expected


@pytest.mark.backend_independent
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_preprocess_for_train_matches_pillow_crop_flip_resize(rng, fmt):
    image_bytes = encode(smooth_image(rng, 150, 200), fmt, quality=95)
    reference_image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    flips = set()
    for i in range(6):
        seed = tf.constant([i, 11], tf.int64)
        out = data.preprocess_for_train(tf.constant(image_bytes), 48, seed=seed).numpy()
        assert out.dtype == np.uint8 and out.shape == (48, 48, 3)
        # Same seed, same output.
        again = data.preprocess_for_train(tf.constant(image_bytes), 48, seed=seed).numpy()
        np.testing.assert_array_equal(out, again)
        crop_seed = tf.random.experimental.stateless_split(seed, num=2)[0]
        y, x, h, w = (
            int(v) for v in preprocessing.random_crop_window(tf.constant([150, 200]), crop_seed)
        )
        crop = reference_image.crop((x, y, x + w, y + h)).resize((48, 48), Image.BILINEAR)
        crop = np.asarray(crop, np.float64)
        plain = np.abs(out - crop).mean()
        flipped = np.abs(out - crop[:, ::-1]).mean()
        assert min(plain, flipped) < 2.0, (plain, flipped)
        flips.add(flipped < plain)
    assert flips == {True, False}


@pytest.mark.backend_independent
def test_preprocess_for_eval_matches_torchvision_resize_and_centre_crop(rng):
    array = smooth_image(rng, 375, 500)
    image_bytes = encode(array, quality=95)
    out = data.preprocess_for_eval(tf.constant(image_bytes), 224).numpy()
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
    # torchvision: Resize(256) (short side 256, long side int(256 * 500 / 375))
    # then CenterCrop(224) with offsets int(round((size - 224) / 2)).
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB").resize((341, 256), Image.BILINEAR)
    left, top = int(round((341 - 224) / 2)), int(round((256 - 224) / 2))
    expected = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float64)
    assert np.abs(out - expected).mean() < 1.0


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "height,width,size,fmt",
    [
        (375, 500, 224, "JPEG"),
        (500, 375, 224, "JPEG"),
        (30, 100, 32, "PNG"),
        (200, 200, 224, "JPEG"),
    ],
)
def test_preprocess_for_eval_equals_resizing_the_whole_image_then_cropping(
    rng, height, width, size, fmt
):
    # The fused version decodes and resamples only the cropped window; the
    # literal one resizes everything (tf.image.resize, antialiased), then crops.
    image_bytes = tf.constant(encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), fmt))
    image = data.decode_image(image_bytes)
    resize = int(size / 0.875)
    short = min(height, width)
    new_h = resize if height == short else int(height * resize / short)
    new_w = resize if width == short else int(width * resize / short)
    new_h, new_w = max(new_h, size), max(new_w, size)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    literal = tf.image.resize(image, [new_h, new_w], antialias=True)[
        top : top + size, left : left + size
    ]
    literal = np.clip(np.round(literal.numpy()), 0, 255)
    fused = data.preprocess_for_eval(image_bytes, size).numpy().astype(np.float64)
    assert np.abs(fused - literal).max() <= 1.0  # float rounding at .5 only
    assert np.abs(fused - literal).mean() < 0.01


@pytest.mark.backend_independent
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_normalize_images_matches_numpy(rng, data_format, dtype):
    images = rng.integers(0, 256, size=(2, 5, 6, 3)).astype(np.uint8)
    out = data.normalize_images(tf.constant(images), data_format, dtype)
    expected = (images / 255.0 - MEAN) / STD
    if data_format == "channels_first":
        expected = expected.transpose(0, 3, 1, 2)
    assert out.dtype == (tf.bfloat16 if dtype else tf.float32)
    tolerance = 2e-2 if dtype else 1e-5
    np.testing.assert_allclose(tf.cast(out, tf.float64).numpy(), expected, atol=tolerance)


@pytest.mark.backend_independent
def test_normalize_images_rejects_bad_input():
    with pytest.raises(ValueError, match="channels last"):
        data.normalize_images(tf.zeros([2, 3, 8, 8], tf.uint8))
    with pytest.raises(ValueError, match="floating"):
        data.normalize_images(tf.zeros([8, 8, 3], tf.uint8), dtype="int32")
    with pytest.raises(ValueError, match="data_format"):
        data.normalize_images(tf.zeros([8, 8, 3], tf.uint8), "nhwc")


# --- image folders ------------------------------------------------------------


def make_folder(root, rng, classes=("ant", "bee", "cat"), per_class=4, size=(40, 52)):
    paths = []
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(root, name, f"{name}_{i}.jpg")
            with open(path, "wb") as f:
                f.write(encode(smooth_image(rng, *size)))
            paths.append(path)
    return paths


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(keras.ops.convert_to_numpy(x))
        labels.append(keras.ops.convert_to_numpy(y))
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.backend_independent
def test_image_folder_skips_corrupt_files_naming_them(tmp_path, rng, capfd):
    root = tmp_path / "images"
    paths = make_folder(str(root), rng)
    good = encode(smooth_image(rng, 40, 52))
    (root / "bee" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "bee" / "not_an_image.jpg").write_bytes(b"<html>404 Not Found</html>")
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "cat" / "notes.txt").write_text("not listed: wrong extension")
    os.symlink("loop.jpg", root / "cat" / "loop.jpg")  # a link to itself
    os.symlink("gone.jpg", root / "ant" / "dangling.jpg")
    dataset, info = data.load_image_folder(str(root), batch_size=5, image_size=32, with_info=True)
    assert info.class_names == ["ant", "bee", "cat"] and info.num_classes == 3
    assert info.label_of == {"ant": 0, "bee": 1, "cat": 2}
    assert info.num_examples == 12  # the readable files
    stderr = capfd.readouterr().err
    for name in ("truncated.jpg", "not_an_image.jpg", "empty.png", "loop.jpg", "dangling.jpg"):
        assert name in stderr, name
    assert "skipping 3 of 15 image files" in stderr  # one summary, not a line per file
    images, labels = collect(dataset)
    # Every good image exactly once, in order, nothing else.
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4 + [2] * 4)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.float32
    low, high = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert (images >= low.min() - 1e-5).all() and (images <= high.max() + 1e-5).all()
    assert dataset.cardinality() == tf.data.UNKNOWN_CARDINALITY

    # A file that goes bad after loading is skipped by the pipeline, naming it;
    # training epochs keep len(files) // batch_size batches (topped up).
    train = data.load_image_folder(str(root), batch_size=5, image_size=32, training=True, seed=1)
    assert train.cardinality() == 2
    with open(paths[0], "r+b") as f:
        f.truncate(100)
    images, labels = collect(dataset)
    assert images.shape == (11, 32, 32, 3)
    for _ in range(2):
        images, labels = collect(train)
        assert images.shape == (10, 32, 32, 3) and np.isfinite(images).all()
    assert os.path.basename(paths[0]) in capfd.readouterr().err


@pytest.mark.backend_independent
def test_image_folder_refuses_a_class_without_readable_images(tmp_path, rng):
    root = tmp_path / "images"
    make_folder(str(root), rng, classes=("ant", "bee"), per_class=2)
    os.makedirs(root / "cat")
    for i in range(3):
        (root / "cat" / f"broken_{i}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(40))
    with pytest.raises(ValueError, match="Class 'cat' has no readable image") as error:
        data.load_image_folder(str(root), batch_size=2, image_size=32)
    assert str(root / "cat") in str(error.value)


@pytest.mark.backend_independent
def test_image_folder_eval_equals_per_image_preprocessing(tmp_path, rng):
    paths = make_folder(str(tmp_path), rng, per_class=2)
    images, labels = collect(data.load_image_folder(str(tmp_path), batch_size=4, image_size=32))
    for image, path in zip(images, paths):
        expected = data.normalize_images(
            data.preprocess_for_eval(tf.io.read_file(path), 32)
        ).numpy()
        np.testing.assert_allclose(image, expected, atol=1e-6)


@pytest.mark.backend_independent
def test_train_is_seeded_reshuffled_each_epoch_and_eval_is_deterministic(tmp_path, rng):
    make_folder(str(tmp_path), rng, per_class=6)

    def load(**kwargs):
        return data.load_image_folder(str(tmp_path), batch_size=4, image_size=32, **kwargs)

    train = load(training=True, seed=5)
    epoch1, epoch2 = collect(train), collect(train)
    assert epoch1[0].shape == (16, 32, 32, 3)  # 18 images, remainder dropped
    replay = load(training=True, seed=5)
    np.testing.assert_array_equal(collect(replay)[0], epoch1[0])
    np.testing.assert_array_equal(collect(replay)[0], epoch2[0])
    assert not np.array_equal(epoch1[1], epoch2[1])  # new order each epoch
    assert not np.allclose(epoch1[0], collect(load(training=True, seed=6))[0])
    evaluation = load()
    first, second = collect(evaluation), collect(evaluation)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], np.repeat([0, 1, 2], 6))


@pytest.mark.backend_independent
def test_image_folder_split_layouts_and_errors(tmp_path, rng):
    make_folder(str(tmp_path / "train"), rng, per_class=5)
    make_folder(str(tmp_path / "val"), rng, classes=("bee", "cat"), per_class=2)
    train, info = data.load_image_folder(
        str(tmp_path), "train", batch_size=4, image_size=32, with_info=True
    )
    assert info.num_examples == 15 and info.num_batches == 3
    assert train.element_spec[0].shape.as_list() == [4, 32, 32, 3]
    val, val_info = data.load_image_folder(
        str(tmp_path), "validation", batch_size=4, image_size=32, with_info=True
    )
    # Validation labels follow the training classes, not its own folders.
    assert val_info.class_names == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(collect(val)[1], [1, 1, 2, 2])

    parts = {}
    for split in ("train", "validation"):
        _, labels = collect(
            data.load_image_folder(
                str(tmp_path),
                split,
                batch_size=50,
                image_size=16,
                validation_fraction=0.4,
                training=False,
            )
        )
        parts[split] = labels
    assert np.bincount(parts["validation"]).tolist() == [2, 2, 2]
    assert np.bincount(parts["train"]).tolist() == [3, 3, 3]

    with pytest.raises(FileNotFoundError, match="split 'test'"):
        data.load_image_folder(str(tmp_path), "test", batch_size=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_image_folder(str(tmp_path / "nowhere"), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.load_image_folder(str(tmp_path), "train", batch_size=0)
    with pytest.raises(ValueError, match="shard"):
        data.load_image_folder(str(tmp_path), "train", batch_size=2, shard=(2, 2))


@pytest.mark.backend_independent
def test_image_folder_shards_cover_every_example_once(tmp_path, rng):
    make_folder(str(tmp_path), rng, per_class=3)  # labels 0,0,0,1,1,1,2,2,2
    shard_labels = [
        collect(data.load_image_folder(str(tmp_path), batch_size=2, image_size=16, shard=(i, 2)))[1]
        for i in range(2)
    ]
    # File i goes to shard i % 2: every file once, in order within a shard.
    assert [s.tolist() for s in shard_labels] == [[0, 0, 1, 2, 2], [0, 1, 1, 2]]
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    dataset = data.load_image_folder(
        str(tmp_path), batch_size=4, image_size=16, training=True, input_context=context
    )
    assert dataset.element_spec[0].shape[0] == 2  # per-replica batch
    # Training shards are cut to the same length (9 // 2 files each).
    assert dataset.cardinality() == 2 and len(collect(dataset)[1]) == 4


# --- demo dataset -------------------------------------------------------------


@pytest.mark.backend_independent
def test_demo_is_deterministic_by_seed_and_written_once_concurrently(tmp_path):
    kwargs = dict(num_train=8, num_validation=4)
    results = []
    threads = [
        threading.Thread(target=lambda d=d: results.append(data.prepare_demo(d, **kwargs)))
        for d in [tmp_path / "a"] * 3
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    folder_a = results[0]
    assert len(set(results)) == 1 and len(results) == 3
    assert sorted(os.listdir(tmp_path / "a")) == [os.path.basename(folder_a)]  # no leftovers
    folder_b = data.prepare_demo(tmp_path / "b", **kwargs)
    folder_c = data.prepare_demo(tmp_path / "c", seed=1, **kwargs)

    def files(folder):
        out = {}
        for split in ("train", "val"):
            for name in demo.CLASS_NAMES:
                for f in sorted(os.listdir(os.path.join(folder, split, name))):
                    with open(os.path.join(folder, split, name, f), "rb") as fh:
                        out[(split, name, f)] = fh.read()
        return out

    a, b, c = files(folder_a), files(folder_b), files(folder_c)
    assert len(a) == 12 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


@pytest.mark.backend_independent
def test_demo_images_hold_one_shape_on_a_cluttered_background():
    image = np.asarray(demo.render_example(0, "train", 3, label=0), np.float64)
    assert 72 <= image.shape[0] <= 112 and 72 <= image.shape[1] <= 112
    assert image.std(axis=(0, 1)).min() > 20  # textured, not flat
    names = [demo.CLASS_NAMES[i] for i in range(4)]
    assert names == sorted(names)
    with pytest.raises(ValueError, match="num_train"):
        data.prepare_demo("/nonexistent", num_train=2)


def test_demo_fit_and_evaluate_one_step(tmp_path):
    kwargs = dict(batch_size=4, image_size=32, data_dir=tmp_path, num_train=8, num_validation=4)
    train, info = data.load("demo", "train", seed=0, with_info=True, **kwargs)
    validation = data.load("demo", "validation", **kwargs)
    assert info.num_classes == 4 and info.num_batches == 2
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, strides=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(info.num_classes),
        ]
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(train, validation_data=validation, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    assert np.isfinite(history.history["val_loss"]).all()


@pytest.mark.backend_independent
def test_demo_channels_first_layout_and_bfloat16(tmp_path):
    keras.config.set_image_data_format("channels_first")
    dataset = data.load_demo(
        "validation",
        batch_size=4,
        image_size=32,
        data_dir=tmp_path,
        num_train=8,
        num_validation=4,
        dtype="bfloat16",
    )
    images, labels = next(iter(dataset))
    assert images.shape == (4, 3, 32, 32) and images.dtype == tf.bfloat16
    np.testing.assert_array_equal(labels.numpy(), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="splits 'train' and 'validation'"):
        data.load_demo("test", batch_size=4)


@pytest.mark.backend_independent
def test_benchmark_input_program_runs_all_pipelines(monkeypatch, capsys):
    import runpy

    argv = [
        "benchmark_input.py",
        "--image-size",
        "32",
        "--num-images",
        "2",
        "--repeats",
        "2",
        "--rounds",
        "1",
        "--batch-size",
        "2",
        "--source-size",
        "64x48",
    ]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_module("benchmarks.benchmark_input", run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"baseline", "train", "eval"}
    assert rows["baseline"][-1] == "1.00x"
    assert all(float(row[-3]) > 0 and float(row[-2]) > 0 for row in rows.values())
