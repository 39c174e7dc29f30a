"""Grad-CAM (core/attribution/): against keras-io's GradientTape algorithm on every kind of head, layer and class batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.attribution import base
from cnnviz_widgets.core.errors import InputError, UnsupportedModelError
from cnnviz_widgets.core.attribution import GradCam
from conftest import nested_cnn, small_cnn


def keras_io_grad_cam(model, images, class_index, layer_name, score_model=None, counterfactual=False):
    """The keras-io / DLwP algorithm, written out with a GradientTape; ``counterfactual`` negates the gradients."""
    score_model = score_model or model
    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, score_model.output])
    with tf.GradientTape() as tape:
        features, scores = grad_model(images, training=False)
        class_score = scores[:, class_index]
    grads = tape.gradient(class_score, features)
    if counterfactual:
        grads = -grads
    weights = tf.reduce_mean(grads, axis=(1, 2))
    heatmap = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights))
    heatmap = heatmap / tf.reduce_max(heatmap, axis=(1, 2), keepdims=True)
    heatmap = tf.image.resize(heatmap[..., None], images.shape[1:3])[..., 0].numpy()
    # keras-io divides 0 by 0 where the ReLU zeroes a whole map; we return zeros.
    return np.nan_to_num(heatmap)


def assert_same_maps_for_every_class(actual_fn, expected_fn, classes=5):
    """Compare per class; some class must give a non-zero map so the test can fail."""
    signal = 0.0
    for class_index in range(classes):
        expected = expected_fn(class_index)
        np.testing.assert_allclose(actual_fn(class_index), expected, atol=1e-4, err_msg=f"class {class_index}")
        signal = max(signal, expected.max())
    assert signal > 0


def logits_model(model, logits_layer):
    return keras.Model(model.inputs, model.get_layer(logits_layer).output)


def without_softmax(model):
    """A copy of ``model`` whose last Dense has its softmax removed (keras-io's way)."""
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.get_layer("predictions").activation = keras.activations.linear
    return reference


def test_softmax_dense_uses_logits_like_keras_io_without_the_softmax(images):
    model = small_cnn(head="dense_softmax")
    reference = without_softmax(model)
    assert_same_maps_for_every_class(
        lambda c: cw.grad_cam(model, images, c), lambda c: keras_io_grad_cam(reference, images, c, "conv2")
    )


@pytest.mark.parametrize("head", ["softmax_layer", "activation_layer"])
def test_separate_softmax_layer_is_skipped(head, images):
    model = small_cnn(head=head)
    logits = logits_model(model, "logits")
    assert_same_maps_for_every_class(
        lambda c: cw.grad_cam(model, images, c), lambda c: keras_io_grad_cam(model, images, c, "conv2", logits)
    )


def test_probabilities_option(images):
    model = small_cnn()
    assert_same_maps_for_every_class(
        lambda c: cw.grad_cam(model, images, c, probabilities=True), lambda c: keras_io_grad_cam(model, images, c, "conv2")
    )


def test_chosen_layer_and_shape(images):
    model = small_cnn()
    heatmaps = cw.grad_cam(model, images, 0, layer="conv1")
    assert heatmaps.shape == (4, 16, 16)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert_same_maps_for_every_class(
        lambda c: cw.grad_cam(model, images, c, layer="conv1"),
        lambda c: keras_io_grad_cam(without_softmax(model), images, c, "conv1"),
    )


def test_many_classes_equal_one_class_at_a_time_and_cost_one_forward_pass(images):
    model = small_cnn(counter=True)
    cam = GradCam(model)
    result = cam.explain(images[:1], [0, 1, 2, 3, 4])
    assert int(model.get_layer("counter").calls.numpy()) == 1
    assert result.heatmaps.shape == (1, 5, 16, 16)
    for k in range(5):
        np.testing.assert_allclose(result.heatmaps[0, k], cw.grad_cam(model, images[:1], k)[0], atol=1e-5)


def test_one_class_per_image(images):
    model = small_cnn()
    heatmaps = cw.grad_cam(model, images, [0, 1, 2, 3])
    for i in range(4):
        np.testing.assert_allclose(heatmaps[i], cw.grad_cam(model, images[i : i + 1], i)[0], atol=1e-5)


def test_contributions_are_weights_times_mean_activation(images):
    model = small_cnn()
    result = GradCam(model).explain(images[:2], [1])
    features = cw.activations(model, images[:2], layers="conv2")["conv2"]
    np.testing.assert_allclose(result.channel_means, features.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(result.contributions[:, 0], result.channel_weights[:, 0] * features.mean(axis=(1, 2)), atol=1e-6)


def test_default_layer_is_the_last_feature_map_before_the_head():
    # small_cnn: conv2 → Dropout (identity at inference, skipped) → global pooling
    assert GradCam(small_cnn()).layer == "conv2"
    assert GradCam(nested_cnn()[0]).layer == "base/c2"


@pytest.mark.parametrize(
    "application, layer",
    [
        (keras.applications.VGG16, "block5_conv3"),
        (keras.applications.ResNet50, "conv5_block3_out"),
        (keras.applications.MobileNetV2, "out_relu"),
    ],
)
def test_default_layer_of_keras_applications(application, layer):
    model = application(weights=None, input_shape=(32, 32, 3), classes=3)
    cam = GradCam(model)
    assert cam.layer == layer
    heatmaps = cam.explain(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)), [0, 2]).heatmaps
    assert heatmaps.shape == (1, 2, 32, 32) and np.isfinite(heatmaps).all()


