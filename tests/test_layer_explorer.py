from pathlib import Path

import keras
import matplotlib
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets import LayerExplorer
from cnnviz_widgets.core import imaging, layer_views
from cnnviz_widgets.core.errors import InputError, InputTypeError
from cnnviz_widgets.widgets._base import PIXELATED, WidgetValueError
from conftest import nested_cnn, small_cnn

DEMO_MODEL = Path(cw.__file__).parent / "demo" / "data" / "shapes.keras"


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def counted_model():
    return small_cnn(counter=True)


def shown_map(explorer) -> np.ndarray:
    """The pixels the browser gets for the map area."""
    return imaging.from_png(explorer.map_figure.image.value)


def click_map(explorer, row, column):
    """What bqplot's front end sends for a click on pixel (row, column) of the map."""
    height, _ = explorer.map_figure.shape
    data = {"click_x": column + 0.5, "click_y": height - row - 0.5}
    explorer.map_figure.mark._handle_custom_msgs(None, {"event": "element_click", "data": data})


def tiled(values, columns) -> np.ndarray:
    """Maps of values in [0, 1] as viridis tiles with white gaps; the gaps and a dead tile's
    stripes take the palette's last three rows, so the top colours show as the one below them."""
    return imaging.grid(imaging.colormap(np.minimum(values, 252 / 256), "viridis"), columns=columns, fill=255)


def is_shown(widget, part) -> bool:
    """Whether ``part`` is on the page: hidden parts are taken out of the widget tree."""
    return part is widget or any(is_shown(child, part) for child in getattr(widget, "children", ()))


def test_names_and_defaults(model, images):
    explorer = LayerExplorer(model, images)
    assert explorer.layer_names == cw.layer_names(model)
    conv1 = cw.activations(model, images[:1], layers="conv1")["conv1"][0]
    most_active = int(np.argmax(np.abs(conv1).mean(axis=(0, 1))))  # opens on a live channel, not on channel 0
    assert (explorer.layer, explorer.channel, explorer.image_index, explorer.view) == ("conv1", most_active, 0, "channel")
    labels = dict((value, label) for label, value in explorer.layer_dropdown.options)
    assert labels["conv2"] == "conv2 · Conv2D · 5×5×12"
    assert labels["predictions"] == "predictions · Dense · 5"


def test_default_layer_without_feature_maps_is_the_first():
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(2, name="out")])
    explorer = LayerExplorer(dense, np.ones((2, 6), "float32"))
    assert explorer.layer == "hidden"


@pytest.mark.parametrize("layer, index", [("conv1", 0), ("bn", 3), ("conv2", 1), ("gap", 2), ("predictions", 3)])
def test_activation_is_the_layer_output_of_the_shown_image(model, images, layer, index):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.image_index = layer, index
    expected = cw.activations(model, images[index : index + 1], layers=layer)[layer][0]
    np.testing.assert_allclose(explorer.activation, expected, atol=1e-5)


def test_nested_transfer_model(images):
    transfer, base = nested_cnn()
    pixels = images * 255
    explorer = LayerExplorer(transfer, pixels)
    assert explorer.layer == "scale"
    explorer.layer, explorer.image_index, explorer.channel = "base/c2", 2, 7
    expected = keras.Model(base.inputs[0], base.get_layer("c2").output)(pixels[2:3] / 255.0, training=False)[0]
    np.testing.assert_allclose(explorer.activation, expected, atol=1e-4)
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(imaging.normalize(np.asarray(expected)[..., 7])))


def test_mobilenet_v2(images):
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
    x = np.random.default_rng(5).uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    explorer = LayerExplorer(mobilenet, x)
    assert explorer.layer == "Conv1"
    for layer in ["block_3_expand_relu", "block_13_project_BN", "out_relu"]:
        explorer.layer = layer
        expected = cw.activations(mobilenet, x[:1], layers=layer)[layer][0]
        np.testing.assert_allclose(explorer.activation, expected, atol=1e-4, err_msg=layer)
    explorer.view = "grid"  # 1280 channels of 1×1: pages of 4 rows of 8
    assert explorer.panels()[1].shape == (4 * 2 - 1, 8 * 2 - 1, 3)
    explorer.channel = 700  # on the page of channels 672..703
    click_map(explorer, row=2 * 2, column=3 * 2)  # the page's third row, fourth tile (1-px tiles, 1 px apart)
    assert explorer.channel == 672 + 2 * 8 + 3
    assert explorer.cache.forward_passes == 1


