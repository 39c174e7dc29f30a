"""What GradCamViewer shows of one image, as plain values: its top-k predictions and each class's map, by any method of METHODS, at the image's size.

The viewer asks a method what it is through :func:`method_title`, :func:`method_uses_layer`
and :func:`method_has_counterfactual`, so a new entry of ``METHODS`` needs nothing in the widget.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .. import checks
from ..class_names import class_names_for
from ..errors import InputError
from ..graph import LayerGraph
from .attribute import METHODS, method_class
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


def predict(graph: LayerGraph, model_input: np.ndarray, output_index: int, class_names=None, top_k: int = 5, *, model=None) -> Predictions:
    """The :class:`Predictions` of ``model_input``, one prepared image as a batch of one;
    ``class_names`` (or the names known for ``model``) as :func:`class_names_for` takes them."""
    probabilities = graph.probabilities([model_input], output_index)[0].astype(np.float64)
    names = class_names_for(len(probabilities), class_names, model)
    top_k = checks.count("top_k", top_k, "how many classes to chart", minimum=1)
    top_classes = np.argsort(-probabilities, kind="stable")[:top_k]
    return Predictions(probabilities, names, top_classes.tolist())


FLAT_MAP_NOTE = "flat map: the class score does not depend on where this layer's features are"
# An empty map: every position's weighted sum has the sign that the ReLU zeroes.
EMPTY_SUM_SIGN = {"for": "negative", "against": "positive"}
MAX_COMPARED = 4  # maps side by side in a viewer's compare row


def method_title(method: str) -> str:
    """How a method is named to people: its class's own ``title`` ("Grad-CAM"), else its ``method=`` string.

    Not an inherited one: HiResCAM written as a subclass of GradCam is not "Grad-CAM".
    """
    return vars(method_class(method)).get("title", method)


def method_uses_layer(method: str) -> bool:
    """Whether a method explains a layer's feature maps (a CAM) rather than the input pixels; see ``uses_layer``."""
    return bool(getattr(method_class(method), "uses_layer", True))


def method_has_counterfactual(method: str) -> bool:
    """Whether a method takes ``counterfactual=True``: a map of what speaks against the class."""
    return "counterfactual" in inspect.signature(method_class(method)).parameters


def method_reports_progress(method: str) -> bool:
    """Whether a method's ``_explain_prepared`` takes ``progress(done, total)`` (Score-CAM's masked passes):
    the expensive ones, which a viewer runs in the background, with a Stop."""
    return "progress" in inspect.signature(method_class(method)._explain_prepared).parameters


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

    def no_heat_note(self, evidence: str, class_name: str) -> str:
        """Why the map shows no heat ("" where it shows some), for ``evidence`` 'for' or 'against' the class."""
        if self.flat:
            return FLAT_MAP_NOTE
        if self.empty:
            return (
                f"nothing in this layer speaks {evidence} '{class_name}': "
                f"every position's weighted sum is {EMPTY_SUM_SIGN[evidence]}"
            )
        return ""


def refused_methods(method: str, compare, evidence: str) -> str | None:
    """Why a viewer cannot show ``method`` and the ``compare`` list for ``evidence`` ('for' or 'against'), or None."""
    unknown = [m for m in compare if m not in METHODS]
    if unknown:
        return f"Unknown method {unknown[0]!r} to compare. Use some of: {', '.join(METHODS)}."
    if len(compare) > MAX_COMPARED or len(set(compare)) < len(compare):
        return f"compare takes up to {MAX_COMPARED} different methods, got {list(compare)}."
    without = [method_title(m) for m in (method, *compare) if evidence == "against" and not method_has_counterfactual(m)]
    if without:
        return f"{without[0]} has no map of what speaks against a class; set evidence to 'for' first."
    return None


