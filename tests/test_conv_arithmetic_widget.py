"""ConvArithmetic widget: a click shows how that number is made, checked against Keras; bad values are refused."""

import re

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import ConvArithmetic
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.errors import CnnvizError, UnsupportedModelError

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model():
    return cw.demo.load_model()


@pytest.fixture(scope="module")
def image():
    return cw.demo.load_images()[0][3]


def layer_output(model, image, layer):
    return keras.Model(model.input, model.get_layer(layer).output)(image[None]).numpy()[0]


def click_map(widget, row, column):
    """What bqplot's front end sends for a click on pixel (row, column) of the map."""
    height = widget.map_figure.shape[0]
    data = {"click_x": column + 0.5, "click_y": height - row - 0.5}
    widget.map_figure.mark._handle_custom_msgs(None, {"event": "element_click", "data": data})


def shown_numbers(widget) -> list[str]:
    """The numbers written in the equation's grid cells, in reading order."""
    return re.findall(r"monospace;padding:0'>(-?\d+\.\d+)</td>", widget.equation.value)


def test_opens_on_a_live_number_that_equals_the_layers_output(model, image):
    widget = ConvArithmetic(model, image)
    conv1 = layer_output(model, image, "conv1")
    assert widget.layer == "conv1"
    assert widget.channel == int(np.abs(conv1).mean(axis=(0, 1)).argmax())
    row, column = widget.position
    assert conv1[row, column, widget.channel] == pytest.approx(conv1[..., widget.channel].max(), abs=TOLERANCE)
    assert widget.number.output == pytest.approx(conv1[row, column, widget.channel], abs=TOLERANCE)
    assert widget.number.output > 0
    assert f"<b>{widget.number.output:.3f}</b>" in widget.equation.value
    assert "✓ the same" in widget.equation.value
    widget.close()


def test_a_click_shows_the_patch_kernel_and_products_of_that_position(model, image):
    widget = ConvArithmetic(model, image, channel=4)
    click_map(widget, 10, 20)
    assert widget.position == (10, 20)
    kernel = model.get_layer("conv1").kernel.numpy()[..., 4]
    patch = image[9:12, 19:22]  # conv1 reads the image as it is, 'same' padding, stride 1
    grids = np.array(shown_numbers(widget), dtype=float).reshape(3, 3, 3, 3)  # per input channel: patch, kernel, products
    for channel, (shown_patch, shown_kernel, shown_products) in enumerate(grids):
        np.testing.assert_allclose(shown_patch, np.round(patch[..., channel], 3), atol=1e-3)
        np.testing.assert_allclose(shown_kernel, np.round(kernel[..., channel], 3), atol=1e-3)
        np.testing.assert_allclose(shown_products, np.round(patch[..., channel] * kernel[..., channel], 3), atol=1e-3)
    expected = layer_output(model, image, "conv1")[10, 20, 4]
    assert widget.number.output == pytest.approx(expected, abs=TOLERANCE)
    bias = float(model.get_layer("conv1").bias.numpy()[4])
    assert widget.number.pre_activation == pytest.approx(float((patch * kernel).sum()) + bias, abs=TOLERANCE)
    assert list(widget._map_outline.x) == [20, 21, 21, 20, 20]
    assert list(widget._input_outline.x) == [19, 22, 22, 19, 19]  # the 3-px window over the 64-px image
    widget.close()


def test_the_corner_shows_zero_padding(model, image):
    widget = ConvArithmetic(model, image, channel=1, position=(0, 0))
    assert widget.number.padded.sum() == 5
    assert "zero padding" in widget.equation.value
    assert widget.number.output == pytest.approx(layer_output(model, image, "conv1")[0, 0, 1], abs=TOLERANCE)
    widget.close()


