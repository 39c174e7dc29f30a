"""Bad input to every core function and every widget: one clear error, or a documented conversion.

Errors are ValueError/TypeError subclasses whose message names the fix. A widget that
refuses a value keeps everything it shows (traits, PNG bytes, charts, main array),
says why in ``error``, and clears ``error`` at the next good value.
"""

import html

import keras
import numpy as np
import pytest
from traitlets import TraitError

import cnnviz_widgets as cw
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core import imaging, layer_views
from cnnviz_widgets.core.errors import InputError, InputTypeError, NoKernelError, UnknownLayerError, UnsupportedModelError
from cnnviz_widgets.widgets._base import WidgetValueError
from cnnviz_widgets.core.attribution.explanation import FLAT_MAP_NOTE
from conftest import everything_shown, small_cnn

IMAGES = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return small_cnn(classes=5, size=16)


@pytest.fixture(scope="module")
def gray_model():
    keras.utils.set_random_seed(6)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )


def dead_relu_model(dead_channels):
    """A conv layer whose ``dead_channels`` have a zero kernel and bias -1: ReLU gives 0 everywhere."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="scores")(pooled))
    kernel, bias = conv.get_weights()
    kernel[..., dead_channels], bias[dead_channels] = 0.0, -1.0
    conv.set_weights([kernel, bias])
    return model


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
        *[
            (lambda m, x, kwargs=kwargs: cw.filter_patterns(m, "conv1", [0], size=None, **kwargs), InputError, message)
            for kwargs, message in [
                (dict(steps=2.5), "steps is the number of gradient ascent steps and must be an int >= 0, got 2.5"),
                (dict(steps=True), "steps .* int >= 0, got True"),
                (dict(steps="3"), "steps .* int >= 0, got '3'"),
                (dict(value_range=(1, 0)), r"value_range .* must be \(low, high\), two finite numbers with low < high.*got \(1, 0\)"),
                (dict(value_range=(1, 1)), r"low < high.*got \(1, 1\)"),
                (dict(value_range=(0, np.nan)), r"two finite numbers.*got \(0, nan\)"),
                (dict(value_range=(-np.inf, 1)), r"two finite numbers.*got \(-inf, 1\)"),
                (dict(value_range=(0,)), r"\(low, high\).*got \(0,\)"),
                (dict(value_range=None), r"\(low, high\).*got None"),
                (dict(step_size=np.nan), "step_size is the length of one ascent step .* finite number > 0, got nan"),
                (dict(step_size=-1.0), "step_size .* finite number > 0, got -1.0"),
                (dict(step_size=0), "step_size .* finite number > 0, got 0"),
                (dict(memory_budget_mb=np.nan), "memory_budget_mb is the memory in MB .* finite number > 0, got nan"),
                (dict(memory_budget_mb=np.inf), "memory_budget_mb .* finite number > 0, got inf"),
                (dict(memory_budget_mb=0), "memory_budget_mb .* finite number > 0, got 0"),
                (dict(seed=1.5), "seed is the seed of the gray-noise start images and must be an int >= 0, got 1.5"),
                (dict(seed=-1), "seed .* int >= 0, got -1"),
                (dict(seed=None), "seed .* int >= 0, got None"),
            ]
        ],
        (lambda m, x: cw.filter_patterns(m, "conv1", [0], preprocess=3), InputTypeError, "preprocess must be None or a function .*got int 3"),
        (lambda m, x: cw.filter_patterns(m, "conv1", None, size=None), InputTypeError, r"filters must be filter indices, e\.g\. range\(16\).*got None"),
        (lambda m, x: cw.filter_patterns(m, "conv1", [[0, 1]], size=None), InputError, r"flat list of filter indices.*shape \(1, 2\)"),
        (lambda m, x: cw.activations(m, x, layers=[]), InputError, r"layers is empty; pass layer names \(cw\.layer_names\(model\) lists them\), or None"),
        (lambda m, x: cw.activations(m, x, layers=["conv1", "gap", "conv1"]), InputError, "layers names conv1 more than once.*list it once"),
        (lambda m, x: cw.activations(m, x, batch_size=np.nan), InputError, "batch_size .* int >= 1, got nan"),
        (lambda m, x: cw.activations(m, x, batch_size=2.0), InputError, "batch_size .* int >= 1, got 2.0"),
        (lambda m, x: cw.activations(m, x, layers=[["conv1"]]), UnknownLayerError, r"Unknown layer '\['conv1'\]'. Available: conv1"),
        (lambda m, x: cw.filter_weights(m, ["conv1"]), UnknownLayerError, r"Unknown layer '\['conv1'\]'. Available: conv1"),
        (lambda m, x: cw.grad_cam(m, x, 0, layer=["conv1"]), UnknownLayerError, r"Unknown layer '\['conv1'\]'"),
        (lambda m, x: cw.filter_patterns(m, ["conv1"], [0]), UnknownLayerError, r"Unknown layer '\['conv1'\]'"),
        (lambda m, x: cw.load_model(None), InputTypeError, r"path must be the path of a model file, a str or pathlib\.Path; got NoneType"),
        (
            lambda m, x: cw.filter_patterns(m, "conv1", [0], size=None, steps=1, preprocess=raise_zero_division),
            InputError,
            "preprocess raised ZeroDivisionError: division by zero.*differentiable TensorFlow",
        ),
    ],
)
def test_bad_arguments_to_core_functions_name_the_fix(model, call, error, message):
    with pytest.raises(error, match=message):
        call(model, IMAGES[:2])


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda m: FilterGallery(m, step_size=np.nan), InputError, "step_size is the length of one ascent step .* > 0, got nan"),
        (lambda m: FilterGallery(m, step_size=-1.0), InputError, "step_size .* finite number > 0, got -1.0"),
        (lambda m: FilterGallery(m, memory_budget_mb=0), InputError, "memory_budget_mb .* finite number > 0, got 0"),
        (lambda m: FilterGallery(m, memory_budget_mb=np.nan), InputError, "memory_budget_mb .* finite number > 0, got nan"),
        (lambda m: FilterGallery(m, preprocess="caffe"), InputTypeError, "preprocess must be None or a function .*got str 'caffe'"),
        (lambda m: FilterGallery(m, seed=-1), WidgetValueError, "seed .* int >= 0, got -1"),
        (lambda m: LayerExplorer(m, IMAGES, preprocess=3), InputTypeError, "preprocess must be None or a function .*got int 3"),
        (lambda m: GradCamViewer(m, IMAGES[0], preprocess=3), InputTypeError, "preprocess must be None or a function .*got int 3"),
        (lambda m: GradCamViewer(m, IMAGES[0], class_names=5), InputTypeError, "class_names must be a list of names, one per model output; got 5"),
        # A string of 5 letters is not 5 names, although it has the length of one.
        (lambda m: GradCamViewer(m, IMAGES[0], class_names="abcde"), InputTypeError, "class_names must be a list of names.*got 'abcde'"),
        (lambda m: GradCamViewer(m, IMAGES[0], top_k=2.5), InputError, "top_k is how many classes to chart and must be an int >= 1, got 2.5"),
        (lambda m: GradCamViewer(m, IMAGES[0], top_k=True), InputError, "top_k .* int >= 1, got True"),
    ],
)
def test_bad_widget_constructor_arguments_name_the_fix(model, make, error, message):
    with pytest.raises(error, match=message):
        make(model)


def test_filter_patterns_without_an_image_input_point_to_the_kernels():
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="hidden")])
    with pytest.raises(UnsupportedModelError, match=r"takes \(None, 6\)\. The kernels can still be shown: cw\.filter_weights"):
        cw.filter_patterns(dense, "hidden", [0])


# -- images: to the core functions and to the widgets that take them -----------------

TAKES_IMAGES = {
    "activations": lambda model, x: list(cw.activations(model, x).values()),
    "grad_cam": lambda model, x: [cw.grad_cam(model, x, 0)],
    "LayerExplorer": lambda model, x: [(explorer := LayerExplorer(model, x)).activation, *explorer.panels()],
    "GradCamViewer": lambda model, x: [(viewer := GradCamViewer(model, x)).probabilities, viewer.heatmap, *viewer.panels()],
}


def filled(shape, value=0.5, dtype="float32"):
    return np.full(shape, value, dtype)


@pytest.mark.parametrize("taker", list(TAKES_IMAGES))
@pytest.mark.parametrize(
    "model_name, images, error, message",
    [
        ("model", filled((1, 1, 16, 16, 3)), InputError, r"shape \(1, 1, 16, 16, 3\).*a batch shaped \(N, 16, 16, 3\)"),
        ("model", filled((3,)), InputError, r"shape \(3,\).*a batch shaped \(N, 16, 16, 3\)"),
        ("model", filled((1, 20, 20, 3)), InputError, r"tf\.image\.resize\(x, \(16, 16\)\)"),
        ("model", filled((1, 16, 16, 1)), InputError, r"1 channel\(s\), but the model takes 3.*np\.repeat\(x, 3, axis=-1\)"),
        ("model", filled((16, 16)), InputError, r"np\.repeat\(x\[\.\.\., None\], 3, axis=-1\)"),
        ("model", filled((1, 16, 16, 4)), InputError, r"4 channel\(s\).*x\[\.\.\., :3\]"),
        ("gray_model", filled((1, 8, 8, 3)), InputError, r"3 channel\(s\), but the model takes 1.*x\.mean\(axis=-1, keepdims=True\)"),
        ("model", filled((1, 16, 16, 3), np.nan), InputError, r"768 NaN or infinite.*np\.nan_to_num\(x\)"),
        ("model", filled((1, 16, 16, 3), -np.inf), InputError, r"768 NaN or infinite.*np\.nan_to_num\(x\)"),
        ("model", filled((0, 16, 16, 3)), InputError, r"are empty.*at least one image"),
        ("model", filled((1, 16, 16, 3), True, bool), InputTypeError, "dtype bool; pass numbers"),
        ("model", np.full((1, 16, 16, 3), "a"), InputTypeError, "dtype <U1; pass numbers"),
    ],
)
def test_bad_images_are_refused_with_the_fix(request, taker, model_name, images, error, message):
    with pytest.raises(error, match=message):
        TAKES_IMAGES[taker](request.getfixturevalue(model_name), images)


def assert_same_results(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-5)


@pytest.mark.parametrize("taker", list(TAKES_IMAGES))
def test_one_image_gets_a_batch_axis(model, taker):
    assert_same_results(TAKES_IMAGES[taker](model, IMAGES[0]), TAKES_IMAGES[taker](model, IMAGES[:1]))


@pytest.mark.parametrize("taker", list(TAKES_IMAGES))
def test_gray_images_get_a_channel_axis(gray_model, taker):
    pixels = np.random.default_rng(8).uniform(0, 1, (1, 8, 8)).astype("float32")
    with_axes = TAKES_IMAGES[taker](gray_model, pixels[..., None])
    assert_same_results(TAKES_IMAGES[taker](gray_model, pixels), with_axes)
    assert_same_results(TAKES_IMAGES[taker](gray_model, pixels[0]), with_axes)


@pytest.mark.parametrize("taker", list(TAKES_IMAGES))
def test_uint8_and_float64_are_cast_to_float32_not_rescaled(model, taker):
    pixels = np.round(IMAGES[:1] * 255).astype(np.uint8)
    as_float32 = TAKES_IMAGES[taker](model, pixels.astype(np.float32))
    assert_same_results(TAKES_IMAGES[taker](model, pixels), as_float32)
    assert_same_results(TAKES_IMAGES[taker](model, pixels.astype(np.float64)), as_float32)
    rescaled = TAKES_IMAGES[taker](model, pixels.astype(np.float32) / 255)
    assert not np.allclose(rescaled[0], as_float32[0], atol=1e-3)


@pytest.mark.parametrize("widget", [LayerExplorer, GradCamViewer])
def test_a_raising_preprocess_is_named(model, widget):
    with pytest.raises(InputError, match=r"preprocess raised ZeroDivisionError: division by zero.*shape \(1, 16, 16, 3\)"):
        widget(model, IMAGES[:1], preprocess=raise_zero_division)


def test_a_raising_preprocess_fails_the_pattern_run_with_its_name(model):
    gallery = FilterGallery(model, view="patterns", steps=1, patterns_per_page=2, preprocess=raise_zero_division)
    with pytest.raises(InputError, match="preprocess raised ZeroDivisionError"):
        gallery.compute_patterns(wait=True)
    assert "failed: preprocess raised ZeroDivisionError" in gallery._pattern_status.value
    assert gallery.patterns == {} and not gallery.computing


# -- widget values: refused, nothing shown changes, error says why ---------------------

WIDGETS = {
    "LayerExplorer": lambda model: LayerExplorer(model, IMAGES),
    "FilterGallery": lambda model: FilterGallery(model, steps=2, patterns_per_page=4),
    "GradCamViewer": lambda model: GradCamViewer(model, IMAGES[0]),
}


@pytest.mark.parametrize(
    "widget, name, bad, message, good",
    [
        ("LayerExplorer", "layer", "conv9", "Unknown layer 'conv9'. Available: conv1, bn", "conv2"),
        ("LayerExplorer", "channel", 8, r"channel 8 is out of range: layer 'conv1' has 8 channels, so use 0\.\.7", 3),
        ("LayerExplorer", "channel", -1, r"channel -1 is out of range.*0\.\.7", 3),
        ("LayerExplorer", "channel", True, r"channel True is out of range.*0\.\.7", 3),
        ("LayerExplorer", "image_index", True, r"image_index True is out of range.*0\.\.3", 2),
        ("LayerExplorer", "image_index", 4, r"image_index 4 is out of range: there are 4 images, so use 0\.\.3", 2),
        ("LayerExplorer", "image_index", -1, r"image_index -1 is out of range.*0\.\.3", 2),
        ("LayerExplorer", "view", "tiles", "Use one of: channel, grid, images", "grid"),
        ("LayerExplorer", "colormap", "virdis", "Did you mean 'viridis'", "magma"),
        ("LayerExplorer", "normalization", "global", "Use one of: channel, layer", "layer"),
        ("FilterGallery", "layer", "conv9", "not a layer of this model. Layers with kernels: conv1, conv2, predictions", "conv2"),
        ("FilterGallery", "layer", "gap", "'gap' has no kernel. Layers with kernels: conv1", "conv2"),
        ("FilterGallery", "channel", 8, r"Filter 8 does not exist: layer 'conv1' has 8 filters, so use 0\.\.7", 3),
        ("FilterGallery", "channel", -1, r"Filter -1 does not exist.*0\.\.7", 3),
        ("FilterGallery", "channel", True, r"Filter True does not exist.*0\.\.7", 3),
        ("FilterGallery", "view", "filters", "Use one of: weights, patterns", "patterns"),
        ("FilterGallery", "bgr", "yes", "'auto', True or False", True),
        ("FilterGallery", "scale", "local", "Use one of: tile, global", "global"),
        ("FilterGallery", "steps", 0, "steps is the number of gradient ascent steps and must be an int >= 1, got 0", 3),
        ("FilterGallery", "steps", True, "steps .* int >= 1, got True", 3),
        ("FilterGallery", "seed", -1, "seed is the seed of the gray-noise start images and must be an int >= 0, got -1", 5),
        ("FilterGallery", "seed", True, "seed .* int >= 0, got True", 5),
        ("FilterGallery", "size", 32, "16x16 images.*size=None", 16),
        ("FilterGallery", "value_range", (1.0, 0.0), "low < high", (0.0, 1.0)),
        ("FilterGallery", "value_range", (1.0, 1.0), r"two finite numbers with low < high, e\.g\. \(0, 255\)", (0.0, 1.0)),
        ("FilterGallery", "value_range", (0.0, np.inf), r"two finite numbers .*got \(0\.0, inf\)", (0.0, 1.0)),
        ("FilterGallery", "value_range", (np.nan, 1.0), r"two finite numbers .*got \(nan, 1\.0\)", (0.0, 1.0)),
        ("FilterGallery", "patterns_per_page", 0, "patterns_per_page .* int >= 1, got 0", 2),
        ("FilterGallery", "patterns_per_page", True, "patterns_per_page .* int >= 1, got True", 2),
        ("GradCamViewer", "class_index", 5, r"class_index 5 is out of range.*5 classes, so use 0\.\.4", 3),
        ("GradCamViewer", "class_index", -1, r"class_index -1 is out of range.*0\.\.4", 3),
        ("GradCamViewer", "layer", "gap", r"output shape \(None, 12\).*4-D output.*conv1, bn, pool1, conv2", "conv1"),
        ("GradCamViewer", "layer", "conv9", "Unknown layer 'conv9'.*conv1, bn, pool1, conv2", "conv1"),
        ("GradCamViewer", "alpha", 1.5, r"opacity and must be in \[0, 1\], got 1\.5", 0.8),
        ("GradCamViewer", "alpha", np.nan, r"must be in \[0, 1\], got nan", 0.8),
        ("GradCamViewer", "evidence", "maybe", "Unknown evidence 'maybe'. Use one of: for, against", "against"),
    ],
)
def test_a_refused_value_changes_nothing_shown_and_says_why(model, widget, name, bad, message, good):
    shown = WIDGETS[widget](model)
    before = everything_shown(shown)
    with pytest.raises(WidgetValueError, match=message) as refused:
        setattr(shown, name, bad)
    assert isinstance(refused.value, ValueError)
    assert shown.error == str(refused.value) and "b00020" in shown._error_line.value
    assert everything_shown(shown) == before
    setattr(shown, name, good)
    assert getattr(shown, name) == good
    assert shown.error == "" and shown._error_line.value == ""


@pytest.mark.parametrize(
    "widget, name, bad",
    [("LayerExplorer", "channel", "seven"), ("FilterGallery", "steps", 2.5), ("GradCamViewer", "alpha", "half")],
)
def test_a_value_of_the_wrong_type_is_shown_like_any_refusal(model, widget, name, bad):
    shown = WIDGETS[widget](model)
    before = everything_shown(shown)
    with pytest.raises(TraitError) as refused:
        setattr(shown, name, bad)
    assert name in shown.error and shown.error == str(refused.value) and "b00020" in shown._error_line.value
    assert everything_shown(shown) == before


# -- dead channels and constant images: finite values, the colormap's bottom colour ----


def assert_first_map_shows_no_value(explorer, view, height, width):
    """The first map drawn is the colormap's bottom colour, or, for a dead channel's grid tile,
    the gray stripes that say "dead" (a colour would read as a value)."""
    tile = explorer.panels()[1][:height, :width]
    first = layer_views.grid_channels(explorer.activation, explorer.channel).start
    if view == "grid" and layer_views.dead_channels(explorer.activation)[first]:
        assert {tuple(colour) for colour in tile.reshape(-1, 3)} <= set(layer_views.HATCH_COLOURS), f"{explorer.layer} {view}"
    else:
        np.testing.assert_array_equal(tile, imaging.colormap(np.zeros((height, width))), err_msg=f"{explorer.layer} {view}")


def test_layer_explorer_shows_constant_maps_of_a_black_image_in_the_bottom_colour(model):
    explorer = LayerExplorer(model, np.zeros((2, 16, 16, 3), "float32"))
    for layer in ("conv1", "bn", "pool1", "conv2", "drop"):  # every map of a black image is flat
        explorer.layer = layer
        height, width = explorer.activation.shape[:2]
        for view in ("channel", "grid", "images"):
            explorer.view = view
            assert_first_map_shows_no_value(explorer, view, height, width)
        assert "nan" not in explorer.readout.value.lower() and "everywhere" in explorer.readout.value
    for layer in ("gap", "predictions"):
        explorer.layer = layer
        assert np.isfinite(explorer.activation).all() and "nan" not in explorer.readout.value.lower()
    assert not np.isnan(explorer.means_chart.bars.y).any()


@pytest.mark.parametrize("dead_channels", [[0], [0, 1, 2, 3]])
def test_layer_explorer_shows_a_dead_channel_in_the_bottom_colour_in_every_view(dead_channels):
    explorer = LayerExplorer(dead_relu_model(dead_channels), IMAGES, channel=0)
    for view in ("channel", "images", "grid"):
        explorer.view = view
        assert_first_map_shows_no_value(explorer, view, 14, 14)
    assert layer_views.dead_channels(explorer.activation)[0]  # so the grid's first tile was the stripes
    assert explorer.means_chart.bars.y[0] == 0 and "nan" not in explorer.readout.value.lower()
    assert "dead (0 everywhere)" in explorer.readout.value


def test_grad_cam_viewer_on_a_black_image_is_flat_and_finite(model):
    # The map is constant up to rounding, which differs between CPUs: it shows as no
    # heat, with a sentence saying why, never as a full-range picture of the rounding.
    viewer = GradCamViewer(model, np.zeros((16, 16, 3), "float32"))
    for class_index in range(5):
        viewer.class_index = class_index
        np.testing.assert_allclose(viewer.heatmap, 0, atol=1e-6)
        assert viewer.heatmap_note.value == f"<i>{html.escape(FLAT_MAP_NOTE)}</i>"
        picture, heatmap, overlay = viewer.panels()
        np.testing.assert_array_equal(heatmap, imaging.colormap(viewer.heatmap, "jet"))
        np.testing.assert_array_equal(overlay, imaging.overlay(picture, viewer.heatmap, viewer.alpha, "jet"))
    assert np.isfinite(viewer.contribution_chart.bars.y).all()


def test_grad_cam_viewer_says_when_a_map_is_flat_only_then(model):
    viewer = GradCamViewer(model, IMAGES[0])
    assert viewer.heatmap.max() > 0.5 and viewer.heatmap_note.value == ""
    viewer.class_index = 4  # every weighted sum negative: empty, with its own note, not flat
    assert "flat map" not in viewer.heatmap_note.value and "is negative" in viewer.heatmap_note.value
    assert "flat map" in GradCamViewer(dead_relu_model([0, 1, 2, 3]), IMAGES[0]).heatmap_note.value


def test_grad_cam_viewer_with_every_channel_dead_shows_no_heat():
    viewer = GradCamViewer(dead_relu_model([0, 1, 2, 3]), IMAGES[0])
    np.testing.assert_array_equal(viewer.heatmap, np.zeros((16, 16)))
    np.testing.assert_array_equal(viewer.panels()[1], imaging.colormap(np.zeros((16, 16)), "jet"))
    assert np.isfinite(viewer.probabilities).all() and not np.any(viewer.contribution_chart.bars.y)


def test_filter_gallery_shows_a_dead_filter_mid_gray_and_its_start_noise_as_pattern():
    dead = dead_relu_model([0])
    gallery = FilterGallery(dead, view="patterns", channel=0, steps=3, patterns_per_page=2, value_range=(0, 1))
    np.testing.assert_array_equal(gallery._weights_filter_picture, np.full_like(gallery._weights_filter_picture, 128))
    gallery.compute_patterns(wait=True)
    # No gradient reaches a dead filter's input: its pattern is the gray-noise start, deprocessed.
    start = cw.filter_patterns(dead, "conv", [0], size=None, steps=0, value_range=(0, 1))[0]
    np.testing.assert_array_equal(gallery.patterns[0], start)
    assert np.isfinite(gallery._filter_line.y).all()


# -- a model that computes NaN --------------------------------------------------------


def test_patterns_that_reach_nan_are_an_error_not_black_pictures(nan_branch_model):
    with pytest.raises(UnsupportedModelError, match=r"filter\(s\) 0, 1 of layer 'after_nan' reached NaN"):
        cw.filter_patterns(nan_branch_model, "after_nan", [0, 1], size=None, steps=2)
    assert cw.filter_patterns(nan_branch_model, "conv", [0, 1], size=None, steps=2).shape == (2, 16, 16, 3)
    gallery = FilterGallery(nan_branch_model, layer="after_nan", view="patterns", steps=2, patterns_per_page=2)
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


def test_a_refused_choice_in_a_control_goes_back_out_of_the_control(nan_branch_model):
    explorer = LayerExplorer(nan_branch_model, IMAGES)
    explorer.layer_dropdown.value = "broken_bn"
    assert "NaN or infinite" in explorer.error
    assert explorer.layer == explorer.layer_dropdown.value == "conv"
