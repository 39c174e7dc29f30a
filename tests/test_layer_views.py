"""What LayerExplorer shows, built in core/layer_views.py and checked here without any widget."""

import keras
import numpy as np
import pytest

from cnnviz_widgets.core import imaging, layer_views
from cnnviz_widgets.core.activation_cache import ActivationCache
from cnnviz_widgets.core.layer_views import Pick, Picture, Settings, Signal
from conftest import small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture
def cache(model, images):
    return ActivationCache(model, images)


def layer_output(model, name, images) -> np.ndarray:
    """An independent forward pass: a Keras sub-model up to layer ``name``."""
    return keras.Model(model.inputs, model.get_layer(name).output).predict(images, verbose=0)


def settings(**changes) -> Settings:
    chosen = dict(layer="conv2", channel=3, image_index=1, view="channel", colormap="viridis", normalization="channel")
    return Settings(**{**chosen, **changes})


def test_the_channel_view_is_the_channel_in_the_colormap(model, images, cache):
    conv2 = layer_output(model, "conv2", images)[1]
    shown = layer_views.content(cache, settings())
    assert isinstance(shown, Picture)
    np.testing.assert_array_equal(shown.picture(), imaging.colormap(imaging.normalize(conv2[..., 3])))
    assert shown.locate(2, 4) == Pick((2, 4))


def test_per_layer_normalization_puts_the_channel_on_the_layers_scale(model, images, cache):
    conv2 = layer_output(model, "conv2", images)[1]
    shown = layer_views.content(cache, settings(normalization="layer"))
    expected = (conv2[..., 3] - conv2.min()) / (conv2.max() - conv2.min())
    np.testing.assert_array_equal(shown.picture(), imaging.colormap(expected))


def test_a_click_on_the_grid_names_the_channel_and_the_position_in_its_map(model, images, cache):
    conv2 = layer_output(model, "conv2", images)[1]  # 5×5 maps, 12 channels: one row of 16 tiles
    shown = layer_views.content(cache, settings(view="grid"))
    tile = 5 + 1
    assert shown.locate(2, 7 * tile + 4) == Pick((2, 4), channel=7)
    assert shown.locate(2, 7 * tile + 5) is None  # the white gap
    first = (conv2[..., 0] - conv2[..., 0].mean()) / conv2[..., 0].std() * 64 + 128
    top = layer_views.HATCH_ROWS[0] - 1  # the palette's last rows are the stripes' grays and the gaps' white
    expected = imaging.colormap(np.minimum(np.clip(first, 0, 255) / 255, top / 256))
    np.testing.assert_allclose(shown.picture()[:5, :5], expected, atol=3)


def test_a_click_on_the_images_view_names_the_image(model, images, cache):
    shown = layer_views.content(cache, settings(view="images"))  # 4 images: 2 columns of 5×5 maps
    assert shown.locate(5 + 1 + 3, 5 + 1 + 4) == Pick((3, 4), image=3)
    assert shown.locate(0, 5) is None  # the white gap


def test_a_dense_layer_is_a_chart_of_its_units_and_a_click_selects_one(model, images, cache):
    probabilities = model.predict(images, verbose=0)
    shown = layer_views.content(cache, settings(layer="predictions", channel=2))
    assert isinstance(shown, Signal) and shown.selected == 2
    np.testing.assert_allclose(shown.values, probabilities[1], rtol=1e-5)
    assert shown.locate(4) == Pick(None, channel=4)
    across = layer_views.content(cache, settings(layer="predictions", channel=2, view="images"))
    np.testing.assert_allclose(across.values, probabilities[:, 2], rtol=1e-5)
    assert across.locate(0) == Pick(None, image=0)


def test_the_readout_and_the_channel_means(model, images, cache):
    conv2 = layer_output(model, "conv2", images)[1]
    activation = cache.for_image(1)["conv2"]
    text = layer_views.readout(activation, "conv2", 3, (1, 4))
    channel = conv2[..., 3]
    assert text.startswith(f"conv2 · channel 3 of 12: min {channel.min():.4g}, max {channel.max():.4g}")
    assert text.endswith(f"at row 1, column 4: {channel[1, 4]:.4g}")
    assert layer_views.readout(activation, "conv2", 3, None).endswith("click the map for a value")
    np.testing.assert_allclose(layer_views.channel_means(activation), conv2.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)