def test_nested_base_matches_hand_written_tape(images):
    model, base = nested_cnn()
    pixels = images * 255
    with tf.GradientTape() as tape:
        scaled = pixels / 255.0
        features = base(scaled, training=False)
        pooled = tf.reduce_mean(features, axis=(1, 2))
        kernel, bias = model.get_layer("head").get_weights()
        score = (tf.matmul(pooled, kernel) + bias)[:, 2]
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2))
    heatmap = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights))
    heatmap = heatmap / tf.reduce_max(heatmap, axis=(1, 2), keepdims=True)
    expected = tf.image.resize(heatmap[..., None], (16, 16))[..., 0].numpy()
    np.testing.assert_allclose(cw.grad_cam(model, pixels, 2), expected, atol=1e-4)


def test_non_4d_layer_is_refused_with_alternatives(images):
    with pytest.raises(UnsupportedModelError, match=r"needs a 4-D .* Try one of: .*conv2"):
        cw.grad_cam(small_cnn(), images, 0, layer="gap")


@pytest.mark.parametrize("bad", [5, -1, [0, 9, 0, 0]])
def test_class_index_out_of_range(bad, images):
    with pytest.raises(InputError, match=r"use 0..4"):
        cw.grad_cam(small_cnn(), images, bad)


def test_class_list_of_wrong_length(images):
    with pytest.raises(InputError, match="one per image"):
        cw.grad_cam(small_cnn(), images, [0, 1])


def test_model_without_conv_layer_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(UnsupportedModelError, match="no spatial axis to map"):
        cw.grad_cam(model, np.zeros((1, 4)), 0)


def assert_no_heat(result, flat=True):
    np.testing.assert_array_equal(result.flat, np.full(result.classes.shape, flat))
    np.testing.assert_allclose(result.maps, 0, atol=1e-7)
    np.testing.assert_allclose(result.heatmaps, 0, atol=1e-7)


@pytest.mark.parametrize("value", [0.0, 0.5, 200.0])
def test_constant_image_gives_a_flat_map_as_zeros(value):
    # small_cnn's convolutions are unpadded: every position of a constant image gets the
    # same features, so the map is constant up to rounding, which differs between CPUs.
    assert_no_heat(GradCam(small_cnn()).explain(np.full((1, 16, 16, 3), value), [0, 1, 2, 3, 4]))


def constant_feature_model(kernel_scale):
    """A conv whose kernel is ``kernel_scale`` times a random one next to a bias of 1."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(6, 3, name="conv")
    pooled = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="scores")(pooled))
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * kernel_scale, np.ones_like(bias)])
    return model


@pytest.mark.parametrize("kernel_scale", [0.0, 1e-6])
def test_feature_map_constant_to_rounding_gives_a_flat_map_as_zeros(kernel_scale, images):
    # 1e-6 of the bias: the map varies by a few float32 epsilons of its terms, as rounding does.
    assert_no_heat(GradCam(constant_feature_model(kernel_scale)).explain(images, [0, 1, 2]))


def test_feature_map_that_varies_is_not_flat_and_matches_the_tape(images):
    model = constant_feature_model(1e-2)
    assert not GradCam(model).explain(images, [0, 1, 2]).flat.any()
    assert_same_maps_for_every_class(
        lambda c: cw.grad_cam(model, images, c), lambda c: keras_io_grad_cam(model, images, c, "conv"), classes=3
    )


def test_normal_images_are_not_flat_and_match_the_tape(images):
    model = small_cnn()
    result = GradCam(model).explain(images, [0, 1, 2, 3, 4])
    assert not result.flat.any()
    reference = without_softmax(model)
    for c in range(5):
        np.testing.assert_allclose(result.heatmaps[:, c], keras_io_grad_cam(reference, images, c, "conv2"), atol=1e-4)


def test_a_map_of_one_position_is_not_flat_and_matches_the_tape():
    keras.utils.set_random_seed(8)
    inputs = keras.Input((3, 3, 2))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)  # 1×1
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(features)))
    x = np.random.default_rng(8).uniform(0, 1, (6, 3, 3, 2))
    result = GradCam(model).explain(x, [0, 1, 2])
    assert not result.flat.any()
    for c in range(3):
        expected = np.nan_to_num(tape_maps(model, x, "conv", c))  # 1 where the one value is positive, else 0/0
        np.testing.assert_allclose(result.maps[:, c], expected, atol=1e-6)


def identity_map_model():
    """A 1×1 conv of weight 1 and a one-unit head of weight 1: class 1's Grad-CAM map is the image itself."""
    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(1, 1, name="conv")
    pooled = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones", name="score")(pooled))
    conv.set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    return model


