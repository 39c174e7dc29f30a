"""The pixel (input-gradient) methods: saliency, SmoothGrad, Integrated Gradients, Guided Backprop.

Each is checked against an independent computation: a hand-written GradientTape of the
class logit with respect to the input, the paper's formula written in numpy around it,
and tf-keras-vis ``Saliency`` (with ``smooth_samples`` for SmoothGrad) where it
implements the same method.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.attribution import IntegratedGradients, Saliency, SmoothGrad
from cnnviz_widgets.core.attribution.attribute import METHODS, method_options
from cnnviz_widgets.core.attribution import explanation
from cnnviz_widgets.core.errors import InputError, StoppedError, UnsupportedModelError

PIXEL_METHODS = ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop")


@pytest.fixture(scope="module")
def demo():
    model = cw.demo.load_model()
    images, _ = cw.demo.load_images()
    return model, images[:2]


def demo_logits(model):
    """The demo model's class logits: its features through the last Dense, without the softmax."""
    features = keras.Model(model.inputs, model.get_layer("dropout").output)
    dense = model.get_layer("predictions")
    return lambda x: features(x, training=False) @ dense.kernel + dense.bias


def tape_gradients(logits, x, class_index):
    """(N, *input) d logit[class_index] / d x, one eager tape."""
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.reduce_sum(logits(x)[:, class_index])
    return tape.gradient(score, x).numpy()


def peak_normalised(maps):
    return maps / maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)


# -- saliency -------------------------------------------------------------------


def test_saliency_is_the_largest_absolute_gradient_over_channels(demo):
    model, x = demo
    gradients = tape_gradients(demo_logits(model), x, 3)
    np.testing.assert_allclose(cw.attribute(model, x, 3, "saliency"), peak_normalised(np.abs(gradients).max(-1)), atol=1e-4)
    np.testing.assert_allclose(cw.attribute(model, x, 3, "saliency", normalize=False), gradients.sum(-1), rtol=1e-3, atol=1e-6)


def test_saliency_matches_tf_keras_vis(demo):
    from tf_keras_vis.saliency import Saliency as PeerSaliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model, x = demo
    peer = PeerSaliency(model, model_modifier=ReplaceToLinear(), clone=True)
    expected = peer(CategoricalScore([1, 4]), x, normalize_map=False)
    np.testing.assert_allclose(cw.attribute(model, x, [1, 4], "saliency"), peak_normalised(expected), atol=1e-4)


def test_classes_of_one_call_equal_one_call_per_class(demo):
    model, x = demo
    saliency = Saliency.shared(model)
    together = saliency.explain(x, [[0, 2, 4], [1, 2, 3]])
    for column, classes in enumerate(([0, 1], [2, 2], [4, 3])):
        alone = saliency.explain(x, np.array(classes)[:, None])  # one class per image
        np.testing.assert_allclose(together.heatmaps[:, column], alone.heatmaps[:, 0], atol=1e-5)
        np.testing.assert_allclose(together.raw[:, column], alone.raw[:, 0], rtol=1e-4, atol=1e-7)


