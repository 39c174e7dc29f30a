"""FilterGallery: kernels as pictures (S0, S2, S3) and filter patterns on demand (S1).

Expected values are computed independently: kernels from ``layer.get_weights()``,
grids from core ``kernel_montage``, histograms with ``np.histogram``, patterns with
``cw.filter_patterns``. Pattern runs stay tiny (few filters, 3-4 steps, 16 px).
"""

import re
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import demo
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.patterns import PatternSearch
from cnnviz_widgets.core import weights
from cnnviz_widgets.core.weights import kernel_montage
from cnnviz_widgets.widgets._filter_weights import ENLARGED_SIZE, HISTOGRAM_BINS
from cnnviz_widgets.widgets._base import WidgetValueError
from cnnviz_widgets.widgets.filter_gallery import FilterGallery
from conftest import nested_cnn, s3_model, small_cnn

DEMO_DATA = Path(demo.__file__).parent / "data"
TINY = {"steps": 3, "patterns_per_page": 4}  # 4 patterns of 16 px, 3 steps each
ONE_FILTER_PER_BATCH = 1e-6  # a memory budget so small that every batch holds one filter


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=16)


@pytest.fixture(scope="module")
def vgg16():
    return keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), include_top=False)


@pytest.fixture
def run_calls(monkeypatch):
    """Every PatternSearch.run call's filters, in order."""
    calls = []
    original = PatternSearch.run

    def counting(search, filters, **kwargs):
        calls.append(list(filters))
        return original(search, filters, **kwargs)

    monkeypatch.setattr(PatternSearch, "run", counting)
    return calls


def minmax_pixels(values):
    """Min-max to [0, 1] in float64, then to pixels from float32 as kernel_montage rounds them."""
    values = values.astype(np.float64)
    unit = ((values - values.min()) / (values.max() - values.min())).astype(np.float32)
    return np.round(unit * 255).astype(np.uint8)


def png_of(view):
    return bytes(view.value)


def click(grid, row, column):
    """What the front end sends for a click on pixel (row, column) of a grid figure."""
    height = grid.picture.shape[0]
    content = {"event": "element_click", "data": {"click_x": column + 0.5, "click_y": height - row - 0.5}}
    grid.view.mark._handle_custom_msgs(None, content)


def table_rows(table_html):
    body = re.search(r"<tbody>(.*)</tbody>", table_html).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def tile(picture, index, layout):
    top, left = layout.origin(index)
    return picture[top : top + layout.tile_height, left : left + layout.tile_width]


# -- weights view -----------------------------------------------------------------


def test_lists_only_kernel_layers_and_starts_at_the_first_convolution(model):
    fg = FilterGallery(model)
    assert fg.layer_names == ["conv1", "conv2", "predictions"]
    assert fg.layer_dropdown.options == ("conv1", "conv2", "predictions")
    kernel = model.get_layer("conv1").get_weights()[0]
    strongest = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0).argmax()
    assert (fg.layer, fg.channel, fg.view) == ("conv1", strongest, "weights")
    np.testing.assert_array_equal(fg.weights, model.get_layer("conv1").get_weights()[0])
    fg.layer = "predictions"
    np.testing.assert_array_equal(fg.weights, model.get_layer("predictions").get_weights()[0])


def test_grid_is_the_core_montage_rgb_first_layer_and_one_gray_row_per_filter_after(model):
    fg = FilterGallery(model)
    np.testing.assert_array_equal(fg.panels()[0], imaging.to_uint8_image(kernel_montage(model, "conv1")))
    fg.layer = "conv2"  # 8 input channels: row f holds filter f's 8 gray tiles
    np.testing.assert_array_equal(fg.panels()[0], imaging.to_uint8_image(kernel_montage(model, "conv2", columns=8)))


