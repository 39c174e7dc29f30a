import logging
import os
from collections import OrderedDict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ipywidgets as widgets  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


class CallCounter(keras.layers.Layer):
    """Identity layer that counts how many times the graph really runs it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = tf.Variable(0, trainable=False, dtype=tf.int64)

    def call(self, inputs):
        self.calls.assign_add(1)
        return inputs


def small_cnn(classes=5, size=16, head="dense_softmax", counter=False):
    """A small functional CNN with BN and Dropout; the head's softmax comes in 3 forms."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = inputs
    if counter:
        x = CallCounter(name="counter")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(12, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if head == "dense_softmax":
        outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    elif head == "softmax_layer":
        x = keras.layers.Dense(classes, name="logits")(x)
        outputs = keras.layers.Softmax(name="predictions")(x)
    elif head == "activation_layer":
        x = keras.layers.Dense(classes, name="logits")(x)
        outputs = keras.layers.Activation("softmax", name="predictions")(x)
    else:
        outputs = keras.layers.Dense(classes, name="predictions")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    _randomise_batchnorm(model)
    return model


def _randomise_batchnorm(model):
    """Give BN moving statistics values that differ from a training-mode batch."""
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])


def nested_cnn(levels=1):
    """A Sequential base nested ``levels`` deep in a functional model; returns both."""
    keras.utils.set_random_seed(2)
    base = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
        ],
        name="base",
    )
    _randomise_batchnorm(base)
    innermost = base
    for level in range(1, levels):
        base = keras.Sequential([keras.Input((16, 16, 3)), base], name=f"wrap{level}")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="transfer"), innermost


def is_hidden(widget) -> bool:
    return getattr(getattr(widget, "layout", None), "display", None) == "none"


def shown_widgets(widget, found=None) -> dict:
    """Every widget that ``widget`` shows, reached through its synced traits (children, marks, images…).

    A hidden widget (``layout.display == "none"``) is listed, but not what it holds.
    """
    found = {} if found is None else found
    if isinstance(widget, widgets.Widget) and widget.model_id not in found:
        found[widget.model_id] = widget
        for name in [] if is_hidden(widget) else widget.keys:
            shown_widgets(getattr(widget, name), found)
    elif isinstance(widget, (list, tuple)):
        for item in widget:
            shown_widgets(item, found)
    elif isinstance(widget, dict):
        for item in widget.values():
            shown_widgets(item, found)
    return found


MAIN_ARRAY = {"LayerExplorer": "activation", "FilterGallery": "weights", "GradCamViewer": "heatmap"}


def shown_state(widget) -> list:
    """The synced state of every widget shown but the error line, in a fixed order.

    References between widgets ("IPY_MODEL_<id>") become positions in that order,
    so two widgets showing the same thing have equal states; a hidden widget's
    state is just "hidden".
    """
    shown = [w for w in shown_widgets(widget).values() if w is not widget._error_line]
    position = {f"IPY_MODEL_{w.model_id}": f"widget {i}" for i, w in enumerate(shown)}
    position[f"IPY_MODEL_{widget._error_line.model_id}"] = "error line"

    def by_position(value):
        if isinstance(value, str):
            return position.get(value, value)
        if isinstance(value, (list, tuple)):
            return [by_position(item) for item in value]
        if isinstance(value, dict):
            return {key: by_position(item) for key, item in value.items()}
        return value

    return ["hidden" if is_hidden(w) else by_position(w.get_state()) for w in shown]


def everything_shown(widget) -> tuple:
    """What the front end has, the widget's own traits, its PNG and its main array: all but the error."""
    traits = {name: getattr(widget, name) for name in type(widget).class_own_traits()}
    main = np.array(getattr(widget, MAIN_ARRAY[type(widget).__name__]))
    return shown_state(widget), traits, widget.to_png(), main.shape, main.tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(3).uniform(0, 1, (4, 16, 16, 3)).astype("float32")


def s3_model(name="s3", frozen_dense=False):
    """S3's example: 1,025 parameters, 2 of them (BN's moving statistics) non-trainable.

    padding="same" keeps the 10×10 map, so Dense sees 100 inputs: 10 + 1000 + 11 + 4.
    """
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.Conv2D(1, 3, padding="same", name="L0_conv2d"),
            keras.layers.Flatten(name="L1_flatten"),
            keras.layers.Dense(10, use_bias=False, name="L2_dense"),
            keras.layers.Dense(1, name="L3_dense"),
            keras.layers.BatchNormalization(name="L4_bn"),
        ],
        name=name,
    )
    model.get_layer("L2_dense").trainable = not frozen_dense
    return model


class EvictedAfterTheCheck(OrderedDict):
    """A bounded cache as another thread leaves it: the key is evicted just after `key in cache` said it was there."""

    def __contains__(self, key):
        found = super().__contains__(key)
        self.pop(key, None)
        return found


@pytest.fixture
def retracing_warnings():
    """TensorFlow's "triggered tf.function retracing" warnings logged during the test (a list that fills)."""
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage()) if "retracing" in record.getMessage() else None
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    yield warnings
    logger.removeHandler(handler)
