"""What one interaction sends to the page (P6 latency): the changed picture first, an unchanged
picture not again, a colour scale in one message, small pictures at their own size."""

import gc
import io

import ipywidgets as widgets
import matplotlib
import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import GradCamViewer, LayerExplorer
from cnnviz_widgets.core import layer_views
from cnnviz_widgets.widgets._base import PIXELATED
from conftest import small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn(classes=5)


@pytest.fixture
def sent(monkeypatch):
    """(widget, message) of every state update sent to the page, in order."""
    messages = []
    send = widgets.Widget._send

    def recording(self, msg, buffers=None):
        messages.append((self, msg))
        return send(self, msg, buffers)

    monkeypatch.setattr(widgets.Widget, "_send", recording)
    return messages


def decoded(view: widgets.Image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(view.value)).convert("RGB"))


def test_a_channel_move_sends_the_new_map_first_and_its_colour_scale_as_one_message(model, images, sent):
    explorer = LayerExplorer(model, images)
    bar = explorer.color_bar
    count = explorer.activation.shape[-1]
    # Two moves: the second may find its picture already in the hidden buffer.
    for channel in ((explorer.channel + 1) % count, (explorer.channel + 2) % count):
        sent.clear()
        explorer.channel = channel
        shown = [widget for widget, _ in sent]
        first = shown.index(explorer.map_figure.mark)
        assert set(shown[:first]) <= set(explorer.map_figure._buffers), "only the new map's bytes go before the map"
        assert sent[first][1]["state"].keys() == {"image"}
        scale_messages = [widget for widget in shown if widget in (bar.scale, bar.gradient)]
        low, high = bar.scale.min, bar.scale.max
        assert scale_messages == [bar.scale] and low < high
        values = explorer.activation[..., channel]
        np.testing.assert_allclose((low, high), (values.min(), values.max()), rtol=1e-6)


def test_a_layer_change_sends_the_map_before_the_slider_and_the_means_chart(model, images, sent):
    explorer = LayerExplorer(model, images, layer="conv1")
    sent.clear()
    explorer.layer = "conv2"
    shown = [widget for widget, _ in sent]
    picture = shown.index(explorer.map_figure.mark)
    assert picture < shown.index(explorer.channel_slider) and picture < shown.index(explorer.means_chart.bars)
    assert explorer.channel_slider.max == 11
    np.testing.assert_allclose(explorer.means_chart.bars.y, explorer.activation.mean(axis=(0, 1)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("change", [{"image_index": 1}, {"layer": "conv1"}])
def test_an_image_or_layer_change_sends_the_map_first_and_the_means_chart_once(model, images, sent, change):
    explorer = LayerExplorer(model, images, layer="conv2", channel=3)
    sent.clear()
    explorer.set_trait(*next(iter(change.items())))
    shown = [widget for widget, _ in sent]
    assert shown.index(explorer.map_figure.mark) < shown.index(explorer.means_chart.bars)
    assert shown.count(explorer.means_chart.bars) == 1  # new bars with their selection: one message
    assert list(explorer.means_chart.bars.selected) == [3]


def test_a_class_change_sends_the_heatmap_and_overlay_first_and_not_the_image_again(model, sent):
    image = np.random.default_rng(5).uniform(0, 255, (16, 16, 3)).astype("float32")
    viewer = GradCamViewer(model, image)
    image_bytes = viewer._image_view.value
    sent.clear()
    viewer.class_index = viewer.predictions[1][0]
    shown = [widget for widget, _ in sent]
    assert shown[:2] == [viewer._heatmap_view, viewer._overlay_view]
    assert viewer._image_view not in shown and viewer._image_view.value == image_bytes
    # Pictures at the image's size, coloured as matplotlib colours the map; the browser enlarges them.
    expected = matplotlib.colormaps["jet"](viewer.heatmap, bytes=True)[..., :3]
    np.testing.assert_allclose(decoded(viewer._heatmap_view), expected, atol=1)
    raw = np.round(image).astype(np.uint8)
    blended = 0.6 * raw + 0.4 * expected.astype(float)
    np.testing.assert_allclose(decoded(viewer._overlay_view), blended, atol=1.5)
    for view in (viewer._image_view, viewer._heatmap_view, viewer._overlay_view):
        assert PIXELATED in view._dom_classes
    style = [child for child in viewer.children if isinstance(child, widgets.HTML) and "image-rendering: pixelated" in child.value]
    assert len(style) == 1 and f".{PIXELATED}" in style[0].value


@pytest.mark.parametrize("size, crisp", [(64, True), (70, True), (71, False), (224, False)])
def test_pictures_are_pixelated_only_where_every_panel_enlarges_them_twice(size, crisp):
    """Panels are 140 to 256 px wide: a 224-px photo is shrunk or barely enlarged, whole pixels would be jagged."""
    viewer = GradCamViewer(small_cnn(size=size), np.zeros((size, size, 3), np.float32))
    for view in (viewer._image_view, viewer._heatmap_view, viewer._overlay_view):
        assert (PIXELATED in view._dom_classes) == crisp
    assert decoded(viewer._overlay_view).shape == (size, size, 3)  # sent at the image's size either way
    viewer.close()


def test_a_layer_peak_is_scanned_once_per_layer_output_and_forgotten_with_it():
    class Counting(np.ndarray):
        scans = 0

        def max(self, *args, **kwargs):
            type(self).scans += 1
            return super().max(*args, **kwargs)

    activation = np.array([[[0.0, 1.5], [0.0, -3.0]]], dtype=np.float32).view(Counting)
    assert layer_views.layer_peak(activation) == pytest.approx(3.0)
    assert layer_views.layer_peak(activation) == pytest.approx(3.0)
    assert Counting.scans == 1
    assert layer_views.is_dead(np.zeros(2), activation) and not layer_views.is_dead(activation[..., 1], activation)
    # unshowable relies on it: a NaN or an inf anywhere makes the peak one.
    assert np.isnan(layer_views.layer_peak(np.array([1.0, np.nan, -2.0])))
    assert layer_views.layer_peak(np.array([1.0, -np.inf])) == np.inf
    key = id(activation)
    del activation
    gc.collect()
    assert key not in layer_views._PEAKS