def test_enlarged_filter_is_its_kernel_min_maxed_and_follows_channel(model):
    fg = FilterGallery(model)
    kernel = model.get_layer("conv1").get_weights()[0]
    before = png_of(fg._weights_filter_view)
    fg.channel = 5
    expected = imaging.upscale(minmax_pixels(kernel[:, :, :, 5]), ENLARGED_SIZE // 3)
    np.testing.assert_array_equal(fg.panels()[1], expected)
    assert png_of(fg._weights_filter_view) != before
    bias = model.get_layer("conv1").get_weights()[1][5]
    assert f"bias {bias:+.4g}" in fg._weights_caption.value


def test_vgg16_first_kernel_is_shown_bgr_reversed_automatically(vgg16):
    fg = FilterGallery(vgg16)
    assert fg.layer == "block1_conv1" and fg.bgr == "auto"
    auto = fg.panels()[0]
    np.testing.assert_array_equal(auto, kernel_montage(vgg16, "block1_conv1", bgr=True))
    assert "BGR" in fg._weights_caption.value
    fg.bgr = False
    as_stored = fg.panels()[0]
    np.testing.assert_array_equal(as_stored, kernel_montage(vgg16, "block1_conv1", bgr=False))
    np.testing.assert_array_equal(auto, as_stored[..., ::-1])
    assert not np.array_equal(auto, as_stored)


def test_an_rgb_model_not_trained_in_caffe_mode_is_not_reversed(model):
    auto, forced = FilterGallery(model), FilterGallery(model, bgr=True)
    np.testing.assert_array_equal(auto.panels()[0], kernel_montage(model, "conv1", bgr=False))
    np.testing.assert_array_equal(forced.panels()[0], kernel_montage(model, "conv1", bgr=True))


def test_global_scale_compares_filters_on_one_range(model):
    fg = FilterGallery(model, scale="global")
    np.testing.assert_array_equal(fg.panels()[0], kernel_montage(model, "conv1", scale="global"))
    assert not np.array_equal(fg.panels()[0], kernel_montage(model, "conv1", scale="tile"))


def test_signed_scale_is_one_layer_wide_diverging_scale_with_its_colour_bar(model):
    fg = FilterGallery(model, layer="conv2")
    assert fg._kernel_scale_box.children == ()  # per-tile stretch: no single scale
    bar_shows = []  # what the colour bar was told: (low, high, colormap)
    fg._kernel_colour_bar.show = lambda low, high, colormap: bar_shows.append((low, high, colormap))
    fg.scale = "signed"
    kernel = model.get_layer("conv2").get_weights()[0]
    bound = np.abs(kernel).max()
    expected = weights.kernel_page(kernel, range(12), rgb=False, scale="signed", signed_bound=bound, columns=8)
    np.testing.assert_array_equal(fg.panels()[0], expected.picture)
    assert fg._kernel_scale_box.children == (fg._kernel_colour_bar.figure,)
    assert bar_shows[-1] == (pytest.approx(-bound), pytest.approx(bound), "RdBu_r")
    assert "red</b> positive" in fg._kernel_legend.value
    fg.scale = "global"
    assert bar_shows[-1] == (pytest.approx(kernel.min()), pytest.approx(kernel.max()), "gray")


def test_colour_kernels_say_what_their_colours_mean(model):
    fg = FilterGallery(model, scale="signed")
    assert "Mid-gray is 0" in fg._kernel_legend.value and "cyan for red" in fg._kernel_legend.value
    assert fg._kernel_scale_box.children == (fg._kernel_colour_bar.figure,)


def test_the_gallery_opens_on_a_live_filter_not_a_dead_one():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")
    model = keras.Model(inputs, conv(inputs))
    kernel, biases = conv.get_weights()
    kernel[..., 0] = 0  # a dead filter first
    kernel[..., 3] *= 10
    conv.set_weights([kernel, biases])
    assert FilterGallery(model).channel == 3
    assert FilterGallery(model, channel=0).channel == 0  # a channel asked for is kept


def test_histogram_is_numpys_of_the_layer_and_of_the_selected_filter(model):
    fg = FilterGallery(model, layer="conv2", channel=3)
    kernel = model.get_layer("conv2").get_weights()[0]
    counts, edges = np.histogram(kernel, bins=HISTOGRAM_BINS)
    np.testing.assert_allclose(fg._layer_bars.x, (edges[:-1] + edges[1:]) / 2)
    np.testing.assert_allclose(fg._layer_bars.y, counts / kernel.size)
    own, _ = np.histogram(kernel[..., 3], bins=edges)
    np.testing.assert_allclose(fg._filter_line.y, own / kernel[..., 3].size)
    fg.channel = 7
    own, _ = np.histogram(kernel[..., 7], bins=edges)
    np.testing.assert_allclose(fg._filter_line.y, own / kernel[..., 7].size)
    ticks = np.asarray(fg._histogram.axes[0].tick_values)  # a few round weights, not d3's crowd of them
    steps = np.diff(ticks)
    assert 2 <= len(ticks) <= 5 and edges[0] <= ticks[0] and ticks[-1] <= edges[-1]
    np.testing.assert_allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5)) < 1e-9
    # Shares: round ones up to the higher of the bars and the line, at least 25 px apart on the plot.
    shares = np.asarray(fg._histogram.axes[1].tick_values)
    highest = max(counts.max() / kernel.size, own.max() / kernel[..., 7].size)
    assert len(shares) >= 2 and shares[0] == 0 and shares[-1] <= highest + 1e-12
    margin = fg._histogram.fig_margin
    plot_height_px = int(fg._histogram.layout.height.removesuffix("px")) - margin["top"] - margin["bottom"]
    assert plot_height_px * (shares[1] - shares[0]) / highest >= 25


