"""The channel card (core value and widget), cw.link and GradCamViewer's channel bars, against independent computations."""

import gc
import weakref

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import ChannelCard, FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.attribution import GradCam
from cnnviz_widgets.core.channel_card import ChannelCards, LayerJob
from cnnviz_widgets.widgets._base import WidgetValueError

LAYER = "conv2"


@pytest.fixture(scope="module")
def demo():
    images, _ = cw.demo.load_images()
    return cw.demo.load_model(), images[:24]


@pytest.fixture(scope="module")
def cards(demo):
    model, images = demo
    return ChannelCards(model, images, k=5)


def layer_maps(model, layer, images) -> np.ndarray:
    """The layer's maps from a plain Keras sub-model."""
    return np.asarray(keras.Model(model.inputs[0], model.get_layer(layer).output)(images, training=False))


def test_kernel_and_mean_activation_are_the_layers_own(demo, cards):
    model, images = demo
    card = cards.card(LAYER, 7)
    np.testing.assert_allclose(card.kernel, model.get_layer(LAYER).kernel.numpy()[..., 7])
    assert card.kernel_bound == pytest.approx(np.abs(card.kernel).max())
    assert card.kernel_picture.dtype == np.uint8 and card.kernel_picture.ndim == 3
    means = layer_maps(model, LAYER, images).mean(axis=(1, 2))[:, 7]
    np.testing.assert_allclose(card.image_means, means, rtol=1e-4, atol=1e-5)
    assert card.mean_activation == pytest.approx(means.mean(), rel=1e-4)
    assert cards.card("pool1", 7).kernel is None  # a layer without a kernel


def test_top_examples_are_a_brute_force_argsort_of_the_maxima(demo, cards):
    model, images = demo
    maps = layer_maps(model, LAYER, images)
    for channel in (0, 13, 31):
        examples = cards.card(LAYER, channel).examples
        maxima = maps[..., channel].max(axis=(1, 2))
        expected = np.argsort(-maxima, kind="stable")[:5]
        np.testing.assert_allclose(examples.values, maxima[expected], rtol=1e-4)
        np.testing.assert_allclose(maxima[examples.indices], maxima[expected], rtol=1e-4)  # equal maxima in any order
        for index, (row, column), value in zip(examples.indices, examples.positions, examples.values):
            assert maps[index, row, column, channel] == pytest.approx(value, rel=1e-4)
        assert examples.pictures.shape == (5, 64, 64, 3) and examples.pictures.dtype == np.uint8
        # The map over the image, on one scale: 0 .. the best example's maximum, and a frame around
        # the pixels conv2 sees at the maximum: 3x3 conv, 2x2 pool, 3x3 conv give 8 px, 2 px apart, from -3.
        assert examples.peak == pytest.approx(examples.values[0])
        last = examples.indices[-1]
        heat = np.clip(maps[last, ..., channel] / maxima[expected[0]], 0, 1)
        row, column = examples.positions[-1]
        box = [max(2 * row - 3, 0), max(2 * column - 3, 0), min(2 * row + 5, 64), min(2 * column + 5, 64)]
        np.testing.assert_array_equal(examples.boxes[-1], box)
        expected_picture = imaging.overlay(images[last], heat, 0.5, "jet")
        top, left, bottom, right = box
        expected_picture[[top, bottom - 1], left:right] = expected_picture[top:bottom, [left, right - 1]] = 255
        np.testing.assert_allclose(examples.pictures[-1].astype(int), expected_picture.astype(int), atol=2)
    assert cards.most_active_channel(LAYER) == int(np.argmax(maps.mean(axis=(0, 1, 2))))


def test_contribution_is_grad_cams_weight_times_mean_activation(demo, cards):
    model, images = demo
    result = GradCam(model, "conv4").explain(images[3:4], [2])
    contributions = result.contributions[0, 0]
    for channel in (0, int(np.argmax(np.abs(contributions)))):
        contribution = cards.card("conv4", channel, image_index=3, class_index=2).contribution
        assert contribution.value == pytest.approx(contributions[channel], rel=1e-4, abs=1e-7)
        assert contribution.weight == pytest.approx(result.channel_weights[0, 0, channel], rel=1e-4, abs=1e-8)
        assert contribution.rank == 1 + np.sum(np.abs(contributions) > abs(contributions[channel]))
    top_class = int(np.argmax(model(images[3:4], training=False)[0]))
    assert cards.card("conv4", 0, image_index=3).contribution.class_index == top_class
    assert cards.card("conv4", 0).contribution is None


