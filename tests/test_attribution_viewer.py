"""GradCamViewer's method menu and compare mode: what it shows is cw.attribute's map of the same settings,
each (method, layer, class) is computed once, refused values keep its state.

Only Grad-CAM is in METHODS on this branch; two methods defined here are put into it
for a test: a HiResCAM-like CAM and a method that maps the pixels (no layer, no
counterfactual map, no channel contributions), like saliency.
"""

import threading
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets import GradCamViewer
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.attribution import METHODS, ClassActivationMap
from cnnviz_widgets.core.attribution import explanation as explanation_module
from cnnviz_widgets.core.attribution.explanation import ImageExplanations
from cnnviz_widgets.core.errors import InputError
from cnnviz_widgets.widgets._base import WidgetValueError
from conftest import CallCounter, EvictedAfterTheCheck


class ElementwiseCam(ClassActivationMap):
    """HiResCAM-like (Draelos & Carin 2020): map = ReLU(sum over channels of dS/dA ⊙ A)."""

    name = "elementwise"
    title = "Elementwise CAM"

    def channel_weights(self, features, gradients):
        return tf.reduce_mean(gradients, axis=[2, 3])

    def channel_terms(self, features, gradients, weights):
        return gradients * features[:, None]


class PixelMethod(ClassActivationMap):
    """Stands in for a pixel method (saliency): ignores ``layer``, has no counterfactual map and no channel contributions."""

    name = "pixels"
    uses_layer = False

    def __init__(self, model, layer=None, *, output=0):
        super().__init__(model, "conv1", output=output)

    def channel_weights(self, features, gradients):
        return tf.reduce_max(gradients, axis=[2, 3])

    def _explain_prepared(self, inputs, classes):
        result = super()._explain_prepared(inputs, classes)
        return SimpleNamespace(heatmaps=result.heatmaps, raw=result.raw)


@pytest.fixture
def methods(monkeypatch):
    for cls in (ElementwiseCam, PixelMethod):
        monkeypatch.setitem(METHODS, cls.name, cls)


