"""GradCamViewer: what it shows follows cw.grad_cam, each (layer, class) is computed once, refusals keep its state."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets import GradCamViewer, LayerExplorer
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.class_names import imagenet_class_names
from cnnviz_widgets.core.attribution import GradCam
from cnnviz_widgets.widgets import gradcam_viewer
from cnnviz_widgets.widgets.gradcam_viewer import HEATMAP_COLORMAP
from cnnviz_widgets.widgets._base import WidgetValueError
from conftest import everything_shown, nested_cnn, small_cnn


@pytest.fixture(scope="module")
def counted_model():
    return small_cnn(classes=5, counter=True)


@pytest.fixture
def image():
    return np.random.default_rng(3).uniform(0, 1, (16, 16, 3)).astype("float32")


def forward_passes(model) -> int:
    return int(model.get_layer("counter").calls.numpy())


def direct_probabilities(model, model_input) -> np.ndarray:
    return np.asarray(model(model_input[None], training=False))[0]


def assert_predictions_are_top_k(viewer, probabilities, names, k):
    expected = np.argsort(-probabilities)[:k]
    assert [c for c, _, _ in viewer.predictions] == expected.tolist()
    assert [name for _, name, _ in viewer.predictions] == [names[c] for c in expected]
    np.testing.assert_allclose([p for _, _, p in viewer.predictions], probabilities[expected], rtol=1e-5)


def assert_heatmap_is_grad_cam(viewer, model, model_input) -> float:
    """Returns the heatmap's maximum: a class the ReLU zeroes everywhere has 0."""
    expected = cw.grad_cam(model, model_input[None], viewer.class_index, layer=viewer.layer)[0]
    assert viewer.heatmap.shape == model_input.shape[:2]
    np.testing.assert_allclose(viewer.heatmap, expected, atol=1e-5)
    return float(expected.max())


def assert_contribution_bars(viewer, model, model_input):
    """Bars are the channels with the largest |contribution| (ties in any order)."""
    result = GradCam(model, viewer.layer).explain(model_input[None], [viewer.class_index])
    contributions = result.contributions[0, 0]
    bars = viewer.contribution_chart.bars
    shown = np.array([int(label) for label in bars.x])
    assert len(set(shown)) == len(shown) == min(32, len(contributions))
    np.testing.assert_allclose(bars.y, contributions[shown], rtol=1e-4, atol=1e-7)
    hidden = np.setdiff1d(np.arange(len(contributions)), shown)
    if len(hidden):
        assert np.abs(contributions[shown]).min() >= np.abs(contributions[hidden]).max()
    assert np.any(bars.y != 0)


def test_predictions_are_the_models_top_k_best_first(counted_model, image):
    viewer = GradCamViewer(counted_model, image, top_k=3)
    probabilities = direct_probabilities(counted_model, image)
    assert_predictions_are_top_k(viewer, probabilities, [f"class {i}" for i in range(5)], 3)
    assert viewer.class_index == viewer.predictions[0][0]
    assert list(viewer.prediction_chart.bars.x) == [name for _, name, _ in viewer.predictions]
    np.testing.assert_allclose(viewer.prediction_chart.bars.y, [p for _, _, p in viewer.predictions])


def test_heatmap_and_pictures_follow_grad_cam_for_each_top_class(counted_model, image):
    viewer = GradCamViewer(counted_model, image, top_k=3)
    assert viewer.layer == "conv2"
    heatmaps = []
    for class_index, _, _ in viewer.predictions:
        viewer.class_index = class_index
        assert_heatmap_is_grad_cam(viewer, counted_model, image)
        assert_contribution_bars(viewer, counted_model, image)
        picture, heatmap, overlay = viewer.panels()
        np.testing.assert_array_equal(picture, imaging.to_uint8_image(image))
        np.testing.assert_array_equal(heatmap, imaging.colormap(viewer.heatmap, "jet"))
        np.testing.assert_array_equal(overlay, imaging.overlay(image, viewer.heatmap, 0.4))
        heatmaps.append(viewer.heatmap)
    assert not np.allclose(heatmaps[0], heatmaps[1])