@pytest.mark.parametrize("frozen_dense", [False, True])
def test_weight_table_lists_the_layers_variables_as_keras_has_them(frozen_dense):
    s3 = s3_model(frozen_dense=frozen_dense)
    fg = FilterGallery(s3)
    assert fg.layer_names == ["L0_conv2d", "L2_dense", "L3_dense"]
    assert "model: 1,025 params" in fg._weight_table.value
    trainable = {id(variable) for variable in s3.trainable_weights}
    for name in fg.layer_names:
        fg.layer = name
        expected = [
            [f"{name}/{v.name}", str(tuple(v.shape)), "yes" if id(v) in trainable else "no"]
            for v in s3.get_layer(name).weights
        ]
        assert [row[:2] + row[3:4] for row in table_rows(fg._weight_table.value)] == expected
    fg.layer = "L2_dense"
    assert "no bias" in fg._weights_caption.value
    assert table_rows(fg._weight_table.value)[0][3] == ("no" if frozen_dense else "yes")


def test_dense_units_are_tiles_of_their_input_weights():
    inputs = keras.Input((784,))
    mlp = keras.Model(inputs, keras.layers.Dense(6, name="hidden")(inputs))
    fg = FilterGallery(mlp, channel=2)
    assert fg.filter_count == 6
    kernel = mlp.get_layer("hidden").get_weights()[0]
    expected = imaging.upscale(minmax_pixels(kernel[:, 2].reshape(28, 28)), ENLARGED_SIZE // 28)
    np.testing.assert_array_equal(fg.panels()[1][..., 0], expected)


def test_depthwise_filters_are_listed_in_output_channel_order():
    inputs = keras.Input((12, 12, 3))
    model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(inputs))
    fg = FilterGallery(model, channel=3)  # output channel 3 = input channel 1, multiplier 1
    assert fg.filter_count == 6
    kernel = model.get_layer("depthwise").get_weights()[0]
    expected = imaging.upscale(minmax_pixels(kernel[:, :, 1, 1]), ENLARGED_SIZE // 3)
    np.testing.assert_array_equal(fg.panels()[1][..., 0], expected)


def test_nested_transfer_model_layers_by_path():
    transfer, base = nested_cnn()
    fg = FilterGallery(transfer)
    assert fg.layer_names == ["base/c1", "base/c2", "head"]
    assert fg.layer == "base/c1"
    np.testing.assert_array_equal(fg.weights, base.get_layer("c1").get_weights()[0])
    np.testing.assert_array_equal(fg.panels()[0], kernel_montage(transfer, "base/c1"))


def test_clicking_a_tile_selects_its_filter(model):
    fg = FilterGallery(model, layer="conv2")
    layout = imaging.GridLayout.for_tiles(12 * 8, (24, 24), columns=8, gap=1)
    top, left = layout.origin(9 * 8 + 5)  # filter 9, input channel 5
    click(fg._weights_grid, top + 3, left + 3)
    assert fg.channel == 9
    click(fg._weights_grid, top + 24, left + 3)  # the gap below: nothing
    assert fg.channel == 9


def test_a_large_layer_is_shown_a_page_of_filters_at_a_time(model, monkeypatch):
    # conv2's page: 8 gray 3×3 tiles at ×8, 25 × 25 pixels each.
    monkeypatch.setattr(weights, "MAX_GRID_PIXELS", 5 * 8 * 25 * 25)
    fg = FilterGallery(model, layer="conv2", channel=7)
    page = kernel_montage(model, "conv2", columns=8)[5 * 25 : 10 * 25 - 1]
    np.testing.assert_array_equal(fg.panels()[0], imaging.to_uint8_image(page))
    assert "grid: filters 5–9" in fg._weights_caption.value
    click(fg._weights_grid, 0, 0)
    assert fg.channel == 5


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("layer", "nope", ["'nope'", "conv1, conv2, predictions"]),
        ("layer", "bn", ["'bn'", "no kernel", "conv1, conv2, predictions"]),
        ("channel", 8, ["Filter 8", "0..7"]),
        ("channel", -1, ["Filter -1", "0..7"]),
        ("view", "filters", ["Use one of: weights, patterns"]),
        ("bgr", "yes", ["'auto'"]),
        ("bgr", None, ["'auto'"]),
        ("scale", "local", ["Use one of: tile, global, signed"]),
        ("style", "lucent", ["Use one of: tutorial, lucid"]),
        ("steps", 0, ["steps", "int >= 1"]),
        ("size", 32, ["16x16", "size=None"]),
        ("value_range", (1.0, 0.0), ["low < high"]),
    ],
)
def test_bad_values_are_refused_and_change_nothing(model, name, value, words):
    fg = FilterGallery(model, channel=2, **TINY)
    state = {trait: getattr(fg, trait) for trait in ("layer", "channel", "view", "bgr", "scale", "steps", "size")}
    grid = png_of(fg._weights_grid.view.image)
    with pytest.raises(WidgetValueError) as refused:
        setattr(fg, name, value)
    assert isinstance(refused.value, ValueError)
    assert all(word in str(refused.value) for word in words), str(refused.value)
    assert fg.error == str(refused.value) and "b00020" in fg._error_line.value
    assert {trait: getattr(fg, trait) for trait in state} == state
    assert png_of(fg._weights_grid.view.image) == grid
    fg.channel = 1
    assert fg.error == "" and fg._error_line.value == ""


