"""The CAM family (core/attribution/): each method against its paper's formula from a hand-written
GradientTape or SVD, and against tf-keras-vis where it implements the same method."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.attribution import METHODS, EigenCam, GradCam, GradCamPlusPlus, HiResCam, LayerCam, ScoreCam
from cnnviz_widgets.core.errors import InputError, StoppedError, UnsupportedModelError
from conftest import CallCounter

CLASSES = np.array([[0, 3, 1], [2, 0, 4]])  # two images, three classes each, explained in one call

# tf-keras-vis calls a Keras 3 model with a list for its single input.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")


def flat_head_cnn(softmax=False, dead=0, counter=False, pool=True):
    """Two convolutions, then Flatten and Dense (VGG's head), so gradients vary over positions.

    ``dead`` channels of conv2 are zero everywhere; ``counter`` counts the model's runs;
    without ``pool`` conv2's map is at the input's resolution.
    """
    keras.utils.set_random_seed(7)
    inputs = keras.Input((12, 12, 3))
    x = CallCounter(name="counter")(inputs) if counter else inputs
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    if pool:
        x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, activation="softmax" if softmax else None, name="predictions")(x)
    model = keras.Model(inputs, outputs)
    if dead:
        kernel, bias = model.get_layer("conv2").get_weights()
        kernel[..., :dead], bias[:dead] = 0.0, -1.0
        model.get_layer("conv2").set_weights([kernel, bias])
    return model


@pytest.fixture
def x():
    return np.random.default_rng(11).uniform(0, 1, (2, 12, 12, 3)).astype("float32")


def features_and_gradients(model, x, layer, class_index):
    """A (N, h, w, C) and dS_c/dA from one GradientTape, S the logit (the model's Dense without softmax)."""
    logits = keras.Model(model.inputs[0], [model.get_layer(layer).output, model.get_layer("predictions").output])
    with tf.GradientTape() as tape:
        features, _ = logits(x, training=False)
        head = model.get_layer("predictions")
        score = tf.matmul(keras.layers.Flatten()(features), head.kernel)[:, class_index] + head.bias[class_index]
    return features.numpy().astype(np.float64), tape.gradient(score, features).numpy().astype(np.float64)


def peak_one(sums):
    """ReLU, then each map divided by its own peak (the base's rule), of (N, h, w) sums."""
    maps = np.maximum(sums, 0)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def gradcam_plus_plus_formula(features, gradients):
    """Chattopadhyay et al. 2018, Eq. 19 (exp-score closed form), with the authors' normalised alphas."""
    squared = gradients**2
    denominator = 2 * squared + gradients**3 * features.sum(axis=(1, 2), keepdims=True)
    alphas = np.where(squared == 0, 0.0, squared / np.where(squared == 0, 1.0, denominator))
    alphas /= alphas.sum(axis=(1, 2), keepdims=True)
    weights = (alphas * np.maximum(gradients, 0)).sum(axis=(1, 2))
    return np.einsum("nhwc,nc->nhw", features, weights)


FORMULAS = {
    GradCamPlusPlus: gradcam_plus_plus_formula,
    HiResCam: lambda features, gradients: (gradients * features).sum(axis=-1),
    LayerCam: lambda features, gradients: (np.maximum(gradients, 0) * features).sum(axis=-1),
}


@pytest.mark.parametrize("method", list(FORMULAS), ids=lambda m: m.name)
def test_batched_classes_match_the_papers_formula_from_a_tape(method, x):
    model = flat_head_cnn()
    result = method(model, "conv2").explain(x, CLASSES)
    grad_cam = GradCam(model, "conv2").explain(x, CLASSES)
    for column in range(CLASSES.shape[1]):
        for image, class_index in enumerate(CLASSES[:, column]):
            features, gradients = features_and_gradients(model, x[image : image + 1], "conv2", int(class_index))
            expected = peak_one(FORMULAS[method](features, gradients))[0]
            np.testing.assert_allclose(result.maps[image, column], expected, atol=1e-4, err_msg=f"{image}, {class_index}")
    # On a Flatten head the methods differ from Grad-CAM, so the comparison above can fail.
    assert np.abs(result.maps - grad_cam.maps).max() > 0.05


def tf_keras_vis_map(visualization, model, x, class_index, layer, **options):
    """A tf-keras-vis CAM at the layer's resolution, before its min-max normalising, divided by its peak."""
    from tf_keras_vis.utils.scores import CategoricalScore

    maps = visualization(model, clone=True)(
        CategoricalScore([class_index] * len(x)), x, penultimate_layer=layer, expand_cam=False, normalize_cam=False, **options
    )
    return np.asarray(maps) / np.asarray(maps).max(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("method, peer", [(GradCamPlusPlus, "GradcamPlusPlus"), (LayerCam, "Layercam")], ids=["gradcam++", "layercam"])
def test_maps_match_tf_keras_vis(method, peer, x):
    visualizations = {
        "GradcamPlusPlus": lambda: __import__("tf_keras_vis.gradcam_plus_plus", fromlist=["x"]).GradcamPlusPlus,
        "Layercam": lambda: __import__("tf_keras_vis.layercam", fromlist=["x"]).Layercam,
    }
    model = flat_head_cnn()
    result = method(model, "conv2").explain(x, [0, 3])
    for column, class_index in enumerate([0, 3]):
        expected = tf_keras_vis_map(visualizations[peer](), model, x, class_index, "conv2")
        np.testing.assert_allclose(result.maps[:, column], expected, atol=1e-4)


def layer_output(model, x, layer):
    return keras.Model(model.inputs[0], model.get_layer(layer).output)(x, training=False).numpy().astype(np.float64)


def eigen_cam_sums(features):
    """Each image's centred (positions, channels) feature map projected on its first right
    singular vector (numpy's SVD), signed to correlate with the summed activation."""
    sums = []
    for image in features:
        matrix = image.reshape(-1, image.shape[-1])
        centred = matrix - matrix.mean(axis=0)
        projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        sums.append(projection * np.sign(projection @ matrix.sum(axis=1)))
    return np.stack(sums).reshape(features.shape[:-1])


def test_eigen_cam_is_the_first_principal_component_from_numpys_svd_for_every_class(x):
    model = flat_head_cnn()
    result = EigenCam(model, "conv2").explain(x, CLASSES)
    expected = peak_one(eigen_cam_sums(layer_output(model, x, "conv2")))
    for column in range(CLASSES.shape[1]):
        np.testing.assert_allclose(result.maps[:, column], expected, atol=1e-4)
    assert expected.std() > 0.1


def test_eigen_cam_is_high_where_the_layer_is_most_active(x):
    model = flat_head_cnn()
    raw = EigenCam(model, "conv2").explain(x, [0]).raw[:, 0]
    activity = tf.image.resize(layer_output(model, x, "conv2").sum(axis=-1)[..., None], (12, 12))[..., 0].numpy()
    for image in range(len(x)):
        assert np.corrcoef(raw[image].ravel(), activity[image].ravel())[0, 1] > 0


def gradient_ops(cam, x, classes):
    graph = cam._maps.get_concrete_function(tf.constant(x), tf.constant(classes)).graph
    return [op.name for op in graph.get_operations() if "gradients" in op.name]


def test_gradient_free_methods_take_no_class_gradients(x):
    model = flat_head_cnn()
    assert gradient_ops(GradCam(model, "conv2"), x, CLASSES)  # the check sees a Jacobian where there is one
    assert not gradient_ops(EigenCam(model, "conv2"), x, CLASSES)


def score_cam_by_hand(model, x, layer, class_index, weights="softmax", top=None):
    """Score-CAM (Wang et al. 2020, Algorithm 1) with one forward pass per channel and image: each
    channel's map upsampled and min-max normalised masks the image; the masked image's class logit,
    softmax over the channels, weighs the channel (``weights="probability"``: its softmax probability
    over the classes, as the authors' code). ``top``: only the channels of largest spatial std."""
    features = layer_output(model, x, layer)
    logits = keras.Model(model.inputs[0], model.get_layer("predictions").output)
    logits.get_layer("predictions").activation = keras.activations.linear if weights == "softmax" else keras.activations.softmax
    sums = []
    for image in range(len(x)):
        channels = range(features.shape[-1])
        if top is not None:
            channels = np.argsort(-features[image].reshape(-1, features.shape[-1]).std(axis=0))[:top]
        scores = []
        for channel in channels:
            upsampled = tf.image.resize(features[image, ..., channel : channel + 1], x.shape[1:3]).numpy()
            span = upsampled.max() - upsampled.min()
            mask = (upsampled - upsampled.min()) / span if span > 0 else np.zeros_like(upsampled)
            scores.append(float(logits(x[image : image + 1] * mask, training=False)[0, class_index]))
        scores = np.array(scores)
        channel_weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum() if weights == "softmax" else scores
        sums.append(features[image][..., list(channels)] @ channel_weights)
    return np.stack(sums)


@pytest.mark.parametrize("top", [None, 3])
def test_score_cam_of_batched_classes_matches_one_pass_per_channel(top, x):
    model = flat_head_cnn(dead=2)
    result = ScoreCam(model, "conv2", batch_size=5, top_channels=top).explain(x, [0, 3])
    for column, class_index in enumerate([0, 3]):
        expected = peak_one(score_cam_by_hand(model, x, "conv2", class_index, top=top))
        np.testing.assert_allclose(result.maps[:, column], expected, atol=1e-4)
    assert np.abs(result.maps[:, 0] - result.maps[:, 1]).max() > 0.01  # the classes' maps differ


@pytest.mark.parametrize("max_n", [None, 4])
def test_score_cam_with_the_masked_probabilities_matches_tf_keras_vis(max_n, x):
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model = flat_head_cnn(softmax=True)
    cam = ScoreCam(model, "conv2", probabilities=True, channel_softmax=False, top_channels=max_n)
    result = cam.explain(x, [1])
    peer = Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)
    # One image a call: with max_N, tf-keras-vis keeps the union of the batch's top channels for every image.
    expected = np.concatenate(
        [peer(CategoricalScore([1]), image[None], penultimate_layer="conv2", max_N=max_n, expand_cam=False, normalize_cam=False) for image in x]
    )
    expected /= expected.max(axis=(1, 2), keepdims=True)
    # tf-keras-vis upsamples the masks with scipy's zoom (corners aligned), we with TF's resize (pixel centres).
    np.testing.assert_allclose(result.maps[:, 0], expected, atol=0.05)
    by_hand = peak_one(score_cam_by_hand(model, x, "conv2", 1, weights="probability", top=max_n))
    np.testing.assert_allclose(result.maps[:, 0], by_hand, atol=1e-4)


def test_identical_masks_cost_one_pass_and_batches_do_not_change_the_map(x):
    model = flat_head_cnn(dead=5, counter=True)
    counter = model.get_layer("counter").calls
    expected = ScoreCam(model, "conv2", batch_size=64).explain(x[:1], [2]).maps
    before = counter.numpy()
    totals = []
    one_by_one = ScoreCam(model, "conv2", batch_size=1).explain(x[:1], [2], progress=lambda done, total: totals.append(total))
    # One forward pass for the features, then 3 live channels and ONE pass for the 5 dead ones.
    assert counter.numpy() - before == 1 + 4 and set(totals) == {4}
    np.testing.assert_allclose(one_by_one.maps, expected, atol=1e-5)


def test_score_cam_reports_progress_and_stops_when_asked(x):
    model = flat_head_cnn()
    cam = ScoreCam(model, "conv2", batch_size=3)
    seen = []
    finished = cam.explain(x, [0], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 16), (3, 16), (6, 16), (9, 16), (12, 16), (15, 16), (16, 16)]
    with pytest.raises(StoppedError, match="after 6 of 16"):
        cam.explain(x, [0], progress=lambda done, total: done >= 6)
    np.testing.assert_allclose(cam.explain(x, [0]).maps, finished.maps, atol=1e-6)  # still usable after a stop


@pytest.mark.parametrize("method", ["eigencam", "scorecam"])
def test_gradient_free_methods_refuse_a_counterfactual(method, x):
    with pytest.raises(InputError, match="no counterfactual"):
        cw.attribute(flat_head_cnn(), x, 0, method=method, counterfactual=True)


@pytest.mark.parametrize("option, value", [("top_channels", 9), ("top_channels", 0), ("batch_size", 0)])
def test_score_cam_refuses_bad_options(option, value, x):
    with pytest.raises(InputError, match=option):
        cw.attribute(flat_head_cnn(), x, 0, method="scorecam", layer="conv2", **{option: value})


# -- cw.attribute -------------------------------------------------------------------


def test_attribute_gradcam_equals_grad_cam(x):
    model = flat_head_cnn()
    np.testing.assert_allclose(cw.attribute(model, x, [1, 4], method="gradcam"), cw.grad_cam(model, x, [1, 4]), atol=1e-6)


def test_an_unknown_method_names_the_methods(x):
    with pytest.raises(InputError) as error:
        cw.attribute(flat_head_cnn(), x, 0, method="gradcam+")
    assert all(name in str(error.value) for name in ("gradcam++", "hirescam", "layercam", "eigencam", "scorecam"))


@pytest.mark.parametrize("method", sorted(set(METHODS) & {"gradcam", "gradcam++", "hirescam", "layercam", "eigencam", "scorecam"}))
def test_normalized_maps_are_the_raw_maps_relu_over_their_peak_at_input_resolution(method, x):
    model = flat_head_cnn(pool=False)  # conv2 at the input's resolution: no resizing between the two
    raw = cw.attribute(model, x, 2, method=method, layer="conv2", normalize=False)
    normalized = cw.attribute(model, x, 2, method=method, layer="conv2")
    assert raw.shape == normalized.shape == (2, 12, 12) and np.isfinite(raw).all()
    assert raw.min() < 0 < raw.max() or method in ("gradcam++", "layercam", "scorecam")  # signed where the formula can be
    np.testing.assert_allclose(normalized, peak_one(raw), atol=1e-5)


def test_score_cam_refuses_masked_scores_that_are_not_finite(x):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    # log of the masked image's sum: -inf where a mask is all zeros (a dead channel's)
    total = keras.layers.Lambda(lambda t: tf.math.log(tf.reduce_sum(t, axis=[1, 2, 3]))[:, None])(inputs)
    scores = keras.layers.Concatenate()([keras.layers.Dense(2)(keras.layers.Flatten()(features)), total])
    model = keras.Model(inputs, scores)
    kernel, bias = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([np.zeros_like(kernel), bias - 1])
    with pytest.raises(UnsupportedModelError, match="masked images"):
        ScoreCam(model, "conv").explain(x, [2])
