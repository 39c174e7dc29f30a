"""Bad input to every core function and every widget: one clear error, or a documented conversion.

Errors are ValueError/TypeError subclasses whose message names the fix. A widget that
refuses a value keeps everything it shows (traits, PNG bytes, charts, main array),
says why in ``error``, and clears ``error`` at the next good value.
"""

import ipywidgets as widgets
import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core.errors import InputError, InputTypeError, NoKernelError, UnknownLayerError, UnsupportedModelError
from cnnviz_widgets.widgets._base import WidgetValueError
from conftest import small_cnn

IMAGES = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return small_cnn(classes=5, size=16)


@pytest.fixture(scope="module")
def nan_branch_model():
    """Output 0 is healthy; output 1 passes a BatchNormalization whose negative variance gives NaN."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(pooled)
    broken = keras.layers.BatchNormalization(name="broken_bn")(features)
    after = keras.layers.Conv2D(2, 1, name="after_nan")(broken)
    model = keras.Model(inputs, [scores, after])
    gamma, beta, mean, variance = model.get_layer("broken_bn").get_weights()
    model.get_layer("broken_bn").set_weights([gamma, beta, mean, np.full_like(variance, -1.0)])
    return model


def raise_zero_division(batch):
    return 1 / 0


def shown_widgets(widget, found=None) -> dict:
    """Every widget that ``widget`` shows, reached through its synced traits (children, marks, images…)."""
    found = {} if found is None else found
    if isinstance(widget, widgets.Widget) and widget.model_id not in found:
        found[widget.model_id] = widget
        for name in widget.keys:
            shown_widgets(getattr(widget, name), found)
    elif isinstance(widget, (list, tuple)):
        for item in widget:
            shown_widgets(item, found)
    elif isinstance(widget, dict):
        for item in widget.values():
            shown_widgets(item, found)
    return found


MAIN_ARRAY = {LayerExplorer: "activation", FilterGallery: "weights", GradCamViewer: "heatmap"}


def everything_shown(widget) -> tuple:
    """What the front end has, the traits, the PNG and the main array: everything but the error."""
    state = {key: shown.get_state() for key, shown in shown_widgets(widget).items() if shown is not widget._error_line}
    traits = {name: getattr(widget, name) for name in widget.trait_names() if name != "error" and not name.startswith("_")}
    main = np.array(getattr(widget, MAIN_ARRAY[type(widget)]))
    return state, traits, widget.to_png(), main.shape, main.tobytes()


# -- arguments of the core functions ------------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, x: cw.activations(m, x, layers="conv9"), UnknownLayerError, "Unknown layer 'conv9'. Available: conv1"),
        (lambda m, x: cw.activations(m, x, layers=3), InputTypeError, "layers must be None .* a layer name or a list"),
        (lambda m, x: cw.activations(m, x, batch_size=0), InputError, "batch_size .* int >= 1, got 0"),
        (lambda m, x: cw.grad_cam(m, x, 5), InputError, r"class_index 5 is out of range.*0\.\.4"),
        (lambda m, x: cw.grad_cam(m, x, -1), InputError, r"class_index -1 is out of range.*0\.\.4"),
        (lambda m, x: cw.grad_cam(m, x, 0, layer="conv9"), UnknownLayerError, "Unknown layer 'conv9'"),
        (lambda m, x: cw.grad_cam(m, x, 0, layer="gap"), UnsupportedModelError, "needs a 4-D .* Try one of: conv1"),
        (lambda m, x: cw.filter_weights(m, "gap"), NoKernelError, "'gap' .* no kernel. Layers with kernels: conv1, conv2"),
        (lambda m, x: cw.filter_weights(m, "conv9"), UnknownLayerError, "Unknown layer 'conv9'"),
        (lambda m, x: cw.filter_patterns(m, "conv1", [8], size=None), InputError, r"Filter 8 .* use 0\.\.7"),
        (lambda m, x: cw.filter_patterns(m, "conv1", [-1], size=None), InputError, r"Filter -1 .* use 0\.\.7"),
        (lambda m, x: cw.filter_patterns(m, "conv9", [0], size=None), UnknownLayerError, "Unknown layer 'conv9'"),
        (lambda m, x: cw.filter_patterns(m, "conv1", [0], size=None, steps=-1), InputError, "steps .* >= 0"),
        (
            lambda m, x: cw.filter_patterns(m, "conv1", [0], size=None, steps=1, preprocess=raise_zero_division),
            InputError,
            "preprocess raised ZeroDivisionError: division by zero.*differentiable TensorFlow",
        ),
    ],
)
def test_bad_arguments_to_core_functions_name_the_fix(model, call, error, message):
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    with pytest.raises(error, match=message):
        call(model, x)


# -- a model that computes NaN --------------------------------------------------------


def test_patterns_that_reach_nan_are_an_error_not_black_pictures(nan_branch_model):
    with pytest.raises(UnsupportedModelError, match=r"filter\(s\) 0, 1 of layer 'after_nan' reached NaN"):
        cw.filter_patterns(nan_branch_model, "after_nan", [0, 1], size=None, steps=2)
    assert cw.filter_patterns(nan_branch_model, "conv", [0, 1], size=None, steps=2).shape == (2, 16, 16, 3)
    gallery = FilterGallery(nan_branch_model, "after_nan", view="patterns", steps=2, patterns_per_page=2)
    with pytest.raises(UnsupportedModelError, match="reached NaN"):
        gallery.compute_patterns(wait=True)
    assert "failed: Gradient ascent" in gallery._pattern_status.value and gallery.patterns == {}


def test_layer_explorer_refuses_a_layer_the_model_computes_nan_for(nan_branch_model):
    explorer = LayerExplorer(nan_branch_model, IMAGES)
    before = everything_shown(explorer)
    for layer in ("broken_bn", "after_nan"):
        with pytest.raises(WidgetValueError, match=f"Layer '{layer}' outputs .* NaN or infinite value.* for image 0"):
            explorer.layer = layer
        assert everything_shown(explorer) == before
    explorer.view = "images"
    with pytest.raises(WidgetValueError, match="'broken_bn' outputs .* for the images"):
        explorer.layer = "broken_bn"
    explorer.layer = "gap"
    assert explorer.error == ""