class ImageExplanations:
    """One image's class maps by any method at any layer, each (method, layer, class, evidence) computed once.

    The top-k classes of a layer are explained by ONE call of the method (for Grad-CAM,
    one forward pass, one batched Jacobian); a class outside them by one call of its own: never a mix
    that depends on what was asked before, so a class's result, to the last bit, does
    not either. ``model_input`` is the image prepared as a batch of one. A
    ``counterfactual`` explanation is computed and kept apart, the same way. A method
    that uses no layer (see :func:`method_uses_layer`) is computed once for all layers.
    The :data:`MAX_EXPLANATIONS` used last are kept. An expensive method's maps may be
    computed in a BackgroundJob's thread (:meth:`compute`) while the viewer reads others.
    """

    def __init__(self, model, model_input: np.ndarray, image_size: tuple[int, int], output_index: int, top_classes: list[int]):
        self._model = model
        self._model_input = model_input
        self._image_size = tuple(image_size)
        self._output_index = output_index
        self._top_classes = list(top_classes)
        self._explained: OrderedDict[tuple[str, str | None, int, bool], ClassExplanation] = OrderedDict()
        self._lock = threading.Lock()  # around the dict only: a map computed in the background must not block the others

    def _key(self, layer: str, class_index: int, counterfactual: bool, method: str) -> tuple:
        return (method, layer if method_uses_layer(method) else None, class_index, counterfactual)

    def computed(self, layer: str, class_index: int, counterfactual: bool = False, method: str = "gradcam") -> bool:
        """Whether :meth:`of` has this explanation kept, so that it returns at once."""
        return self._key(layer, class_index, counterfactual, method) in self._explained

    def of(
        self, layer: str, class_index: int, counterfactual: bool = False, method: str = "gradcam", *, progress=None
    ) -> ClassExplanation:
        """The explanation, computed now if not kept; ``progress`` goes to a method that reports it (see
        :func:`method_reports_progress`), which stops when it returns True."""
        if counterfactual and not method_has_counterfactual(method):
            raise InputError(f"{method_title(method)} has no map of what speaks against a class; use evidence 'for'.")
        key = self._key(layer, class_index, counterfactual, method)
        layer = key[1]
        with self._lock:  # one check-and-read: a background job may evict the key between the two
            kept = self._explained.get(key)
            if kept is not None:
                self._explained.move_to_end(key)
        if kept is None:
            wanted = self._top_classes if class_index in self._top_classes else [class_index]
            options = {"counterfactual": True} if counterfactual else {}
            explainer = method_class(method).shared(self._model, layer, output=self._output_index, **options)
            reporting = {} if progress is None else {"progress": progress}
            result = explainer._explain_prepared([self._model_input], np.array([wanted]), **reporting)
            heatmaps = result.heatmaps
            # A resizing ``preprocess`` gives the model another size than the raw image shown.
            if heatmaps.shape[2:] != self._image_size:
                heatmaps = resize_maps(heatmaps, self._image_size).numpy()
            contributions = getattr(result, "contributions", None)
            flat, empty = (getattr(result, flag, np.zeros((1, len(wanted)), bool)) for flag in ("flat", "empty"))
            explained = {
                (method, layer, c, counterfactual): ClassExplanation(
                    heatmaps[0, column],
                    None if contributions is None else contributions[0, column],
                    bool(flat[0, column]),
                    bool(empty[0, column]),
                )
                for column, c in enumerate(wanted)
            }
            with self._lock:
                self._explained.update(explained)
                self._explained.move_to_end(key)  # the one asked for is the one used last
                while len(self._explained) > MAX_EXPLANATIONS:
                    self._explained.popitem(last=False)
            return explained[key]
        return kept

    def waiting(self, methods, layer: str, class_index: int, counterfactual: bool = False) -> list[str]:
        """The expensive ones of ``methods`` (see :func:`method_reports_progress`) whose map is not kept:
        those a viewer computes in the background before it shows them."""
        return [
            method
            for method in dict.fromkeys(methods)
            if method_reports_progress(method) and not self.computed(layer, class_index, counterfactual, method)
        ]

    def compute(self, methods, layer: str, class_index: int, counterfactual: bool, progress, should_stop):
        """Compute and keep the maps of ``methods``, as a BackgroundJob's work: ``progress`` over all of them,
        and each method stops at its next report once ``should_stop()``."""
        for done, method in enumerate(methods):

            def report(step: int, total: int, done=done) -> bool:
                progress(done * total + step, len(methods) * total)
                return should_stop()

            self.of(layer, class_index, counterfactual, method, progress=report)
