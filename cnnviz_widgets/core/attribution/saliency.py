"""Saliency (Simonyan, Vedaldi and Zisserman 2014, "Deep Inside Convolutional Networks:
Visualising Image Classification Models and Saliency Maps", section 3.1).

For a class c and an image x, the gradient of the class score with respect to the
pixels, g = d score_c / d x, at x itself:
  heatmap = max over colour channels of |g|, divided by its peak
            (the paper's rule, and tf-keras-vis ``Saliency``'s default: |g|, then the max)
  raw     = sum over colour channels of g: signed, the score's change per unit of
            brightening the pixel in every channel at once
The batching, the class scores and the result are the base's (``input_gradients.py``).
"""

from __future__ import annotations

from .input_gradients import InputGradients


class Saliency(InputGradients):
    """Saliency maps for one model and output, reusable across images and classes."""

    name = "saliency"
    title = "Saliency"

    def channel_attributions(self, images, classes):
        return self.mean_gradients(lambda _: images, 1, classes)
