"""Integrated Gradients (Sundararajan, Taly and Yan 2017, "Axiomatic Attribution for Deep
Networks", equation 1 and its Riemann approximation in section 5).

For a class c, an image x and a baseline x' (an image that means "nothing"):
  attribution = (x − x') × mean over the path of d score_c / d x  at  x' + alpha (x − x')
  raw         = sum over channels of attribution (signed)
  heatmap     = |raw|, divided by its peak
The mean is the midpoint rule over ``steps`` points, alpha = (i + 1/2) / steps: one
forward and backward pass per point, the points of all images in batches (the base's
``batch_size``). Completeness: the raw attributions sum to score(x) − score(x') up to
the rule's error, which shrinks as 1/steps².

``baseline`` is in the model's input space, where the images passed in are: None is
zeros, a number a constant image, an array one image (or one per image). Zeros are a
black image for a model that takes pixels (a Rescaling layer inside is fine), but
after a preprocess outside the model, zeros are what the preprocess makes of the mean
colour (VGG16's ``preprocess_input`` subtracts it): pass ``baseline=preprocess(black)``
for black there. A baseline array is not part of the compiled instance's cache key (an
array is unhashable, and a new one each call would compile anew): :meth:`shared`
binds it to a copy that shares the compiled functions.
"""

from __future__ import annotations

import numpy as np

from .. import checks
from ..errors import InputError
from .input_gradients import ManyPassGradients


class IntegratedGradients(ManyPassGradients):
    """Integrated Gradients for one model and output, reusable across images, classes and baselines."""

    name = "integrated_gradients"
    title = "Integrated Gradients"
    baseline = None

    def __init__(self, model, layer=None, *, steps: int = 64, **settings):
        super().__init__(model, layer, **settings)
        self.steps = checks.count("steps", steps, "how many points of the path from the baseline to average", minimum=1)

    @classmethod
    def shared(cls, model, layer=None, *, output=0, baseline=None, **options):
        return super().shared(model, layer, output=output, **options).bound(baseline=baseline)

    def baselines(self, images: np.ndarray) -> np.ndarray:
        """(N, *input) float32: ``baseline`` for each image."""
        if self.baseline is None:
            return np.zeros_like(images)
        try:
            baseline = np.asarray(self.baseline, dtype=np.float32)
            fits = baseline.ndim == 0 or baseline.shape in (images.shape[1:], images.shape)
        except (TypeError, ValueError):
            fits = False
        if not fits or not np.all(np.isfinite(baseline)):
            raise InputError(
                f"baseline must be None (zeros), a finite number, or an array of one image {images.shape[1:]} "
                f"or of all images {images.shape}, in the model's input space; got {self.baseline!r:.80}."
            )
        return np.broadcast_to(baseline, images.shape).astype(np.float32)

    def heat(self, attributions):
        return np.abs(attributions.sum(axis=-1))

    def channel_attributions(self, images, classes):
        baselines = self.baselines(images)
        difference = images - baselines

        def path_point(step):
            return baselines + ((step + 0.5) / self.steps) * difference

        return difference[:, None] * self.mean_gradients(path_point, self.steps, classes)
