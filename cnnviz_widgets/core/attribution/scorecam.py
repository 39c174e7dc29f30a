"""Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu 2020, "Score-CAM:
Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR workshops).

No gradients: each channel's map, upsampled to the input and min-max normalised to
[0, 1], masks the input, and the class score of that masked input weighs the channel
(the paper's Algorithm 1):
  H_k       = normalise(upsample(A_k))
  weights_k = softmax over channels of S_c(X ⊙ H_k) - S_c(X_b)
  map       = ReLU(sum_k weights_k A_k), divided by its max
The baseline's score S_c(X_b) is the same for every channel, so the softmax drops it
and it costs no pass. ``channel_softmax=False`` takes the masked scores themselves
as weights instead, as the authors' released code and tf-keras-vis ``Scorecam`` do
(with ``probabilities=True``, their softmax over the classes).

The masked inputs go through the model in batches of ``batch_size``. Masks that are
identical (dead channels, all-zero or constant maps, which all normalise to zeros, or
maps equal up to scale and offset) cost one pass for all of them.
``top_channels=N`` keeps only the N channels whose maps vary most (the largest spatial
standard deviation, as Faster-Score-CAM and tf-keras-vis' ``max_N``); the others
weigh zero.

Score-CAM is slow (one forward pass per channel): :meth:`ScoreCam.explain` takes a
``progress(done, total)`` callback, called before the first batch of passes and after
each; returning True stops the work with :class:`~cnnviz_widgets.core.errors.StoppedError`.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from .. import checks
from ..errors import InputError, StoppedError, UnsupportedModelError
from ..inputs import as_images, prepare_inputs
from ..graph import call_for_inference, compiled_method
from .base import ClassActivationMap, resize_maps

BATCH_MEANING = "how many masked inputs go through the model at once"
TOP_CHANNELS_MEANING = "how many channels (those whose maps vary most) Score-CAM weighs"


class ScoreCam(ClassActivationMap):
    """Score-CAM for one model, layer and output, reusable across images and classes."""

    name = "scorecam"
    title = "Score-CAM"
    uses_gradients = False

    def __init__(
        self,
        model,
        layer=None,
        *,
        probabilities=False,
        output=0,
        counterfactual=False,
        batch_size=32,
        top_channels=None,
        channel_softmax=True,
    ):
        if counterfactual:
            raise InputError("Score-CAM weighs channels by forward passes, not gradients, so it has no counterfactual map; use counterfactual=False.")
        super().__init__(model, layer, probabilities=probabilities, output=output)
        self.batch_size = checks.count("batch_size", batch_size, BATCH_MEANING, minimum=1)
        channels = self.graph.info(self.layer).output_shape[-1]
        if top_channels is not None:
            top_channels = checks.count("top_channels", top_channels, TOP_CHANNELS_MEANING, minimum=1)
            if top_channels > channels:
                raise InputError(f"top_channels is {top_channels}, but layer '{self.layer}' has {channels} channels; use at most {channels}, or None for all.")
        self.top_channels = top_channels
        self.channel_softmax = bool(channel_softmax)
        self._forward = compiled_method(functools.partial(call_for_inference, self._model), reduce_retracing=True)
        self._masked_scores = compiled_method(self._compute_masked_scores, reduce_retracing=True)
        self._weighted_maps = tf.function(
            lambda features, weights, scores: self._map_rules(features, None, weights, scores), reduce_retracing=True
        )

    def explain(self, x, classes, *, progress=None):
        """The maps of ``classes`` for images ``x``; ``progress(done, total)`` counts masked passes (see the module docstring)."""
        return self._explain_prepared(prepare_inputs(self.graph, x), classes, progress=progress)

    def _explain_prepared(self, inputs, classes, *, progress=None):
        matrix = self.class_matrix(classes, len(inputs[0]))
        features, scores = self._forward(self._model_inputs(inputs))
        features = tf.cast(features, tf.float32)
        scores = tf.cast(scores, tf.float32)
        kept = self._kept_channels(features.numpy())
        images, channels, inverse = self._distinct_masks(features.numpy(), kept)
        masked_scores = self._scores_of_masked(inputs, features, matrix, images, channels, progress)
        if not np.all(np.isfinite(masked_scores)):
            raise UnsupportedModelError(
                "The model's class scores contain NaN or infinity for the masked images, so Score-CAM "
                "is undefined; check the images' scale and the preprocessing."
            )
        weights = self._channel_weights(masked_scores[inverse], kept)
        computed = self._weighted_maps(features, tf.constant(weights), scores)
        return self._result(inputs, matrix, computed)

    def _kept_channels(self, features: np.ndarray) -> np.ndarray:
        """(N, C) bool: the channels weighed, all or the ``top_channels`` whose maps vary most."""
        count, channels = features.shape[0], features.shape[-1]
        if self.top_channels is None:
            return np.ones((count, channels), bool)
        spread = features.reshape(count, -1, channels).std(axis=1)
        kept = np.zeros((count, channels), bool)
        np.put_along_axis(kept, np.argsort(-spread, axis=1, kind="stable")[:, : self.top_channels], True, axis=1)
        return kept

    @staticmethod
    def _distinct_masks(features: np.ndarray, kept: np.ndarray):
        """One (image, channel) per distinct normalised map among the kept channels, and for every
        (image, channel) the index of its distinct one (or -1 where not kept)."""
        count, channels = features.shape[0], features.shape[-1]
        maps = np.moveaxis(features.reshape(count, -1, channels), 2, 1)  # (N, C, positions)
        low, high = maps.min(axis=2, keepdims=True), maps.max(axis=2, keepdims=True)
        normalised = np.where(high > low, (maps - low) / np.where(high > low, high - low, 1), 0.0)
        images, chosen, inverse = [], [], np.full((count, channels), -1)
        for image in range(count):
            candidates = np.flatnonzero(kept[image])
            _, first, which = np.unique(normalised[image, candidates], axis=0, return_index=True, return_inverse=True)
            inverse[image, candidates] = len(chosen) + which.reshape(-1)
            images += [image] * len(first)
            chosen += candidates[first].tolist()
        return np.array(images), np.array(chosen), inverse

    def _scores_of_masked(self, inputs, features, matrix, images, channels, progress) -> np.ndarray:
        """(masks, K): each distinct mask's input's class scores, in batches of ``batch_size``."""
        first = as_images(self.graph, inputs[0])
        model_inputs = [tf.constant(first), *(tf.constant(other) for other in inputs[1:])]
        feature_channels_first = tf.experimental.numpy.moveaxis(features, -1, 1)  # (N, C, *spatial)
        classes = tf.constant(matrix)
        total, scores = len(images), []
        for start in range(0, total, self.batch_size):
            if progress is not None and progress(start, total):
                raise StoppedError(f"Score-CAM stopped after {start} of {total} masked passes.")
            batch = slice(start, start + self.batch_size)
            scores.append(
                self._masked_scores(
                    model_inputs, feature_channels_first, classes, tf.constant(images[batch]), tf.constant(channels[batch]), inputs[0].shape[1:]
                ).numpy()
            )
        if progress is not None:
            progress(total, total)
        return np.concatenate(scores) if scores else np.zeros((0, matrix.shape[1]), np.float32)

    def _compute_masked_scores(self, model_inputs, features, classes, images, channels, input_shape):
        maps = tf.gather_nd(features, tf.stack([images, channels], axis=1))  # (B, *spatial)
        first = tf.gather(model_inputs[0], images)
        pixels = first.dtype
        first = tf.cast(first, tf.float32)
        masks = resize_maps(maps[:, None], first.shape[1:-1], clip=False)[:, 0]
        axes = list(range(1, len(masks.shape)))
        low = tf.reduce_min(masks, axis=axes, keepdims=True)
        masks = tf.math.divide_no_nan(masks - low, tf.reduce_max(masks, axis=axes, keepdims=True) - low)
        # A map with fewer spatial axes than the input (a ConvLSTM2D's, per frame) masks every frame alike.
        frames = [1] * (len(first.shape) - len(masks.shape) - 1)
        masked = tf.reshape(first * tf.reshape(masks, [-1, *frames, *masks.shape[1:], 1]), [-1, *input_shape])
        masked = tf.cast(masked if pixels.is_floating else tf.round(masked), pixels)  # uint8 images stay uint8
        others = [tf.gather(other, images) for other in model_inputs[1:]]
        _, scores = self._model([masked, *others] if others else masked, training=False)
        return tf.gather(tf.cast(scores, tf.float32), tf.gather(classes, images), axis=1, batch_dims=1)

    def _channel_weights(self, channel_scores: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """(N, K, C) weights from the (N, C, K) scores of each channel's masked input."""
        scores = np.moveaxis(channel_scores, 2, 1).astype(np.float64)  # (N, K, C)
        kept = np.broadcast_to(kept[:, None], scores.shape)
        if not self.channel_softmax:
            return np.where(kept, scores, 0.0).astype(np.float32)
        shifted = np.where(kept, scores - np.max(np.where(kept, scores, -np.inf), axis=2, keepdims=True), -np.inf)
        exponentials = np.exp(shifted)
        return (exponentials / exponentials.sum(axis=2, keepdims=True)).astype(np.float32)
