"""The model-kind matrix: every technique and every widget on every kind of Keras model.

Each cell either works, checked against an independent computation, or raises one
clear error. ``docs/MODEL_MATRIX.md`` is this matrix as a table; regenerate it with
``python tests/test_model_matrix.py`` after a change.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).parent))

import cnnviz_widgets as cw  # noqa: E402
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer  # noqa: E402
from cnnviz_widgets.core import imaging  # noqa: E402
from cnnviz_widgets.core.errors import CnnvizError  # noqa: E402
from cnnviz_widgets.core.graph import SEPARATOR  # noqa: E402
from conftest import nested_cnn, small_cnn  # noqa: E402

MATRIX_DOC = Path(__file__).parent.parent / "docs" / "MODEL_MATRIX.md"


# -- the rows: model kinds ------------------------------------------------------


def _sequential_layers():
    return [
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ]


def sequential_built_by_build():
    model = keras.Sequential(_sequential_layers())
    model.build((None, 12, 12, 3))
    return model


def sequential_built_by_a_call():
    model = keras.Sequential(_sequential_layers())
    model(np.zeros((1, 12, 12, 3), "float32"))
    return model


def sequential_never_built():
    return keras.Sequential(_sequential_layers(), name="unbuilt")


def functional_with_batchnorm_and_dropout():
    return small_cnn()


def base_nested_in_sequential():
    _, base = nested_cnn()
    return keras.Sequential([keras.Input((16, 16, 3)), base, keras.layers.Flatten(name="flat"), keras.layers.Dense(3, activation="softmax", name="out")])


def base_nested_in_functional():
    return nested_cnn()[0]


def base_nested_two_levels_deep():
    return nested_cnn(levels=2)[0]


def multi_input():
    image, extra = keras.Input((12, 12, 3), name="image"), keras.Input((12, 12, 1), name="mask")
    x = keras.layers.Concatenate(name="join")([image, extra])
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model([image, extra], keras.layers.Dense(3, activation="softmax", name="out")(x))


def multi_output():
    image = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(x)
    size = keras.layers.Dense(1, name="size")(x)
    return keras.Model(image, [kind, size])


def subclassed():
    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.out = keras.layers.Dense(3, activation="softmax")

        def call(self, x):
            return self.out(self.pool(self.conv(x)))

    net = Net(name="net")
    net(np.zeros((1, 12, 12, 3), "float32"))
    return net


def application(constructor, **kwargs):
    return lambda: constructor(weights=None, input_shape=(32, 32, 3), classes=4, **kwargs)


def mobilenet_nested_dotted_name():
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    return keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(3, activation="softmax", name="out")])


def conv1d():
    inputs = keras.Input((40, 2))
    x = keras.layers.Conv1D(4, 5, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))


def no_conv_layer():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))


def _head(x):
    pool = keras.layers.GlobalAveragePooling3D if len(x.shape) == 5 else keras.layers.GlobalAveragePooling2D
    return keras.layers.Dense(3, activation="softmax", dtype="float32", name="out")(pool(name="gap")(x))


def reshaped_mnist():
    """The keras.io MNIST way: a (28, 28) input that a Reshape makes a gray image."""
    inputs = keras.Input((28, 28))
    x = keras.layers.Reshape((28, 28, 1), name="to_image")(inputs)
    return keras.Model(inputs, _head(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)))


def uint8_input():
    inputs = keras.Input((12, 12, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    return keras.Model(inputs, _head(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)))


def mixed_precision(policy):
    def build():
        keras.mixed_precision.set_global_policy(policy)
        try:
            inputs = keras.Input((12, 12, 3))
            x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
            return keras.Model(inputs, _head(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    return build


def video(feature_layer):
    # (1, 3, 3) kernels keep the frames, so the heatmap's frames are the maps resized.
    return lambda: keras.Model(inputs := keras.Input((4, 12, 12, 1)), _head(feature_layer(inputs)))


def non_square():
    inputs = keras.Input((32, 64, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv_b")(x)
    return keras.Model(inputs, _head(x))


def saved_and_loaded():
    # A folder of its own: both xdist workers build this row, and a shared file would race.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        small_cnn().save(path)
        return cw.load_model(path)


MODELS = {
    "Sequential, no Input, build()": sequential_built_by_build,
    "Sequential, no Input, first call": sequential_built_by_a_call,
    "Sequential, never built": sequential_never_built,
    "functional with BN + Dropout": functional_with_batchnorm_and_dropout,
    "base nested in Sequential": base_nested_in_sequential,
    "base nested in functional": base_nested_in_functional,
    "base nested two levels deep": base_nested_two_levels_deep,
    "multi-input functional": multi_input,
    "multi-output functional": multi_output,
    "subclassed keras.Model": subclassed,
    "VGG16 (weights=None, 32 px)": application(keras.applications.VGG16),
    "ResNet50 (weights=None, 32 px)": application(keras.applications.ResNet50),
    "MobileNetV2 (weights=None, 32 px)": application(keras.applications.MobileNetV2),
    "EfficientNetB0 (weights=None, 32 px)": application(keras.applications.EfficientNetB0),
    "MobileNetV2 nested, dotted name": mobilenet_nested_dotted_name,
    "1-D conv": conv1d,
    "no conv layer": no_conv_layer,
    "saved to .keras and loaded": saved_and_loaded,
    "Input((28, 28)) + Reshape (keras.io MNIST)": reshaped_mnist,
    "uint8 input + Rescaling": uint8_input,
    "mixed_float16": mixed_precision("mixed_float16"),
    "mixed_bfloat16": mixed_precision("mixed_bfloat16"),
    "fixed 32×64 input": non_square,
    "Conv3D video": video(lambda x: keras.layers.Conv3D(4, (1, 3, 3), activation="relu", name="conv")(x)),
    "TimeDistributed(Conv2D) video": video(
        lambda x: keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3, activation="relu"), name="conv")(x)
    ),
    "ConvLSTM2D video": video(lambda x: keras.layers.ConvLSTM2D(4, 3, name="conv")(x)),
}


@functools.lru_cache(maxsize=None)
def model_named(name):
    keras.utils.set_random_seed(0)
    return MODELS[name]()


def sample_inputs(model, count=2):
    rng = np.random.default_rng(0)
    try:
        shapes = [tuple(t.shape) for t in model.inputs]
    except AttributeError:  # unbuilt Sequential, subclassed model: they are refused anyway
        shapes = [(None, 12, 12, 3)]
    dtypes = [getattr(t, "dtype", "float32") for t in getattr(model, "inputs", None) or [None]]
    arrays = [
        rng.integers(0, 256, (count, *shape[1:])).astype(dtype) if "int" in str(dtype) else rng.uniform(0, 1, (count, *shape[1:])).astype("float32")
        for shape, dtype in zip(shapes, dtypes)
    ]
    return arrays if len(arrays) > 1 else arrays[0]


def image_shape(model):
    """The images the layers see: the input's, or what the first Reshape makes of it."""
    reshapes = [layer for layer in model.layers if isinstance(layer, keras.layers.Reshape) and len(model.inputs[0].shape) < 4]
    return tuple((reshapes[0].output if reshapes else model.inputs[0]).shape[1:])