@pytest.mark.skipif(not DEMO_MODEL.exists(), reason="the bundled demo model is not built yet")
def test_demo_model():
    model = cw.demo.load_model()
    demo_images, _ = cw.demo.load_images()
    explorer = LayerExplorer(model, demo_images[:4])
    first, explorer.layer = explorer.layer, "predictions"  # the demo model's class names, known offline, without class_names
    assert list(explorer.signal_chart.bars.x) == cw.demo.class_names()
    explorer.layer = first
    explorer.image_index = 3
    expected = cw.activations(model, demo_images[3:4], layers=explorer.layer)[explorer.layer][0]
    np.testing.assert_allclose(explorer.activation, expected, atol=1e-5)
    explorer.view = "grid"
    assert explorer.panels()[1].dtype == np.uint8


def test_channel_view_is_the_channel_coloured_like_matshow(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.image_index = "conv2", 1
    conv2 = cw.activations(model, images[1:2], layers="conv2")["conv2"][0]
    before = explorer.map_figure.image.value
    explorer.channel = 4
    assert explorer.map_figure.image.value != before
    expected = imaging.colormap(imaging.normalize(conv2[..., 4]), "viridis")
    np.testing.assert_array_equal(shown_map(explorer), expected)
    np.testing.assert_array_equal(explorer.panels()[1], expected)
    explorer.normalization, explorer.colormap = "layer", "magma"
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(imaging.normalize(conv2)[..., 4], "magma"))


def test_input_image_is_the_raw_image(model, images):
    explorer = LayerExplorer(model, images)
    explorer.image_index = 2
    raw = imaging.to_uint8_image(images[2])
    np.testing.assert_array_equal(explorer.panels()[0], raw)
    # Sent at its own size; the browser enlarges it with whole pixels.
    np.testing.assert_array_equal(imaging.from_png(explorer.input_view.value), raw)
    assert PIXELATED in explorer.input_view._dom_classes and explorer.input_view.layout.width == "256px"
    assert any(f".{PIXELATED} {{ image-rendering: pixelated; }}" in getattr(child, "value", "") for child in explorer.children)


def test_shows_raw_images_and_feeds_preprocessed_ones(model, images):
    raw = (images * 255).astype(np.uint8)
    explorer = LayerExplorer(model, raw, preprocess=lambda batch: batch.astype("float32") / 255 - 0.5)
    explorer.image_index, explorer.layer = 1, "conv2"
    np.testing.assert_array_equal(explorer.panels()[0], raw[1])
    expected = cw.activations(model, raw[1:2] / 255 - 0.5, layers="conv2")["conv2"][0]
    np.testing.assert_allclose(explorer.activation, expected, atol=1e-5)


def test_preprocess_errors_are_named(model, images):
    def needs_a_tensor(batch):
        return batch.numpy()

    with pytest.raises(ValueError, match="preprocess raised AttributeError"):
        LayerExplorer(model, images, preprocess=needs_a_tensor)


