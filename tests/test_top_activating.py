"""cw.top_activating against a brute-force argsort of every image's channel maxima (a Keras sub-model)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import CnnvizError, InputError, UnknownLayerError, UnsupportedModelError
from cnnviz_widgets.core.top_activating import ReceptiveField, TopActivatingJob

from conftest import small_cnn

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=16)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(0, 255, (29, 16, 16, 3)).astype(np.float32)


def brute_force(model, layer, images):
    """Every image's map (a Keras sub-model), its channel maxima (N, C), and the images by channel, best first."""
    maps = keras.Model(model.inputs, model.get_layer(layer).output).predict(images, verbose=0)
    maxima = maps.max(axis=(1, 2))
    return maps, maxima, np.argsort(-maxima, axis=0, kind="stable").T


def assert_matches_brute_force(result, model, images, k):
    maps, maxima, order = brute_force(model, result.layer, images)
    rows = result.channels
    assert result.indices.shape == result.values.shape == (len(rows), k)
    # The k best values (ties or rounding may swap equal images, never change the values).
    np.testing.assert_allclose(result.values, np.take_along_axis(maxima[:, rows].T, order[rows, :k], axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.values, maxima[result.indices, rows[:, None]], rtol=1e-5, atol=1e-5)
    separated = np.abs(np.diff(np.sort(maxima, axis=0)[::-1], axis=0)).min() > 1e-3
    if separated:
        np.testing.assert_array_equal(result.indices, order[rows, :k])
    # The position is where the image's map reaches that value.
    at_position = maps[result.indices, result.positions[..., 0], result.positions[..., 1], rows[:, None]]
    np.testing.assert_allclose(at_position, result.values, rtol=1e-5, atol=1e-5)


def test_equals_a_brute_force_argsort_over_several_batches(model, images):
    result = cw.top_activating(model, "conv2", images, k=5, batch_size=8)
    assert result.layer == "conv2" and result.images_seen == 29 and not result.stopped
    assert result.map_size == (5, 5) and result.image_size == (16, 16)
    np.testing.assert_array_equal(result.channels, np.arange(12))
    assert_matches_brute_force(result, model, images, k=5)
    np.testing.assert_array_equal(result.indices, cw.top_activating(model, "conv2", images, k=5, batch_size=64).indices)


def identity_model(size=4):
    inputs = keras.Input((size, size, 2))
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(inputs))


def test_ties_keep_the_lower_image_index_and_the_first_position_in_row_major_order():
    images = np.zeros((6, 4, 4, 2), np.float32)
    images[[1, 3, 4], 2, 1, 0] = 5.0  # three images share the maximum
    images[3, 0, 3, 0] = 5.0  # image 3 reaches it twice: (0, 3) comes first
    images[0, 1, 1, 0] = 2.0
    images[..., 1] = -1.0  # channel 1 is 0 everywhere after the ReLU: every image ties at (0, 0)
    result = cw.top_activating(identity_model(), "relu", images, k=4, batch_size=2)
    np.testing.assert_array_equal(result.indices, [[1, 3, 4, 0], [0, 1, 2, 3]])
    np.testing.assert_allclose(result.values, [[5, 5, 5, 2], [0, 0, 0, 0]])
    np.testing.assert_array_equal(result.positions[0], [[2, 1], [0, 3], [2, 1], [1, 1]])
    np.testing.assert_array_equal(result.positions[1], np.zeros((4, 2)))


def batches_of(images, size, labels=True):
    for start in range(0, len(images), size):
        part = images[start : start + size]
        yield (part, np.zeros(len(part))) if labels else part