# -- SmoothGrad -----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 64])  # one row a batch; variants split across batches; all in one
def test_smoothgrad_matches_tf_keras_vis_with_the_same_seed(demo, batch_size):
    from tf_keras_vis.saliency import Saliency as PeerSaliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model, x = demo
    samples, noise, seed = 5, 0.2, 7
    peer = PeerSaliency(model, model_modifier=ReplaceToLinear(), clone=True)
    np.random.seed(seed)
    # The paper's mean of signed gradients: no |.| per sample (tf-keras-vis' default modifier), channels kept.
    mean_gradients = peer(CategoricalScore([2, 0]), x, smooth_samples=samples, smooth_noise=noise, gradient_modifier=None, keepdims=True, normalize_map=False)
    result = SmoothGrad(model, samples=samples, noise=noise, seed=seed, batch_size=batch_size).explain(x, [[2], [0]])
    np.testing.assert_allclose(result.attributions[:, 0], mean_gradients, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(result.heatmaps[:, 0], peak_normalised(np.abs(mean_gradients).max(-1)), atol=1e-4)


def test_smoothgrad_is_deterministic_and_the_seed_matters(demo):
    model, x = demo
    first = cw.attribute(model, x, 1, "smoothgrad", samples=4)
    np.testing.assert_array_equal(first, cw.attribute(model, x, 1, "smoothgrad", samples=4))
    assert np.abs(first - cw.attribute(model, x, 1, "smoothgrad", samples=4, seed=1)).max() > 1e-3


def test_smoothgrad_without_noise_is_saliency(demo):
    model, x = demo
    np.testing.assert_allclose(
        cw.attribute(model, x, 2, "smoothgrad", samples=2, noise=1e-12), cw.attribute(model, x, 2, "saliency"), atol=1e-4
    )


# -- Integrated Gradients --------------------------------------------------------


def tape_integrated_gradients(logits, x, baseline, class_index, steps):
    """Equation 3 of the paper, the Riemann sum at the midpoints, one tape per point."""
    mean = sum(tape_gradients(logits, baseline + (k + 0.5) / steps * (x - baseline), class_index) for k in range(steps)) / steps
    return (x - baseline) * mean


def test_integrated_gradients_match_a_riemann_sum_of_tapes(demo):
    model, x = demo
    baseline = np.full_like(x[0], 0.5)
    expected = tape_integrated_gradients(demo_logits(model), x, baseline, 4, steps=8)
    raw = cw.attribute(model, x, 4, "integrated_gradients", normalize=False, steps=8, baseline=baseline, batch_size=5)
    np.testing.assert_allclose(raw, expected.sum(-1), rtol=1e-3, atol=1e-6)
    heatmaps = cw.attribute(model, x, 4, "integrated_gradients", steps=8, baseline=baseline)
    np.testing.assert_allclose(heatmaps, peak_normalised(np.abs(expected.sum(-1))), atol=1e-4)


def completeness_errors(model, x, baseline, steps):
    """|sum of the raw attributions / (score(x) − score(baseline)) − 1| of each image's top class."""
    logits = demo_logits(model)
    top = np.argmax(logits(x), axis=1)
    raw = cw.core.attribution.IntegratedGradients.shared(model, baseline=baseline, steps=steps).explain(x, top[:, None]).raw[:, 0]
    difference = (logits(x) - logits(np.broadcast_to(baseline, x.shape))).numpy()[np.arange(len(x)), top]
    return np.abs(raw.sum(axis=(1, 2)) / difference - 1)


def test_integrated_gradients_are_complete_within_one_percent_at_64_steps():
    """The paper's completeness axiom: the attributions sum to score(x) − score(baseline).

    From a gray baseline, 64 midpoint steps: measured median 0.5 %, at most 1.1 % over 8
    demo images (the error is the Riemann sum's, relative to a difference that is small for some).
    """
    model = cw.demo.load_model()
    images = cw.demo.load_images()[0][::8]
    errors = completeness_errors(model, images, np.full(images.shape[1:], 0.5, "float32"), steps=64)
    assert np.median(errors) <= 0.01 and errors.max() <= 0.03, errors


@pytest.mark.slow
def test_from_black_the_demo_model_needs_many_more_steps():
    """6 of conv1's 16 channels never fire on the training images: bn1 scales them by ~31
    (moving variance ~1e-9), and they fire within the first 1 % of the path from black,
    a steep rise that 64 evenly spaced points miss. More steps converge, as the rule must."""
    model = cw.demo.load_model()
    image = cw.demo.load_images()[0][:1]
    black = np.zeros(image.shape[1:], "float32")
    coarse, fine = completeness_errors(model, image, black, 64), completeness_errors(model, image, black, 1024)
    assert coarse > 0.05 and fine < 0.01, (coarse, fine)


def test_a_baseline_array_is_bound_per_call_and_the_compiled_instance_is_shared(demo):
    model, x = demo
    gray, white = np.full_like(x[0], 0.5), np.ones_like(x)
    on_gray = IntegratedGradients.shared(model, baseline=gray, steps=4)
    on_white = IntegratedGradients.shared(model, baseline=white, steps=4)
    assert on_gray._gradients is on_white._gradients and on_gray.baseline is gray
    logits = demo_logits(model)
    for explainer, baseline in ((on_gray, gray), (on_white, white)):
        expected = tape_integrated_gradients(logits, x, baseline, 1, steps=4)
        np.testing.assert_allclose(explainer.explain(x, 1).raw[:, 0], expected.sum(-1), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("baseline", [np.zeros((3, 3, 3)), np.zeros((5, 64, 64, 3)), "black", np.nan])
def test_a_baseline_that_does_not_fit_is_refused(demo, baseline):
    model, x = demo
    with pytest.raises(InputError, match="baseline must be"):
        cw.attribute(model, x, 0, "integrated_gradients", baseline=baseline, steps=2)


# -- Guided Backprop ---------------------------------------------------------------


def one_relu_model(relu):
    """A convolution, one ReLU and a linear head: (model, conv layer, head layer, name of the ReLU's output layer)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="relu" if relu == "in the conv" else None, name="conv")
    hidden = conv(inputs)
    if relu != "in the conv":
        hidden = (keras.layers.ReLU(name="relu") if relu == "a ReLU layer" else keras.layers.Activation("relu", name="relu"))(hidden)
    head = keras.layers.Dense(4, name="logits")
    return keras.Model(inputs, head(keras.layers.Flatten()(hidden))), conv, head, "conv" if relu == "in the conv" else "relu"


def hand_guided_gradients(conv, head, x, class_index):
    """The guided gradient of one ReLU between a convolution and a linear head: the head's
    weights for the class, kept where positive and where the ReLU fired, back through the conv."""
    x = tf.constant(x, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        pre_activation = tf.nn.conv2d(x, conv.kernel, 1, "SAME") + conv.bias  # linear in x
    weights = np.broadcast_to(head.kernel.numpy()[:, class_index].reshape(1, 6, 6, 3), pre_activation.shape)
    guided = np.where((weights > 0) & (pre_activation.numpy() > 0), weights, 0.0).astype("float32")
    plain = np.where(pre_activation.numpy() > 0, weights, 0.0).astype("float32")
    back = [tape.gradient(pre_activation, x, output_gradients=tf.constant(g)).numpy() for g in (guided, plain)]
    # The plain gradient also passes the negative weights: guided must differ from saliency here.
    assert np.abs(back[0] - back[1]).max() > 1e-2
    return back[0]


@pytest.mark.parametrize("relu", ["in the conv", "a ReLU layer", "an Activation layer"])
def test_guided_backprop_passes_back_only_positive_gradients_where_the_relu_was_open(relu):
    model, conv, head, _ = one_relu_model(relu)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2)).astype("float32")
    expected = hand_guided_gradients(conv, head, x, 2)
    raw = cw.attribute(model, x, 2, "guided_backprop", normalize=False)
    np.testing.assert_allclose(raw, expected.sum(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cw.attribute(model, x, 2, "guided_backprop"), peak_normalised(np.abs(expected).max(-1)), atol=1e-5)


def test_guided_gradcam_is_guided_backprop_times_the_grad_cam_map():
    model, conv, head, relu_output = one_relu_model("a ReLU layer")
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 2)).astype("float32")
    features_model = keras.Model(model.inputs, [model.get_layer(relu_output).output, model.output])
    with tf.GradientTape() as tape:
        features, logits = features_model(x)
        score = tf.reduce_sum(logits[:, 1])
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
    cam = np.maximum((features * weights).numpy().sum(-1), 0)  # 6×6 like the input: no resizing
    cam /= cam.max(axis=(1, 2), keepdims=True)
    expected = hand_guided_gradients(conv, head, x, 1) * cam[..., None]
    np.testing.assert_allclose(cw.attribute(model, x, 1, "guided_gradcam", relu_output, normalize=False), expected.sum(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cw.attribute(model, x, 1, "guided_gradcam", relu_output), peak_normalised(np.abs(expected).max(-1)), atol=1e-5)


# -- what every pixel method shares ----------------------------------------------


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_a_pixel_method_has_no_layer(demo, method):
    model, x = demo
    with pytest.raises(InputError, match="takes no layer; pass layer=None"):
        cw.attribute(model, x, 0, method, layer="conv4")


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_maps_are_in_unit_range_at_the_input_size(demo, method):
    model, x = demo
    maps = cw.attribute(model, x, 0, method, **({"steps": 4} if method == "integrated_gradients" else {}))
    assert maps.shape == x.shape[:3] and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)


def dead_relu_model():
    """Every ReLU closed for inputs in [0, 1]: no gradient reaches the image."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, activation="relu", bias_initializer=keras.initializers.Constant(-100.0), name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_no_gradient_is_a_flat_map_of_zeros_not_noise(method):
    model = dead_relu_model()
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    explained = cw.core.attribution.METHODS[method].shared(model).explain(x, 1)
    assert explained.flat.all() and not np.any(explained.heatmaps) and np.isfinite(explained.heatmaps).all()


def test_models_with_a_preprocess_layer_and_a_reshape_are_mapped_at_the_image_size():
    layers = [
        keras.layers.Rescaling(1 / 255, name="scale"),
        keras.layers.Reshape((28, 28, 1), name="to_image"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="logits"),
    ]

    def model_taking(dtype):  # the same layers; a uint8 input has no gradient in an eager tape
        x = inputs = keras.Input((28, 28), dtype=dtype)
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x)

    model = model_taking("uint8")
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 28)).astype("uint8")
    gradients = tape_gradients(model_taking("float32"), x.astype("float32"), 2)
    np.testing.assert_allclose(cw.attribute(model, x, 2, "saliency"), peak_normalised(np.abs(gradients)), atol=1e-4)