def test_top_k_classes_alpha_and_revisits_run_no_forward_pass(counted_model, image):
    before = forward_passes(counted_model)
    viewer = GradCamViewer(counted_model, image, top_k=2)
    assert forward_passes(counted_model) - before == 2  # predictions, then Grad-CAM of all top-k

    def passes_for(action) -> int:
        start = forward_passes(counted_model)
        action()
        return forward_passes(counted_model) - start

    top = [c for c, _, _ in viewer.predictions]
    other = next(c for c in range(5) if c not in top)
    assert passes_for(lambda: setattr(viewer, "class_index", top[1])) == 0
    assert passes_for(lambda: setattr(viewer, "class_index", top[0])) == 0
    assert passes_for(lambda: setattr(viewer, "alpha", 0.9)) == 0
    assert passes_for(lambda: setattr(viewer, "class_index", other)) == 1
    assert passes_for(lambda: setattr(viewer, "class_index", top[1])) == 0
    assert passes_for(lambda: setattr(viewer, "class_index", other)) == 0
    assert passes_for(lambda: setattr(viewer, "layer", "conv1")) == 1  # the other class alone
    assert_heatmap_is_grad_cam(viewer, counted_model, image)
    assert passes_for(lambda: setattr(viewer, "class_index", top[0])) == 1  # all top-k at conv1
    assert passes_for(lambda: setattr(viewer, "class_index", top[1])) == 0
    assert_heatmap_is_grad_cam(viewer, counted_model, image)
    assert passes_for(lambda: setattr(viewer, "layer", "conv2")) == 0


def test_a_class_shows_the_same_bits_whatever_was_asked_before(counted_model, image):
    # Explaining a different set of classes in one batched Jacobian changes float rounding.
    fresh = GradCamViewer(counted_model, image, top_k=1, layer="drop")
    visited = GradCamViewer(counted_model, image, top_k=1)
    other = next(c for c in range(5) if c not in visited._top_classes)
    visited.class_index = other
    visited.layer = "drop"
    visited.class_index = fresh.class_index
    assert everything_shown(visited) == everything_shown(fresh)


def test_viewers_of_one_model_share_the_compiled_grad_cam(image, monkeypatch):
    traces = []
    original = GradCam._compute_maps

    def traced(cam, inputs, classes):
        traces.append(cam.layer)
        return original(cam, inputs, classes)

    monkeypatch.setattr(GradCam, "_compute_maps", traced)
    model = small_cnn(classes=5)
    GradCamViewer(model, image, top_k=2)
    assert traces == ["conv2"]
    GradCamViewer(model, image[::-1], top_k=2).layer = "conv1"
    GradCamViewer(model, image[:, ::-1], top_k=2, layer="conv1")
    assert traces == ["conv2", "conv1"]


def test_cw_grad_cam_and_a_viewer_on_the_default_layer_share_one_grad_cam(image, monkeypatch):
    built = []
    original = GradCam.__init__

    @functools.wraps(original)  # keeps the signature, which fills in the cache key's defaults
    def counting(cam, model, layer=None, **options):
        built.append(layer)
        original(cam, model, layer, **options)

    monkeypatch.setattr(GradCam, "__init__", counting)
    model = small_cnn(classes=5)
    cw.grad_cam(model, image[None], 0)
    GradCamViewer(model, image, top_k=2)
    assert built == ["conv2"]

def test_clicking_a_bar_selects_its_class_and_the_box_reaches_any_class(counted_model, image):
    viewer = GradCamViewer(counted_model, image, top_k=3)
    bars = viewer.prediction_chart.bars
    signal = 0.0
    for position in (2, 0, 1):
        bars.selected = [position]
        assert viewer.class_index == viewer.predictions[position][0]
        signal = max(signal, assert_heatmap_is_grad_cam(viewer, counted_model, image))
    assert signal > 0
    other = next(c for c in range(5) if c not in [c for c, _, _ in viewer.predictions])
    viewer.class_box.value = other
    assert viewer.class_index == other
    assert bars.selected is None
    assert_heatmap_is_grad_cam(viewer, counted_model, image)
    viewer.class_index = viewer.predictions[0][0]
    assert list(bars.selected) == [0] and viewer.class_box.value == viewer.predictions[0][0]


