"""cw.conv_arithmetic: the shown sum is the layer's output, checked against Keras sub-models and tf.image.extract_patches."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.conv_arithmetic import LayerArithmetic, conv_layer_names
from cnnviz_widgets.core.errors import CnnvizError, InputError, UnsupportedModelError

TOLERANCE = 1e-4


def conv_model(size=(9, 10), channels=3, preprocessing=False, **conv):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((*size, channels), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, offset=-0.5, name="rescale")(inputs) if preprocessing else inputs
    x = keras.layers.Conv2D(name="conv", **conv)(x)
    x = keras.layers.Conv2D(2, 3, name="after")(x)
    model = keras.Model(inputs, x)
    layer = model.get_layer("conv")
    if layer.bias is not None:  # Keras starts biases at 0, which would hide a missing bias
        layer.bias.assign(np.random.default_rng(0).normal(size=layer.bias.shape))
    return model


def image(size=(9, 10), channels=3, seed=1):
    return np.random.default_rng(seed).normal(size=(*size, channels)).astype(np.float32)


def without_activation(layer):
    """The same convolution with a linear activation: its output is the pre-activation."""
    linear = keras.layers.Conv2D.from_config({**layer.get_config(), "activation": None})
    linear.build(layer.input.shape)
    linear.set_weights(layer.get_weights())
    return linear


CASES = {
    "same, relu inside": dict(filters=4, kernel_size=3, padding="same", activation="relu"),
    "same, stride 2, even kernel": dict(filters=3, kernel_size=4, strides=2, padding="same"),
    "valid, stride 2, no bias": dict(filters=3, kernel_size=3, strides=2, padding="valid", use_bias=False),
    "same, dilation 2, tanh": dict(filters=3, kernel_size=3, dilation_rate=2, padding="same", activation="tanh"),
    "valid, dilation (2, 3)": dict(filters=2, kernel_size=(2, 3), dilation_rate=(2, 3), padding="valid"),
    "same, strides (2, 3), 3x5 kernel": dict(filters=2, kernel_size=(3, 5), strides=(2, 3), padding="same", activation="sigmoid"),
    "groups 3": dict(filters=6, kernel_size=3, padding="same", groups=3, activation="relu"),
    "softmax over channels": dict(filters=4, kernel_size=3, padding="valid", activation="softmax"),
}


@pytest.mark.parametrize("conv", CASES.values(), ids=CASES.keys())
def test_every_number_equals_the_layer_output(conv):
    model, x = conv_model(**conv), image()
    layer = model.get_layer("conv")
    layer_input = keras.Model(model.input, layer.input)(x[None])
    expected_output = keras.Model(model.input, layer.output)(x[None]).numpy()[0]
    expected_pre = without_activation(layer)(layer_input).numpy()[0]
    explained = LayerArithmetic(model, x, "conv")
    height, width, channels = expected_output.shape
    assert explained.map_shape == (height, width)
    for channel in range(channels):
        for row in range(height):
            for column in range(width):
                number = explained.at(channel, (row, column))
                shown = number.weighted_sum + (number.bias or 0.0)
                np.testing.assert_allclose(number.channel_sums.sum(), number.products.sum(), atol=1e-9)
                np.testing.assert_allclose(shown, expected_pre[row, column, channel], atol=TOLERANCE)
                np.testing.assert_allclose(number.pre_activation, shown, atol=1e-9)
                np.testing.assert_allclose(number.output, expected_output[row, column, channel], atol=TOLERANCE)
                np.testing.assert_allclose(number.layer_output, expected_output[row, column, channel], atol=TOLERANCE)


@pytest.mark.parametrize(
    "conv",
    [CASES["same, stride 2, even kernel"], CASES["same, dilation 2, tanh"], CASES["same, strides (2, 3), 3x5 kernel"]],
    ids=["stride 2", "dilation 2", "strides (2, 3)"],
)
def test_patch_and_padding_are_tensorflows_patches(conv):
    model, x = conv_model(**conv), image()
    layer = model.get_layer("conv")
    kh, kw = layer.kernel_size
    # extract_patches pads with zeros as the convolution does; a marker channel of ones
    # is 0 exactly where the window reads padding.
    marked = np.concatenate([x, np.ones_like(x[..., :1])], axis=-1)[None]
    patches = tf.image.extract_patches(
        marked,
        sizes=[1, kh, kw, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding="SAME",
    ).numpy()[0]
    explained = LayerArithmetic(model, x, "conv")
    for row, column in [(0, 0), (1, 2), (explained.map_shape[0] - 1, explained.map_shape[1] - 1)]:
        expected = patches[row, column].reshape(kh, kw, 4)
        number = explained.at(0, (row, column))
        np.testing.assert_allclose(number.patch, expected[..., :3], atol=1e-6)
        np.testing.assert_array_equal(number.padded, expected[..., 3] == 0)
        np.testing.assert_array_equal(number.kernel, layer.kernel.numpy()[..., 0])
    assert explained.at(0, (0, 0)).padded.any()


def test_first_layer_patch_is_the_raw_image_or_the_models_own_preprocessing():
    x = image(seed=2)
    raw_values = LayerArithmetic(conv_model(filters=2, kernel_size=3), x, "conv")
    raw = raw_values.at(1, (2, 4))
    assert raw.source == "the model's input image" and raw_values.reads_image
    np.testing.assert_allclose(raw.patch, x[2:5, 4:7], atol=1e-6)
    assert not raw.padded.any()
    np.testing.assert_array_equal(raw.input_rows, [2, 3, 4])
    rescaled_values = LayerArithmetic(conv_model(filters=2, kernel_size=3, preprocessing=True), x, "conv")
    rescaled = rescaled_values.at(1, (2, 4))
    assert rescaled.source == "the model's input image after the model's own preprocessing: 'rescale' (Rescaling)"
    assert rescaled_values.reads_image
    after = LayerArithmetic(conv_model(filters=2, kernel_size=3, preprocessing=True), x, "after")
    assert after.source == "the output of layer 'conv' (Conv2D)" and not after.reads_image
    np.testing.assert_allclose(rescaled.patch, x[2:5, 4:7] / 255.0 - 0.5, atol=1e-6)


def test_groups_read_only_their_input_channels():
    model, x = conv_model(channels=6, filters=6, kernel_size=3, groups=3, padding="same"), image(channels=6)
    number = LayerArithmetic(model, x, "conv").at(5, (4, 4))  # channels 4, 5 are group 2
    np.testing.assert_array_equal(number.input_channels, [4, 5])
    np.testing.assert_allclose(number.patch, x[3:6, 3:6, 4:6], atol=1e-6)


def test_demo_model_and_public_function():
    model = cw.demo.load_model()
    images, _ = cw.demo.load_images()
    number = cw.conv_arithmetic(model, images[0], "conv2", 5, (10, 20))
    expected = keras.Model(model.input, model.get_layer("conv2").output)(images[:1]).numpy()[0, 10, 20, 5]
    np.testing.assert_allclose(number.output, expected, atol=TOLERANCE)
    assert number.patch.shape == (3, 3, 16) and number.activation == "relu"
    assert "'pool1' (MaxPooling2D)" in number.source
    assert conv_layer_names(model) == ["conv1", "conv2", "conv3", "conv4"]


def test_refusals_name_the_valid_range_or_layers():
    model, x = conv_model(filters=4, kernel_size=3, padding="valid"), image()  # map 7x8
    explained = LayerArithmetic(model, x, "conv")
    for bad in [(7, 0), (0, 8), (-1, 2), (1,), (1.0, 2), "1,2", None]:
        with pytest.raises(InputError, match=r"row in 0\.\.6 and column in 0\.\.7"):
            explained.at(0, bad)
    with pytest.raises(InputError, match=r"channel 4 is out of range.*0\.\.3"):
        explained.at(4, (0, 0))
    dense = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.DepthwiseConv2D(3, name="depthwise"),
                              keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(name="flat")])
    for layer in ("depthwise", "flat"):
        with pytest.raises(UnsupportedModelError, match="not a Conv2D.*Conv2D layers of this model: conv"):
            cw.conv_arithmetic(dense, np.zeros((6, 6, 3)), layer, 0, (0, 0))
    with pytest.raises(InputError, match="one image"):
        LayerArithmetic(model, np.stack([x, x]), "conv")
    with pytest.raises(CnnvizError, match="Unknown layer"):
        LayerArithmetic(model, x, "conv9")


def test_a_conv_inside_a_nested_base_model():
    keras.utils.set_random_seed(5)
    base_input = keras.Input((10, 10, 3))
    inner = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="inner")
    base = keras.Model(base_input, inner(base_input), name="base")
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Rescaling(2.0, name="scale")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(base(x)))
    x_image = image(size=(10, 10))
    explained = LayerArithmetic(model, x_image, "base/inner")
    assert conv_layer_names(model) == ["base/inner"]
    assert explained.reads_image and "'scale' (Rescaling)" in explained.source
    expected = base(2.0 * x_image[None]).numpy()[0]
    for row, column in [(0, 0), (2, 3), (4, 4)]:
        for channel in range(4):
            assert explained.at(channel, (row, column)).output == pytest.approx(expected[row, column, channel], abs=TOLERANCE)