def test_a_sequence_model_gets_one_value_per_step():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((30, 2))
    x = keras.layers.Conv1D(4, 5, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling1D()(x)))
    x = np.random.default_rng(0).normal(size=(2, 30, 2)).astype("float32")
    raw = cw.attribute(model, x, 1, "integrated_gradients", normalize=False, steps=16)
    np.testing.assert_allclose(raw, tape_integrated_gradients(model, x, np.zeros_like(x), 1, steps=16).sum(-1), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_multi_input_and_flat_input_models_are_refused_clearly(method):
    image, mask = keras.Input((8, 8, 3)), keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3)(keras.layers.Concatenate()([image, mask]))
    two_inputs = keras.Model([image, mask], keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(UnsupportedModelError, match="this model has 2 inputs"):
        cw.attribute(two_inputs, [np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 1))], 0, method)
    vector = keras.Input((6,))
    flat = keras.Model(vector, keras.layers.Dense(2)(vector))
    with pytest.raises(UnsupportedModelError, match="no spatial axis to map"):
        cw.attribute(flat, np.zeros((1, 6)), 0, method)


def test_bad_options_are_refused(demo):
    model, x = demo
    with pytest.raises(InputError, match="samples is how many noisy copies"):
        cw.attribute(model, x, 0, "smoothgrad", samples=0)
    with pytest.raises(InputError, match="steps is how many points"):
        cw.attribute(model, x, 0, "integrated_gradients", steps=2.5)
    with pytest.raises(InputError, match="batch_size is how many"):
        cw.attribute(model, x, 0, "saliency", batch_size=0)


