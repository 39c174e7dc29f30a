"""A model output seen as a classifier head: its logits, its probabilities, its classes.

Grad-CAM explains a class logit (the score before softmax or sigmoid), while a
viewer shows probabilities. Which is which depends on how the model ends, and a
model can say "softmax" in many ways: ``Dense(activation="softmax")``,
``activation=tf.nn.softmax``, an ``Activation`` or ``Softmax`` layer, or a
``keras.ops.softmax`` node. :func:`classifier_head` recognises them all (and
sigmoid and log-softmax) by what the last operation is, never by a name.

- A softmax head: the logits are its input, the probabilities its output.
- A one-unit head is binary: two classes, 0 = negative (score -logit,
  probability 1 - p) and 1 = positive (score logit, probability p), as Keras'
  binary labels. A one-unit output without sigmoid is taken as the logit.
- A sigmoid head with several units is multi-label: each class its own sigmoid.
- An output with no activation is logits; its probabilities are their softmax.
- A segmentation output (batch, height, width, classes) scores a class by the
  class logit averaged over pixels (pytorch-grad-cam's SemanticSegmentationTarget
  with a full mask, up to a constant factor that Grad-CAM's normalisation removes);
  its probabilities are the per-pixel probabilities averaged over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from . import checks
from .errors import InputError, UnsupportedModelError
from .internals import LogSoftmaxOperation, SigmoidOperation, SoftmaxOperation

SOFTMAX, SIGMOID, LOG_SOFTMAX = "softmax", "sigmoid", "log_softmax"

_ACTIVATION_FUNCTIONS = {
    keras.activations.softmax: SOFTMAX,
    keras.ops.softmax: SOFTMAX,
    tf.nn.softmax: SOFTMAX,
    keras.activations.sigmoid: SIGMOID,
    keras.ops.sigmoid: SIGMOID,
    tf.nn.sigmoid: SIGMOID,
    keras.activations.log_softmax: LOG_SOFTMAX,
    keras.ops.log_softmax: LOG_SOFTMAX,
    tf.nn.log_softmax: LOG_SOFTMAX,
}
_ACTIVATION_OPERATIONS = {
    keras.layers.Softmax: SOFTMAX,
    SoftmaxOperation: SOFTMAX,
    SigmoidOperation: SIGMOID,
    LogSoftmaxOperation: LOG_SOFTMAX,
}


# Layers that end a feature extractor (an application with include_top=False and pooling):
# their outputs are features, and a softmax over them would pass for class probabilities.
_FEATURE_LAYERS = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.Flatten,
)


@dataclass(frozen=True)
class ClassifierHead:
    """One model output as class scores. Build it with :func:`classifier_head`."""

    index: int  # which model output
    name: str
    logits: object  # (batch, classes) KerasTensor: the class scores Grad-CAM differentiates
    probabilities: object  # (batch, classes) KerasTensor: what a viewer shows
    title: str  # how ``probabilities`` come from the model, for a chart title
    value_name: str = "probability"  # what one of ``probabilities`` is, for a label

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[-1])

    def class_indices(self, classes) -> np.ndarray:
        """``classes`` (any shape) as int64 class indices; ints and integral floats (2.0) are accepted,
        bools, strings and 2.5 are refused, and so is an index outside 0..num_classes-1."""
        refusal = f"class_index must be an integer class index (or integers), got {classes!r}."
        try:
            array = np.asarray(classes)
        except ValueError:  # ragged nested lists
            raise InputError(refusal) from None
        if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise InputError(refusal)
        why = f"the model scores {self.num_classes} classes"
        for class_index in array.ravel().tolist():
            checks.index("class_index", class_index, self.num_classes, why)
        return array.astype(np.int64)

    def class_index(self, value) -> int:
        """One class index, checked as :meth:`class_indices` checks each."""
        array = self.class_indices(value)
        if array.ndim != 0:
            raise InputError(f"class_index is one class, an int; got {value!r}.")
        return int(array)


def _activation_kind(operation, rank: int) -> str | None:
    """SOFTMAX, SIGMOID or LOG_SOFTMAX over the last axis, or None, for the operation ending a head of ``rank``."""
    kind = _ACTIVATION_OPERATIONS.get(type(operation))
    if kind is None:
        try:
            kind = _ACTIVATION_FUNCTIONS.get(getattr(operation, "activation", None))
        except TypeError:  # an unhashable callable is no known activation
            return None
    if kind in (SOFTMAX, LOG_SOFTMAX) and getattr(operation, "axis", -1) not in (-1, rank - 1):
        return None  # a softmax over another axis does not make class probabilities
    return kind


class _LinearView(keras.layers.Layer):
    """Calls a layer with its activation switched off: the logits of a softmax Dense."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_logits", **kwargs)
        self.wrapped = layer

    def call(self, inputs):
        activation = self.wrapped.activation
        self.wrapped.activation = keras.activations.linear
        try:
            return self.wrapped.call(inputs)
        finally:
            self.wrapped.activation = activation

    def compute_output_shape(self, input_shape):
        return self.wrapped.compute_output_shape(input_shape)


def _pre_activation(operation, inputs):
    """The tensor before the activation that ends ``operation``."""
    if isinstance(operation, (keras.layers.Activation, keras.layers.Softmax)) or not isinstance(
        operation, keras.layers.Layer
    ):
        return inputs[0]  # an activation layer or a keras.ops node: its input
    return _LinearView(operation)(*inputs)


def classifier_head(index: int, name: str, output, operation, inputs) -> ClassifierHead:
    """The head of model output ``output``, computed by ``operation`` from ``inputs`` in the flat graph."""
    shape = tuple(output.shape)
    if len(shape) < 2 or shape[-1] is None:
        raise UnsupportedModelError(
            f"Model output {index} ('{name}') has shape {shape}, with no axis of class scores; "
            "class scores must be (batch, classes), or (batch, height, width, classes) for "
            "segmentation. Pass output= the index or name of such an output."
        )
    kind = _activation_kind(operation, len(shape))
    logits = output if kind is None else _pre_activation(operation, inputs)
    units = shape[-1]
    if kind == SOFTMAX:
        probabilities, title = output, "the model's probabilities"
    elif kind == LOG_SOFTMAX:
        probabilities, title = keras.ops.exp(output), "exp of the model's log-softmax"
    elif kind == SIGMOID:
        probabilities = output
        title = "class 1: the model's sigmoid p, class 0: 1 − p" if units == 1 else "each class's sigmoid (multi-label)"
    elif isinstance(operation, _FEATURE_LAYERS) and len(shape) == 2:
        title = (
            f"the model's output values: it ends in {type(operation).__name__}, with no classifier, "
            "so these are features, not class probabilities"
        )
        return ClassifierHead(index, name, output, output, title, value_name="value")
    elif units == 1:
        probabilities, title = keras.ops.sigmoid(output), "class 1: sigmoid p of the model's logit, class 0: 1 − p"
    else:
        probabilities, title = keras.ops.softmax(output), "softmax of the model's logits"
    if units == 1:
        logits = keras.ops.concatenate([-logits, logits], axis=-1)
        probabilities = keras.ops.concatenate([1 - probabilities, probabilities], axis=-1)
    if len(shape) > 2:
        pixels = tuple(range(1, len(shape) - 1))
        logits = keras.ops.mean(logits, axis=pixels)
        probabilities = keras.ops.mean(probabilities, axis=pixels)
        title += ", averaged over pixels" if len(shape) == 4 else ", averaged over positions"
    return ClassifierHead(index, name, logits, probabilities, title)
