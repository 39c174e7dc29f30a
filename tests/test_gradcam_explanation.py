"""The attribution base and the plain values GradCamViewer shows, checked without ipywidgets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.attribution import ClassActivationMap, GradCam, checked_layer, explainable_layers
from cnnviz_widgets.core.attribution.explanation import ClassExplanation, ImageExplanations, predict
from cnnviz_widgets.core.errors import InputError, UnsupportedModelError
from cnnviz_widgets.core.graph import LayerGraph
from conftest import small_cnn


class HiResCam(ClassActivationMap):
    """HiResCAM (Draelos & Carin 2020): map = ReLU(sum over channels of dS/dA ⊙ A), elementwise."""

    def channel_weights(self, features, gradients):
        return tf.reduce_mean(gradients, axis=[2, 3])

    def channel_terms(self, features, gradients, weights):
        return gradients * features[:, None]


def flatten_head_cnn():
    """Conv layers under a Flatten + Dense head: the gradients vary over space (under global pooling HiResCAM is Grad-CAM)."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    outputs = keras.layers.Dense(5, name="logits")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_a_cam_variant_is_its_formula_on_the_base(images):
    model = flatten_head_cnn()
    classes = [3, 0, 4]
    result = HiResCam(model, "conv2").explain(images, classes)
    grad_model = keras.Model(model.inputs, [model.get_layer("conv2").output, model.output])
    signal = 0.0
    for column, class_index in enumerate(classes):
        with tf.GradientTape() as tape:
            features, scores = grad_model(images, training=False)
            score = scores[:, class_index]
        gradients = tape.gradient(score, features)
        maps = tf.nn.relu(tf.reduce_sum(gradients * features, axis=-1)).numpy()
        expected = np.nan_to_num(maps / maps.max(axis=(1, 2), keepdims=True))
        np.testing.assert_allclose(result.maps[:, column], expected, atol=1e-4, err_msg=f"class {class_index}")
        signal = max(signal, expected.max())
    assert signal > 0
    # Grad-CAM's map from the same gradients differs: the variant's formula is the one used.
    assert not np.allclose(GradCam(model, "conv2").explain(images, classes).maps, result.maps, atol=1e-3)


def test_predictions_are_the_heads_probabilities_best_first():
    model = small_cnn(classes=5)
    model_input = np.random.default_rng(5).uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    names = ["cat", "dog", "cow", "owl", "eel"]
    predictions = predict(LayerGraph.of(model), model_input, 0, names, top_k=3)
    probabilities = np.asarray(model(model_input, training=False))[0]
    expected = np.argsort(-probabilities)[:3].tolist()
    np.testing.assert_allclose(predictions.probabilities, probabilities, rtol=1e-5)
    assert predictions.top_classes == expected
    assert [(c, name) for c, name, _ in predictions.best_first] == [(c, names[c]) for c in expected]
    assert predictions.labels == [names[c] for c in expected]
    with pytest.raises(InputError, match="top_k is how many classes to chart"):
        predict(LayerGraph.of(model), model_input, 0, top_k=0)


def test_repeated_class_names_get_their_index_in_bar_labels():
    model = small_cnn(classes=5)
    model_input = np.random.default_rng(5).uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    predictions = predict(LayerGraph.of(model), model_input, 0, ["crane"] * 5, top_k=2)
    assert predictions.labels == [f"crane ({c})" for c in predictions.top_classes]


def test_long_class_names_are_cut_in_bar_labels_and_stay_distinct():
    model = small_cnn(classes=5)
    model_input = np.random.default_rng(5).uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    names = ["American Staffordshire terrier", "American Staffordshire bull", "cat", "Lakeland terrier", "eel"]
    predictions = predict(LayerGraph.of(model), model_input, 0, names, top_k=5)
    labels = dict(zip(predictions.top_classes, predictions.labels))
    assert labels[2] == "cat (2)" and labels[3] == "Lakeland terrier (3)"
    assert labels[0] == "American Stafford… (0)" and labels[1] == "American Stafford… (1)"
    assert predictions.class_names == names  # the full names stay for the class label