def test_many_input_channels_chart_their_sums_and_a_bar_picks_the_grids(model, image):
    widget = ConvArithmetic(model, image, layer="conv1", position=(40, 30))
    widget.layer = "conv2"
    assert widget.position == (20, 15)  # the same part of the image in the 32×32 map
    number = widget.number
    assert number.output == pytest.approx(layer_output(model, image, "conv2")[20, 15, widget.channel], abs=TOLERANCE)
    assert widget._sums_box.children == (widget.sums_chart.figure,)
    assert widget.input_channel == np.abs(number.channel_sums).argmax()  # a new layer opens on the input that weighs most
    np.testing.assert_allclose(widget.sums_chart.bars.y, number.channel_sums)
    pool1 = keras.Model(model.input, model.get_layer("pool1").output)(image[None]).numpy()[0]
    varied = int(np.flatnonzero(pool1.min(axis=(0, 1)) < pool1.max(axis=(0, 1)))[0])  # dead conv1 channels are constant here
    constant = int(np.flatnonzero(pool1.min(axis=(0, 1)) == pool1.max(axis=(0, 1)))[0])
    widget.sums_chart.bars.selected = [varied]  # a click on its bar
    assert widget.input_channel == varied
    values = pool1[..., varied]
    assert f"input channel {varied}: {values.min():.3g} to {values.max():.3g}" in widget.input_caption.value
    kernel_cells = np.array(shown_numbers(widget), dtype=float).reshape(3, 3, 3)[1]
    np.testing.assert_allclose(kernel_cells, np.round(model.get_layer("conv2").kernel.numpy()[..., varied, widget.channel], 3), atol=1e-3)
    widget.sums_chart.bars.selected = [constant]
    assert f"input channel {constant}: {pool1[0, 0, constant]:.3g} everywhere" in widget.input_caption.value
    widget.layer = "conv1"  # back to 3 input channels: all drawn, no chart
    assert widget._sums_box.children == ()
    assert len(shown_numbers(widget)) == 3 * 27
    widget.close()


def test_bad_values_are_refused_and_the_widget_keeps_its_state(model, image):
    widget = ConvArithmetic(model, image, position=(5, 6))
    before = (widget.layer, widget.channel, widget.position, widget.equation.value, widget.map_figure.image.value)
    for name, value, message in [
        ("position", (64, 0), r"row in 0\.\.63 and column in 0\.\.63"),
        ("position", (3, -1), r"row in 0\.\.63"),
        ("position", "middle", r"row in 0\.\.63"),
        ("channel", 16, r"0\.\.15"),
        ("layer", "pool1", r"not a Conv2D.*conv1, conv2, conv3, conv4"),
        ("layer", "conv9", "Unknown layer"),
        ("input_channel", 3, r"reads 3 input channels, so use 0\.\.2"),
    ]:
        with pytest.raises(CnnvizError, match=message):
            setattr(widget, name, value)
        assert re.search(message, widget.error)
        assert (widget.layer, widget.channel, widget.position, widget.equation.value, widget.map_figure.image.value) == before
    widget.position = (7, 7)
    assert widget.error == ""
    widget.close()


def test_preprocess_feeds_the_model_and_the_patch_is_what_conv1_reads(model, image):
    reversed_channels = lambda batch: batch[..., ::-1] / 255.0  # noqa: E731 (as caffe-mode preprocess_input: BGR)
    widget = ConvArithmetic(model, image[..., ::-1] * 255, preprocess=reversed_channels, position=(30, 30))
    np.testing.assert_allclose(widget.number.patch, image[29:32, 29:32], atol=1e-5)
    # The picture is the raw image the user passed, not the channels the model reads.
    np.testing.assert_array_equal(imaging.from_png(widget.input_figure.image.value)[..., :3], imaging.to_uint8_image(image[..., ::-1]))
    widget.close()


def test_models_without_a_conv2d_or_an_image_are_refused():
    dense = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match="has none"):
        ConvArithmetic(dense, np.zeros((8, 8, 1)))
    sequence = keras.Sequential([keras.Input((10, 2)), keras.layers.Conv1D(2, 3)])
    with pytest.raises(UnsupportedModelError, match="cw.conv_arithmetic"):
        ConvArithmetic(sequence, np.zeros((10, 2)))