def test_overlay_changes_with_class_and_alpha_alone(counted_model, image):
    viewer = GradCamViewer(counted_model, image, top_k=2)
    first = viewer.to_png()
    heatmap = viewer.heatmap
    viewer.alpha = 0.8
    assert viewer.to_png() != first
    np.testing.assert_array_equal(viewer.heatmap, heatmap)
    np.testing.assert_array_equal(viewer.panels()[2], imaging.overlay(image, heatmap, 0.8))
    with_alpha = viewer.to_png()
    viewer.class_index = viewer.predictions[1][0]
    assert viewer.to_png() != with_alpha


def test_refused_values_keep_the_state_and_show_why(counted_model, image):
    viewer = GradCamViewer(counted_model, image, top_k=2)
    state = (viewer.class_index, viewer.layer, viewer.alpha, viewer.heatmap.copy(), viewer.to_png())
    refusals = [
        ("class_index", 10_000, r"0\.\.4"),
        ("class_index", -1, r"0\.\.4"),
        ("layer", "gap", r"gap.*\(None, 12\).*conv1, bn, pool1, conv2"),
        ("layer", "conv9", r"Unknown layer 'conv9'.*conv2"),
        ("alpha", 1.5, r"\[0, 1\]"),
        ("alpha", -0.1, r"\[0, 1\]"),
    ]
    for name, value, message in refusals:
        with pytest.raises(WidgetValueError, match=message) as refused:
            setattr(viewer, name, value)
        assert isinstance(refused.value, ValueError)
        assert viewer.error == str(refused.value)
        assert (viewer.class_index, viewer.layer, viewer.alpha) == state[:3]
        np.testing.assert_array_equal(viewer.heatmap, state[3])
        assert viewer.to_png() == state[4]
        assert viewer.class_box.value == state[0] and viewer.layer_menu.value == state[1]
        setattr(viewer, name, getattr(viewer, name))
        assert viewer.error == ""


def test_traits_given_to_the_constructor_show_as_if_set_afterwards(counted_model, image):
    # traitlets notifies constructor traits in set order, which depends on the string
    # hash seed: alpha could come before the heatmap existed.
    given = GradCamViewer(counted_model, image, alpha=0.7, layer="conv1", class_index=2)
    set_later = GradCamViewer(counted_model, image)
    set_later.layer, set_later.class_index, set_later.alpha = "conv1", 2, 0.7
    assert everything_shown(given) == everything_shown(set_later)


def test_logits_output_gets_softmax_for_display(image):
    model = small_cnn(classes=5, head="logits")
    viewer = GradCamViewer(model, image, top_k=5)
    logits = direct_probabilities(model, image)
    probabilities = np.exp(logits) / np.exp(logits).sum()
    assert_predictions_are_top_k(viewer, probabilities, [f"class {i}" for i in range(5)], 5)
    assert "softmax" in viewer.prediction_chart.figure.title
    assert "softmax" not in GradCamViewer(small_cnn(classes=5), image).prediction_chart.figure.title


def test_nested_transfer_model_explains_inner_layers():
    model, _ = nested_cnn()
    raw = np.random.default_rng(4).uniform(0, 255, (16, 16, 3)).astype("float32")
    viewer = GradCamViewer(model, raw, class_names=["cat", "dog", "cow", "owl"], top_k=4)
    assert viewer.layer_names == ["scale", "base/c1", "base/bn", "base/c2"]
    assert viewer.layer == "base/c2"
    assert_predictions_are_top_k(viewer, direct_probabilities(model, raw), ["cat", "dog", "cow", "owl"], 4)
    signal = 0.0
    for layer in ("base/c2", "base/c1"):
        viewer.layer = layer
        signal = max(signal, assert_heatmap_is_grad_cam(viewer, model, raw))
        assert_contribution_bars(viewer, model, raw)
    assert signal > 0