def test_a_positive_peak_within_rounding_of_zero_is_no_heat():
    # map = weight × image: -1 everywhere but one pixel at +1e-9, which dividing by the
    # peak would turn into full heat. It is below the rounding of the map's terms.
    model = identity_map_model()
    image = np.full((1, 8, 8, 1), -1.0)
    image[0, 3, 4] = 1e-9
    # A one-unit head is binary: class 1 is the logit (class 0 its negative).
    assert_no_heat(GradCam(model).explain(image, [1]), flat=False)
    image[0, 3, 4] = 1e-2  # well above rounding: full heat at that pixel
    np.testing.assert_allclose(GradCam(model).explain(image, [1]).maps[0, 0], (image[0, ..., 0] > 0).astype(float), atol=1e-6)


def tape_maps(model, x, layer, class_index):
    """Grad-CAM at the layer's resolution from one GradientTape, for 1-D and 2-D feature maps."""
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        features, scores = grad_model(x, training=False)
        score = scores[:, class_index]
    gradients = tape.gradient(score, features)
    spatial = tuple(range(1, len(features.shape) - 1))
    weights = tf.reduce_mean(gradients, axis=spatial, keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1)).numpy()
    return maps / maps.max(axis=spatial, keepdims=True)


def dense_head_cnn(rank=2, classes=6, skip=False):
    """Conv layers, then Flatten and two Dense layers (VGG's head); optionally a residual add."""
    keras.utils.set_random_seed(4)
    conv = keras.layers.Conv2D if rank == 2 else keras.layers.Conv1D
    inputs = keras.Input((12, 12, 3) if rank == 2 else (24, 3))
    x = conv(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    features = conv(8, 3, padding="same", activation="relu", name="conv2")(x)
    if skip:
        features = keras.layers.Add(name="add")([features, x])
    x = keras.layers.Flatten()(features)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x))


@pytest.mark.parametrize("rank, skip, layer", [(2, False, "conv2"), (1, False, "conv2"), (2, True, "conv2"), (2, True, "add")])
def test_dense_head_for_batched_classes_matches_a_tape_per_class(rank, skip, layer):
    model = dense_head_cnn(rank, skip=skip)
    x = np.random.default_rng(5).uniform(0, 1, (3, *model.inputs[0].shape[1:]))
    classes = np.array([[0, 3, 5, 1], [2, 0, 4, 5], [5, 4, 3, 2]])  # 12 rows in the head's backward pass
    result = GradCam(model, layer).explain(x, classes)
    for column in range(classes.shape[1]):
        for image, class_index in enumerate(classes[:, column]):
            expected = tape_maps(model, x[image : image + 1], layer, int(class_index))[0]
            np.testing.assert_allclose(result.maps[image, column], expected, atol=1e-4, err_msg=f"{image}, {class_index}")