# -- independent computations ----------------------------------------------------


def declared_layer_names(model, prefix=""):
    """Leaf layers from model.layers, recursively: the names users read in summary()."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += declared_layer_names(layer, prefix + layer.name + SEPARATOR)
        elif not isinstance(layer, keras.layers.InputLayer):
            names.append(prefix + layer.name)
    return names


def resolve(model, path):
    layer = model
    for part in path.split(SEPARATOR):
        layer = layer.get_layer(part)
    return layer


def kernel_layers(model):
    return [p for p in declared_layer_names(model) if getattr(resolve(model, p), "kernel", None) is not None]


def first_kernel_layer(model):
    # An unbuilt model has no kernels yet: ask for its first layer, which is refused.
    return (kernel_layers(model) or declared_layer_names(model))[0]


def recorded_call(layer):
    """Wrap ``layer.call`` so the layer's output in an eager model call is kept."""
    store = {}
    original = layer.call

    def call(*args, **kwargs):
        store["output"] = original(*args, **kwargs)
        return store["output"]

    layer.call = call
    return store


def eager_outputs(model, x):
    """``model(x)`` in inference mode, as a list of numpy arrays (one per model output)."""
    outputs = model(x, training=False)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def eager_layer_output(model, x, path):
    """The output of layer ``path`` during a plain eager ``model(x)`` call."""
    layer = resolve(model, path)
    store = recorded_call(layer)
    try:
        model(x, training=False)
    finally:
        del layer.call
    return np.asarray(store["output"])


