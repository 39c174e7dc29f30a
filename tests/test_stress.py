"""Stress and faults: 1,000 random trait changes per widget, and a large layer's patterns.

A random walk over each widget's traits, valid and invalid values mixed (out of
range, unknown names, wrong types): only the widget's refusal may escape a trait
set, a refused value changes no trait, and at the end the widget shows exactly what
a fresh widget set to the final state shows. Small models keep each test well under
a minute on two cores.
"""

import keras
import numpy as np
import pytest
from traitlets import TraitError

import cnnviz_widgets as cw
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.patterns import BYTES_PER_ACTIVATION, PatternSearch
from cnnviz_widgets.widgets._filter_weights import ENLARGED_SIZE
from conftest import everything_shown, small_cnn

pytestmark = pytest.mark.slow

CHANGES = 1000
IMAGES = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype("float32")
WRONG_TYPES = [None, "3", 2.5, [1]]


@pytest.fixture(scope="module")
def model():
    return small_cnn(classes=5, size=16)


def random_walk(widget, candidates: dict, fresh_in_same_state, seed: int) -> int:
    """Set ``CHANGES`` random (trait, value) pairs from ``candidates``; returns how many were refused.

    Every 100 changes, and at the end, ``widget`` must show what
    ``fresh_in_same_state(widget)``, a new widget set to its traits, shows.
    """
    rng = np.random.default_rng(seed)
    names = list(candidates)
    refused = 0
    for step in range(1, CHANGES + 1):
        name = names[rng.integers(len(names))]
        value = candidates[name][rng.integers(len(candidates[name]))]
        traits = {trait: getattr(widget, trait) for trait in candidates}
        try:
            setattr(widget, name, value)
        except TraitError:  # WidgetValueError is one too
            refused += 1
            assert {trait: getattr(widget, trait) for trait in candidates} == traits, f"step {step}: {name}={value!r}"
        except Exception as error:
            pytest.fail(f"step {step}: {name}={value!r} raised {type(error).__name__}: {error}")
        if step % 100 == 0:
            assert everything_shown(widget) == everything_shown(fresh_in_same_state(widget)), f"after step {step}"
    return refused


def test_layer_explorer_survives_a_random_walk(model):
    def fresh_in_same_state(explorer):
        fresh = LayerExplorer(model, IMAGES)
        for name in ["layer", "image_index", "view", "colormap", "normalization", "channel"]:
            setattr(fresh, name, getattr(explorer, name))
        return fresh

    explorer = LayerExplorer(model, IMAGES)
    candidates = {
        "layer": [*explorer.layer_names, "conv9", "", 3],
        "channel": [*range(-2, 14), *WRONG_TYPES],
        "image_index": [*range(-1, 6), *WRONG_TYPES],
        "view": ["channel", "grid", "images", "tiles", None],
        "colormap": ["viridis", "magma", "gray", "RdBu_r", "virdis", 1],
        "normalization": ["channel", "layer", "global", None],
    }
    refused = random_walk(explorer, candidates, fresh_in_same_state, seed=1)
    assert 200 < refused < 800  # both kinds of value were really tried


def test_filter_gallery_survives_a_random_walk(model):
    candidates = {
        "layer": ["conv1", "conv2", "predictions", "gap", "conv9", None],
        "channel": [*range(-2, 14), *WRONG_TYPES],
        "view": ["weights", "patterns", "filters"],
        "bgr": ["auto", True, False, "yes", None],
        "scale": ["tile", "global", "local"],
        "steps": [1, 2, 3, 0, -1, "2"],
        "size": [None, 16, 32, 0, "16"],
        "seed": [0, 1, 7, 2.5],
        "value_range": [(0.0, 255.0), (0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (0.0, np.inf), "ab"],
        "patterns_per_page": [1, 4, 9, 64, 0, None],
    }

    def fresh_in_same_state(gallery):
        settings = {name: getattr(gallery, name) for name in candidates}
        return FilterGallery(model, **settings)

    gallery = FilterGallery(model, steps=2, patterns_per_page=4)
    refused = random_walk(gallery, candidates, fresh_in_same_state, seed=2)
    assert 200 < refused < 800


def test_grad_cam_viewer_survives_a_random_walk(model):
    candidates = {
        "class_index": [*range(-2, 8), "x", None, [1]],
        "layer": ["conv1", "bn", "pool1", "conv2", "drop", "gap", "predictions", "conv9", 3],
        "alpha": [0, 0.25, 0.5, 1, 1.5, -0.1, np.nan, "x", None],
    }

    def fresh_in_same_state(viewer):
        return GradCamViewer(model, IMAGES[0], top_k=3, **{name: getattr(viewer, name) for name in candidates})

    viewer = GradCamViewer(model, IMAGES[0], top_k=3)
    refused = random_walk(viewer, candidates, fresh_in_same_state, seed=3)
    assert 200 < refused < 800


# -- a large layer's patterns: bounded batches, and a stop that leaves a usable gallery --


FILTERS = 256
BATCH = 64


@pytest.fixture(scope="module")
def vgg_like():
    """VGG's block layout at 16 pixels: two small blocks, then a 256-filter convolution."""
    keras.utils.set_random_seed(9)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block1_conv1"),
            keras.layers.MaxPooling2D(name="block1_pool"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="block2_conv1"),
            keras.layers.MaxPooling2D(name="block2_pool"),
            keras.layers.Conv2D(FILTERS, 3, padding="same", activation="relu", name="block3_conv1"),
        ]
    )