def test_only_what_a_view_shows_is_in_its_key(cache):
    activation = cache.for_image(1)["conv2"]
    grid = layer_views.content_key(settings(view="grid"), activation)
    assert grid == layer_views.content_key(settings(view="grid", channel=9), activation)
    assert grid != layer_views.content_key(settings(view="grid", image_index=2), activation)
    images = layer_views.content_key(settings(view="images"), activation)
    assert images == layer_views.content_key(settings(view="images", image_index=2), activation)
    assert images != layer_views.content_key(settings(view="images", channel=9), activation)


def test_a_layer_with_nan_says_why_it_cannot_be_drawn(images):
    broken = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, name="conv")])
    broken.get_layer("conv").bias.assign([np.nan, 0.0])
    cache = ActivationCache(broken, images)
    assert "NaN or infinite" in layer_views.unshowable(cache, "conv", 0, all_images=True)
    fine = ActivationCache(small_cnn(), images)
    assert layer_views.unshowable(fine, "conv1", 0, all_images=True) is None


def test_the_most_active_channel_has_the_largest_mean_absolute_value():
    activation = np.zeros((4, 4, 5), np.float32)
    activation[..., 1] = -3.0  # large, but negative: still the most active
    activation[0, 0, 2] = 20.0  # one hot pixel: a mean of 1.25
    activation[..., 4] = 2.0
    assert layer_views.most_active_channel(activation) == 1
    assert layer_views.most_active_channel(np.array([0.1, -0.7, 0.3])) == 1  # units of a Dense layer


def test_a_dead_channel_is_said_dead_and_drawn_in_the_bottom_colour_striped_in_the_grid(images):
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(3, 3, activation="relu", name="conv")
    model = keras.Model(inputs, conv(inputs))
    kernel, bias = conv.get_weights()
    kernel[..., 1], bias[1] = 0.0, -1.0  # ReLU(-1): 0 everywhere
    conv.set_weights([kernel, bias])
    cache = ActivationCache(model, images)
    activation = cache.for_image(0)["conv"]
    assert layer_views.is_dead(activation[..., 1], activation) and not layer_views.is_dead(activation[..., 0], activation)
    assert layer_views.readout(activation, "conv", 1, None) == "conv · channel 1 of 3: dead (0 everywhere) · click the map for a value"
    shown = layer_views.content(cache, settings(layer="conv", channel=1, image_index=0))
    np.testing.assert_array_equal(shown.picture(), imaging.colormap(np.zeros((14, 14))))
    assert shown.scale is None  # no contrast: no colour scale to read
    # In the grid its tile is striped gray, in both normalizations: a colour would read as a value.
    grays = {tuple(colour) for colour in layer_views.HATCH_COLOURS}
    for normalization in ("channel", "layer"):
        grid = layer_views.content(cache, settings(layer="conv", view="grid", image_index=0, normalization=normalization))
        for index in range(3):
            colours = {tuple(pixel) for pixel in grid.picture()[:14, index * 15 : index * 15 + 14].reshape(-1, 3)}
            assert colours == grays if index == 1 else colours.isdisjoint(grays), (normalization, index)


def test_dead_channels_are_the_channels_0_everywhere_within_the_tolerance():
    activation = np.random.default_rng(5).uniform(1, 2, (4, 4, 5)).astype(np.float32)
    activation[..., 1] = 0
    activation[..., 3] = 1e-9  # a few ulps of a bias after a dead ReLU
    activation[0, 0, 4] = 0  # one zero is not a dead channel
    expected = [layer_views.is_dead(activation[..., c], activation) for c in range(5)]
    assert expected == [False, True, False, True, False]
    assert list(layer_views.dead_channels(activation)) == expected
    assert layer_views.grid_dead_note(activation, 0) == " · striped gray: dead (0 everywhere): channels 1, 3"
    assert layer_views.grid_dead_note(activation[..., [0, 2]], 0) == ""


