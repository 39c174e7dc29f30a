"""What GradCamViewer shows of one image, as plain values: its top-k predictions and each class's map, by any method of METHODS, at the image's size.

The viewer asks a method what it is through :func:`method_title`, :func:`method_uses_layer`
and :func:`method_has_counterfactual`, so a new entry of ``METHODS`` needs nothing in the widget.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .. import checks
from ..class_names import class_names_for
from ..errors import InputError
from ..graph import LayerGraph
from .attribute import method_class
from .base import resize_maps


# (method, layer, class, evidence) results one ImageExplanations keeps, the least recently used dropped first:
# a 224-px map is 200 kB, so this is at most 26 MB however long a class explores.
MAX_EXPLANATIONS = 128

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


def method_title(method: str) -> str:
    """How a method is named to people: its class's ``title`` ("Grad-CAM"), else its ``method=`` string."""
    return getattr(method_class(method), "title", method)


def method_uses_layer(method: str) -> bool:
    """Whether a method explains a layer's feature maps (a CAM) rather than the input pixels; see ``uses_layer``."""
    return bool(getattr(method_class(method), "uses_layer", True))


def method_has_counterfactual(method: str) -> bool:
    """Whether a method takes ``counterfactual=True``: a map of what speaks against the class."""
    return "counterfactual" in inspect.signature(method_class(method)).parameters


@dataclass(frozen=True)
class ClassExplanation:
    """One method's map of one class at one layer, or its counterfactual map (what speaks against the class)."""

    heatmap: np.ndarray  # (H, W) in [0, 1] at the raw image's resolution
    contributions: np.ndarray | None  # (channels,): a CAM's channel weight × mean activation; None for other methods
    flat: bool  # the map is flat to float32 rounding, shown as no heat
    empty: bool  # not flat, but every position's weighted sum is negative: the ReLU leaves no heat

    def top_channels(self, count: int) -> np.ndarray:
        """The ``count`` channels of largest |contribution|, largest first."""
        return np.argsort(-np.abs(self.contributions), kind="stable")[:count]


class ImageExplanations:
    """One image's class maps by any method at any layer, each (method, layer, class, evidence) computed once.

    The top-k classes of a layer are explained by ONE call of the method (for Grad-CAM,
    one forward pass, one batched Jacobian); a class outside them by one call of its own: never a mix
    that depends on what was asked before, so a class's result, to the last bit, does
    not either. ``model_input`` is the image prepared as a batch of one. A
    ``counterfactual`` explanation is computed and kept apart, the same way. A method
    that uses no layer (see :func:`method_uses_layer`) is computed once for all layers.
    The :data:`MAX_EXPLANATIONS` used last are kept.
    """

    def __init__(self, model, model_input: np.ndarray, image_size: tuple[int, int], output_index: int, top_classes: list[int]):
        self._model = model
        self._model_input = model_input
        self._image_size = tuple(image_size)
        self._output_index = output_index
        self._top_classes = list(top_classes)
        self._explained: OrderedDict[tuple[str, str | None, int, bool], ClassExplanation] = OrderedDict()

    def of(self, layer: str, class_index: int, counterfactual: bool = False, method: str = "gradcam") -> ClassExplanation:
        if counterfactual and not method_has_counterfactual(method):
            raise InputError(f"{method_title(method)} has no map of what speaks against a class; use evidence 'for'.")
        layer = layer if method_uses_layer(method) else None
        key = (method, layer, class_index, counterfactual)
        if key not in self._explained:
            wanted = self._top_classes if class_index in self._top_classes else [class_index]
            options = {"counterfactual": True} if counterfactual else {}
            explainer = method_class(method).shared(self._model, layer, output=self._output_index, **options)
            result = explainer._explain_prepared([self._model_input], np.array([wanted]))
            heatmaps = result.heatmaps
            # A resizing ``preprocess`` gives the model another size than the raw image shown.
            if heatmaps.shape[2:] != self._image_size:
                heatmaps = resize_maps(heatmaps, self._image_size).numpy()
            contributions = getattr(result, "contributions", None)
            flat, empty = (getattr(result, flag, np.zeros((1, len(wanted)), bool)) for flag in ("flat", "empty"))
            for column, c in enumerate(wanted):
                self._explained[method, layer, c, counterfactual] = ClassExplanation(
                    heatmaps[0, column],
                    None if contributions is None else contributions[0, column],
                    bool(flat[0, column]),
                    bool(empty[0, column]),
                )
            while len(self._explained) > MAX_EXPLANATIONS:
                self._explained.popitem(last=False)
        self._explained.move_to_end(key)
        return self._explained[key]
