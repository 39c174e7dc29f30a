"""Models whose images are not simply their 4-D input, and sizes for filter patterns.

What is an image is decided from the layers (a Reshape after a flat or 2-D input);
mixed precision, integer inputs, videos and fixed non-square inputs either work,
checked against an independent computation, or raise one clear CnnvizError.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.errors import InputError, UnsupportedModelError
from cnnviz_widgets.widgets._base import WidgetValueError
from cnnviz_widgets.core.patterns import PatternSearch

L = keras.layers


def classifier(inputs, x, name="model"):
    """``x`` (a feature map) → global pooling → a logits Dense, so Grad-CAM's score is the output."""
    pool = L.GlobalAveragePooling3D() if len(x.shape) == 5 else L.GlobalAveragePooling2D()
    return keras.Model(inputs, L.Dense(3, name="logits")(pool(x)), name=name)


def conv_layers(x, filters=4):
    x = L.Conv2D(filters, 3, activation="relu", name="conv")(x)
    return L.Conv2D(filters, 3, name="conv_b")(x)


def reshaped_mnist(flat=False):
    """The keras.io MNIST way: a 2-D (or flat) input that a Reshape makes a gray image."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((784,) if flat else (28, 28))
    return classifier(inputs, conv_layers(L.Reshape((28, 28, 1), name="to_image")(inputs)), "mnist")


def same_model_on_images(model):
    """``model`` without its Reshape: the same layers and weights on (28, 28, 1) images."""
    inputs = keras.Input((28, 28, 1))
    reference = classifier(inputs, conv_layers(inputs), "mnist_images")
    reference.set_weights(model.get_weights())
    return reference


def digits(count=2):
    """Images that a transposition would change."""
    return np.random.default_rng(5).uniform(0, 255, (count, 28, 28)).astype("float32")


def tape_grad_cam_maps(model, x, layer, class_index):
    """Grad-CAM at the layer's resolution, written out with a GradientTape on a Keras sub-model."""
    sub_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        features, scores = sub_model(x, training=False)
        score = tf.cast(scores, tf.float32)[:, class_index]
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    features = tf.cast(features, tf.float32)
    spatial = tuple(range(1, len(features.shape) - 1))
    weights = tf.reduce_mean(grads, axis=spatial)
    maps = np.maximum((features.numpy() * np.expand_dims(weights.numpy(), spatial)).sum(axis=-1), 0)
    peak = maps.max(axis=spatial, keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def resized(maps, size):
    return tf.image.resize(maps[..., None], size)[..., 0].numpy()


# -- images that a Reshape makes ------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["Input((28, 28))", "Input((784,))"])
def test_grad_cam_of_a_reshaped_input_is_at_the_image_size(flat):
    model = reshaped_mnist(flat)
    x = digits().reshape(2, -1) if flat else digits()
    assert cw.core.attribution.GradCam(model).layer == "conv_b"
    heatmaps = cw.grad_cam(model, x, 1)
    expected = resized(tape_grad_cam_maps(model, x, "conv_b", 1), (28, 28))
    assert heatmaps.shape == (2, 28, 28) and expected.max() > 0
    np.testing.assert_allclose(heatmaps, np.clip(expected, 0, 1), atol=1e-4)


def test_patterns_of_a_reshaped_input_are_those_of_the_same_layers_on_images():
    model = reshaped_mnist()
    reference = same_model_on_images(model)
    search = PatternSearch(model, "conv_b", size=None)
    assert search.image_shape == (28, 28, 1)
    result = search.run([0, 2], steps=4)
    expected = PatternSearch(reference, "conv_b", size=None).run([0, 2], steps=4)
    assert result.final_loss.min() > result.start_loss.min()
    np.testing.assert_allclose(result.images, expected.images, rtol=1e-5, atol=1e-3)
    patterns = cw.filter_patterns(model, "conv_b", [0, 2], size=None, steps=4)
    assert patterns.shape == (2, 28, 28, 1) and patterns.dtype == np.uint8


@pytest.mark.parametrize("flat", [False, True], ids=["Input((28, 28))", "Input((784,))"])
def test_layer_explorer_draws_the_reshaped_input_as_the_image_not_transposed(flat):
    x = digits(3)
    explorer = LayerExplorer(reshaped_mnist(flat), x.reshape(3, -1) if flat else x)
    explorer.image_index = 2
    np.testing.assert_array_equal(explorer.panels()[0], imaging.to_uint8_image(x[2]))


def test_grad_cam_viewer_on_a_reshaped_input():
    model, x = reshaped_mnist(), digits(1)
    viewer = GradCamViewer(model, x[0])
    assert viewer.layer == "conv_b" and "conv" in viewer.layer_names
    np.testing.assert_array_equal(viewer.panels()[0], imaging.to_uint8_image(x[0]))
    for class_index in range(3):
        viewer.class_index = class_index
        expected = resized(tape_grad_cam_maps(model, x, "conv_b", class_index), (28, 28))[0]
        np.testing.assert_allclose(viewer.heatmap, np.clip(expected, 0, 1), atol=1e-4)


def test_a_2d_input_without_reshape_is_still_a_sequence():
    inputs = keras.Input((28, 28))
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling1D()(L.Conv1D(4, 3, name="conv")(inputs))))
    assert cw.grad_cam(model, digits(), 0).shape == (2, 28)
    with pytest.raises(UnsupportedModelError, match="one image input"):
        cw.filter_patterns(model, "conv", [0], size=None)