@pytest.fixture(scope="module")
def budget_for_one_batch(vgg_like):
    """The memory budget (MB) that fits BATCH images' activations up to block3_conv1, counted by hand."""
    values_per_image = 16 * 16 * 3 + 16 * 16 * 16 + 8 * 8 * 16 + 8 * 8 * 32 + 4 * 4 * 32 + 4 * 4 * FILTERS
    return BATCH * values_per_image * BYTES_PER_ACTIVATION / 2**20


@pytest.fixture
def batch_sizes(monkeypatch):
    """How many filters each batch of gradient ascent holds, in order (one start image each)."""
    sizes = []
    original = PatternSearch.gray_noise

    def counting(search, filters, *args):
        sizes.append(len(filters))
        return original(search, filters, *args)

    monkeypatch.setattr(PatternSearch, "gray_noise", counting)
    return sizes


@pytest.mark.parametrize("budget_share, batches", [(1.0, [BATCH] * 4), (0.99, [BATCH - 1] * 4 + [4])])
def test_patterns_of_a_large_layer_run_in_memory_bounded_batches(
    vgg_like, budget_for_one_batch, batch_sizes, budget_share, batches
):
    budget = budget_for_one_batch * budget_share
    patterns = cw.filter_patterns(vgg_like, "block3_conv1", range(FILTERS), size=None, steps=2, memory_budget_mb=budget)
    assert patterns.shape == (FILTERS, 16, 16, 3) and patterns.dtype == np.uint8
    assert batch_sizes == batches


def test_stopping_a_large_layer_midway_leaves_a_usable_gallery(vgg_like, budget_for_one_batch):
    gallery = FilterGallery(
        vgg_like,
        layer="block3_conv1",
        view="patterns",
        steps=2,
        patterns_per_page=FILTERS,
        value_range=(0, 1),
        memory_budget_mb=budget_for_one_batch,
    )

    def stop_after_two_batches(change):
        if change["new"] == 2 * 2:  # progress counts steps: two batches of two steps
            gallery.progress.unobserve(stop_after_two_batches, "value")
            gallery.stop_patterns()

    gallery.progress.observe(stop_after_two_batches, "value")
    gallery.compute_patterns(wait=True)
    assert gallery.progress.max == FILTERS // BATCH * 2
    assert list(gallery.patterns) == list(range(2 * BATCH)) and not gallery.computing
    assert f"stopped: {2 * BATCH} of {FILTERS} computed" in gallery._pattern_status.value

    expected = cw.filter_patterns(vgg_like, "block3_conv1", range(2 * BATCH), size=None, steps=2, value_range=(0, 1))
    grid = gallery.panels()[0]
    layout = imaging.GridLayout.for_tiles(FILTERS, (16, 16), columns=16, gap=5)
    for index in range(FILTERS):
        top, left = layout.origin(index)
        tile = grid[top : top + 16, left : left + 16]
        if index < 2 * BATCH:
            np.testing.assert_array_equal(tile, expected[index], err_msg=f"filter {index}")
        else:
            assert not tile.any(), f"filter {index} should be blank"

    gallery.channel = 200
    assert "not computed yet" in gallery._pattern_caption.value and not gallery.panels()[1].any()
    gallery.channel = 5
    np.testing.assert_array_equal(gallery.panels()[1], imaging.upscale_to(expected[5], ENLARGED_SIZE))
    gallery.layer = "block2_conv1"  # lands on its strongest filter
    kernel = vgg_like.get_layer("block2_conv1").get_weights()[0]
    assert gallery.patterns == {} and gallery.channel == np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0).argmax()
    gallery.layer = "block3_conv1"
    assert list(gallery.patterns) == list(range(2 * BATCH))
    gallery.view = "weights"
    np.testing.assert_array_equal(gallery.weights, vgg_like.get_layer("block3_conv1").get_weights()[0])