def test_channel_chart_shows_channel_means_and_a_click_selects(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.image_index = "conv2", 3
    conv2 = cw.activations(model, images[3:4], layers="conv2")["conv2"][0]
    bars = explorer.means_chart.bars
    np.testing.assert_allclose(bars.y, conv2.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    assert list(bars.x) == [str(c) for c in range(12)]
    bars.selected = [9]
    assert explorer.channel == 9
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(imaging.normalize(conv2[..., 9])))
    explorer.channel = 2
    assert list(explorer.means_chart.bars.selected) == [2]


def test_controls_follow_traits_and_set_them(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.channel, explorer.image_index = "conv2", 10, 3
    assert explorer.layer_dropdown.value == "conv2"
    assert (explorer.channel_slider.max, explorer.channel_slider.value, explorer.image_slider.value) == (11, 10, 3)
    explorer.layer_dropdown.value = "pool1"
    explorer.channel_slider.value = 5
    explorer.image_slider.value = 1
    explorer.view_buttons.value = "grid"
    explorer.colormap_dropdown.value = "gray"
    explorer.normalization_buttons.value = "layer"
    assert (explorer.layer, explorer.channel, explorer.image_index) == ("pool1", 5, 1)
    assert (explorer.view, explorer.colormap, explorer.normalization) == ("grid", "gray", "layer")
    explorer.view, explorer.colormap, explorer.normalization = "images", "cool_r", "channel"
    assert explorer.view_buttons.value == "images"
    assert explorer.colormap_dropdown.value == "cool_r"
    assert explorer.normalization_buttons.value == "channel"


def test_a_layer_change_keeps_the_channel_or_clamps_it_to_the_last(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.channel = "conv2", 5
    explorer.layer = "conv1"
    assert explorer.channel == 5
    explorer.layer, explorer.channel = "conv2", 11
    explorer.layer = "conv1"
    assert explorer.channel == 7
    assert (explorer.channel_slider.max, explorer.channel_slider.value) == (7, 7)
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(imaging.normalize(explorer.activation[..., 7])))


def test_forward_passes(counted_model, images):
    counter = counted_model.get_layer("counter")

    def runs():
        return int(counter.calls.numpy())

    start = runs()
    explorer = LayerExplorer(counted_model, images)
    assert explorer.cache.forward_passes == runs() - start == 1
    for view in ["channel", "grid"]:
        explorer.view = view
        for layer in ["conv1", "conv2", "pool1", "predictions", "conv2"]:
            explorer.layer = layer
            explorer.channel = 3
            explorer.channel = 1
    assert explorer.cache.forward_passes == runs() - start == 1
    explorer.image_index = 2
    assert explorer.cache.forward_passes == runs() - start == 2
    explorer.image_index = 0
    explorer.layer = "conv1"
    assert explorer.cache.forward_passes == runs() - start == 2
    explorer.view = "images"  # one batched pass of the shown layer over every image
    explorer.channel = 6
    explorer.image_index = 3
    assert explorer.cache.forward_passes == runs() - start == 4


def test_a_grid_change_of_channel_does_not_re_encode_the_grid(model, images):
    explorer = LayerExplorer(model, images)
    explorer.view = "grid"
    png = explorer.map_figure.image.value
    explorer.channel = 6
    assert explorer.map_figure.image.value is png
    assert "channel 6" in explorer.readout.value


@pytest.mark.parametrize(
    "trait, bad, message",
    [
        ("layer", "nope", "Unknown layer 'nope'. Available: conv1, bn, pool1, conv2, drop, gap, predictions"),
        ("channel", 8, "layer 'conv1' has 8 channels, so use 0..7"),
        ("channel", -1, "channel -1 is out of range"),
        ("image_index", 4, "there are 4 images, so use 0..3"),
        ("view", "tiles", "Use one of: channel, grid, images"),
        ("colormap", "virdis", "Did you mean 'viridis'"),
        ("normalization", "global", "Use one of: channel, layer"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(model, images, trait, bad, message):
    explorer = LayerExplorer(model, images)
    explorer.channel, explorer.image_index = 2, 1
    state = {name: getattr(explorer, name) for name in ["layer", "channel", "image_index", "view", "colormap", "normalization"]}
    png = explorer.map_figure.image.value
    with pytest.raises(WidgetValueError, match=message) as raised:
        setattr(explorer, trait, bad)
    assert isinstance(raised.value, ValueError)
    assert {name: getattr(explorer, name) for name in state} == state
    assert explorer.map_figure.image.value == png
    assert message in explorer.error
    explorer.channel = 3
    assert explorer.error == ""


def test_a_colormap_registered_later_is_refused_not_half_applied(model, images):
    explorer = LayerExplorer(model, images)
    matplotlib.colormaps.register(matplotlib.colormaps["viridis"], name="cnnviz_late")
    try:
        with pytest.raises(WidgetValueError, match="registered after this LayerExplorer"):
            explorer.colormap = "cnnviz_late"
        assert explorer.colormap == explorer.colormap_dropdown.value == "viridis"
        assert LayerExplorer(model, images[:1]).colormap_dropdown.options.count("cnnviz_late") == 1
    finally:
        matplotlib.colormaps.unregister("cnnviz_late")


def test_grid_view_is_every_channel_normalised_8_a_row(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.image_index, explorer.view = "conv1", 2, "grid"
    conv1 = cw.activations(model, images[2:3], layers="conv1")["conv1"][0]

    def expected_grid(axis):
        tiles = np.moveaxis(imaging.normalize_channels(conv1, axis=axis), -1, 0)
        return tiled(tiles / 255, columns=8)

    np.testing.assert_array_equal(explorer.panels()[1], expected_grid(-1))
    np.testing.assert_array_equal(shown_map(explorer), expected_grid(-1))
    explorer.normalization = "layer"
    np.testing.assert_array_equal(shown_map(explorer), expected_grid(None))


def test_clicking_a_grid_tile_selects_its_channel_and_reads_the_value(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.view = "conv1", "grid"  # 8 tiles of 14×14, 1 px apart
    click_map(explorer, row=4, column=5 * 15 + 9)
    assert explorer.channel == 5
    value = explorer.activation[4, 9, 5]
    assert f"at row 4, column 9: {value:.4g}" in explorer.readout.value


def test_a_grid_of_large_maps_shrinks_to_tiles_of_96_px_and_clicks_read_full_resolution():
    rng = np.random.default_rng(0)
    inputs = keras.Input((130, 130, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", name="wide")(inputs))
    images = rng.uniform(0, 1, (1, 130, 130, 3)).astype(np.float32)
    explorer = LayerExplorer(model, images)
    explorer.view = "grid"
    wide = model(images).numpy()[0]
    shrunk = tf.image.resize(wide, (96, 96), method="area").numpy()
    tiles = np.moveaxis(imaging.normalize_channels(shrunk), -1, 0)
    expected = tiled(tiles / 255, columns=8)
    np.testing.assert_array_equal(shown_map(explorer), expected)
    click_map(explorer, row=15, column=2 * 97 + 95)  # tile 2, its last column
    assert explorer.channel == 2
    assert f"at row 20, column 128: {wide[20, 128, 2]:.4g}" in explorer.readout.value
    explorer.view = "channel"  # the channel view keeps every value
    assert shown_map(explorer).shape[:2] == (130, 130)


def test_clicking_the_map_reads_the_value_under_it(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.channel = "conv2", 3
    assert "click the map" in explorer.readout.value
    click_map(explorer, row=1, column=4)
    conv2 = explorer.activation
    assert f"at row 1, column 4: {conv2[1, 4, 3]:.4g}" in explorer.readout.value
    explorer.channel = 7  # the readout follows the clicked position across channels
    assert f"at row 1, column 4: {conv2[1, 4, 7]:.4g}" in explorer.readout.value
    channel = conv2[..., 7]
    assert f"min {channel.min():.4g}, max {channel.max():.4g}, mean {channel.mean():.4g}" in explorer.readout.value


def test_images_view_is_one_channel_of_every_image(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.channel, explorer.view = "conv1", 6, "images"
    conv1 = cw.activations(model, images, layers="conv1")["conv1"][..., 6]
    each_image = imaging.normalize(conv1, "tile")
    each_image[conv1.max(axis=(1, 2)) == conv1.min(axis=(1, 2))] = 0  # a dead tile: the bottom colour
    np.testing.assert_array_equal(shown_map(explorer), tiled(each_image, columns=2))
    explorer.normalization = "layer"
    np.testing.assert_array_equal(shown_map(explorer), tiled(imaging.normalize(conv1, "global"), columns=2))
    click_map(explorer, row=15 + 2, column=15 + 3)  # tile 3, pixel (2, 3)
    assert explorer.image_index == 3
    assert f"at row 2, column 3: {conv1[3, 2, 3]:.4g}" in explorer.readout.value


def test_dense_layers_are_bar_charts_of_the_units(model, images):
    explorer = LayerExplorer(model, images)
    explorer.layer, explorer.image_index = "predictions", 1
    probabilities = cw.activations(model, images[1:2], layers="predictions")["predictions"][0]
    assert is_shown(explorer, explorer.signal_chart.figure) and not is_shown(explorer, explorer.map_figure.figure)
    assert not is_shown(explorer, explorer.means_chart.figure)
    np.testing.assert_allclose(explorer.signal_chart.bars.y, probabilities, rtol=1e-5)
    explorer.signal_chart.bars.selected = [3]
    assert explorer.channel == 3
    assert f"unit 3 of 5: {probabilities[3]:.4g}" in explorer.readout.value
    picture = explorer.panels()[1]
    assert picture.shape == (120, 5 * 4, 3)
    assert (picture[:, 3 * 4] == [214, 39, 40]).all(axis=-1).any()  # the selected bar is red
    explorer.view = "images"
    every_image = cw.activations(model, images, layers="predictions")["predictions"][:, 3]
    np.testing.assert_allclose(explorer.signal_chart.bars.y, every_image, rtol=1e-5)
    explorer.signal_chart.bars.selected = [2]
    assert explorer.image_index == 2
    explorer.layer = "conv1"
    assert is_shown(explorer, explorer.map_figure.figure) and not is_shown(explorer, explorer.signal_chart.figure)


def test_the_output_layers_bars_are_named_by_class(model, images):
    names = ["circle", "square", "triangle", "star", "cross"]
    explorer = LayerExplorer(model, images, class_names=names, layer="predictions")
    assert list(explorer.signal_chart.bars.x) == names
    assert explorer.signal_chart.x_axis.label == ""  # the names say what the bars are
    unnamed = LayerExplorer(model, images, layer="predictions")  # no names known: numbers, said to be class indices
    assert list(unnamed.signal_chart.bars.x) == [str(c) for c in range(5)]
    assert unnamed.signal_chart.x_axis.label == "class index"
    unnamed.view = "images"
    assert unnamed.signal_chart.x_axis.label == "image"
    explorer.layer = "conv2"  # not the output: its channels keep their numbers
    assert list(explorer.means_chart.bars.x) == [str(c) for c in range(12)]
    with pytest.raises(InputError, match="class_names has 2 names"):
        LayerExplorer(model, images, class_names=["a", "b"])


def test_a_bar_too_short_to_click_is_selected_by_a_click_above_it(model, images):
    explorer = LayerExplorer(model, images, layer="conv2")
    chart = explorer.means_chart
    # The transparent hit area spans every bar's band (the same labels on an ordinal scale) and the chart's height.
    assert list(chart.hit_area.x) == list(chart.bars.x)
    assert type(chart.hit_area.scales["x"]) is type(chart.bars.scales["x"])
    y_scale = chart.hit_area.scales["y"]
    np.testing.assert_allclose(chart.hit_area.y, y_scale.max, rtol=0)
    assert y_scale.min == 0 and chart.hit_area.base == 0
    chart.hit_area.selected = [7]  # what the front end sends for a click on the hit area
    assert explorer.channel == 7 and list(chart.bars.selected) == [7]
    chart.hit_area.selected = [7]  # the hit area forgot the first click: a second one selects again
    assert explorer.channel == 7


def test_many_bars_show_at_most_10_labels_evenly():
    inputs = keras.Input((6, 6, 3))
    wide = keras.Model(inputs, keras.layers.Conv2D(150, 3, name="wide")(inputs))
    explorer = LayerExplorer(wide, np.zeros((1, 6, 6, 3), np.float32))
    assert explorer.means_chart.x_axis.num_ticks <= 10  # the front end thins the 150 labels evenly
    assert explorer.means_chart.x_axis.tick_rotate != 0  # and slanted, they cannot run together
    narrow = keras.Model(inputs, keras.layers.Conv2D(6, 3, name="narrow")(inputs))
    explorer = LayerExplorer(narrow, np.zeros((1, 6, 6, 3), np.float32))
    assert explorer.means_chart.x_axis.tick_rotate == 0  # six numbers stay level


def test_a_dead_channel_shows_flat_without_nan(images):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
    dead = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    kernel, bias = conv.get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # ReLU(-1) everywhere
    conv.set_weights([kernel, bias])
    explorer = LayerExplorer(dead, images)
    assert explorer.channel != 0  # it opens on a live channel
    explorer.channel = 0
    assert not np.isnan(explorer.means_chart.bars.y).any() and explorer.means_chart.bars.y[0] == 0
    # The colormap's bottom colour, not the mid-scale one that would read as a value; no colour scale.
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(np.zeros((14, 14))))
    assert not is_shown(explorer, explorer.color_bar.figure)
    assert "dead (0 everywhere)" in explorer.readout.value
    explorer.view = "grid"
    # Its tile is striped gray, not a colour that would read as a value, and the readout says why.
    stripes = {tuple(pixel) for pixel in shown_map(explorer)[:14, :14].reshape(-1, 3)}
    assert stripes == {tuple(colour) for colour in layer_views.HATCH_COLOURS}
    assert "striped gray: dead (0 everywhere): channel 0" in explorer.readout.value
    assert "nan" not in explorer.readout.value.lower()


def test_1d_convolutions_are_charts_along_the_steps_and_step_pictures(images):
    keras.utils.set_random_seed(6)
    inputs = keras.Input((20, 2))
    x = keras.layers.Conv1D(4, 3, activation="relu", name="conv")(inputs)
    sequence_model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flat")(x)))
    signals = np.random.default_rng(7).normal(size=(3, 20, 2)).astype("float32")
    explorer = LayerExplorer(sequence_model, signals)
    conv = cw.activations(sequence_model, signals, layers="conv")["conv"]
    assert explorer.layer == "conv" and explorer.panels()[0].shape == (2, 20, 3)
    explorer.channel = 2
    assert is_shown(explorer, explorer.signal_chart.figure)
    np.testing.assert_allclose(explorer.signal_chart.bars.y, conv[0, :, 2], rtol=1e-5)
    explorer.signal_chart.bars.selected = [5]
    assert f"at step 5: {conv[0, 5, 2]:.4g}" in explorer.readout.value
    np.testing.assert_array_equal(explorer.panels()[1], imaging.bar_picture(conv[0, :, 2], selected=5))
    explorer.view = "grid"  # one row per channel
    rows = imaging.normalize_channels(conv[0]).T / 255
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(rows))
    click_map(explorer, row=1, column=7)
    assert explorer.channel == 1
    explorer.view = "images"  # one row per image
    np.testing.assert_array_equal(shown_map(explorer), imaging.colormap(imaging.normalize(conv[..., 1], "tile")))
    click_map(explorer, row=2, column=0)
    assert explorer.image_index == 2
    explorer.layer = "flat"  # still the images view: unit 1 of every image
    np.testing.assert_allclose(explorer.signal_chart.bars.y, conv.reshape(3, -1)[:, 1], rtol=1e-5)


def test_static_png_shows_the_input_and_the_map(model, images):
    explorer = LayerExplorer(model, images)
    picture = imaging.from_png(explorer.to_png())
    # Small panels are enlarged to about 256 px for nbconvert: 16 px ×16, 14 px ×18.
    assert picture.shape == (256, 256 + 8 + 252, 3)
    np.testing.assert_array_equal(picture[:252, -252:], imaging.upscale(explorer.panels()[1], 18))
    assert "image/png" in explorer._repr_mimebundle_()


def test_traits_can_be_given_to_the_constructor_in_any_order(model, images):
    explorer = LayerExplorer(model, images, channel=10, view="grid", layer="conv2", image_index=3, normalization="layer")
    assert (explorer.layer, explorer.channel, explorer.image_index) == ("conv2", 10, 3)
    assert (explorer.view, explorer.normalization) == ("grid", "layer")
    assert (explorer.channel_slider.max, explorer.channel_slider.value, explorer.view_buttons.value) == (11, 10, "grid")


def test_the_constructor_refuses_unknown_traits_and_bad_values(model, images):
    with pytest.raises(InputTypeError, match="LayerExplorer has no trait chanel; its traits are: layer, channel, image_index"):
        LayerExplorer(model, images, chanel=2)
    with pytest.raises(WidgetValueError, match=r"channel 12 is out of range: layer 'conv2' has 12 channels"):
        LayerExplorer(model, images, layer="conv2", channel=12)
    with pytest.raises(TypeError):
        LayerExplorer(model, images, lambda batch: batch)  # preprocess is keyword-only


def test_a_layer_change_says_it_computes_before_the_work_and_a_revisit_is_not_recomputed(model, images, monkeypatch):
    explorer = LayerExplorer(model, images, view="grid")
    built, readouts = [], []
    content = layer_views.content

    def recording(cache, settings, *args):
        built.append(settings.layer)
        readouts.append(explorer.readout.value)  # what the page shows while this computes
        return content(cache, settings, *args)

    monkeypatch.setattr(layer_views, "content", recording)
    conv1_png = explorer.map_figure.image.value
    explorer.layer = "conv2"
    assert built == ["conv2"] and "computing layer conv2" in readouts[0]
    explorer.layer = "conv1"  # a revisit: the same picture, from the cache
    assert built == ["conv2"]
    assert explorer.map_figure.image.value == conv1_png
    assert "conv1 · channel" in explorer.readout.value  # the busy sign is gone