@contextlib.contextmanager
def logits_head(model):
    """The model's first output without its softmax: the class logits the widgets explain."""
    head = model.outputs[0]._keras_history.operation
    assert head.activation.__name__ == "softmax", "every matrix model ends in Dense(softmax)"
    softmax, head.activation = head.activation, keras.activations.linear
    try:
        yield
    finally:
        head.activation = softmax


def tape_grad_cam(model, x, path, class_index):
    """Grad-CAM of the first output with a tape around a plain eager model call."""
    features, grads = tape_features_and_gradients(model, x, path, class_index)
    spatial = tuple(range(1, len(features.shape) - 1))
    weights = np.mean(grads, axis=spatial)
    return peak_one_at_input_size(model, (features * np.expand_dims(weights, spatial)).sum(axis=-1))


def tape_features_and_gradients(model, x, path, class_index):
    """Layer ``path``'s output and the gradient of the first output's class score, as float64, from
    a tape around a plain eager model call."""
    layer = resolve(model, path)
    store = recorded_call(layer)
    try:
        with tf.GradientTape() as tape:
            output = model(x, training=False)
            output = output[0] if isinstance(output, (list, tuple)) else output
            score = output[:, class_index]
        features = store["output"]
        grads = tape.gradient(score, features)
    finally:
        del layer.call
    return features.numpy().astype(np.float64), grads.numpy().astype(np.float64)


def peak_one_at_input_size(model, sums):
    """(N, *spatial) channel sums: ReLU, divided by each map's peak, resized to the input's size."""
    spatial = tuple(range(1, sums.ndim))
    heatmap = np.maximum(sums, 0)
    peak = heatmap.max(axis=spatial, keepdims=True)
    heatmap = np.divide(heatmap, peak, out=np.zeros_like(heatmap), where=peak > 0)
    # The input's spatial axes as the layers see them; a map with fewer (a ConvLSTM2D's) is per frame.
    size = image_shape(model)[:-1][-len(spatial) :]
    if len(spatial) == 1:  # a sequence: resize it as a one-pixel-wide image
        return tf.image.resize(heatmap[..., None, None], (size[0], 1))[..., 0, 0].numpy()
    assert heatmap.shape[1:-2] == size[:-2], "the matrix's videos keep their frames: only the frames resize"
    frames = tf.image.resize(heatmap.reshape(-1, *heatmap.shape[-2:], 1), size[-2:])[..., 0].numpy()
    return frames.reshape(*heatmap.shape[:-2], *size[-2:])


def heatmap_tolerance(model):
    """float16 and bfloat16 keep 3 and 2 significant digits: the eager and the compiled pass round differently."""
    return 1e-4 if model.dtype_policy.compute_dtype == "float32" else 2e-2


# -- the columns: techniques ---------------------------------------------------


def check_layer_names(model):
    assert cw.layer_names(model) == declared_layer_names(model)


def check_activations(model):
    x = sample_inputs(model)
    names = cw.layer_names(model)
    result = cw.activations(model, x)
    assert list(result) == names
    # The last declared layer computes the model's last output.
    np.testing.assert_allclose(result[names[-1]], eager_outputs(model, x)[-1], atol=1e-4)


def check_filter_weights(model):
    path = first_kernel_layer(model)
    np.testing.assert_array_equal(cw.filter_weights(model, path), resolve(model, path).kernel.numpy())


def check_filter_patterns(model):
    path = first_kernel_layer(model)
    patterns = cw.filter_patterns(model, path, [0, 1], size=None, steps=3)
    assert patterns.shape == (2, *image_shape(model)) and patterns.dtype == np.uint8


