"""SmoothGrad (Smilkov, Thorat, Kim, Viégas and Wattenberg 2017, "SmoothGrad: removing
noise by adding noise", equation 3).

For a class c and an image x, the gradient of the class score averaged over ``samples``
noisy copies of the image:
  g_bar   = 1/n sum_i d score_c / d x  at  x + N(0, sigma^2),  sigma = noise × (max(x) − min(x))
  heatmap = max over channels of |g_bar|, divided by its peak
  raw     = sum over channels of g_bar (signed, as saliency's)
The paper averages the gradients, then takes their absolute value to show them; the
tf-keras-vis ``Saliency(smooth_samples=n)`` default averages |gradient| instead (its
``gradient_modifier``). Noise is drawn with ``numpy.random.RandomState(seed)`` in the
order (sample, image, *pixel): the stream tf-keras-vis draws after ``np.random.seed(seed)``,
so the same seed gives the same noisy copies, and every call with a seed the same map.
The copies are drawn one sample at a time and go through the model in batches
(the base's ``batch_size``), so memory does not grow with ``samples``.
"""

from __future__ import annotations

import numpy as np

from .. import checks
from .input_gradients import ManyPassGradients


class SmoothGrad(ManyPassGradients):
    """SmoothGrad for one model and output, reusable across images and classes."""

    name = "smoothgrad"
    title = "SmoothGrad"

    def __init__(self, model, layer=None, *, samples: int = 20, noise: float = 0.2, seed: int = 0, **settings):
        super().__init__(model, layer, **settings)
        self.samples = checks.count("samples", samples, "how many noisy copies of each image to average", minimum=1)
        self.noise = checks.positive_number("noise", noise, "the noise's standard deviation as a fraction of each image's value range")
        self.seed = checks.count("seed", seed, "the seed of the noise")

    def channel_attributions(self, images, classes):
        axes = tuple(range(1, images.ndim))
        sigma = self.noise * (images.max(axis=axes, keepdims=True) - images.min(axis=axes, keepdims=True)).astype(np.float64)
        generator = np.random.RandomState(self.seed)

        def noisy_copy(_):  # drawn sample after sample, in the order of one (samples, N, *input) draw
            return images + generator.normal(0.0, sigma, images.shape).astype(np.float32)

        return self.mean_gradients(noisy_copy, self.samples, classes)