UNKNOWN_OPTION = {"saliency": "counterfactual", "guided_gradcam": "counterfactual", "gradcam": "steps"}


@pytest.mark.parametrize("method", list(METHODS))
def test_an_unknown_option_is_refused_with_the_options_the_method_takes(demo, method):
    model, x = demo
    option = UNKNOWN_OPTION.get(method, "colour")
    with pytest.raises(InputError, match=rf"{re.escape(method)} has no option {option}; its options are .*probabilities"):
        cw.attribute(model, x, 0, method, **{option: True})


def test_every_option_named_in_the_refusal_is_one_the_method_takes():
    expected = {
        "gradcam": {"probabilities", "counterfactual"},
        "scorecam": {"probabilities", "counterfactual", "batch_size", "top_channels", "channel_softmax"},
        "smoothgrad": {"samples", "noise", "seed", "probabilities", "batch_size"},
        "integrated_gradients": {"baseline", "steps", "probabilities", "batch_size"},
        "guided_gradcam": {"probabilities", "batch_size"},
        "saliency": {"probabilities", "batch_size"},
    }
    for method, options in expected.items():
        assert set(method_options(method)) == options, method
    assert set(method_options("gradcam++")) == set(method_options("layercam")) == expected["gradcam"]


@pytest.mark.slow
def test_vgg16_at_64_pixels():
    model = keras.applications.VGG16(weights=None, input_shape=(64, 64, 3), classes=4, classifier_activation=None)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    gradients = tape_gradients(model, x, 2)
    np.testing.assert_allclose(cw.attribute(model, x, 2, "saliency"), peak_normalised(np.abs(gradients).max(-1)), atol=1e-4)
    raw = cw.attribute(model, x, 2, "integrated_gradients", normalize=False, steps=2)
    np.testing.assert_allclose(raw, tape_integrated_gradients(model, x, np.zeros_like(x), 2, steps=2).sum(-1), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method, option", [("integrated_gradients", {"steps": 8}), ("smoothgrad", {"samples": 8})])
def test_many_pass_methods_report_progress_and_stop_when_asked(demo, method, option):
    model, images = demo
    explainer = METHODS[method].shared(model, batch_size=4, **option)
    inputs = [images[:2]]
    reports = []
    result = explainer._explain_prepared(inputs, [[1]] * 2, progress=lambda done, total: reports.append((done, total)))
    assert reports == [(done, 4) for done in range(5)]  # 2 images × 8 passes in batches of 4, then the end
    np.testing.assert_allclose(result.heatmaps, explainer.explain(images[:2], 1).heatmaps, atol=1e-6)
    with pytest.raises(StoppedError, match="stopped after 2 of 4"):
        explainer._explain_prepared(inputs, [[1]] * 2, progress=lambda done, total: done == 2)
    assert explanation.method_reports_progress(method) and not explanation.method_reports_progress("saliency")