def test_a_layer_change_lands_on_its_strongest_filter_unless_a_channel_comes_with_it():
    inputs = keras.Input((8, 8, 3))
    first, second = keras.layers.Conv2D(2, 3, name="first"), keras.layers.Conv2D(6, 3, name="second")
    model = keras.Model(inputs, second(first(inputs)))
    kernel, biases = second.get_weights()
    kernel[..., 0] = 0  # filter 0 dead, filter 5 the strongest: beyond the first layer's slider
    kernel[..., 5] *= 10
    second.set_weights([kernel, biases])
    fg = FilterGallery(model, channel=0)
    fg.layer_dropdown.value = "second"
    assert (fg.layer, fg.channel, fg.channel_slider.max, fg.channel_slider.value) == ("second", 5, 5, 5)
    assert "<b>filter 5</b>" in fg._weights_caption.value
    np.testing.assert_array_equal(fg._weights_filter_picture, fg._weight_page.filter_picture(5, ENLARGED_SIZE))
    fg.layer, fg.channel = "first", 1  # as cw.link sets them
    assert (fg.layer, fg.channel, fg.channel_slider.value) == ("first", 1, 1)
    assert "<b>filter 1</b>" in fg._weights_caption.value
    assert FilterGallery(model, layer="second", channel=2).channel == 2
    assert FilterGallery(model, layer="second", channel=5).channel == 5  # the strongest, set again
    with fg.hold_trait_notifications():  # a channel set with the layer is checked against it, and kept
        fg.layer, fg.channel = "second", 4  # the first layer has 2 filters
    assert (fg.layer, fg.channel, fg.channel_slider.value) == ("second", 4, 4)
    assert "<b>filter 4</b>" in fg._weights_caption.value


def test_a_model_without_kernels_is_refused():
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(WidgetValueError, match="no layer with a kernel"):
        FilterGallery(keras.Model(inputs, keras.layers.MaxPooling2D()(inputs)))