# -- integer inputs and mixed precision -------------------------------------------------


def scaled_cnn(dtype):
    keras.utils.set_random_seed(6)
    inputs = keras.Input((12, 12, 3), dtype=dtype)
    return classifier(inputs, conv_layers(L.Rescaling(1 / 255, name="scale")(inputs)))


def test_uint8_input_works_as_its_float_twin():
    model, twin = scaled_cnn("uint8"), scaled_cnn("float32")
    twin.set_weights(model.get_weights())
    x = np.random.default_rng(7).integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    np.testing.assert_allclose(cw.activations(model, x)["conv_b"], keras.Model(model.inputs, model.get_layer("conv_b").output)(x), atol=1e-5)
    np.testing.assert_allclose(cw.grad_cam(model, x, 2), cw.grad_cam(twin, x, 2), atol=1e-5)
    patterns = PatternSearch(model, "conv", size=None).run([0, 1], steps=3)
    expected = PatternSearch(twin, "conv", size=None).run([0, 1], steps=3)
    assert np.isfinite(patterns.images).all()
    np.testing.assert_allclose(patterns.images, expected.images, atol=1e-3)


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed_model(request):
    keras.utils.set_random_seed(8)
    keras.mixed_precision.set_global_policy(request.param)
    try:
        inputs = keras.Input((12, 12, 3))
        x = conv_layers(L.Rescaling(1 / 255)(inputs))
        model = keras.Model(inputs, L.Dense(3, dtype="float32", name="logits")(L.GlobalAveragePooling2D()(x)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def test_mixed_precision_everywhere(mixed_model):
    model = mixed_model
    x = np.random.default_rng(9).uniform(0, 255, (2, 12, 12, 3)).astype("float32")
    # float16 keeps ~3 decimal digits, bfloat16 ~2: compare at that precision.
    tolerance = 2e-2 if model.get_layer("conv").compute_dtype == "bfloat16" else 2e-3
    conv = cw.activations(model, x)["conv"]
    assert conv.dtype == np.float32
    np.testing.assert_allclose(conv, keras.Model(model.inputs, model.get_layer("conv").output)(x), rtol=tolerance, atol=tolerance)
    expected = resized(tape_grad_cam_maps(model, x, "conv_b", 0), (12, 12))
    assert expected.max() > 0
    np.testing.assert_allclose(cw.grad_cam(model, x, 0), np.clip(expected, 0, 1), atol=5 * tolerance)
    patterns = cw.filter_patterns(model, "conv_b", [0, 1], size=None, steps=3)
    assert patterns.shape == (2, 12, 12, 3)
    explorer = LayerExplorer(model, x)
    explorer.view = "grid"
    assert imaging.from_png(explorer.to_png()).dtype == np.uint8
    gallery = FilterGallery(model, steps=2)
    gallery.view = "patterns"
    gallery.compute_patterns(wait=True)
    assert imaging.from_png(gallery.to_png()).dtype == np.uint8
    viewer = GradCamViewer(model, x[0])
    assert viewer.heatmap.shape == (12, 12) and np.isfinite(viewer.heatmap).all()


# -- videos --------------------------------------------------------------------


def video_model(kind):
    keras.utils.set_random_seed(10)
    inputs = keras.Input((4, 12, 12, 1))
    if kind == "Conv3D":  # (1, 3, 3) kernels keep the 4 frames: the heatmap's frames are resized maps
        x = L.Conv3D(4, (1, 3, 3), activation="relu", name="conv")(inputs)
    elif kind == "TimeDistributed":
        x = L.TimeDistributed(L.Conv2D(4, 3, activation="relu"), name="conv")(inputs)
    else:
        x = L.ConvLSTM2D(4, 3, name="conv")(inputs)
    return classifier(inputs, x, kind)


def video():
    return np.random.default_rng(11).uniform(0, 1, (2, 4, 12, 12, 1)).astype("float32")


@pytest.mark.parametrize("kind", ["Conv3D", "TimeDistributed"])
def test_grad_cam_of_a_video_is_a_map_per_frame(kind):
    model, x = video_model(kind), video()
    maps = tape_grad_cam_maps(model, x, "conv", 1)  # (2, 4, 10, 10)
    expected = resized(maps.reshape(8, 10, 10), (12, 12)).reshape(2, 4, 12, 12)
    heatmaps = cw.grad_cam(model, x, 1)
    assert heatmaps.shape == (2, 4, 12, 12) and expected.max() > 0
    np.testing.assert_allclose(heatmaps, np.clip(expected, 0, 1), atol=1e-4)


def test_grad_cam_of_a_convlstm_is_at_the_frame_size():
    model, x = video_model("ConvLSTM2D"), video()
    expected = resized(tape_grad_cam_maps(model, x, "conv", 0), (12, 12))
    np.testing.assert_allclose(cw.grad_cam(model, x, 0), np.clip(expected, 0, 1), atol=1e-4)


def test_grad_cam_resizes_volumes_along_the_frames_too():
    inputs = keras.Input((8, 12, 12, 1))
    model = classifier(inputs, L.Conv3D(4, 3, strides=(2, 1, 1), activation="relu", name="conv")(inputs))
    x = np.random.default_rng(12).uniform(0, 1, (1, 8, 12, 12, 1)).astype("float32")
    maps = tape_grad_cam_maps(model, x, "conv", 0)[0]  # (3, 10, 10)
    # Trilinear with half-pixel centres, written per axis with numpy.
    expected = maps
    for axis, (old, new) in enumerate(zip(maps.shape, (8, 12, 12))):
        centres = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        low = np.floor(centres).astype(int)
        high, weight = np.minimum(low + 1, old - 1), centres - low
        shape = [1, 1, 1]
        shape[axis] = new
        expected = np.take(expected, low, axis) * (1 - weight.reshape(shape)) + np.take(expected, high, axis) * weight.reshape(shape)
    np.testing.assert_allclose(cw.grad_cam(model, x, 0)[0], expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["Conv3D", "TimeDistributed", "ConvLSTM2D"])
def test_videos_in_the_widgets_and_patterns(kind):
    model, x = video_model(kind), video()
    with pytest.raises(UnsupportedModelError, match="one image input"):
        cw.filter_patterns(model, "conv", [0], size=None)
    with pytest.raises(UnsupportedModelError, match="cw.grad_cam"):
        GradCamViewer(model, x[0])
    explorer = LayerExplorer(model, x)
    explorer.layer = "conv"
    np.testing.assert_allclose(explorer.activation, keras.Model(model.inputs, model.get_layer("conv").output)(x)[0], atol=1e-5)
    assert imaging.from_png(explorer.to_png()).dtype == np.uint8
    gallery = FilterGallery(model)
    gallery.view = "patterns"
    assert imaging.from_png(gallery.to_png()).dtype == np.uint8


# -- sizes of filter patterns ---------------------------------------------------------


def non_square():
    keras.utils.set_random_seed(13)
    inputs = keras.Input((32, 64, 3))
    return classifier(inputs, conv_layers(inputs))


def test_a_fixed_non_square_model_gets_patterns_of_its_own_size():
    model = non_square()
    patterns = cw.filter_patterns(model, "conv_b", [0, 1], size=None, steps=3)
    assert patterns.shape == (2, 32, 64, 3)
    np.testing.assert_array_equal(cw.filter_patterns(model, "conv_b", [0, 1], size=(32, 64), steps=3), patterns)
    assert PatternSearch.shared(model, "conv_b", size=[32, 64]) is PatternSearch.shared(model, "conv_b")
    for size in (64, 32, (64, 32)):
        with pytest.raises(InputError, match="takes 32x64 images.*size=None"):
            cw.filter_patterns(model, "conv_b", [0], size=size)


def test_filter_gallery_computes_patterns_of_a_non_square_model():
    model = non_square()
    gallery = FilterGallery(model, layer="conv_b", channel=0, steps=3, patterns_per_page=2)
    gallery.view = "patterns"
    assert not gallery.compute_button.disabled
    gallery.compute_patterns(wait=True)
    np.testing.assert_array_equal(gallery.patterns[1], cw.filter_patterns(model, "conv_b", [1], size=None, steps=3)[0])
    gallery.size = (32, 64)
    assert gallery.size == (32, 64) and gallery.error == ""
    with pytest.raises(WidgetValueError, match="takes 32x64 images"):
        gallery.size = 32
    assert gallery.size == (32, 64)


def shrinking(size=None):
    """conv 3×3 → pool 2 → conv 3×3: sides s → s - 2 → (s - 2) // 2 → (s - 2) // 2 - 2."""
    inputs = keras.Input((size, size, 3))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.Conv2D(4, 3, name="conv_b")(L.MaxPooling2D()(x))
    return keras.Model(inputs, x)


def test_a_size_too_small_for_the_layer_names_the_smallest_that_works():
    model = shrinking()
    smallest = min(s for s in range(1, 64) if (s - 2) // 2 - 2 >= 1)
    assert smallest == 8
    with pytest.raises(InputError, match=f"smallest size that works is {smallest}; pass size={smallest}"):
        cw.filter_patterns(model, "conv_b", [0], size=3, steps=1)
    with pytest.raises(InputError, match=f"size={smallest}"):
        cw.filter_patterns(model, "conv_b", [0], size=(smallest - 1, 40), steps=1)
    assert cw.filter_patterns(model, "conv_b", [0], size=smallest, steps=1).shape == (1, 8, 8, 3)
    assert cw.filter_patterns(model, "conv", [0], size=3, steps=1).shape == (1, 3, 3, 3)


@pytest.mark.parametrize("size", [0, -4, (0, 8), (8, -1), 2.5, True, "big", (8, 8, 8)])
def test_sizes_that_are_not_pixel_counts_are_refused(size):
    with pytest.raises(InputError, match="size must be a number of pixels >= 1"):
        cw.filter_patterns(shrinking(), "conv", [0], size=size)


@pytest.mark.parametrize("size", [0, -4, 3])
def test_filter_gallery_refuses_a_bad_size_and_keeps_its_own(size):
    gallery = FilterGallery(shrinking(), layer="conv_b", size=16)
    with pytest.raises(WidgetValueError, match="size"):
        gallery.size = size
    assert gallery.size == 16 and gallery.size_box.value == 16 and "size" in gallery.error
