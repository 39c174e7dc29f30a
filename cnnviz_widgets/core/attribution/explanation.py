"""What GradCamViewer shows of one image, as plain values: its top-k predictions and each class's Grad-CAM at the image's size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks
from ..class_names import class_names_for
from ..graph import LayerGraph
from .base import resize_maps
from .gradcam import GradCam


# Longer names are cut with an ellipsis in bar labels: slanted under five bars, an
# ImageNet name of 30 characters ran into the chart below.
BAR_LABEL_CHARS = 18


def _bar_label(name: str) -> str:
    return name if len(name) <= BAR_LABEL_CHARS else name[: BAR_LABEL_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class Predictions:
    """One image's class probabilities as its model's head gives them, and its top-k classes."""

    probabilities: np.ndarray  # (classes,) float64
    class_names: list[str]
    top_classes: list[int]  # best first

    @property
    def best_first(self) -> list[tuple[int, str, float]]:
        """(class_index, name, probability) of the top-k classes."""
        return [(c, self.class_names[c], float(self.probabilities[c])) for c in self.top_classes]

    @property
    def labels(self) -> list[str]:
        """The top-k classes' bar labels, long names cut (see BAR_LABEL_CHARS); ImageNet repeats some
        names ('crane', 'maillot'), and cutting may make more, which a chart would merge."""
        labels = [_bar_label(self.class_names[c]) for c in self.top_classes]
        if len(set(labels)) < len(labels):
            labels = [f"{label} ({c})" for label, c in zip(labels, self.top_classes)]
        return labels


def predict(graph: LayerGraph, model_input: np.ndarray, output_index: int, class_names=None, top_k: int = 5) -> Predictions:
    """The :class:`Predictions` of ``model_input``, one prepared image as a batch of one;
    ``class_names`` as :func:`class_names_for` takes them."""
    probabilities = graph.probabilities([model_input], output_index)[0].astype(np.float64)
    names = class_names_for(len(probabilities), class_names)
    top_k = checks.count("top_k", top_k, "how many classes to chart", minimum=1)
    top_classes = np.argsort(-probabilities, kind="stable")[:top_k]
    return Predictions(probabilities, names, top_classes.tolist())


@dataclass(frozen=True)
class ClassExplanation:
    """Grad-CAM of one class at one layer, or its counterfactual map (what speaks against the class)."""

    heatmap: np.ndarray  # (H, W) in [0, 1] at the raw image's resolution
    contributions: np.ndarray  # (channels,): Grad-CAM weight × mean activation
    flat: bool  # the map is flat to float32 rounding, shown as no heat
    empty: bool  # not flat, but every position's weighted sum is negative: the ReLU leaves no heat

    def top_channels(self, count: int) -> np.ndarray:
        """The ``count`` channels of largest |contribution|, largest first."""
        return np.argsort(-np.abs(self.contributions), kind="stable")[:count]


class ImageExplanations:
    """Grad-CAM of one image's classes at any layer, each (layer, class) computed once.

    The top-k classes of a layer are explained by ONE Grad-CAM call (one forward pass,
    one batched Jacobian); a class outside them by one call of its own: never a mix
    that depends on what was asked before, so a class's result, to the last bit, does
    not either. ``model_input`` is the image prepared as a batch of one. A
    ``counterfactual`` explanation is computed and kept apart, the same way.
    """

    def __init__(self, model, model_input: np.ndarray, image_size: tuple[int, int], output_index: int, top_classes: list[int]):
        self._model = model
        self._model_input = model_input
        self._image_size = tuple(image_size)
        self._output_index = output_index
        self._top_classes = list(top_classes)
        self._explained: dict[tuple[str, int, bool], ClassExplanation] = {}

    def of(self, layer: str, class_index: int, counterfactual: bool = False) -> ClassExplanation:
        if (layer, class_index, counterfactual) not in self._explained:
            wanted = self._top_classes if class_index in self._top_classes else [class_index]
            cam = GradCam.shared(self._model, layer, output=self._output_index, counterfactual=counterfactual)
            result = cam.explain(self._model_input, wanted)
            heatmaps = result.heatmaps
            # A resizing ``preprocess`` gives the model another size than the raw image shown.
            if heatmaps.shape[2:] != self._image_size:
                heatmaps = resize_maps(heatmaps, self._image_size).numpy()
            for column, c in enumerate(wanted):
                self._explained[layer, c, counterfactual] = ClassExplanation(
                    heatmaps[0, column],
                    result.contributions[0, column],
                    bool(result.flat[0, column]),
                    bool(result.empty[0, column]),
                )
        return self._explained[layer, class_index, counterfactual]