def test_controls_follow_the_traits_and_put_refused_values_back(model):
    fg = FilterGallery(model, **TINY)
    assert (fg.steps_box.value, fg.size_box.value, fg.seed_box.value) == (3, 16, 0)
    fg.layer_dropdown.value = "conv2"
    fg.channel_slider.value = 11
    assert (fg.layer, fg.channel, fg.channel_slider.max) == ("conv2", 11, 11)
    fg.layer = "conv1"
    strongest = weights.strongest_filter(model.get_layer("conv1").get_weights()[0])
    assert (fg.channel, fg.channel_slider.max, fg.channel_slider.value) == (strongest, 7, strongest)
    fg.steps_box.value = 0
    assert (fg.steps, fg.steps_box.value) == (3, 3) and "int >= 1" in fg.error
    fg.view_buttons.value = "patterns"
    assert fg._view_box.children == (fg._views["patterns"],)


# -- patterns view --------------------------------------------------------------


def test_nothing_is_computed_until_asked(model, run_calls):
    fg = FilterGallery(model, view="patterns", **TINY)
    fg.layer, fg.channel = "conv2", 3
    assert run_calls == [] and fg.patterns == {}
    assert not fg.panels()[0].any()  # blank tiles
    assert "press Compute" in fg._pattern_caption.value


def test_before_compute_the_patterns_view_says_press_compute_not_black_squares(model):
    fg = FilterGallery(model, view="patterns", channel=0, **TINY)
    assert fg._patterns_grid_box.children == (fg._patterns_placeholder,)
    assert "filters 0–3" in fg._patterns_placeholder.value and "Compute" in fg._patterns_placeholder.value
    assert fg._pattern_view.layout.display == "none"
    fg.compute_patterns(wait=True)
    assert fg._patterns_grid_box.children == (fg._patterns_grid.view.figure,)
    assert fg._pattern_view.layout.display is None


def test_the_setting_boxes_show_the_traits_from_the_start(model):
    fg = FilterGallery(model, view="patterns")
    assert (fg.steps_box.value, fg.seed_box.value) == (40, 0)  # defaults, never set
    assert FilterGallery(model, steps=7, seed=2).steps_box.value == 7


