"""Guided Backpropagation (Springenberg, Dosovitskiy, Brox and Riedmiller 2015, "Striving
for Simplicity: The All Convolutional Net", section 3.4).

The gradient of the class score with respect to the pixels, as saliency's, except that
every ReLU passes back only positive gradients, and only where its forward input was
positive: through a ReLU with output r and incoming gradient g, the gradient is
  g × (g > 0) × (r > 0)                                  (plain backprop: g × (r > 0))
  heatmap = max over channels of |guided gradient|, divided by its peak
  raw     = sum over channels of the guided gradient
Every ``Relu`` op the model runs is overridden, a ``Conv2D(activation="relu")``'s
as well as a ``ReLU`` or ``Activation("relu")`` layer's (they all run ``tf.nn.relu``).

Its maps look sharp and stay much the same when the model's weights are randomised
(Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): they show the image's edges
more than what the model learned, the classic method that fails the sanity check.
"""

from __future__ import annotations

import tensorflow as tf

from .input_gradients import InputGradients

_GUIDED_RELU = "CnnvizGuidedRelu"


@tf.RegisterGradient(_GUIDED_RELU)
def _guided_relu_gradient(op, grad):
    return grad * tf.cast(grad > 0, grad.dtype) * tf.cast(op.outputs[0] > 0, grad.dtype)


class GuidedBackprop(InputGradients):
    """Guided Backpropagation for one model and output, reusable across images and classes."""

    name = "guided_backprop"
    title = "Guided Backprop"
    gradient_overrides = {"Relu": _GUIDED_RELU}

    def channel_attributions(self, images, classes):
        return self.mean_gradients(lambda _: images, 1, classes)
