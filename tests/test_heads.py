"""Classifier heads however the model writes them: probabilities as the model's own predict
gives them, Grad-CAM of the logit as a hand-written GradientTape computes it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets import GradCamViewer
from cnnviz_widgets.core.errors import CnnvizError, InputError, UnknownLayerError, UnsupportedModelError
from cnnviz_widgets.widgets._base import WidgetValueError

SIZE = 8


def dense(units, **options):
    # Spread-out biases give probabilities far from uniform, so a second softmax shows.
    return keras.layers.Dense(units, bias_initializer=keras.initializers.RandomNormal(stddev=2.0, seed=1), **options)


def classifier(head, pixels_head=False):
    """conv → (global average pooling →) ``head``; ``pixels_head`` applies the head per pixel instead."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = features if pixels_head else keras.layers.GlobalAveragePooling2D(name="gap")(features)
    return keras.Model(inputs, head(x))


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(0, 1, (3, SIZE, SIZE, 3)).astype("float32")


def logit_of(model, dense_name="dense"):
    """The pre-activation of Dense ``dense_name`` computed by hand from the pooled feature maps."""
    kernel, bias = model.get_layer(dense_name).get_weights()
    return lambda features: tf.matmul(tf.reduce_mean(features, axis=(1, 2)), kernel) + bias


def tape_grad_cam(model, x, score_of):
    """Grad-CAM written out: ``score_of(conv features)`` (N,) under a GradientTape."""
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    with tf.GradientTape() as tape:
        features = conv(x, training=False)
        tape.watch(features)
        score = score_of(features)
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2))
    heatmap = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights)).numpy()
    peak = heatmap.max(axis=(1, 2), keepdims=True)
    heatmap = np.divide(heatmap, peak, out=np.zeros_like(heatmap), where=peak > 0)
    return tf.image.resize(heatmap[..., None], x.shape[1:3])[..., 0].numpy()


def assert_grad_cam_of(model, x, class_scores, **options):
    """``cw.grad_cam`` of class c equals the tape of ``class_scores(features)[:, c]`` for every class."""
    signal = 0.0
    for c, score_of in enumerate(class_scores):
        expected = tape_grad_cam(model, x, score_of)
        np.testing.assert_allclose(cw.grad_cam(model, x, c, **options), expected, atol=1e-4, err_msg=f"class {c}")
        signal = max(signal, expected.max())
    assert signal > 0


def per_class(logits, classes):
    return [lambda features, c=c: logits(features)[:, c] for c in range(classes)]


SOFTMAX_HEADS = {
    "Dense(activation='softmax')": lambda x: dense(3, activation="softmax", name="dense")(x),
    "Dense(activation=tf.nn.softmax)": lambda x: dense(3, activation=tf.nn.softmax, name="dense")(x),
    "Activation(tf.nn.softmax)": lambda x: keras.layers.Activation(tf.nn.softmax)(dense(3, name="dense")(x)),
    "Activation('softmax')": lambda x: keras.layers.Activation("softmax")(dense(3, name="dense")(x)),
    "Softmax()": lambda x: keras.layers.Softmax()(dense(3, name="dense")(x)),
    "Softmax(axis=1)": lambda x: keras.layers.Softmax(axis=1)(dense(3, name="dense")(x)),
    "keras.ops.softmax": lambda x: keras.ops.softmax(dense(3, name="dense")(x)),
}


@pytest.mark.parametrize("head", SOFTMAX_HEADS)
def test_a_softmax_head_however_written_shows_the_models_probabilities_and_explains_the_logit(head, x):
    model = classifier(SOFTMAX_HEADS[head])
    viewer = GradCamViewer(model, x[0], top_k=3)
    np.testing.assert_allclose(viewer.probabilities, model.predict(x[:1], verbose=0)[0], rtol=1e-5)
    assert "logits" not in viewer.prediction_chart.figure.title
    assert_grad_cam_of(model, x, per_class(logit_of(model), 3))


def test_a_log_softmax_head_shows_its_exponential_and_explains_the_logit(x):
    model = classifier(lambda x: keras.ops.log_softmax(dense(3, name="dense")(x)))
    viewer = GradCamViewer(model, x[0])
    np.testing.assert_allclose(viewer.probabilities, np.exp(model.predict(x[:1], verbose=0)[0]), rtol=1e-5)
    assert_grad_cam_of(model, x, per_class(logit_of(model), 3))


