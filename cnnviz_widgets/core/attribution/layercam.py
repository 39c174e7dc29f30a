"""Layer-CAM (Jiang, Zhang, Hou, Cheng & Wei 2021, "LayerCAM: Exploring Hierarchical
Class Activation Maps for Localization", IEEE Transactions on Image Processing 30).

Each position of a channel is weighted by its own positive gradient, so the map keeps
fine detail at early layers too:
  map = ReLU(sum_k ReLU(dS/dA_k) ⊙ A_k), divided by its max
The channel weights reported (for the contributions) are the mean positive gradient.
"""

from __future__ import annotations

import tensorflow as tf

from .base import ClassActivationMap


class LayerCam(ClassActivationMap):
    """Layer-CAM for one model, layer and output, reusable across images and classes."""

    name = "layercam"
    title = "Layer-CAM"

    def channel_weights(self, features, gradients):
        spatial = list(range(2, len(gradients.shape) - 1))
        return tf.reduce_mean(tf.nn.relu(gradients), axis=spatial)

    def channel_terms(self, features, gradients, weights):
        return tf.nn.relu(gradients) * features[:, None]