def test_vgg16_with_preprocess_and_imagenet_names():
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=1000)
    raw = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype("float32")
    shown = raw.copy()
    model_input = keras.applications.vgg16.preprocess_input(raw.copy())
    viewer = GradCamViewer(model, raw[None], preprocess=keras.applications.vgg16.preprocess_input)

    # preprocess_input edits float arrays in place; the user's image must survive.
    np.testing.assert_array_equal(raw, shown)
    np.testing.assert_array_equal(viewer.panels()[0], imaging.to_uint8_image(shown))
    names = [name.replace("_", " ") for name in imagenet_class_names()]
    assert_predictions_are_top_k(viewer, direct_probabilities(model, model_input), names, 5)
    assert viewer.layer == "block5_conv3"
    assert assert_heatmap_is_grad_cam(viewer, model, model_input) > 0
    assert_contribution_bars(viewer, model, model_input)
    assert len(viewer.contribution_chart.bars.x) == 32

    viewer.class_box.value = 999
    assert viewer.class_index == 999
    assert viewer.class_names[999] == "toilet tissue"
    assert_heatmap_is_grad_cam(viewer, model, model_input)


def test_heatmap_is_at_the_raw_images_size_when_preprocess_resizes(counted_model):
    raw = np.random.default_rng(5).uniform(0, 1, (24, 20, 3)).astype("float32")
    viewer = GradCamViewer(counted_model, raw, preprocess=lambda x: tf.image.resize(x, (16, 16)))
    model_input = tf.image.resize(raw[None], (16, 16)).numpy()
    expected = cw.grad_cam(counted_model, model_input, viewer.class_index, layer=viewer.layer)[0]
    assert viewer.heatmap.shape == (24, 20)
    np.testing.assert_allclose(viewer.heatmap, np.clip(imaging.resize(expected, (24, 20)), 0, 1), atol=1e-5)
    assert all(panel.shape == (24, 20, 3) for panel in viewer.panels())


def test_bad_arguments_name_the_fix(counted_model, image):
    def broken(batch):
        raise RuntimeError("mean file not found")

    with pytest.raises(ValueError, match="preprocess raised RuntimeError: mean file not found"):
        GradCamViewer(counted_model, image, preprocess=broken)
    with pytest.raises(ValueError, match="returned by preprocess does not fit.*1 channel"):
        GradCamViewer(counted_model, image, preprocess=lambda batch: batch[..., :1])
    with pytest.raises(ValueError, match="one image, got a batch of 2"):
        GradCamViewer(counted_model, np.stack([image, image]))
    with pytest.raises(ValueError, match="one name per model output"):
        GradCamViewer(counted_model, image, class_names=["cat", "dog"])
    with pytest.raises(ValueError, match="top_k"):
        GradCamViewer(counted_model, image, top_k=0)
    assert len(GradCamViewer(counted_model, image, top_k=50).predictions) == 5


def test_a_gray_image_with_or_without_its_batch_and_channel_axes():
    keras.utils.set_random_seed(6)
    gray = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    pixels = np.random.default_rng(6).uniform(0, 1, (8, 8)).astype("float32")
    expected = cw.grad_cam(gray, pixels[None, ..., None], 1)[0]
    for image in (pixels, pixels[..., None], pixels[None], pixels[None, ..., None]):
        viewer = GradCamViewer(gray, image, class_index=1)
        np.testing.assert_allclose(viewer.heatmap, expected, atol=1e-6, err_msg=str(image.shape))
        np.testing.assert_array_equal(viewer.panels()[0], imaging.to_uint8_image(pixels))


def test_a_preprocessed_image_is_stretched_to_show_as_in_layer_explorer(counted_model):
    model_ready = np.random.default_rng(7).uniform(-1, 1, (16, 16, 3)).astype("float32")
    viewer = GradCamViewer(counted_model, model_ready)
    picture = imaging.to_uint8_image(imaging.normalize(model_ready))
    np.testing.assert_array_equal(viewer.panels()[0], picture)
    np.testing.assert_array_equal(viewer.panels()[0], LayerExplorer(counted_model, model_ready).panels()[0])
    np.testing.assert_array_equal(viewer.panels()[2], imaging.overlay(picture, viewer.heatmap, viewer.alpha, "jet"))


def test_a_model_without_image_input_is_refused_before_the_image_is_read():
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\) input"):
        GradCamViewer(dense, np.zeros(6, "float32"))