def test_a_layer_job_counts_both_passes_and_a_stop_keeps_nothing(demo):
    model, images = demo
    cards = ChannelCards(model, images, k=3, batch_size=8)
    seen = []
    LayerJob(cards, "conv3", on_progress=lambda job: seen.append(job.done)).start().wait()
    assert seen == [8, 16, 24, 32, 40, 48] and cards.has_layer("conv3")
    stopped = LayerJob(cards, "conv1", on_progress=lambda job: job.stop())
    stopped.start().wait()
    assert stopped.done == 8 and stopped.outcome == "stopped" and not cards.has_layer("conv1")


def test_passes_batch_as_many_images_as_keep_the_largest_layer_output_within_budget():
    inputs = keras.Input((224, 224, 3))
    wide = keras.Model(inputs, keras.layers.Conv2D(64, 1, name="wide")(inputs))  # 224×224×64 floats an image
    images = np.zeros((3, 224, 224, 3), np.float32)
    assert ChannelCards(wide, images).batch_size == (256 * 2**20) // (224 * 224 * 64 * 4) == 20
    assert ChannelCards(wide, images, batch_size=5).batch_size == 5
    assert ChannelCards(cw.demo.load_model(), cw.demo.load_images()[0][:3]).batch_size == 64  # small maps: the most a pass takes


def test_a_bad_layer_or_channel_names_the_fix(cards):
    with pytest.raises(cw.core.errors.CnnvizError, match="Use one of: conv1"):
        cards.card("gap", 0)
    with pytest.raises(cw.core.errors.CnnvizError, match="0..31"):
        cards.card(LAYER, 32)


def test_card_widget_shows_the_card_refuses_and_a_click_picks_an_image(demo):
    model, images = demo
    card = ChannelCard(model, images, layer=LAYER, k=4)
    try:
        assert card.channel == ChannelCards(model, images).most_active_channel(LAYER)
        card.channel = 5
        assert card.card.channel == 5 and "channel 5" in card.summary.value
        with pytest.raises(WidgetValueError, match="0..31"):
            card.channel = 99
        assert card.channel == 5 and "0..31" in card.error
        card.layer = "conv1"  # 16 channels: 5 stays; a new layer is computed in the background
        card.wait()
        assert card.channel == 5 and card.card.kernel.shape == (3, 3, 3) and "conv1, channel 5" in card.summary.value
        assert card.layer_progress.layout.display == "none"
        card.channel = 12
        card.layer = "conv3"
        card.layer = "conv1"  # the conv3 job is stopped; conv1 is kept
        assert card.card.layer == "conv1" and card.channel == 12
        card.wait()
        # A click on the second example of the 2×2 grid (64-px tiles, 2 px apart) picks its image.
        second = int(card.card.examples.indices[1])
        data = {"click_x": 64 + 2 + 10, "click_y": card.examples_figure.shape[0] - 10}
        card.examples_figure.mark._handle_custom_msgs(None, {"event": "element_click", "data": data})
        assert card.image_index == second
        assert card.card.contribution.image_index == second and "Grad-CAM of" in card.contribution_note.value
        card.class_index = 4
        assert card.card.contribution.class_index == 4 and cw.demo.CLASS_NAMES[4] in card.contribution_note.value
        for name, value, why in (("image_index", 24, "0..23"), ("class_index", 5, "class")):
            with pytest.raises(WidgetValueError, match=why):
                setattr(card, name, value)
        assert (card.image_index, card.class_index, card.channel) == (second, 4, 12)
        assert card.to_png().startswith(b"\x89PNG")
    finally:
        card.close()