def test_every_picture_says_what_its_colours_mean(model, images, cache):
    conv2 = layer_output(model, "conv2", images)
    one = conv2[1]
    channel = layer_views.content(cache, settings()).scale
    assert (channel.low, channel.high) == pytest.approx((one[..., 3].min(), one[..., 3].max()), rel=1e-5)
    layer = layer_views.content(cache, settings(normalization="layer")).scale
    assert (layer.low, layer.high) == pytest.approx((one.min(), one.max()), rel=1e-5)
    # The grid stretches (a - mean) / std * 64 + 128 over 0..255: ±2 std.
    assert layer_views.content(cache, settings(view="grid")).scale.low == -2.0
    grid = layer_views.content(cache, settings(view="grid", normalization="layer")).scale
    expected = (one.mean() - 2 * one.std(), one.mean() + 2 * one.std())
    assert (grid.low, grid.high) == pytest.approx(expected, rel=1e-4)
    across = layer_views.content(cache, settings(view="images", normalization="layer")).scale
    assert (across.low, across.high) == pytest.approx((conv2[..., 3].min(), conv2[..., 3].max()), rel=1e-5)


def test_a_grid_shows_the_page_of_the_selected_channel():
    activation = np.random.default_rng(3).normal(size=(3, 3, 150)).astype(np.float32)
    assert layer_views.grid_channels(activation, 5) == range(0, 32)
    assert layer_views.grid_channels(activation, 140) == range(128, 150)
    assert layer_views.grid_channels(activation[0], 140) == range(150)  # 1-D: one thin row per channel, all shown


def test_the_output_layers_bars_take_the_class_names(model, cache):
    names = ["circle", "square", "triangle", "star", "cross"]
    classes = layer_views.class_output(model, cache.graph, names)
    assert classes == layer_views.ClassOutput("predictions", names)
    shown = layer_views.content(cache, settings(layer="predictions", channel=2), classes=classes)
    assert (shown.labels, shown.x_label) == (names, "")
    # No names given nor known offline: the bars are numbered, and the axis says the numbers are class indices.
    unnamed = layer_views.class_output(model, cache.graph)
    assert unnamed == layer_views.ClassOutput("predictions", None)
    shown = layer_views.content(cache, settings(layer="predictions", channel=2), classes=unnamed)
    assert (shown.labels, shown.x_label) == (None, "class index")
    assert layer_views.content(cache, settings(layer="predictions", channel=2)).x_label == "unit"


def test_grid_page_note_names_the_page_only_when_the_layer_needs_several():
    many = np.zeros((4, 4, 100), np.float32)
    page = layer_views.grid_channels(many, 40)
    assert layer_views.grid_page_note(many, 40) == (
        f" · grid of channels {page.start}–{page.stop - 1} of 100: move the channel for others"
    )
    assert 40 in page and len(page) < 100
    assert layer_views.grid_page_note(np.zeros((4, 4, 3), np.float32), 1) == ""


def test_channel_means_of_large_finite_activations_stay_finite():
    # 16 values of 3e37 sum past float32's largest (3.4e38), their mean does not.
    activation = np.full((4, 4, 2), 3e37, np.float32)
    activation[..., 1] = -1.0
    np.testing.assert_allclose(layer_views.channel_means(activation), [3e37, -1.0], rtol=1e-6)
    activation[0, 0, 0] = 1e37  # not constant: the readout gives min, max and mean
    expected_mean = activation[..., 0].astype(np.float64).mean()
    assert layer_views.readout(activation, "huge", 0, None).startswith(
        f"huge · channel 0 of 2: min 1e+37, max 3e+37, mean {expected_mean:.4g}"
    )
    both = np.stack([np.full((4, 4), 2.5e37), np.full((4, 4), 3e37)], axis=-1).astype(np.float32)
    assert layer_views.most_active_channel(both) == 1  # float32 sums both to inf, and argmax picks 0


def test_the_peak_of_a_value_that_cannot_be_weakly_referenced_is_not_kept():
    value = np.float32(-3.0)
    assert layer_views.layer_peak(value) == 3.0
    assert id(value) not in layer_views._PEAKS  # its id is reused once it is gone
