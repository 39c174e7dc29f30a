"""Guided Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", section 3, "Guided Grad-CAM").

Guided Backpropagation's pixel-sharp gradient, multiplied pixel by pixel with the
class's Grad-CAM map at the input's size, so the edges it keeps are those of the region
the class is found in:
  attribution = guided gradient (per channel) × Grad-CAM heatmap   (``layer`` is Grad-CAM's)
  heatmap     = max over channels of |attribution|, divided by its peak
  raw         = sum over channels of attribution
Both parts are the shared instances of :class:`GradCam` and :class:`GuidedBackprop`, so
their compiled functions serve this method and each alone.
"""

from __future__ import annotations

import numpy as np

from ..graph import LayerGraph
from .base import class_matrix, default_layer
from .gradcam import GradCam
from .guided_backprop import GuidedBackprop
from .input_gradients import PixelResult, pixel_result


class GuidedGradCam:
    """Guided Grad-CAM for one model, layer and output, reusable across images and classes."""

    name = "guided_gradcam"
    title = "Guided Grad-CAM"

    def __init__(self, model, layer: str | None = None, *, probabilities: bool = False, output: int | str = 0, batch_size: int | None = None):
        self.cam = GradCam.shared(model, layer, output=output, probabilities=probabilities)
        self.guided = GuidedBackprop.shared(model, output=output, probabilities=probabilities, batch_size=batch_size)
        self.graph, self.head, self.layer = self.cam.graph, self.cam.head, self.cam.layer

    @classmethod
    def shared(cls, model, layer: str | None = None, *, output: int | str = 0, probabilities: bool = False, batch_size: int | None = None):
        """The model's one instance for these settings; ``layer=None`` is Grad-CAM's default layer."""
        graph = LayerGraph.of(model)
        output_index = graph.output_index(output)
        layer = default_layer(graph, output_index) if layer is None else layer
        graph.info(layer)  # refuses an unknown layer before it is a cache key
        return graph.cached(
            ("attribution", cls, layer, output_index, probabilities, batch_size),
            lambda: cls(model, layer, output=output_index, probabilities=probabilities, batch_size=batch_size),
        )

    def _explain_prepared(self, inputs, classes) -> PixelResult:
        classes = class_matrix(self.head, classes, len(inputs[0]))
        cam = self.cam._explain_prepared(inputs, classes).heatmaps  # (N, K, *spatial) at the input's size
        guided = self.guided._explain_prepared(inputs, classes).attributions
        return pixel_result(guided * cam[..., None], classes, lambda attributions: np.abs(attributions).max(axis=-1))
