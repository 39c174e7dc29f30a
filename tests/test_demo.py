"""The bundled demo models and images: loadable offline, small, accurate, explainable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.demo import shapes, train

DATA_DIR = Path(cw.demo.__file__).parent / "data"
# Generator seeds 1-4 made the training, validation and shipped images.
FRESH_SEED = 2024


@pytest.fixture(scope="module")
def shapes_model():
    return cw.demo.load_model()


@pytest.fixture(scope="module")
def digits_model():
    return cw.demo.load_model("digits")


def test_names():
    assert cw.demo.MODEL_NAMES == ("shapes", "digits")
    assert cw.demo.CLASS_NAMES == cw.demo.class_names("shapes") == ["circle", "square", "triangle", "cross", "star"]
    assert cw.demo.class_names("digits") == [str(digit) for digit in range(10)]
    assert "demo" in cw.__all__


@pytest.mark.parametrize("name", cw.demo.MODEL_NAMES)
def test_files_are_small(name):
    for suffix in (".keras", ".npz", "_history.json"):
        path = DATA_DIR / f"{name}{suffix}"
        assert path.stat().st_size < 2_000_000, path


@pytest.mark.parametrize("name", cw.demo.MODEL_NAMES)
def test_models_load_in_safe_mode_without_lambda_layers(name):
    path = DATA_DIR / f"{name}.keras"
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert cw.demo.load_model(name) is not cw.demo.load_model(name)


def test_shapes_model_architecture(shapes_model):
    assert isinstance(shapes_model, keras.Model) and not isinstance(shapes_model, keras.Sequential)
    assert tuple(shapes_model.input.shape) == (None, 64, 64, 3)
    assert tuple(shapes_model.output.shape) == (None, len(cw.demo.CLASS_NAMES))
    names = [layer.name for layer in shapes_model.layers]
    assert {"conv1", "conv2", "conv3", "conv4", "dropout", "predictions"} <= set(names)
    assert tuple(shapes_model.get_layer("conv4").output.shape) == (None, 16, 16, 64)
    assert shapes_model.count_params() < 200_000


def test_digits_model_is_the_s0_tutorial_network(digits_model):
    assert isinstance(digits_model, keras.Sequential)
    kinds = [type(layer).__name__ for layer in digits_model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    assert digits_model.count_params() == 56_714


@pytest.mark.parametrize(
    ("name", "image_shape", "num_classes"), [("shapes", (64, 64, 3), 5), ("digits", (28, 28, 1), 10)]
)
def test_load_images(name, image_shape, num_classes):
    images, labels = cw.demo.load_images(name)
    assert images.dtype == np.float32 and images.shape[1:] == image_shape
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert len(images) >= 64
    assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.9
    assert set(labels.tolist()) == set(range(num_classes))
    images[:] = 0  # callers own what they get
    assert cw.demo.load_images(name)[0].max() > 0.9


@pytest.mark.parametrize("name", cw.demo.MODEL_NAMES)
def test_held_out_accuracy(name):
    model = cw.demo.load_model(name)
    images, labels = cw.demo.load_images(name)
    accuracy = np.mean(model.predict(images, verbose=0).argmax(axis=1) == labels)
    assert accuracy >= 0.95


def test_shapes_accuracy_on_fresh_images(shapes_model):
    images, labels, _ = shapes.generate(200, seed=FRESH_SEED)
    assert np.mean(shapes_model.predict(images, verbose=0).argmax(axis=1) == labels) >= 0.95


@pytest.mark.parametrize("name", cw.demo.MODEL_NAMES)
def test_history_has_one_value_per_epoch(name):
    history = cw.demo.load_history(name)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    assert len({len(values) for values in history.values()}) == 1
    assert history["val_accuracy"][-1] > history["val_accuracy"][0]


@pytest.mark.parametrize("function", [cw.demo.load_model, cw.demo.load_images, cw.demo.class_names, cw.demo.load_history])
def test_unknown_name_lists_the_valid_names(function):
    with pytest.raises(ValueError, match="'mnist'.*shapes, digits"):
        function("mnist")


def test_generator_is_deterministic():
    first = shapes.generate(6, seed=7, shapes_per_image=2)
    again = shapes.generate(6, seed=7, shapes_per_image=2)
    other = shapes.generate(6, seed=8, shapes_per_image=2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_generator_outputs():
    images, labels, masks = shapes.generate(10, seed=1)
    assert images.dtype == np.float32 and images.shape == (10, 64, 64, 3)
    assert 0 <= images.min() and images.max() <= 1
    assert labels.dtype == np.int64 and labels.shape == (10,)
    assert np.bincount(labels).tolist() == [2] * 5  # balanced classes
    assert masks.dtype == bool and masks.shape == (10, 1, 64, 64)

    images, labels, masks = shapes.generate(10, seed=1, shapes_per_image=2)
    assert labels.shape == (10, 2) and np.all(labels[:, 0] != labels[:, 1])
    assert masks.shape == (10, 2, 64, 64)
    assert not np.any(masks[:, 0] & masks[:, 1])
    with pytest.raises(ValueError, match="shapes_per_image"):
        shapes.generate(1, seed=0, shapes_per_image=3)


def fill_ratio(mask):
    """Area over the area of the circle around the centroid that holds the whole mask."""
    rows, columns = np.nonzero(mask)
    reach = np.hypot(rows - rows.mean(), columns - columns.mean()).max() + 0.5
    return mask.sum() / (np.pi * reach**2)


def test_masks_match_their_labels():
    images, labels, masks = shapes.generate(60, seed=FRESH_SEED, shapes_per_image=2)
    for image, image_labels, image_masks in zip(images, labels, masks):
        for label, mask in zip(image_labels, image_masks):
            assert 60 <= mask.sum() <= 650  # from a small triangle to a large circle
            # Circles fill their enclosing circle, every other shape leaves gaps.
            assert (fill_ratio(mask) > 0.85) == (shapes.CLASS_NAMES[label] == "circle")
            # The shape's pixels share one colour: far less spread than the image's.
            assert image[mask].std(axis=0).mean() < image.std(axis=(0, 1)).mean()


def test_grad_cam_points_at_each_shape(shapes_model):
    """Pointing game: Grad-CAM's hottest pixel lies inside the shape of that class."""
    images, labels, masks = shapes.generate(100, seed=FRESH_SEED, shapes_per_image=2)
    hits = []
    for slot in range(2):
        heatmaps = cw.grad_cam(shapes_model, images, labels[:, slot])
        assert heatmaps.shape == (100, 64, 64)
        hottest = heatmaps.reshape(100, -1).argmax(axis=1)
        hits.append(masks[:, slot].reshape(100, -1)[np.arange(100), hottest])
    assert np.mean(hits) >= 0.9


@pytest.mark.slow
def test_train_writes_a_loadable_model(tmp_path):
    # In a child process: training switches on TensorFlow's op determinism and seeds
    # every generator for the whole process, which other tests should not inherit.
    script = (
        "import json, sys; from cnnviz_widgets.demo.train import train; "
        "result = train('digits', epochs=1, out_dir=sys.argv[1], max_train_samples=200, verbose=0); "
        "print(json.dumps(result['held_out_accuracy']))"
    )
    package_root = str(Path(cw.__file__).parents[1])
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": package_root}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=environment)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 0 <= json.loads(run.stdout.splitlines()[-1]) <= 1
    model = keras.saving.load_model(tmp_path / "digits.keras", safe_mode=True, compile=False)
    assert model.count_params() == 56_714
    history = json.loads((tmp_path / "digits_history.json").read_text())
    assert {key: len(values) for key, values in history.items()} == dict.fromkeys(history, 1)
    with np.load(tmp_path / "digits.npz") as held_out:
        assert held_out["images"].dtype == np.uint8 and len(held_out["labels"]) == train.DIGITS_HELD_OUT_IMAGES


def test_train_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="shapes, digits"):
        train.train("mnist", out_dir=tmp_path)