def check_grad_cam(model):
    x = sample_inputs(model)
    cam = cw.core.attribution.GradCam(model, probabilities=True)
    heatmaps = cw.grad_cam(model, x, 1, probabilities=True)
    np.testing.assert_allclose(heatmaps, tape_grad_cam(model, x, cam.layer, 1), atol=heatmap_tolerance(model))


def check_layer_explorer(model):
    x = sample_inputs(model)
    explorer = LayerExplorer(model, x)
    names = declared_layer_names(model)
    assert explorer.layer_names == names
    explorer.image_index = 1
    # The default layer (the first feature map), then the last layer: the model's output.
    np.testing.assert_allclose(explorer.activation, eager_layer_output(model, x, explorer.layer)[1], atol=1e-4)
    explorer.layer = names[-1]
    np.testing.assert_allclose(explorer.activation, eager_outputs(model, x)[-1][1], atol=1e-4)
    for view in ("grid", "images"):
        explorer.view = view
        assert imaging.from_png(explorer.to_png()).dtype == np.uint8


def check_filter_gallery(model):
    gallery = FilterGallery(model)
    layers = kernel_layers(model)
    assert gallery.layer_names == layers
    assert gallery.layer == next((p for p in layers if resolve(model, p).kernel.ndim >= 3), layers[0])
    for path in (gallery.layer, layers[-1]):
        gallery.layer = path
        np.testing.assert_array_equal(gallery.weights, resolve(model, path).kernel.numpy())
    gallery.view = "patterns"  # nothing computed yet: a blank grid, or why this model has none
    assert imaging.from_png(gallery.to_png()).dtype == np.uint8


def check_gradcam_viewer(model):
    image = sample_inputs(model, count=1)[0]
    viewer = GradCamViewer(model, image)
    probabilities = eager_outputs(model, image[None])[0][0]
    best_first = np.argsort(-probabilities, kind="stable")
    assert [c for c, _, _ in viewer.predictions] == best_first[: len(viewer.predictions)].tolist()
    for class_index in best_first[:2]:
        viewer.class_index = int(class_index)
        with logits_head(model):
            expected = tape_grad_cam(model, image[None], viewer.layer, class_index)[0]
        np.testing.assert_allclose(viewer.heatmap, expected, atol=heatmap_tolerance(model))


def eigen_cam_sums(features):
    """Each image's centred (positions, channels) map on its first right singular vector (numpy's SVD), signed
    to correlate with the summed activation."""
    sums = []
    for image in features:
        matrix = image.reshape(-1, image.shape[-1])
        centred = matrix - matrix.mean(axis=0)
        projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        sums.append(projection * (1.0 if projection @ matrix.sum(axis=1) >= 0 else -1.0))
    return np.stack(sums).reshape(features.shape[:-1])


def gradcam_plus_plus_sums(features, grads):
    """Chattopadhyay et al. 2018, Eq. 19 (exp-score closed form), with the authors' normalised alphas."""
    spatial = tuple(range(1, features.ndim - 1))
    squared = grads**2
    denominator = 2 * squared + grads**3 * features.sum(axis=spatial, keepdims=True)
    alphas = np.where(squared == 0, 0.0, squared / np.where(squared == 0, 1.0, denominator))
    alphas /= np.where(alphas.sum(axis=spatial, keepdims=True) == 0, 1.0, alphas.sum(axis=spatial, keepdims=True))
    weights = (alphas * np.maximum(grads, 0)).sum(axis=spatial, keepdims=True)
    return (features * weights).sum(axis=-1)


CAM_SUMS = {
    "gradcam++": gradcam_plus_plus_sums,
    "hirescam": lambda features, grads: (features * grads).sum(axis=-1),
    "layercam": lambda features, grads: (features * np.maximum(grads, 0)).sum(axis=-1),
    "eigencam": lambda features, grads: eigen_cam_sums(features),
}


