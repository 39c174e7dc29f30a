"""Grad-CAM++ (Chattopadhyay, Sarkar, Howlader & Balasubramanian 2018, "Grad-CAM++:
Generalized Gradient-based Visual Explanations for Deep Convolutional Networks", WACV).

Grad-CAM weighs every position of a channel's gradient alike; Grad-CAM++ weighs each
position by alpha, from the second and third derivatives of the class score. With the
exponential of the score, Y = exp(S), those derivatives have a closed form in the
first-order gradients g = dS/dA (the paper's Eq. 19, as its authors' code and
tf-keras-vis compute it):
  alpha_kij  = g_kij² / (2 g_kij² + sum_ab A_kab g_kij³)     (0 where g_kij = 0)
  alpha_kij /= sum_ij alpha_kij                               (over ALL positions ij)
  weights_k  = sum_ij alpha_kij ReLU(g_kij)
  map        = ReLU(sum_k weights_k A_k), divided by its max
The factor exp(S) of the paper's dY/dA cancels in alpha and only scales the weights,
so it is left out: the raw map (``normalize=False``) stays finite for large scores.

Implementations differ in that normalisation, which changes each channel's weight and
so the map. We divide by the sum over all positions, as tf-keras-vis's GradcamPlusPlus
does (the Keras peer users compare with; tests/test_cams.py checks our maps against
it) and as the authors' own code does (adityac94/Grad_CAM_plus_plus, misc/utils.py,
``alpha_normalization_constant``). Copies of that code in other repositories sum only
over positions with a positive gradient (``alphas_thresholding``); pytorch-grad-cam does
not normalise alpha at all (it zeroes alpha where the gradient is 0).
"""

from __future__ import annotations

import tensorflow as tf

from .base import ClassActivationMap


class GradCamPlusPlus(ClassActivationMap):
    """Grad-CAM++ for one model, layer and output, reusable across images and classes."""

    name = "gradcam++"
    title = "Grad-CAM++"

    def channel_weights(self, features, gradients):
        spatial = list(range(2, len(gradients.shape) - 1))
        squared = tf.square(gradients)
        position_sums = tf.reduce_sum(features, axis=list(range(1, len(features.shape) - 1)), keepdims=True)[:, None]
        denominators = 2.0 * squared + squared * gradients * position_sums
        alphas = tf.math.divide_no_nan(squared, tf.where(squared == 0.0, 1.0, denominators))
        alphas = tf.math.divide_no_nan(alphas, tf.reduce_sum(alphas, axis=spatial, keepdims=True))
        return tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=spatial)