def test_patterns_equal_filter_patterns_with_the_same_settings(model):
    def centred(pixels):
        return pixels * 2 - 1

    settings = {"seed": 3, "value_range": (0, 1), "preprocess": centred}
    fg = FilterGallery(model, layer="conv2", view="patterns", channel=0, **settings, **TINY)
    thread = fg.compute_patterns(wait=True)
    assert isinstance(thread, threading.Thread) and not thread.is_alive()
    expected = cw.filter_patterns(model, "conv2", range(4), size=None, steps=3, **settings)
    assert not np.array_equal(expected, cw.filter_patterns(model, "conv2", range(4), size=None, steps=3, seed=3))
    assert list(fg.patterns) == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.stack(list(fg.patterns.values())), expected)
    np.testing.assert_array_equal(fg.panels()[0], imaging.to_uint8_image(imaging.grid(expected, 2, gap=5)))
    assert (fg.progress.value, fg.progress.max) == (3, 3)  # one batch of 3 steps
    assert "done: 4" in fg._pattern_status.value
    assert fg.compute_button.disabled is False and fg.stop_button.disabled is True
    fg.channel = 2
    np.testing.assert_array_equal(fg.panels()[1], imaging.upscale(expected[2], ENLARGED_SIZE // 16))


def test_the_grid_fills_batch_by_batch_with_progress_to_the_end(model):
    fg = FilterGallery(model, view="patterns", memory_budget_mb=ONE_FILTER_PER_BATCH, **TINY)
    seen = []  # (progress, patterns shown) at every progress step, from the worker thread
    fg.progress.observe(lambda change: seen.append((change["new"], len(fg.patterns))), "value")
    statuses = []
    fg._pattern_status.observe(lambda change: statuses.append(change["new"]), "value")
    fg.compute_patterns(wait=True)
    assert fg.progress.description == "progress" and fg.progress.max == 4 * 3
    assert statuses[:5] == [f"computing: {done} / 4 filters" for done in range(5)]
    assert [value for value, _ in seen] == list(range(1, 13))
    assert [shown for value, shown in seen if value % 3 == 0] == [1, 2, 3, 4]


def test_stop_midway_keeps_the_finished_batches(model, run_calls):
    fg = FilterGallery(model, view="patterns", memory_budget_mb=ONE_FILTER_PER_BATCH, **TINY)

    def stop_after_first_batch(change):
        if change["new"] == 3:
            fg.progress.unobserve(stop_after_first_batch, "value")
            fg.stop_button.click()

    fg.progress.observe(stop_after_first_batch, "value")
    fg.compute_patterns(wait=True)
    assert list(fg.patterns) == [0] and not fg.computing
    assert "stopped: 1 of 4" in fg._pattern_status.value and fg.compute_button.disabled is False
    layout = imaging.GridLayout.for_tiles(4, (16, 16), columns=2, gap=5)
    np.testing.assert_array_equal(tile(fg.panels()[0], 0, layout), imaging.to_uint8_image(fg.patterns[0]))
    assert not any(tile(fg.panels()[0], index, layout).any() for index in (1, 2, 3))

    fg.compute_patterns(wait=True)  # the rest only
    assert run_calls == [[0, 1, 2, 3], [1, 2, 3]]
    expected = cw.filter_patterns(model, "conv1", range(4), size=None, steps=3)
    np.testing.assert_array_equal(np.stack(list(fg.patterns.values())), expected)


def test_the_lucid_style_is_a_choice_with_patterns_of_its_own(model, run_calls):
    fg = FilterGallery(model, view="patterns", **TINY)
    fg.compute_patterns(wait=True)
    tutorial = np.stack(list(fg.patterns.values()))
    fg.style_buttons.value = "lucid"
    assert fg.style == "lucid" and fg.patterns == {}
    fg.compute_patterns(wait=True)
    expected = cw.filter_patterns(model, "conv1", range(4), size=None, steps=3, style="lucid")
    np.testing.assert_allclose(np.stack(list(fg.patterns.values())), expected, atol=2)
    fg.style = "tutorial"
    np.testing.assert_array_equal(np.stack(list(fg.patterns.values())), tutorial)
    assert len(run_calls) == 3  # tutorial, lucid and the expected; back to tutorial is cached


def test_the_grid_shows_the_patterns_forming_before_the_batch_ends(model):
    fg = FilterGallery(model, view="patterns", style="lucid", steps=11, patterns_per_page=4)
    seen = {}  # at progress 5 (the 6th step starts) the preview of step 5 is drawn

    def at_step_five(change):
        if change["new"] == 5:
            seen.update(patterns=dict(fg.patterns), grid=fg.panels()[0], caption=fg._pattern_caption.value)

    fg.progress.observe(at_step_five, "value")
    fg.compute_patterns(wait=True)
    assert seen["patterns"] == {} and "forming" in seen["caption"]
    expected = cw.filter_patterns(model, "conv1", range(4), size=None, steps=5, style="lucid")
    layout = imaging.GridLayout.for_tiles(4, (16, 16), columns=2, gap=5)
    for index in range(4):
        np.testing.assert_allclose(tile(seen["grid"], index, layout), expected[index], atol=2)
    final = fg.panels()[0]
    assert np.abs(tile(final, 0, layout).astype(int) - expected[0]).mean() > 1  # the grid moved on


def test_revisiting_a_layer_or_settings_does_not_recompute(model, run_calls):
    fg = FilterGallery(model, view="patterns", **TINY)
    fg.compute_patterns(wait=True)
    first = fg.panels()[0]
    fg.layer = "conv2"
    assert fg.patterns == {}
    fg.seed = 1
    fg.layer = "conv1"
    assert fg.patterns == {}  # other seed, other patterns
    fg.seed = 0
    assert list(fg.patterns) == [0, 1, 2, 3]
    np.testing.assert_array_equal(fg.panels()[0], first)
    assert fg.compute_patterns() is None
    assert len(run_calls) == 1


def test_the_page_of_patterns_follows_the_channel(model, run_calls):
    fg = FilterGallery(model, layer="conv2", view="patterns", channel=9, **TINY)
    fg.compute_patterns(wait=True)
    assert run_calls == [[8, 9, 10, 11]]
    click(fg._patterns_grid, 21 + 2, 2)  # second row, first column: filter 10
    assert fg.channel == 10


def test_computing_runs_in_the_background_and_a_layer_change_stops_it(model):
    fg = FilterGallery(model, view="patterns", channel=0, steps=2000, patterns_per_page=2)
    thread = fg.compute_patterns()
    assert thread.is_alive() and fg.computing and fg.stop_button.disabled is False
    fg.channel = 1  # the widget answers while the thread works
    assert fg.compute_patterns() is thread  # not started twice
    fg.layer = "conv2"
    thread.join(timeout=60)
    assert not thread.is_alive() and not fg.computing
    assert fg.progress.value == 0 and fg._pattern_status.value == ""
    assert fg.compute_button.disabled is False and fg.stop_button.disabled is True


def test_an_error_in_the_thread_is_shown_and_raised(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(PatternSearch, "run", broken)
    fg = FilterGallery(model, view="patterns", **TINY)
    with pytest.raises(RuntimeError, match="out of memory"):
        fg.compute_patterns(wait=True)
    assert "failed: out of memory" in fg._pattern_status.value and not fg.computing
    assert fg.compute_button.disabled is False


def test_a_layer_without_image_input_has_no_patterns_but_says_why():
    inputs = keras.Input((20,))
    fg = FilterGallery(keras.Model(inputs, keras.layers.Dense(3)(inputs)), view="patterns")
    with pytest.raises(ValueError, match="one image input"):
        fg.compute_patterns()
    assert "one image input" in fg._pattern_status.value and fg.compute_button.disabled


def test_to_png_is_what_the_view_shows(model):
    fg = FilterGallery(model)
    picture = imaging.from_png(fg.to_png())
    grid, enlarged = (imaging.upscale(p, max(1, 256 // max(p.shape[:2]))) for p in fg.panels())
    assert picture.shape == (max(grid.shape[0], enlarged.shape[0]), grid.shape[1] + 8 + enlarged.shape[1], 3)
    np.testing.assert_array_equal(picture[: grid.shape[0], : grid.shape[1]], grid)


@pytest.mark.skipif(not (DEMO_DATA / "shapes.keras").exists(), reason="the demo models are not built yet")
@pytest.mark.parametrize("name", ["shapes", "digits"])
def test_demo_models(name):
    demo_model = demo.load_model(name)
    fg = FilterGallery(demo_model, view="patterns", channel=0, value_range=(0, 1), **TINY)
    first = next(layer for layer in demo_model.layers if len(getattr(layer, "kernel", np.zeros(0)).shape) == 4)
    assert fg.layer == first.name
    np.testing.assert_array_equal(fg.weights, first.get_weights()[0])
    fg.compute_patterns(wait=True)
    expected = cw.filter_patterns(demo_model, fg.layer, range(4), size=None, steps=3, value_range=(0, 1))
    np.testing.assert_array_equal(np.stack(list(fg.patterns.values())), expected)


def test_close_waits_for_a_replaced_run_still_in_its_finish_callback(model, monkeypatch):
    """A run is `finished` before its on_finish runs: a run replaced twice in that window must still be joined."""
    release, show_finish = threading.Event(), FilterGallery._on_finish

    def first_run_finishes_slowly(self, job):
        if 0 in job.filters:
            release.wait()
        show_finish(self, job)

    monkeypatch.setattr(FilterGallery, "_on_finish", first_run_finishes_slowly)
    fg = FilterGallery(model, layer="conv2", view="patterns", channel=0, **TINY)
    first = fg.compute_patterns()
    job = fg._job
    while not job.finished:
        first.join(timeout=0.01)
    for channel in (4, 8):  # two more runs: the second replacement prunes the stopped list
        fg.channel = channel
        fg.compute_patterns()
    threading.Timer(0.3, release.set).start()
    fg.close()
    assert not first.is_alive()


def test_the_enlarged_pattern_is_encoded_once_when_a_run_ends(model, monkeypatch):
    """on_batch draws the finished pattern; on_finish, which draws the same, encodes nothing again."""
    from cnnviz_widgets.widgets import _filter_patterns

    fg = FilterGallery(model, view="patterns", channel=1, **TINY)
    encoded, show = [], _filter_patterns.show
    monkeypatch.setattr(_filter_patterns, "show", lambda view, picture: (encoded.append(view), show(view, picture)))
    fg.compute_patterns(wait=True)
    assert encoded.count(fg._pattern_view) == 1
    np.testing.assert_array_equal(fg._pattern_picture, imaging.upscale_to(fg.patterns[1], ENLARGED_SIZE))
    fg.channel = 2  # another filter of the page: drawn
    assert encoded.count(fg._pattern_view) == 2
    np.testing.assert_array_equal(fg._pattern_picture, imaging.upscale_to(fg.patterns[2], ENLARGED_SIZE))
