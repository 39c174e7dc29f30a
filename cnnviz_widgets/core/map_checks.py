"""What GradCamViewer's trust panel shows of one image's map, as plain values, each check run as a BackgroundJob.

- Deletion and insertion: the model's probability of the class as the map's most
  attributed pixels are removed (or revealed), next to a random map's and a centre
  prior's curves, the baselines to beat (:class:`CurveView`). A counterfactual map
  (what speaks against the class) beats them the other way: deleting its pixels raises the probability.
- The sanity check: the map after each step of the cascading randomisation of the
  model's weights, top down, and its rank correlation with the original (:class:`CascadeView`).

The numbers are ``core/trust``'s (``cw.faithfulness``, ``cw.faithfulness_baselines``,
``cw.sanity_check``): this module picks one image's values out of them, runs them in
the background and keeps them per (check, method, layer, class, evidence).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from .attribution.base import resize_maps
from .errors import InputError
from .graph import LayerGraph
from .inputs import as_images
from .jobs import BackgroundJob
from .trust import faithfulness, faithfulness_baselines, sanity_check

MAX_CHECKS = 32  # results kept, the least recently used dropped first: a cascade of VGG16 at 224 px is 3 MB
CURVE_STEPS = 20
METRICS = ("deletion", "insertion")
CHECKS = ("curves", "cascade")
OTHER_WAY = {"lower": "higher", "higher": "lower"}


class MapSettings(NamedTuple):
    """Which map a check is of; ``layer`` is None for a method that maps the pixels."""

    method: str
    layer: str | None
    class_index: int
    counterfactual: bool


@dataclass(frozen=True)
class CurveView:
    """One metric's curve of the map and of its baselines, over the fraction of pixels removed or revealed."""

    metric: str  # "deletion" or "insertion"
    better: str  # "lower" (deletion) or "higher" (insertion) area under the curve; the other way for a counterfactual map
    fractions: np.ndarray  # (steps + 1,)
    curves: dict[str, np.ndarray]  # "map", "random", "centre" -> (steps + 1,) probability of the class
    auc: dict[str, float]  # the same keys -> area under the curve
    counterfactual: bool = False  # the map of what speaks against the class: removing it should raise the probability


@dataclass(frozen=True)
class CascadeView:
    """The map as the cascade randomises the model's weighted layers, top down."""

    layers: list[str]  # maps[i + 1] is the map after layers[: i + 1] are randomised
    maps: np.ndarray  # (steps + 1, H, W) in [0, 1], the original first
    correlations: np.ndarray  # (steps,) Spearman rank correlation of maps[i + 1] with maps[0]
    complete: bool  # False when stopped before every layer was randomised


class MapChecks:
    """The trust checks of one image's maps: run on request in a BackgroundJob, kept per (check, settings).

    ``model_input`` is the image prepared as a batch of one; ``output_index`` the model
    output explained. A stopped cascade is shown but not kept, so it can be run again whole.
    """

    def __init__(self, model, model_input: np.ndarray, output_index: int):
        self._model, self._model_input, self._output_index = model, model_input, output_index
        self._input_size = as_images(LayerGraph.of(model), model_input).shape[1:3]
        self._results: OrderedDict[tuple[str, MapSettings], CurveView | CascadeView] = OrderedDict()
        self._lock = threading.Lock()  # jobs keep results on their threads while the viewer reads them

    def result(self, check: str, settings: MapSettings):
        """The kept result of ``check`` ("curves" or "cascade") for ``settings``, or None."""
        key = (check, settings)
        with self._lock:  # one check-and-read: a job's thread may evict the key between the two
            kept = self._results.get(key)
            if kept is not None:
                self._results.move_to_end(key)
        return kept

    def job(
        self,
        check: str,
        settings: MapSettings,
        heatmap: np.ndarray,
        *,
        on_progress: Callable[[BackgroundJob], None] | None = None,
        on_finish: Callable[[BackgroundJob], None] | None = None,
    ) -> BackgroundJob:
        """A job, to start, computing ``check`` of ``settings``' map ``heatmap`` (at any size); its ``result`` is kept when complete.

        Not started, so that the caller can hold it before its callbacks run: a quick one could end first.
        """
        if check not in CHECKS:
            raise InputError(f"Unknown check {check!r}. Use one of: {', '.join(CHECKS)}.")
        work = functools.partial(getattr(self, f"_{check}"), settings, heatmap)

        def keep(job: BackgroundJob):
            if job.error is None and job.result is not None and getattr(job.result, "complete", True):
                with self._lock:
                    self._results[check, settings] = job.result
                    while len(self._results) > MAX_CHECKS:
                        self._results.popitem(last=False)
            if on_finish is not None:
                on_finish(job)

        return BackgroundJob(work, name=f"{check} of {settings.method}", on_progress=on_progress, on_finish=keep)

    def _curves(self, settings: MapSettings, heatmap, progress, should_stop) -> dict[str, CurveView] | None:
        maps = resize_maps(np.asarray(heatmap, np.float32)[None, None], self._input_size).numpy()[:, 0]
        views = {}
        for done, metric in enumerate(METRICS):
            if should_stop():
                return None
            curves = {"map": faithfulness(self._model, self._model_input, settings.class_index, maps, metric, CURVE_STEPS, output=self._output_index)}
            baselines = faithfulness_baselines(self._model, self._model_input, settings.class_index, metric, CURVE_STEPS, output=self._output_index)
            curves.update(baselines)
            better = curves["map"].better
            if settings.counterfactual:  # deleting what speaks against the class raises its probability
                better = OTHER_WAY[better]
            views[metric] = CurveView(
                metric,
                better,
                curves["map"].fractions,
                {name: result.curves[0] for name, result in curves.items()},
                {name: float(result.auc[0]) for name, result in curves.items()},
                settings.counterfactual,
            )
            progress(done + 1, len(METRICS))
        return views

    def _cascade(self, settings: MapSettings, heatmap, progress, should_stop) -> CascadeView:  # the cascade computes its own maps
        options = {"counterfactual": True} if settings.counterfactual else {}
        check = sanity_check(
            self._model,
            self._model_input,
            settings.class_index,
            settings.method,
            settings.layer,
            progress=progress,
            should_stop=should_stop,
            output=self._output_index,
            **options,
        )
        return CascadeView(list(check.layers), check.maps[:, 0], check.rank_correlation[:, 0], check.complete)