def test_logits_get_one_softmax_in_the_viewer(x):
    model = classifier(lambda x: dense(3, name="dense")(x))
    viewer = GradCamViewer(model, x[0])
    logits = model.predict(x[:1], verbose=0)[0].astype(np.float64)
    np.testing.assert_allclose(viewer.probabilities, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    assert "softmax of the model's logits" in viewer.prediction_chart.figure.title


def binary_scores(model):
    logit = logit_of(model)
    return [lambda features: -logit(features)[:, 0], lambda features: logit(features)[:, 0]]


@pytest.mark.parametrize("activation", [None, "sigmoid", tf.nn.sigmoid])
def test_a_one_unit_head_is_binary_negative_then_positive(activation, x):
    model = classifier(lambda x: dense(1, activation=activation, name="dense")(x))
    viewer = GradCamViewer(model, x[0])
    output = model.predict(x[:1], verbose=0)[0, 0].astype(np.float64)
    positive = output if activation else 1 / (1 + np.exp(-output))
    assert 0.02 < positive < 0.98  # not the 1.0 of a softmax over one value
    np.testing.assert_allclose(viewer.probabilities, [1 - positive, positive], rtol=1e-5)
    assert "class 1: " in viewer.prediction_chart.figure.title and "sigmoid" in viewer.prediction_chart.figure.title
    assert_grad_cam_of(model, x, binary_scores(model))
    for class_index in (0, 1):
        viewer.class_index = class_index
        np.testing.assert_allclose(viewer.heatmap, tape_grad_cam(model, x[:1], binary_scores(model)[class_index])[0], atol=1e-4)


def test_a_multi_label_sigmoid_head_shows_each_class_sigmoid(x):
    model = classifier(lambda x: dense(3, activation="sigmoid", name="dense")(x))
    viewer = GradCamViewer(model, x[0])
    np.testing.assert_allclose(viewer.probabilities, model.predict(x[:1], verbose=0)[0], rtol=1e-5)
    title = viewer.prediction_chart.figure.title
    assert "sigmoid" in title and "softmax" not in title
    assert_grad_cam_of(model, x, per_class(logit_of(model), 3))


# -- class_index: the widget refuses what cw.grad_cam refuses --------------------------


@pytest.mark.parametrize("bad", [2.7, 2.5, "1", True, None, np.nan, "x"])
def test_class_index_that_is_not_an_integer_is_refused_alike(bad, x):
    model = classifier(SOFTMAX_HEADS["Softmax()"])
    with pytest.raises(InputError, match="class_index must be an integer"):
        cw.grad_cam(model, x[:1], bad)
    viewer = GradCamViewer(model, x[0], class_index=1)
    heatmap = viewer.heatmap.copy()
    with pytest.raises(WidgetValueError, match="class_index must be an integer"):
        viewer.class_index = bad
    assert viewer.class_index == 1 and viewer.error
    np.testing.assert_array_equal(viewer.heatmap, heatmap)


def test_integral_float_class_index_is_that_class_in_both(x):
    model = classifier(SOFTMAX_HEADS["Softmax()"])
    np.testing.assert_array_equal(cw.grad_cam(model, x[:1], 2.0), cw.grad_cam(model, x[:1], 2))
    viewer = GradCamViewer(model, x[0])
    viewer.class_index = 2.0
    assert viewer.class_index == 2 and type(viewer.class_index) is int and viewer.class_box.value == 2
    with pytest.raises(WidgetValueError, match="one class"):
        viewer.class_index = [1]


# -- output selection ------------------------------------------------------------------


def two_heads(x):
    return [dense(3, activation="softmax", name="kind")(x), dense(1, name="size")(x)]


@pytest.mark.parametrize("output", [1, "size"])
def test_an_output_chosen_by_index_or_name(output, x):
    model = classifier(two_heads)
    size = logit_of(model, "size")
    assert_grad_cam_of(model, x, [lambda f: -size(f)[:, 0], lambda f: size(f)[:, 0]], output=output)
    viewer = GradCamViewer(model, x[0], output=output)
    positive = 1 / (1 + np.exp(-model.predict(x[:1], verbose=0)[1][0, 0].astype(np.float64)))
    np.testing.assert_allclose(viewer.probabilities, [1 - positive, positive], rtol=1e-5)


@pytest.mark.parametrize("output", ["zeta", "dz"])
def test_a_dict_output_chosen_by_key_or_layer_name(output, x):
    model = classifier(lambda x: {"zeta": dense(2, name="dz")(x), "alpha": dense(3, activation="softmax", name="da")(x)})
    assert_grad_cam_of(model, x, per_class(logit_of(model, "dz"), 2), output=output)
    viewer = GradCamViewer(model, x[0], output="alpha")
    np.testing.assert_allclose(viewer.probabilities, model.predict(x[:1], verbose=0)["alpha"][0], rtol=1e-5)


@pytest.mark.parametrize("output", [1, "inner", "inner/dense"])
def test_an_output_computed_by_a_nested_model_is_chosen_by_keras_output_name_or_path(output, x):
    inner = keras.Sequential([keras.Input((4,)), dense(2, activation="softmax", name="dense")], name="inner")
    model = classifier(lambda x: [dense(3, name="first")(x), inner(x)])
    assert model.output_names == ["first", "inner"]
    assert_grad_cam_of(model, x, per_class(logit_of(inner), 2), output=output)


@pytest.mark.parametrize("output", [2, -1, "nope", True, 1.5])
def test_an_unknown_output_names_the_choices(output, x):
    model = classifier(lambda x: {"zeta": dense(2, name="dz")(x), "alpha": dense(3, activation="softmax", name="da")(x)})
    with pytest.raises(UnknownLayerError, match="output= one of 0 or 'alpha', 1 or 'zeta'"):
        cw.grad_cam(model, x, 0, output=output)
    with pytest.raises(UnknownLayerError, match="output= one of"):
        GradCamViewer(model, x[0], output=output)


def test_a_segmentation_output_scores_a_class_by_its_logit_averaged_over_pixels(x):
    model = classifier(lambda x: keras.layers.Conv2D(3, 1, activation="softmax", name="seg")(x), pixels_head=True)
    kernel, bias = model.get_layer("seg").get_weights()

    def pixel_logits(features):
        return tf.reduce_mean(tf.einsum("nhwc,cd->nhwd", features, kernel[0, 0]) + bias, axis=(1, 2))

    assert_grad_cam_of(model, x, per_class(pixel_logits, 3))
    viewer = GradCamViewer(model, x[0])
    assert viewer.layer == "conv"
    np.testing.assert_allclose(viewer.probabilities, model.predict(x[:1], verbose=0)[0].mean(axis=(0, 1)), rtol=1e-5)
    assert "averaged over pixels" in viewer.prediction_chart.figure.title


def test_an_output_without_a_class_axis_is_refused_with_what_to_pass(x):
    model = classifier(lambda x: [keras.ops.sum(x, axis=-1), dense(2, name="dense")(x)])
    with pytest.raises(UnsupportedModelError, match=r"shape \(None,\).*Pass output="):
        cw.grad_cam(model, x, 0)
    assert issubclass(UnsupportedModelError, CnnvizError)
    assert_grad_cam_of(model, x, per_class(logit_of(model), 2), output=1)


def test_a_model_returning_its_input_too_still_lists_layers_and_explains_its_head(x):
    model = classifier(lambda x: [dense(2, name="dense")(x), x])
    model = keras.Model(model.inputs, [*model.outputs, model.inputs[0]])
    assert cw.layer_names(model) == ["conv", "gap", "dense"]
    assert_grad_cam_of(model, x, per_class(logit_of(model), 2))


@pytest.mark.parametrize("ending", [keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten])
def test_a_feature_extractor_output_is_shown_as_its_values_not_as_probabilities(ending, x):
    # keras.applications.X(include_top=False, pooling="avg") ends in a pooling layer: a softmax over
    # its features would pass for class probabilities.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, ending()(keras.layers.Conv2D(4, 3, name="conv")(inputs)))
    head = cw.core.graph.LayerGraph.of(model).head()
    assert head.value_name == "value" and "not class probabilities" in head.title
    values = cw.core.graph.LayerGraph.of(model).probabilities([x])
    np.testing.assert_allclose(values, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_gradcam_viewer_labels_a_feature_extractors_values_as_values(x):
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs)))
    viewer = GradCamViewer(model, x[0])
    np.testing.assert_allclose(viewer.probabilities, model.predict(x[:1], verbose=0)[0], rtol=1e-5, atol=1e-6)
    assert viewer.prediction_chart.figure.axes[1].label == "value"
    assert ", value " in viewer._class_label.value and "probability" not in viewer._class_label.value
    viewer.close()
