"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"), as in "Deep Learning with Python" 5.4 and keras-io.

For a class c and a convolutional layer with feature maps A (h, w, channels):
  weights_k = mean over (h, w) of d score_c / d A_k      (one weight per channel)
  map       = ReLU(sum_k weights_k * A_k), divided by its max
then resized to the input image. The forward pass, the gradients, the map's rules
and the resizing are the base's (``base.py``); this file is the channel weights.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import InputError
from ..inputs import prepare_inputs
from .base import ClassActivationMap


class GradCam(ClassActivationMap):
    """Grad-CAM for one model, layer and output, reusable across images and classes."""

    def channel_weights(self, features, gradients):
        spatial = list(range(2, len(gradients.shape) - 1))
        return tf.reduce_mean(gradients, axis=spatial)


def grad_cam(
    model, x, class_index, layer: str | None = None, *, probabilities: bool = False, output: int | str = 0, counterfactual: bool = False
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] at the input's resolution.

    ``class_index`` is one class for every image or a sequence of one class per
    image; ``layer`` defaults to the last non-pooling layer with a 4-D output.
    ``output`` picks the model output by index, dict key or layer name.

    The class score is the class logit (see ``core/heads.py``): the input of a
    softmax or sigmoid however the model writes it, or the probability with
    ``probabilities=True``. A one-unit (binary) output has two classes, 0 =
    negative (-logit) and 1 = positive (logit). A segmentation output
    (N, H, W, classes) scores a class by its logit averaged over all pixels, as
    pytorch-grad-cam's SemanticSegmentationTarget with a full mask.

    ``counterfactual=True`` maps what speaks against the class instead: the
    gradients negated (the Grad-CAM paper's counterfactual explanation).
    """
    cam = GradCam.shared(model, layer, probabilities=probabilities, output=output, counterfactual=counterfactual)
    inputs = prepare_inputs(cam.graph, x)
    count = len(inputs[0])
    classes = cam.head.class_indices(class_index)
    if classes.ndim == 1:
        if len(classes) != count:
            raise InputError(
                f"class_index has {len(classes)} entries for {count} image(s); give one "
                "class for all images or exactly one per image."
            )
        classes = classes[:, None]
    return cam._explain_prepared(inputs, classes).heatmaps[:, 0]