def test_a_random_walk_of_traits_only_refuses_and_shows_what_a_fresh_widget_shows(images):
    from traitlets import TraitError

    from conftest import shown_state, small_cnn

    model = small_cnn(size=16)  # conv1: 8 channels of 14×14 from 3 inputs; conv2: 12 of 5×5 from 8

    def shown(widget):
        traits = {name: getattr(widget, name) for name in ("layer", "channel", "position", "input_channel")}
        return shown_state(widget), traits, widget.to_png(), widget.number.output

    widget = ConvArithmetic(model, images[0])
    candidates = {
        "layer": ["conv1", "conv2", "bn", "pool1", "conv9", 3],
        "channel": [*range(-1, 14), None, "3", 2.5],
        "position": [(0, 0), (4, 4), (13, 13), (5, 0), (14, 0), (-1, 2), (2,), "x", None, (1.5, 2)],
        "input_channel": [0, 1, 2, 5, 7, 8, -1, "x", None],
    }
    rng, refused = np.random.default_rng(5), 0
    for step in range(1, 301):
        name = list(candidates)[rng.integers(len(candidates))]
        value = candidates[name][rng.integers(len(candidates[name]))]
        before = {trait: getattr(widget, trait) for trait in candidates}
        try:
            setattr(widget, name, value)
        except TraitError:  # WidgetValueError is one too
            refused += 1
            assert {trait: getattr(widget, trait) for trait in candidates} == before, f"step {step}: {name}={value!r}"
        if step % 100 == 0:
            fresh = ConvArithmetic(model, images[0], **{trait: getattr(widget, trait) for trait in candidates})
            assert shown(widget) == shown(fresh), f"after step {step}"
            expected = keras.Model(model.input, model.get_layer(widget.layer).output)(images[:1]).numpy()[0]
            assert widget.number.output == pytest.approx(expected[(*widget.position, widget.channel)], abs=TOLERANCE)
            fresh.close()
    assert 60 < refused < 240  # both kinds of value were really tried
    widget.close()


def test_closing_frees_every_part_and_the_model(images):
    import gc
    import weakref

    from ipywidgets.widgets import widget as ipywidget

    from conftest import small_cnn

    gc.collect()
    start = len(ipywidget._instances)
    model = small_cnn(size=16)
    widget = ConvArithmetic(model, images[0], layer="conv2")  # the sums chart shown too
    model_ref = weakref.ref(model)
    widget.close()
    del widget, model
    gc.collect()
    assert len(ipywidget._instances) == start
    assert model_ref() is None


def test_a_7x7_kernel_keeps_its_numbers_for_hovering():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((20, 20, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 7, strides=2, padding="same", name="big")(inputs))
    image = np.random.default_rng(2).uniform(0, 1, (20, 20, 3)).astype("float32")
    widget = ConvArithmetic(model, image, channel=2, position=(4, 6))
    assert shown_numbers(widget) == []  # 49 numbers a grid are too many to print
    titles = np.array(re.findall(r"<td title='(-?\d+\.\d+)'", widget.equation.value), dtype=float).reshape(3, 3, 7, 7)
    kernel = model.get_layer("big").kernel.numpy()[..., 2]
    np.testing.assert_allclose(titles[:, 1], np.moveaxis(kernel, -1, 0), atol=1e-6)  # per input channel: patch, kernel, products
    assert "hover a cell for its number" in widget.equation.value
    expected = keras.Model(model.input, model.get_layer("big").output)(image[None]).numpy()[0, 4, 6, 2]
    assert widget.number.output == pytest.approx(expected, abs=TOLERANCE)
    widget.close()


def test_a_new_layer_says_it_is_computing_and_a_refused_one_leaves_the_line(model, image, monkeypatch):
    from cnnviz_widgets.widgets import conv_arithmetic as module

    widget = ConvArithmetic(model, image)
    seen, real = [], module.LayerArithmetic

    def recording(*args):
        seen.append(widget.settings_line.value)
        return real(*args)

    monkeypatch.setattr(module, "LayerArithmetic", recording)
    widget.layer = "conv3"
    assert seen == ["⏳ computing conv3 …"]
    assert widget.settings_line.value.startswith("<b>conv3</b>: 3×3 kernel, stride 1, padding &#x27;same&#x27;, 64 channels")
    widget.layer = "conv1"  # kept: no model run
    assert len(seen) == 1
    with pytest.raises(CnnvizError, match="not a Conv2D"):
        widget.layer = "bn3"
    assert widget.settings_line.value.startswith("<b>conv1</b>")
    widget.close()
