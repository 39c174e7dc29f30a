import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import InputError, InputTypeError
from cnnviz_widgets.core.graph import LayerGraph
from cnnviz_widgets.core.inputs import raw_and_model_inputs
from conftest import small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def test_one_image_without_batch_axis_becomes_a_batch_of_one(model, images):
    single = cw.activations(model, images[0], layers="conv1")["conv1"]
    batch = cw.activations(model, images[:1], layers="conv1")["conv1"]
    assert single.shape == (1, 14, 14, 8)
    np.testing.assert_allclose(single, batch)


def test_gray_batch_without_channel_axis():
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    x = np.random.default_rng(0).uniform(size=(3, 8, 8)).astype("float32")
    result = cw.activations(model, x)["conv"]
    np.testing.assert_allclose(result, model(x[..., None]), atol=1e-6)


def test_one_gray_image_without_channel_axis():
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    x = np.random.default_rng(0).uniform(size=(8, 8)).astype("float32")
    np.testing.assert_allclose(cw.activations(model, x)["conv"], model(x[None, ..., None]), atol=1e-6)


def test_raw_images_are_batched_like_the_model_inputs():
    import keras

    gray = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    graph = LayerGraph.of(gray)
    x = np.random.default_rng(0).uniform(size=(3, 8, 8)).astype("float32")
    for preprocess in (None, lambda batch: batch * 2):
        raw, inputs = raw_and_model_inputs(graph, x, preprocess)
        assert raw.shape == (3, 8, 8) and inputs.shape == (3, 8, 8, 1)
        raw, inputs = raw_and_model_inputs(graph, x[0], preprocess)
        assert raw.shape == (1, 8, 8) and inputs.shape == (1, 8, 8, 1)
    raw, inputs = raw_and_model_inputs(graph, x[0, ..., None], lambda batch: batch)
    assert raw.shape == (1, 8, 8, 1) and inputs.shape == (1, 8, 8, 1)


def test_uint8_and_float64_are_cast_not_rescaled(model, images):
    pixels = (images * 255).astype(np.uint8)
    as_uint8 = cw.activations(model, pixels, layers="conv1")["conv1"]
    as_float = cw.activations(model, pixels.astype(np.float64), layers="conv1")["conv1"]
    expected = cw.activations(model, pixels.astype(np.float32), layers="conv1")["conv1"]
    np.testing.assert_allclose(as_uint8, expected)
    np.testing.assert_allclose(as_float, expected)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 16, 16, 1)), r"np.repeat\(x, 3, axis=-1\)"),
        (np.zeros((2, 16, 16, 4)), r"x\[\.\.\., :3\]"),
        (np.zeros((2, 20, 20, 3)), r"tf.image.resize\(x, \(16, 16\)\)"),
        (np.zeros((0, 16, 16, 3)), "are empty"),
        (np.zeros((16, 16, 1)), r"1 channel\(s\).*np.repeat\(x, 3, axis=-1\)"),
        (np.zeros((2, 16, 16)), r"1 channel\(s\).*np.repeat\(x\[\.\.\., None\], 3, axis=-1\)"),
        (np.zeros((20, 20, 3)), r"shape \(20, 20, 3\).*tf.image.resize"),
        (np.zeros((2, 2, 16, 16, 3)), r"batch shaped \(N, 16, 16, 3\)"),
        (np.full((2, 16, 16, 3), np.nan), "NaN"),
        (np.full((2, 16, 16, 3), np.inf), "np.nan_to_num"),
    ],
)
def test_bad_images_are_refused_with_the_fix(model, bad, message):
    with pytest.raises(InputError, match=message):
        cw.activations(model, bad)


def test_non_numeric_images_are_a_type_error(model):
    with pytest.raises(InputTypeError):
        cw.activations(model, np.zeros((1, 16, 16, 3), dtype=bool))
    with pytest.raises(TypeError):
        cw.activations(model, np.array([["a"]]))


def test_multi_input_model_takes_a_list():
    import keras

    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 1))
    joined = keras.layers.Concatenate(name="join")([first, second])
    model = keras.Model([first, second], keras.layers.Conv2D(2, 3, name="conv")(joined))
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(2, 8, 8, 3)), rng.uniform(size=(2, 8, 8, 1))
    result = cw.activations(model, [a, b])
    np.testing.assert_allclose(result["conv"], model([a, b]), atol=1e-5)
    with pytest.raises(InputError, match="2 inputs"):
        cw.activations(model, a)