def masked_score(model, x, features, image, channel, class_index):
    """The first output's class score for input ``x[image]`` masked by ``channel``'s map, upsampled and min-max normalised."""
    first = x[0] if isinstance(x, list) else x
    pictures = first.reshape(len(first), *image_shape(model))
    channel_map = np.moveaxis(features[image : image + 1], -1, 0)[channel : channel + 1]
    mask = cw.core.attribution.base.resize_maps(channel_map, pictures.shape[1:-1], clip=False).numpy()[0, 0]
    span = mask.max() - mask.min()
    mask = (mask - mask.min()) / span if span > 0 else np.zeros_like(mask)
    masked = (pictures[image] * mask.reshape(*[1] * (pictures.ndim - 2 - mask.ndim), *mask.shape, 1)).reshape(first.shape[1:])
    masked = masked.astype(first.dtype) if first.dtype.kind == "f" else np.round(masked).astype(first.dtype)
    inputs = [masked[None]] + [other[image : image + 1] for other in (x[1:] if isinstance(x, list) else [])]
    return float(eager_outputs(model, inputs if len(inputs) > 1 else inputs[0])[0][0, class_index])


def check_cam_family(model):
    """Each CAM method against its formula on a taped eager call; Score-CAM's weights against masked eager calls."""
    x = sample_inputs(model)
    layer = cw.core.attribution.GradCam(model, probabilities=True).layer
    features, grads = tape_features_and_gradients(model, x, layer, 1)
    for method, sums in CAM_SUMS.items():
        heatmaps = cw.attribute(model, x, 1, method=method, probabilities=True)
        np.testing.assert_allclose(heatmaps, peak_one_at_input_size(model, sums(features, grads)), atol=heatmap_tolerance(model), err_msg=method)
    result = cw.core.attribution.ScoreCam.shared(model, layer, output=0).explain(x, 1)  # weighs by the logit
    weights = result.channel_weights[:, 0]
    np.testing.assert_allclose(weights.sum(axis=-1), 1, atol=1e-5)
    spatial = tuple(range(1, features.ndim - 1))
    scored = np.argsort(-weights[0])[[0, -1]]  # the channels of highest and lowest weight
    with logits_head(model):
        scores = [masked_score(model, x, features, 0, channel, 1) for channel in scored]
    np.testing.assert_allclose(np.log(weights[0, scored[0]] / weights[0, scored[1]]), scores[0] - scores[1], atol=10 * heatmap_tolerance(model))
    expected = peak_one_at_input_size(model, (features * np.expand_dims(weights, spatial)).sum(axis=-1))
    np.testing.assert_allclose(result.heatmaps[:, 0], expected, atol=heatmap_tolerance(model))
def float_twin(model):
    """The model's own layers behind a float32 input: an integer input cuts an eager tape's gradient."""
    if not any("int" in str(t.dtype) for t in model.inputs):
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], dtype="float32")
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


def tape_pixel_attributions(model, x, class_index, samples=2, steps=2):
    """(saliency, SmoothGrad, Integrated Gradients) per-channel attributions of the first output's
    probability, from eager tapes: SmoothGrad's noise drawn as its docstring says, IG from zeros."""
    twin = float_twin(model)

    def gradients(inputs):
        inputs = tf.constant(inputs, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            output = twin(inputs, training=False)
            score = tf.reduce_sum((output[0] if isinstance(output, (list, tuple)) else output)[:, class_index])
        return tape.gradient(score, inputs).numpy()

    x = np.asarray(x, np.float32)
    axes = tuple(range(1, x.ndim))
    sigma = 0.2 * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True)).astype(np.float64)
    noise = np.random.RandomState(0).normal(0.0, sigma, (samples, *x.shape)).astype(np.float32)
    smooth = sum(gradients(x + n) for n in noise) / samples
    integrated = x * sum(gradients((k + 0.5) / steps * x) for k in range(steps)) / steps
    as_image = (len(x), *image_shape(model))
    return [a.reshape(as_image) for a in (gradients(x), smooth, integrated)]