def test_card_feature_visualisation_is_filter_patterns(demo):
    model, images = demo
    card = ChannelCard(model, images, layer="conv1", channel=3)
    try:
        card.wait()
        shown = card._pattern_cache.patterns(card._pattern_settings())[3].image
        expected = cw.filter_patterns(model, "conv1", [3], size=None, steps=40, value_range=(0, 1), style="lucid")[0]
        np.testing.assert_allclose(shown.astype(int), expected.astype(int), atol=2)
        # Done: the bar goes, the caption says what the steps did (a full blue bar said nothing).
        assert card.progress.layout.display == "none"
        assert "in 40 steps" in card._pattern_caption.value
        card.style = "tutorial"
        card.wait()
        shown = card._pattern_cache.patterns(card._pattern_settings())[3].image
        expected = cw.filter_patterns(model, "conv1", [3], size=None, steps=40, value_range=(0, 1))[0]
        np.testing.assert_allclose(shown.astype(int), expected.astype(int), atol=2)
    finally:
        card.close()


@pytest.fixture
def linked(demo):
    model, images = demo
    views = [
        LayerExplorer(model, images[:4]),
        FilterGallery(model),
        GradCamViewer(model, images[0]),
        ChannelCard(model, images, k=3),
    ]
    yield views
    for view in views:
        view.close()


def positions(views):
    return [(view.layer, view.channel) for view in views]


def test_link_moves_every_widget_that_has_the_layer(linked):
    explorer, gallery, viewer, card = linked
    link = cw.link(*linked)
    explorer.layer, explorer.channel = "conv2", 9
    assert positions(linked) == [("conv2", 9)] * 4
    explorer.means_chart.bars.selected = [11]  # a click on the explorer's mean-activation bar of channel 11
    assert positions(linked) == [("conv2", 11)] * 4
    card.channel = 30
    assert positions(linked) == [("conv2", 30)] * 4
    gallery.layer = "conv3"  # the gallery lands on the layer's strongest filter, and the others follow it
    kernel = gallery._model.get_layer("conv3").get_weights()[0]
    strongest = int(np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0).argmax())
    assert positions(linked) == [("conv3", strongest)] * 4
    # bn3 has no kernel: the gallery keeps conv3, and says nothing.
    card.layer = "bn3"
    assert positions(linked) == [("bn3", strongest), ("conv3", strongest), ("bn3", strongest), ("bn3", strongest)]
    assert [view.error for view in linked] == [""] * 4
    # gap has no maps and no kernel: only the explorer has it.
    explorer.layer = "gap"
    assert [view.layer for view in linked] == ["gap", "conv3", "bn3", "bn3"]
    link.unlink()
    card.layer = "conv1"
    assert explorer.layer == "gap" and gallery.layer == "conv3"


def test_a_click_on_a_contribution_bar_selects_a_channel_everywhere(linked):
    explorer, gallery, viewer, card = linked
    cw.link(explorer, viewer, card)
    for position in (3, 0):
        viewer.contribution_chart.bars.selected = [position]
        channel = viewer._charted_channels[position]
        assert viewer.channel == channel
        assert positions([explorer, viewer, card]) == [(viewer.layer, channel)] * 3
    explorer.channel = viewer._charted_channels[5]
    assert list(viewer.contribution_chart.bars.selected) == [5]
    with pytest.raises(WidgetValueError, match="0..63"):
        viewer.channel = 64


def test_a_closed_linked_widget_leaves_the_link_and_is_freed(demo):
    model, images = demo
    explorer, card = LayerExplorer(model, images[:4]), ChannelCard(model, images, k=3)
    link = cw.link(explorer, card)
    gone = weakref.ref(card)
    card.close()
    del card
    gc.collect()
    assert gone() is None and link.views == [explorer]
    explorer.layer = "conv1"  # nothing left to follow it: no error
    explorer.close()


def test_link_takes_two_widgets_or_more(linked):
    with pytest.raises(cw.core.errors.CnnvizError, match="two or more"):
        cw.link(linked[0])
    with pytest.raises(cw.core.errors.CnnvizError, match="two or more"):
        cw.link(linked[0], "gallery")


def test_close_waits_for_the_feature_visualisations_it_stopped(demo):
    # Each channel move stops the running feature visualisation, which still ends its step and
    # holds the card: close() must wait for those too, or a closed card stays alive a while.
    model, images = demo
    card = ChannelCard(model, images, layer="conv4")
    for channel in range(1, 6):
        card.channel = channel
    stopped = list(card._stopped_jobs)
    assert stopped, "the channel moves stopped running jobs"
    card_ref = weakref.ref(card)
    card.close()
    assert not any(job.thread.is_alive() for job in stopped)
    del card, stopped  # the jobs hold the card through their callbacks
    gc.collect()
    assert card_ref() is None
