"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"), as in "Deep Learning with Python" 5.4 and keras-io.

For a class c and a convolutional layer with feature maps A (h, w, channels):
  weights_k = mean over (h, w) of d score_c / d A_k      (one weight per channel)
  map       = ReLU(sum_k weights_k * A_k), divided by its max
then resized to the input image. The forward pass, the gradients, the map's rules
and the resizing are the base's (``base.py``); this file is the channel weights.
"""

from __future__ import annotations

import tensorflow as tf

from .base import ClassActivationMap


class GradCam(ClassActivationMap):
    """Grad-CAM for one model, layer and output, reusable across images and classes."""

    name = "gradcam"
    title = "Grad-CAM"

    def channel_weights(self, features, gradients):
        spatial = list(range(2, len(gradients.shape) - 1))
        return tf.reduce_mean(gradients, axis=spatial)

