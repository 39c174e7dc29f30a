"""Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN).

The map is the feature map projected on its first principal component: no gradients,
no class. With A the layer's output as a (positions, channels) matrix, centred per
channel (as pytorch-grad-cam's ``get_2d_projection``), and v its first right singular
vector:
  map = ReLU((A - mean A) v), divided by its max
An SVD's sign is arbitrary, so v is turned to make the projection correlate positively
with the summed activation: the map is high where the layer is most active. Every
class gets the same map, and no class gradient is computed.
"""

from __future__ import annotations

import tensorflow as tf

from ..errors import InputError
from .base import ClassActivationMap


class EigenCam(ClassActivationMap):
    """Eigen-CAM for one model and layer; the same map for every class."""

    name = "eigencam"
    title = "Eigen-CAM"
    uses_gradients = False

    def __init__(self, model, layer=None, *, probabilities=False, output=0, counterfactual=False):
        if counterfactual:
            raise InputError("Eigen-CAM does not depend on the class, so it has no counterfactual map; use counterfactual=False.")
        super().__init__(model, layer, probabilities=probabilities, output=output)

    @staticmethod
    def _centred(features):
        spatial = list(range(1, len(features.shape) - 1))
        return features - tf.reduce_mean(features, axis=spatial, keepdims=True)

    def channel_weights(self, features, gradients):
        count, channels = tf.shape(features)[0], tf.shape(features)[-1]
        positions = tf.reshape(features, (count, -1, channels))
        centred = tf.reshape(self._centred(features), (count, -1, channels))
        _, _, right = tf.linalg.svd(centred)  # right: (N, C, min(positions, C)), columns by singular value
        first = right[:, :, 0]
        projection = tf.einsum("npc,nc->np", centred, first)
        sign = tf.sign(tf.einsum("np,np->n", projection, tf.reduce_sum(positions, axis=-1)))
        return first * tf.where(sign == 0.0, 1.0, sign)[:, None]

    def channel_terms(self, features, gradients, weights):
        return super().channel_terms(self._centred(features), gradients, weights)