def check_gradient_family(model):
    x = sample_inputs(model)
    options = {"saliency": {}, "smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2}}
    heatmaps = [cw.attribute(model, x, 1, method, probabilities=True, **settings) for method, settings in options.items()]
    saliency, smooth, integrated = tape_pixel_attributions(model, x, 1)
    for ours, heat in zip(heatmaps, (np.abs(saliency).max(-1), np.abs(smooth).max(-1), np.abs(integrated.sum(-1)))):
        np.testing.assert_allclose(ours, heat / heat.max(axis=tuple(range(1, heat.ndim)), keepdims=True), atol=heatmap_tolerance(model))


TECHNIQUES = {
    "layer_names": check_layer_names,
    "activations": check_activations,
    "filter_weights": check_filter_weights,
    "filter_patterns": check_filter_patterns,
    "grad_cam": check_grad_cam,
    "LayerExplorer": check_layer_explorer,
    "FilterGallery": check_filter_gallery,
    "GradCamViewer": check_gradcam_viewer,
    "CAM family": check_cam_family,
    "gradient family": check_gradient_family,
}


def outcome(model_name, technique):
    """'works', or the error class and message the cell raises."""
    try:
        TECHNIQUES[technique](model_named(model_name))
    except CnnvizError as error:
        return f"{type(error).__name__}: {error}"
    return "works"


# -- what each cell must do -------------------------------------------------------

REFUSED = {
    ("Sequential, never built", technique): "ModelNotBuiltError" for technique in TECHNIQUES
}
REFUSED.update({("subclassed keras.Model", technique): "UnsupportedModelError" for technique in TECHNIQUES})
REFUSED.update(
    {
        ("1-D conv", "filter_patterns"): "UnsupportedModelError",
        ("no conv layer", "filter_patterns"): "UnsupportedModelError",
        ("no conv layer", "grad_cam"): "UnsupportedModelError",
        ("no conv layer", "CAM family"): "UnsupportedModelError",
        ("multi-input functional", "filter_patterns"): "UnsupportedModelError",
        ("multi-input functional", "LayerExplorer"): "UnsupportedModelError",
        ("multi-input functional", "GradCamViewer"): "UnsupportedModelError",
        ("1-D conv", "GradCamViewer"): "UnsupportedModelError",
        ("no conv layer", "GradCamViewer"): "UnsupportedModelError",
        ("multi-input functional", "gradient family"): "UnsupportedModelError",
        ("no conv layer", "gradient family"): "UnsupportedModelError",
    }
)
REFUSED.update(
    {
        (video_kind, technique): "UnsupportedModelError"
        for video_kind in ("Conv3D video", "TimeDistributed(Conv2D) video", "ConvLSTM2D video")
        for technique in ("filter_patterns", "GradCamViewer")
    }
)


@pytest.mark.parametrize("technique", list(TECHNIQUES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_cell(model_name, technique):
    result = outcome(model_name, technique)
    expected = REFUSED.get((model_name, technique), "works")
    assert result.split(":")[0] == expected, result


def render_matrix() -> str:
    header = "| model kind | " + " | ".join(f"`{t}`" for t in TECHNIQUES) + " |"
    rows = [header, "|" + "---|" * (len(TECHNIQUES) + 1)]
    for model_name in MODELS:
        cells = []
        for technique in TECHNIQUES:
            expected = REFUSED.get((model_name, technique), "works")
            cells.append("✓" if expected == "works" else f"refused: `{expected}`")
        rows.append(f"| {model_name} | " + " | ".join(cells) + " |")
    notes = ["", "What a refused cell says (the error's message, which names the way out):", ""]
    for model_name in MODELS:
        columns_by_message = {}
        for technique in TECHNIQUES:
            if (model_name, technique) in REFUSED:
                columns_by_message.setdefault(outcome(model_name, technique), []).append(f"`{technique}`")
        for message, columns in columns_by_message.items():
            error, text = message.split(": ", 1)
            notes.append(f"- **{model_name}**, {', '.join(columns)}: `{error}`: {text}")
    intro = [
        "# Model-kind matrix",
        "",
        "Generated by `python tests/test_model_matrix.py`; `tests/test_model_matrix.py`",
        "checks every cell (✓ = works and matches an independent computation: the model's",
        "own outputs in an eager call, the layers' kernels, Grad-CAM, the CAM family and the gradient",
        "family from hand-written GradientTapes) and that this file is up to date.",
        "",
    ]
    return "\n".join(intro + rows + notes) + "\n"


def test_docs_table_is_up_to_date():
    assert MATRIX_DOC.read_text() == render_matrix(), "run `python tests/test_model_matrix.py` to regenerate"


if __name__ == "__main__":
    MATRIX_DOC.write_text(render_matrix())
    print(f"wrote {MATRIX_DOC}")