def test_top_channels_are_the_largest_contributions_by_magnitude():
    explanation = ClassExplanation(np.zeros((2, 2)), np.array([0.1, -3.0, 2.0, 0.0, -0.5]), flat=False, empty=False)
    assert explanation.top_channels(3).tolist() == [1, 2, 4]
    assert explanation.top_channels(10).tolist() == [1, 2, 4, 0, 3]


def test_image_explanations_are_grad_cam_at_the_raw_images_size():
    model = small_cnn(classes=5, counter=True)
    model_input = np.random.default_rng(6).uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    classes = [2, 0, 4]
    expected = {layer: GradCam(model, layer).explain(model_input, classes) for layer in ("conv2", "conv1")}
    explanations = ImageExplanations(model, model_input, (24, 20), 0, top_classes=[2, 0])
    calls = model.get_layer("counter").calls
    before = int(calls.numpy())
    for layer, result in expected.items():
        for column, class_index in enumerate(classes):
            explanation = explanations.of(layer, class_index)
            heatmap = np.clip(imaging.resize(result.heatmaps[0, column], (24, 20)), 0, 1)
            np.testing.assert_allclose(explanation.heatmap, heatmap, atol=1e-5)
            np.testing.assert_allclose(explanation.contributions, result.contributions[0, column], rtol=1e-4, atol=1e-7)
    # Per layer, one forward pass for the top-k classes together and one for class 4 alone.
    assert int(calls.numpy()) - before == 2 * 2
    assert explanations.of("conv2", 0) is explanations.of("conv2", 0)


def test_the_layers_grad_cam_accepts_are_the_map_shaped_ones_feeding_the_scores():
    model = small_cnn(classes=5)
    graph = LayerGraph.of(model)
    assert explainable_layers(graph) == ["conv1", "bn", "pool1", "conv2", "drop"]
    assert checked_layer(graph, "pool1") == "pool1"
    with pytest.raises(UnsupportedModelError, match=r"'gap' has output shape \(None, 12\).*4-D output.*Try one of: conv1, bn, pool1, conv2, drop\."):
        checked_layer(graph, "gap")


def test_a_layer_that_does_not_feed_the_output_is_refused_with_the_ones_that_do():
    inputs = keras.Input((8, 8, 1))
    side = keras.layers.Conv2D(2, 3, name="side")(inputs)
    main = keras.layers.Conv2D(2, 3, name="main")(inputs)
    outputs = keras.layers.Dense(3, name="scores")(keras.layers.Flatten()(main))
    graph = LayerGraph.of(keras.Model(inputs, [outputs, side]))
    assert explainable_layers(graph, 0) == ["main"]
    with pytest.raises(UnsupportedModelError, match=r"'side' does not feed model output 0.*Try one of: main\."):
        checked_layer(graph, "side", 0)


def test_counterfactual_explanations_are_kept_apart_with_their_empty_flags():
    model = small_cnn(classes=5, counter=True)
    model_input = np.random.default_rng(6).uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    explanations = ImageExplanations(model, model_input, (16, 16), 0, top_classes=[0, 1, 2, 3, 4])
    for counterfactual in (False, True):
        result = GradCam(model, "conv2", counterfactual=counterfactual).explain(model_input, [0, 1, 2, 3, 4])
        for c in range(5):
            explanation = explanations.of("conv2", c, counterfactual)
            np.testing.assert_allclose(explanation.heatmap, result.heatmaps[0, c], atol=1e-5)
            np.testing.assert_allclose(explanation.contributions, result.contributions[0, c], rtol=1e-4, atol=1e-7)
            assert (explanation.empty, explanation.flat) == (bool(result.empty[0, c]), bool(result.flat[0, c]))
    against = [explanations.of("conv2", c, True) for c in range(5)]
    assert any(explanations.of("conv2", c).empty for c in range(5))
    assert not np.allclose(against[0].heatmap, explanations.of("conv2", 0).heatmap, atol=1e-3)