@pytest.mark.parametrize("images, classes", [(2, 3), (1, 2), (1, 1)])
def test_dense_head_backward_of_several_rows_runs_on_the_matmul_primitive(images, classes):
    # MatMul's sgemm path is slow for a few rows against a large transposed kernel on some
    # CPUs; the Jacobian's head products are BatchMatMulV2s (see base._matmul_gradient),
    # except for one row, sgemm's fast case.
    cam = GradCam(dense_head_cnn())
    traced = cam._maps.get_concrete_function(tf.TensorSpec((images, 12, 12, 3)), tf.TensorSpec((images, classes), tf.int64))
    operations = {op.type for op in traced.graph.get_operations()}
    assert ("BatchMatMulV2" in operations) == (images * classes > 1)


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_gradient_equals_tensorflows(transpose_a, transpose_b):
    rng = np.random.default_rng(6)
    a = tf.constant(rng.normal(size=(4, 3) if transpose_a else (3, 4)), tf.float32)
    b = tf.constant(rng.normal(size=(5, 4) if transpose_b else (4, 5)), tf.float32)
    weights = tf.constant(rng.normal(size=(3, 5)), tf.float32)

    def product_score():
        return tf.reduce_sum(tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b) * weights)

    @tf.function
    def overridden():
        with tf.compat.v1.get_default_graph().gradient_override_map({"MatMul": base._MATMUL_GRADIENT}):
            score = product_score()
        return tf.gradients(score, [a, b])

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([a, b])
        score = product_score()
    for actual, expected in zip(overridden(), tape.gradient(score, [a, b])):
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_counterfactual_maps_of_batched_classes_match_a_tape_with_negated_gradients(images):
    model = small_cnn()
    reference = without_softmax(model)
    result = GradCam.shared(model, counterfactual=True).explain(images, [0, 1, 2, 3, 4])
    signal = 0.0
    for c in range(5):
        expected = keras_io_grad_cam(reference, images, c, "conv2", counterfactual=True)
        np.testing.assert_allclose(result.heatmaps[:, c], expected, atol=1e-4, err_msg=f"class {c}")
        np.testing.assert_allclose(cw.grad_cam(model, images, c, counterfactual=True), expected, atol=1e-4)
        # Against the class where it is not for it: the two maps never both heat a position.
        assert np.all(np.minimum(result.maps[:, c], GradCam(model).explain(images, [c]).maps[:, 0]) < 1e-6)
        signal = max(signal, expected.max())
    assert signal > 0


def test_counterfactual_of_a_dense_head_for_batched_classes_matches_a_tape_per_class():
    model = dense_head_cnn()
    x = np.random.default_rng(4).uniform(0, 1, (3, 12, 12, 3))
    result = GradCam(model, "conv2", counterfactual=True).explain(x, list(range(6)))
    grad_model = keras.Model(model.inputs, [model.get_layer("conv2").output, model.output])
    for c in range(6):
        with tf.GradientTape() as tape:
            features, scores = grad_model(x, training=False)
            score = scores[:, c]
        weights = tf.reduce_mean(-tape.gradient(score, features), axis=(1, 2), keepdims=True)
        maps = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1)).numpy()
        expected = np.nan_to_num(maps / maps.max(axis=(1, 2), keepdims=True))
        np.testing.assert_allclose(result.maps[:, c], expected, atol=1e-4, err_msg=f"class {c}")


def test_the_counterfactual_grad_cam_is_cached_apart_and_the_default_is_unchanged(images):
    model = small_cnn()
    against = GradCam.shared(model, counterfactual=True)
    assert GradCam.shared(model, counterfactual=True) is against
    assert GradCam.shared(model) is not against and not GradCam.shared(model).counterfactual
    np.testing.assert_allclose(cw.grad_cam(model, images, 1), cw.grad_cam(model, images, 1, counterfactual=False), atol=0)


def test_a_map_negative_everywhere_is_empty_and_its_counterfactual_is_not():
    # map = weight × image with a weight of 1: -1 everywhere but -0.5 at one pixel. Its
    # sums vary (not flat) but none is positive; negated, the map is 1 - 0.5 at that pixel.
    model = identity_map_model()
    image = np.full((1, 8, 8, 1), -1.0)
    image[0, 3, 4] = -0.5
    result = GradCam(model).explain(image, [1])
    assert_no_heat(result, flat=False)
    assert result.empty.tolist() == [[True]]
    against = GradCam(model, counterfactual=True).explain(image, [1])
    assert against.empty.tolist() == [[False]] and against.flat.tolist() == [[False]]
    np.testing.assert_allclose(against.maps[0, 0], -image[0, ..., 0], atol=1e-6)


def test_empty_flags_the_maps_the_relu_zeroes_and_no_other(images):
    result = GradCam(small_cnn()).explain(images, [0, 1, 2, 3, 4])
    peaks = result.maps.max(axis=(2, 3))
    np.testing.assert_array_equal(result.empty, (peaks < 1e-6) & ~result.flat)
    assert result.empty.any() and not result.empty.all()
    assert not GradCam(small_cnn()).explain(np.full((1, 16, 16, 3), 0.5), [0, 1]).empty.any()  # flat, not empty


def test_explainers_that_each_trace_once_do_not_warn_of_retracing(retracing_warnings):
    # TensorFlow counts retracing per function under a bound method, shared by every instance:
    # eight explainers (as a sanity check's randomised copies make) each tracing once must not
    # read as one function retraced eight times, a warning that lands in a notebook.
    for seed in range(8):
        keras.utils.set_random_seed(seed)
        model = small_cnn(classes=3)
        cw.attribute(model, np.random.default_rng(seed).random((2, 16, 16, 3), np.float32), 1, "gradcam")
    assert not retracing_warnings