class LabelledBatches(keras.utils.PyDataset):
    def __init__(self, images, size):
        super().__init__()
        self.images, self.size = images, size

    def __len__(self):
        return -(-len(self.images) // self.size)

    def __getitem__(self, index):
        part = self.images[index * self.size : (index + 1) * self.size]
        return part, np.zeros(len(part))


@pytest.mark.parametrize(
    "make_data",
    [
        lambda x: tf.data.Dataset.from_tensor_slices(x),
        lambda x: tf.data.Dataset.from_tensor_slices((x, np.arange(len(x)))).batch(7),
        lambda x: batches_of(x, 10),
        lambda x: list(batches_of(x, 100, labels=False)),  # one batch larger than batch_size
        lambda x: tf.constant(x),
        lambda x: LabelledBatches(x, 6),
    ],
    ids=["dataset-of-images", "dataset-of-labelled-batches", "generator-of-labelled-batches", "list-of-batches", "tensor", "pydataset"],
)
def test_every_kind_of_data_gives_the_array_result(model, images, make_data):
    expected = cw.top_activating(model, "conv1", images, k=4, batch_size=8)
    result = cw.top_activating(model, "conv1", make_data(images), k=4, batch_size=8)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_allclose(result.values, expected.values, rtol=1e-5)
    np.testing.assert_array_equal(result.positions, expected.positions)
    assert result.images_seen == len(images)


def test_channels_subset_in_the_given_order(model, images):
    full = cw.top_activating(model, "conv2", images, k=3, batch_size=8)
    part = cw.top_activating(model, "conv2", images, k=3, channels=[7, 2], batch_size=8)
    np.testing.assert_array_equal(part.channels, [7, 2])
    np.testing.assert_array_equal(part.indices, full.indices[[7, 2]])
    np.testing.assert_array_equal(part.positions, full.positions[[7, 2]])
    assert part.row(2) == 1
    assert cw.top_activating(model, "conv2", images, channels=4).channels.tolist() == [4]
    with pytest.raises(InputError, match="holds channels 7, 2"):
        part.row(3)
    with pytest.raises(InputError, match="conv2' has 12 channels, so use 0..11"):
        cw.top_activating(model, "conv2", images, channels=[12])


def test_more_wanted_than_images_gives_every_image_once(model, images):
    result = cw.top_activating(model, "conv1", images[:3], k=9)
    assert result.indices.shape == (8, 3)
    assert cw.top_activating(model, "conv1", images[:3], k=10**9).indices.shape == (8, 3)
    assert cw.top_activating(model, "conv1", batches_of(images[:3], 2), k=9).indices.shape == (8, 3)
    np.testing.assert_array_equal(np.sort(result.indices, axis=1), np.tile([0, 1, 2], (8, 1)))
    assert_matches_brute_force(result, model, images[:3], k=3)


def test_progress_counts_images_and_can_stop(model, images):
    calls = []
    cw.top_activating(model, "conv1", images, batch_size=10, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(10, 29), (20, 29), (29, 29)]
    calls.clear()
    cw.top_activating(model, "conv1", batches_of(images, 10), batch_size=10, progress=lambda *args: calls.append(args))
    assert calls == [(10, None), (20, None), (29, None)]
    stopped = cw.top_activating(model, "conv1", images, k=3, batch_size=10, progress=lambda done, total: done >= 20)
    assert stopped.stopped and stopped.images_seen == 20
    np.testing.assert_array_equal(stopped.indices, cw.top_activating(model, "conv1", images[:20], k=3).indices)


def test_a_job_runs_in_its_thread_reports_progress_and_stops_after_the_batch(model, images):
    seen = []

    def on_progress(job):
        seen.append((job.done, job.total))
        job.stop()

    job = TopActivatingJob(model, "conv1", images, on_progress=on_progress, k=3, batch_size=10).start()
    result = job.wait()
    assert seen == [(10, 29)] and job.finished and not job.running and job.outcome == "stopped"
    assert result.stopped and result.images_seen == 10
    np.testing.assert_array_equal(result.indices, cw.top_activating(model, "conv1", images[:10], k=3).indices)
    finished = []
    whole = TopActivatingJob(model, "conv1", images, on_finish=finished.append, k=3).start().wait()
    assert finished and not whole.stopped and whole.images_seen == 29
    failing = TopActivatingJob(model, "conv9", images).start()
    with pytest.raises(UnknownLayerError):
        failing.wait()
    assert isinstance(failing.error, UnknownLayerError) and failing.outcome == "failed"


def test_preprocess_runs_on_a_copy_of_each_batch(model, images):
    raw = images.copy()

    def preprocess(batch):
        batch -= 100.0  # in place, as keras' preprocess_input does
        return batch

    result = cw.top_activating(model, "conv2", raw, k=3, batch_size=8, preprocess=preprocess)
    np.testing.assert_array_equal(raw, images)
    np.testing.assert_array_equal(result.indices, cw.top_activating(model, "conv2", images - 100.0, k=3).indices)
    with pytest.raises(InputError, match="preprocess raised ZeroDivisionError"):
        cw.top_activating(model, "conv2", raw, preprocess=lambda batch: 1 / 0)


def nan_model():
    inputs = keras.Input((6, 6, 1))
    conv = keras.layers.Conv2D(2, 3, name="conv")
    model = keras.Model(inputs, conv(inputs))
    kernel, bias = conv.get_weights()
    conv.set_weights([np.full_like(kernel, np.nan), bias])
    return model


def test_nan_activations_and_bad_arguments_are_refused_clearly(model, images):
    with pytest.raises(UnsupportedModelError, match=r"NaN or infinity for image\(s\) 0..1"):
        cw.top_activating(nan_model(), "conv", np.ones((2, 6, 6, 1)))
    bad_images = images.copy()
    bad_images[4, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        cw.top_activating(model, "conv1", bad_images)
    with pytest.raises(UnsupportedModelError, match="pick one of conv1, bn, pool1, conv2, drop"):
        cw.top_activating(model, "gap", images)
    with pytest.raises(UnknownLayerError):
        cw.top_activating(model, "conv9", images)
    with pytest.raises(InputError, match="k is how many images to keep per channel"):
        cw.top_activating(model, "conv1", images, k=0)
    with pytest.raises(InputError, match="batch_size"):
        cw.top_activating(model, "conv1", images, batch_size=2.0)
    with pytest.raises(InputError, match="data gave no images"):
        cw.top_activating(model, "conv1", [])
    with pytest.raises(CnnvizError, match="data gave str 'abc', not images"):
        cw.top_activating(model, "conv1", "abc")
    with pytest.raises(CnnvizError, match="strategy must be None or a tf.distribute.Strategy"):
        cw.top_activating(model, "conv1", images, strategy="mirrored")


def ones_model():
    """conv (3x3, stride 2, same) → average pool 2 → [3x3 same, 1x1] added → 3x3 dilated 2, valid; all weights 1."""
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same", name="strided")(inputs)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.Add(name="add")([keras.layers.Conv2D(1, 3, padding="same")(x), keras.layers.Conv2D(1, 1)(x)])
    x = keras.layers.ZeroPadding2D(1, name="padded")(x)
    x = keras.layers.Conv2D(1, 3, dilation_rate=2, name="dilated")(x)
    model = keras.Model(inputs, x)
    for layer in model.layers:
        layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("layer", ["strided", "pool", "add", "dilated"])
def test_receptive_field_boxes_are_where_the_gradient_reaches(layer):
    """With positive weights and no ReLU, a map position's gradient is non-zero exactly on the pixels it sees."""
    model = ones_model()
    truncated = keras.Model(model.inputs, model.get_layer(layer).output)
    images = np.ones((1, 32, 32, 1), np.float32)
    result = cw.top_activating(model, layer, images, k=1)
    assert result.field.exact
    height, width = result.map_size
    for position in [(0, 0), (height // 2, width // 3), (height - 1, width - 1)]:
        pixels = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            value = truncated(pixels)[0, position[0], position[1], 0]
        rows, columns = np.nonzero(tape.gradient(value, pixels).numpy()[0, ..., 0])
        expected = [rows.min(), columns.min(), rows.max() + 1, columns.max() + 1]
        np.testing.assert_array_equal(result.field.box(np.array(position), result.image_size), expected)


def test_patch_cuts_the_maximum_s_box_and_other_layers_map_by_the_ratio_of_sizes(model, images):
    result = cw.top_activating(model, "conv2", images, k=2)
    top, left, bottom, right = result.boxes[3, 1]
    image = images[result.indices[3, 1]]
    np.testing.assert_array_equal(result.patch(image, 3, rank=1), image[top:bottom, left:right])
    assert result.field.exact and (bottom - top, right - left) == (8, 8)  # 3x3, pool 2, 3x3
    with pytest.raises(InputError, match="images of 16x16 pixels"):
        result.patch(image[:8], 3)

    inputs = keras.Input((8, 8, 1))
    upsampled = keras.layers.UpSampling2D(2, name="up")(keras.layers.Conv2D(1, 3, name="conv")(inputs))
    ratio = cw.top_activating(keras.Model(inputs, upsampled), "up", np.ones((1, 8, 8, 1)), k=1)
    assert not ratio.field.exact and ratio.field.jump == (8 / 12, 8 / 12)


def test_a_model_of_any_image_size_maps_by_the_size_it_was_given():
    inputs = keras.Input((None, None, 3))
    maps = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.MaxPooling2D(name="pool")(maps))
    result = cw.top_activating(model, "pool", np.random.default_rng(0).random((5, 20, 24, 3)), k=2)
    assert result.map_size == (5, 6) and result.image_size == (20, 24)
    # conv 3x3 stride 2 ('same' pads 1 pixel at the bottom only), then pool 2: 5 pixels, every 4.
    assert result.field == ReceptiveField((0.0, 0.0), (4.0, 4.0), (5.0, 5.0), exact=True)


STRATEGY_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import cnnviz_widgets as cw
keras.utils.set_random_seed(0)
inputs = keras.Input((12, 12, 3))
maps = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(maps))
images = np.random.default_rng(0).random((33, 12, 12, 3)).astype("float32")  # a last batch of 1: one replica idle
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
alone = cw.top_activating(model, "conv", images, k=4, batch_size=8)
shared = cw.top_activating(model, "conv", images, k=4, batch_size=8, strategy=strategy)
np.testing.assert_array_equal(shared.indices, alone.indices)
np.testing.assert_allclose(shared.values, alone.values, rtol=1e-5)
np.testing.assert_array_equal(shared.positions, alone.positions)
print("same")
"""


@pytest.mark.slow
def test_a_mirrored_strategy_over_two_logical_cpus_gives_the_same_result():
    # Logical devices must be set before TensorFlow initialises its devices: a process of its own.
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STRATEGY_SCRIPT)], env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("same"), done.stderr[-3000:]
