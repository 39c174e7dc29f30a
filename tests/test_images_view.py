"""LayerExplorer's images view within a memory budget: channel moves never run the model."""

import functools

import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import LayerExplorer
from cnnviz_widgets.core import imaging, layer_views
from cnnviz_widgets.core.activation_cache import ActivationCache
from cnnviz_widgets.widgets import layer_explorer
from conftest import small_cnn
from test_layer_explorer import click_map, shown_map, tiled

COLUMNS, TILE = 5, 7  # 20 images in 5 columns of 7 px tiles: conv1's 14×14 maps shrink by half


@pytest.fixture(scope="module")
def counted_model():
    return small_cnn(counter=True)


@pytest.fixture(scope="module")
def many_images():
    return np.random.default_rng(11).uniform(0, 1, (20, 16, 16, 3)).astype("float32")


@pytest.fixture
def explorer(counted_model, many_images, monkeypatch):
    """A LayerExplorer whose cache cannot hold conv1 of every image at full size."""
    conv1 = cw.activations(counted_model, many_images, layers="conv1")["conv1"]
    monkeypatch.setattr(layer_views, "GRID_MAX_WIDTH_PX", COLUMNS * (TILE + 1) - 1)
    monkeypatch.setattr(layer_explorer, "ActivationCache", functools.partial(ActivationCache, max_bytes=conv1.nbytes // 4))
    shown = LayerExplorer(counted_model, many_images)
    shown.layer, shown.view = "conv1", "images"
    return shown


def test_channel_moves_in_the_images_view_run_nothing(explorer, counted_model, many_images):
    conv1 = cw.activations(counted_model, many_images, layers="conv1")["conv1"]
    runs = counted_model.get_layer("counter").calls
    passes, before = explorer.cache.forward_passes, int(runs.numpy())
    for normalization, scale in (("channel", "tile"), ("layer", "global")):
        explorer.normalization = normalization
        for channel in (3, 0, 7, 3):
            explorer.channel = channel
            tiles = imaging.shrink_to_fit(conv1[..., channel : channel + 1], TILE)[..., 0]
            expected = tiled(imaging.normalize(tiles, scale), columns=COLUMNS)
            np.testing.assert_array_equal(shown_map(explorer), expected)
    assert (explorer.cache.forward_passes, int(runs.numpy())) == (passes, before)
    assert layer_views.every_image(explorer.cache, "conv1").shape == (20, TILE, TILE, 8)  # kept: tiles, not the layer


def test_an_image_move_runs_that_image_only(explorer):
    passes = explorer.cache.forward_passes
    explorer.image_index = 7
    explorer.channel = 5
    explorer.image_index = 7
    assert explorer.cache.forward_passes == passes + 1


def test_a_click_on_a_shrunk_tile_reads_the_full_size_map(explorer, counted_model, many_images):
    explorer.channel = 2
    click_map(explorer, row=2, column=(TILE + 1) * 3 + 3)  # tile 3, pixel (2, 3) of 7×7: (4, 6) of 14×14
    assert explorer.image_index == 3
    value = cw.activations(counted_model, many_images[3:4], layers="conv1")["conv1"][0, 4, 6, 2]
    assert f"at row 4, column 6: {value:.4g}" in explorer.readout.value