@pytest.fixture(scope="module")
def model():
    """Two conv layers under a Flatten + Dense head: the gradients vary over space, so the two CAMs differ."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    x = CallCounter(name="counter")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="scores")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture
def image():
    return np.random.default_rng(5).uniform(0, 1, (16, 16, 3)).astype("float32")


def forward_passes(model) -> int:
    return int(model.get_layer("counter").calls.numpy())


def attributed(model, image, viewer, method):
    return cw.attribute(model, image[None], viewer.class_index, method=method, layer=viewer.layer)[0]


def test_the_heatmap_and_caption_follow_the_method(methods, model, image):
    viewer = GradCamViewer(model, image, top_k=3)
    assert [value for _, value in viewer.method_menu.options] == list(METHODS)
    shown = {}
    for method in ("elementwise", "gradcam", "pixels"):
        viewer.method_menu.value = method  # as a user picks it
        assert viewer.method == method
        expected = attributed(model, image, viewer, method)
        np.testing.assert_allclose(viewer.heatmap, expected, atol=1e-5)
        np.testing.assert_array_equal(viewer.panels()[1], imaging.colormap(viewer.heatmap, "jet"))
        shown[method] = viewer.heatmap.copy()
    labels = {method: label for label, method in viewer.method_menu.options}
    assert list(labels) == list(METHODS)  # every method, in METHODS' order
    assert [labels[m] for m in ("gradcam", "elementwise", "pixels")] == ["Grad-CAM", "Elementwise CAM", "pixels"]  # no inherited title
    assert not np.allclose(shown["elementwise"], shown["gradcam"], atol=1e-3)
    viewer.method = "elementwise"
    assert "Elementwise CAM" in viewer._heatmap_caption.value
    viewer.evidence = "against"
    assert "Counterfactual Elementwise CAM" in viewer._heatmap_caption.value
    expected = cw.attribute(model, image[None], viewer.class_index, method="elementwise", layer="conv2", counterfactual=True)[0]
    np.testing.assert_allclose(viewer.heatmap, expected, atol=1e-5)


def test_a_pixel_method_turns_the_layer_and_evidence_controls_off_and_ignores_the_layer(methods, model, image):
    viewer = GradCamViewer(model, image, top_k=2)
    assert not viewer.layer_menu.disabled and not viewer.evidence_buttons.disabled
    assert viewer.contribution_chart.figure.layout.display != "none"
    viewer.method = "pixels"
    assert viewer.layer_menu.disabled and viewer.evidence_buttons.disabled
    assert viewer.contribution_chart.figure.layout.display == "none"  # it has no channels to chart
    before, heatmap = forward_passes(model), viewer.heatmap.copy()
    viewer.layer = "conv1"
    assert forward_passes(model) == before
    np.testing.assert_array_equal(viewer.heatmap, heatmap)
    viewer.method = "gradcam"
    assert viewer.contribution_chart.figure.layout.display != "none"
    assert not viewer.layer_menu.disabled


def test_each_method_layer_and_class_is_computed_once(methods, model, image):
    viewer = GradCamViewer(model, image, top_k=2)
    top = [c for c, _, _ in viewer.predictions]

    def passes_for(**traits) -> int:
        start = forward_passes(model)
        for name, value in traits.items():
            setattr(viewer, name, value)
        return forward_passes(model) - start

    assert passes_for(method="elementwise") == 1  # both top classes in one call
    assert passes_for(class_index=top[1]) == 0
    assert passes_for(method="gradcam") == 0
    assert passes_for(method="elementwise", layer="conv1") == 1
    assert passes_for(layer="conv2", class_index=top[0]) == 0
    assert passes_for(compare=["gradcam", "elementwise"]) == 0
    assert passes_for(compare=["gradcam", "elementwise", "pixels"]) == 1
    assert passes_for(compare=[], method="pixels", layer="conv1") == 0  # a pixel method's map is every layer's


def test_refused_methods_keep_the_state_and_say_why(methods, model, image):
    viewer = GradCamViewer(model, image, top_k=2, compare=["gradcam", "elementwise"])
    state = (viewer.method, list(viewer.compare), viewer.evidence, viewer.heatmap.copy(), viewer.to_png())
    refusals = [
        ("method", "nope", r"Unknown method 'nope'.*gradcam, .*elementwise, pixels"),
        ("method", ["gradcam"], r"Unknown method \['gradcam'\]"),
        ("compare", ["gradcam", "nope"], r"Unknown method 'nope' to compare"),
        ("compare", ["gradcam", "gradcam"], r"up to 4 different methods"),
        ("compare", ["gradcam", "elementwise", "pixels", "gradcam", "elementwise"], r"up to 4 different methods"),
        ("compare", ["pixels", "gradcam"], None),  # accepted: evidence is 'for'
    ]
    for name, value, message in refusals:
        if message is None:
            setattr(viewer, name, value)
            viewer.compare = state[1]
            continue
        with pytest.raises(WidgetValueError, match=message):
            setattr(viewer, name, value)
        assert viewer.error
        assert (viewer.method, viewer.compare, viewer.evidence) == state[:3]
        np.testing.assert_array_equal(viewer.heatmap, state[3])
        assert viewer.to_png() == state[4]
        assert viewer.method_menu.value == state[0] and viewer.compare_box.value == ["Grad-CAM", "Elementwise CAM"]
    viewer.evidence = "against"
    with pytest.raises(WidgetValueError, match=r"pixels has no map of what speaks against a class; set evidence to 'for'"):
        viewer.method = "pixels"
    with pytest.raises(WidgetValueError, match=r"pixels has no map"):
        viewer.compare = ["gradcam", "pixels"]
    viewer.evidence = "for"
    viewer.method = "pixels"
    with pytest.raises(WidgetValueError, match=r"pixels has no map"):
        viewer.evidence = "against"
    assert viewer.evidence == "for" and viewer.evidence_buttons.value == "for"


def test_compare_shows_each_methods_map_side_by_side_under_one_colour_bar(methods, model, image):
    viewer = GradCamViewer(model, image, top_k=2)
    assert viewer._comparison.box.layout.display == "none"
    assert "Grad-CAM" in viewer.compare_box.allowed_tags and "gradcam" not in viewer.compare_box.allowed_tags
    viewer.compare_box.value = ["Elementwise CAM", "Grad-CAM", "pixels"]  # as a user picks the tags: by name
    assert viewer.compare == ["elementwise", "gradcam", "pixels"]
    assert viewer._comparison.box.layout.display is None
    for shown, method in zip(viewer._comparison.maps, viewer.compare):
        np.testing.assert_allclose(shown, attributed(model, image, viewer, method), atol=1e-5)
    captions = [caption.value for caption in viewer._comparison._captions[:3]]
    assert captions == ["<b>Elementwise CAM at conv2</b>", "<b>Grad-CAM at conv2</b>", "<b>pixels</b>"]
    assert [panel.layout.display for panel in viewer._comparison._panels] == [None, None, None, "none"]
    assert (viewer._comparison.scale.scale.min, viewer._comparison.scale.scale.max) == (0.0, 1.0)
    assert len(viewer.panels()) == 3 + 3
    other = next(c for c in range(5) if c != viewer.class_index)
    viewer.class_index, viewer.layer = other, "conv1"
    for shown, method in zip(viewer._comparison.maps, viewer.compare):
        np.testing.assert_allclose(shown, attributed(model, image, viewer, method), atol=1e-5)
    viewer.compare = ["gradcam"]
    assert viewer.compare_box.value == ["Grad-CAM"]  # the trait's ids show as names
    assert "add a method to compare" in viewer._comparison.note.value
    viewer.compare = []
    assert viewer._comparison.box.layout.display == "none" and len(viewer.panels()) == 3


def test_compare_given_to_the_constructor_shows_as_if_set_afterwards(methods, model, image):
    given = GradCamViewer(model, image, compare=["gradcam", "elementwise"], method="elementwise", layer="conv1")
    later = GradCamViewer(model, image)
    later.layer, later.method, later.compare = "conv1", "elementwise", ["gradcam", "elementwise"]
    assert given.to_png() == later.to_png()


def test_image_explanations_keep_the_last_ones_used(model, image, monkeypatch):
    monkeypatch.setattr(explanation_module, "MAX_EXPLANATIONS", 3)
    explanations = ImageExplanations(model, image[None], (16, 16), 0, top_classes=[0, 1])
    first = explanations.of("conv2", 0)
    explanations.of("conv1", 0)  # conv1's classes 0 and 1, then conv2's 0: the 3 used last
    assert explanations.of("conv2", 0) is first
    before = forward_passes(model)
    explanations.of("conv2", 1)  # dropped when conv1 came in
    assert forward_passes(model) - before == 1


def test_an_explanation_evicted_between_check_and_read_is_not_a_key_error(model, image):
    explanations = ImageExplanations(model, image[None], (16, 16), 0, top_classes=[0, 1])
    first = explanations.of("conv2", 0)
    explanations._explained = EvictedAfterTheCheck(explanations._explained)
    assert explanations.of("conv2", 0) is first  # read once, under the lock


class SlowCam(ElementwiseCam):
    """An expensive method, as Score-CAM: ``progress(done, total)`` before its passes and after the last; True stops it.
    Its first pass waits for ``gate``, so that a test can stop it midway."""

    name = "slow"
    title = "Slow CAM"
    passes = 3
    gate = threading.Event()

    def _explain_prepared(self, inputs, classes, *, progress=None):
        for done in range(self.passes):
            if progress is not None and progress(done, self.passes):
                raise InputError(f"stopped after {done} of {self.passes} passes")
            self.gate.wait(30)
        if progress is not None:
            progress(self.passes, self.passes)
        return super()._explain_prepared(inputs, classes)


@pytest.fixture
def slow_method(methods, monkeypatch):
    monkeypatch.setitem(METHODS, SlowCam.name, SlowCam)
    SlowCam.gate.set()
    yield SlowCam
    SlowCam.gate.set()


def test_an_expensive_method_is_computed_in_the_background_then_shown(slow_method, model, image):
    viewer = GradCamViewer(model, image, top_k=2, compare=["gradcam", "elementwise"])
    assert viewer.map_job.box.layout.display == "none"
    viewer.method_menu.value = "slow"
    job = viewer.map_job.job
    assert job is not None and "Slow CAM" in viewer.map_job.status.value
    job.wait()
    assert job.outcome == "done" and viewer.map_job.box.layout.display == "none"
    assert (viewer.map_job.progress.value, viewer.map_job.progress.max) == (3, 3)
    np.testing.assert_allclose(viewer.heatmap, attributed(model, image, viewer, "slow"), atol=1e-5)
    assert "Slow CAM" in viewer._heatmap_caption.value
    viewer.compare = ["slow", "gradcam"]  # kept: shown at once
    assert viewer.map_job.job is None
    np.testing.assert_allclose(viewer._comparison.maps[0], viewer.heatmap)
    viewer.layer = "conv1"  # the main map and the compare row wait for one job
    viewer.map_job.job.wait()
    for shown, method in zip(viewer._comparison.maps, viewer.compare):
        np.testing.assert_allclose(shown, attributed(model, image, viewer, method), atol=1e-5)


def test_stop_keeps_the_previous_map_and_says_so(slow_method, model, image):
    viewer = GradCamViewer(model, image, top_k=2)
    before = viewer.heatmap.copy()
    slow_method.gate.clear()
    viewer.method = "slow"
    viewer.map_job.stop_button.click()
    slow_method.gate.set()
    with pytest.raises(InputError, match="stopped after 1 of 3"):
        viewer.map_job.job.wait()
    assert "stopped: Slow CAM not computed" in viewer.map_job.status.value
    assert viewer.map_job.box.layout.display is None and viewer.map_job.stop_button.disabled
    np.testing.assert_array_equal(viewer.heatmap, before)
    viewer.method = "gradcam"
    assert viewer.map_job.box.layout.display == "none"


def test_a_method_is_named_by_its_own_title_not_its_parents(monkeypatch):
    from cnnviz_widgets.core.attribution import GradCam
    from cnnviz_widgets.core.attribution.explanation import method_title

    class GradCamVariant(GradCam):  # as the cams branch writes HiResCAM
        name = "variant"

    monkeypatch.setitem(METHODS, GradCamVariant.name, GradCamVariant)
    assert (method_title("gradcam"), method_title("variant")) == ("Grad-CAM", "variant")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_shows_in_the_viewer_as_cw_attribute_computes_it(model, image, method):
    viewer = GradCamViewer(model, image, top_k=2)
    viewer.method = method
    if viewer.map_job.job is not None:  # an expensive method: in the background, with progress
        viewer.map_job.job.wait()
        assert viewer.map_job.progress.value == viewer.map_job.progress.max > 0
    layer = viewer.layer if explanation_module.method_uses_layer(method) else None
    assert viewer.layer_menu.disabled == (layer is None)
    expected = cw.attribute(model, image[None], viewer.class_index, method=method, layer=layer)[0]
    np.testing.assert_allclose(viewer.heatmap, expected, atol=1e-5)
    assert explanation_module.method_title(method) in viewer._heatmap_caption.value