def test_sequence_model_is_refused_with_the_core_alternative():
    model = keras.Sequential(
        [keras.Input((20, 3)), keras.layers.Conv1D(4, 3), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\) input.*cw.grad_cam"):
        GradCamViewer(model, np.zeros((20, 3), "float32"))


def test_demo_model():
    demo = pytest.importorskip("cnnviz_widgets.demo")
    try:
        model = demo.load_model()
        images, _ = demo.load_images()
    except (OSError, ValueError) as missing:
        pytest.skip(f"demo model not available yet: {missing}")
    viewer = GradCamViewer(model, images[0], class_names=demo.CLASS_NAMES, top_k=3)
    assert_predictions_are_top_k(viewer, direct_probabilities(model, images[0]), demo.CLASS_NAMES, 3)
    assert assert_heatmap_is_grad_cam(viewer, model, images[0]) > 0


def test_the_class_box_shows_a_refusal_instead_of_clamping(counted_model, image):
    viewer = GradCamViewer(counted_model, image, top_k=2)
    before = (viewer.class_index, viewer.heatmap.copy())
    for typed in (99, -1):
        viewer.class_box.value = typed
        assert viewer.class_index == before[0] and viewer.class_box.value == before[0]
        assert f"class_index {typed} is out of range" in viewer.error and "0..4" in viewer.error
        np.testing.assert_array_equal(viewer.heatmap, before[1])
    viewer.class_box.value = 4
    assert viewer.class_index == 4 and viewer.error == ""


def test_an_empty_map_says_why_and_offers_the_counterfactual_map(counted_model, image):
    viewer = GradCamViewer(counted_model, image)
    result = GradCam(counted_model, viewer.layer).explain(image[None], list(range(5)))
    assert not result.flat.any()
    empty_class = int(np.flatnonzero(result.empty[0])[0])
    full_class = int(np.flatnonzero(~result.empty[0])[0])
    viewer.class_index = full_class
    assert viewer.heatmap_note.value == "" and viewer.evidence_offer.layout.display == "none"
    viewer.class_index = empty_class
    np.testing.assert_allclose(viewer.heatmap, 0, atol=1e-7)
    name = viewer.class_names[empty_class]
    assert f"nothing in this layer speaks for &#x27;{name}&#x27;: every position&#x27;s weighted sum is negative" in viewer.heatmap_note.value
    assert viewer.evidence_offer.layout.display != "none" and "against" in viewer.evidence_offer.description
    viewer.evidence_offer.click()
    assert viewer.evidence == "against" and viewer.evidence_buttons.value == "against"
    expected = cw.grad_cam(counted_model, image[None], empty_class, layer=viewer.layer, counterfactual=True)[0]
    np.testing.assert_allclose(viewer.heatmap, expected, atol=1e-5)
    assert viewer.heatmap.max() > 0.5 and viewer.heatmap_note.value == ""
    np.testing.assert_array_equal(viewer.panels()[1], imaging.colormap(expected, HEATMAP_COLORMAP))
    against = GradCam(counted_model, viewer.layer, counterfactual=True).explain(image[None], [empty_class])
    shown = np.array([int(label) for label in viewer.contribution_chart.bars.x])
    np.testing.assert_allclose(viewer.contribution_chart.bars.y, against.contributions[0, 0, shown], rtol=1e-4, atol=1e-7)
    assert "against" in viewer.contribution_chart.figure.title and "Counterfactual" in viewer._heatmap_caption.value
    viewer.evidence_buttons.value = "for"
    assert viewer.evidence == "for" and viewer.heatmap.max() < 1e-7


def test_the_heatmap_has_a_colour_scale_from_no_heat_to_its_peak(counted_model, image, monkeypatch):
    colormaps = []

    class RecordedColorBar(gradcam_viewer.ColorBar):
        def __init__(self, colormap, *args, **kwargs):
            colormaps.append(colormap)
            super().__init__(colormap, *args, **kwargs)

    monkeypatch.setattr(gradcam_viewer, "ColorBar", RecordedColorBar)
    viewer = GradCamViewer(counted_model, image)
    scale = viewer.heat_scale.scale
    assert colormaps == [HEATMAP_COLORMAP] and (scale.min, scale.max) == (0.0, 1.0)
    assert "peak" in viewer.heat_scale.axis.label and "normalised to its peak" in viewer._heatmap_caption.value
