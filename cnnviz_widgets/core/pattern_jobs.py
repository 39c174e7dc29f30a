"""Filter patterns computed in the background: a job with progress and stop, and a bounded cache.

:class:`PatternJob`, a :class:`~cnnviz_widgets.core.jobs.BackgroundJob`, runs
:meth:`PatternSearch.run` over some filters in its own thread and reports each step, a preview of the batch under way every few steps, and each
finished batch; what it finishes goes into a
:class:`PatternCache` keyed by :class:`PatternSettings` and filter, so a stopped,
failed or replaced job keeps what it computed. A viewer observes the job through its
callbacks and draws from the cache.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from . import imaging
from .jobs import BackgroundJob
from .patterns import PREVIEW_SHARE, PatternSearch

CACHE_BUDGET_MB = 256  # patterns of settings not used lately are dropped beyond this


class PatternSettings(NamedTuple):
    """What a computed pattern depends on besides its filter; a key of the pattern cache."""

    layer: str
    size: tuple  # (height, width)
    steps: int
    seed: int
    value_range: tuple
    style: str = "tutorial"


@dataclass(frozen=True)
class ComputedPattern:
    image: np.ndarray  # uint8 (height, width, C)
    start_loss: float  # the filter's mean activation on the gray-noise start
    final_loss: float  # ... after the last ascent step


class PatternCache:
    """Computed patterns by settings and filter, safe to fill from a job's thread.

    Beyond ``budget_mb`` the patterns of the settings used least recently are dropped,
    whole; those of the settings used last are always kept.
    """

    def __init__(self, budget_mb: float = CACHE_BUDGET_MB):
        self._budget_bytes = budget_mb * 2**20
        self._groups: OrderedDict[PatternSettings, dict[int, ComputedPattern]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, settings: PatternSettings, index: int, pattern: ComputedPattern):
        with self._lock:
            group = self._used(settings, create=True)
            previous = group.get(index)
            self._bytes += pattern.image.nbytes - (0 if previous is None else previous.image.nbytes)
            group[index] = pattern
            while self._bytes > self._budget_bytes and len(self._groups) > 1:
                _, dropped = self._groups.popitem(last=False)
                self._bytes -= sum(p.image.nbytes for p in dropped.values())

    def patterns(self, settings: PatternSettings) -> dict[int, ComputedPattern]:
        """The computed patterns of ``settings``, filter → pattern, in filter order (a copy)."""
        with self._lock:
            return dict(sorted(self._used(settings).items()))

    def missing(self, settings: PatternSettings, filters) -> list[int]:
        with self._lock:
            group = self._used(settings)
            return [index for index in filters if index not in group]

    def page_picture(self, settings: PatternSettings, page: range, image_shape, gap: int, previews=None):
        """The patterns of ``page`` as an about-square grid, and its layout: where a pattern is
        not computed, its preview (``previews``: filter → uint8 image) or blank."""
        shown = {**(previews or {}), **{i: computed.image for i, computed in self.patterns(settings).items()}}
        blank = np.zeros(image_shape, np.uint8)
        return imaging.square_grid([shown.get(i, blank) for i in page], gap)

    def _used(self, settings: PatternSettings, create: bool = False) -> dict[int, ComputedPattern]:
        """The group of ``settings``, now the one used last; an empty one is created only to add to."""
        if settings not in self._groups:
            if not create:
                return {}
            self._groups[settings] = {}
        self._groups.move_to_end(settings)
        return self._groups[settings]


class PatternJob(BackgroundJob):
    """One background run of PatternSearch over ``filters``, filling ``cache``.

    A :class:`~cnnviz_widgets.core.jobs.BackgroundJob` whose progress is counted in
    ascent steps (``steps_done`` of ``total_steps``, its ``done`` of ``total``). The
    callbacks run in the job's thread: ``on_step(job)`` before each step,
    ``on_preview(job)`` every ``preview_every`` steps of a batch, when ``previews``
    (filter → uint8 image) holds that batch's images so far (skipped while previews
    took more than ``preview_share`` of the run's time, their drawing included),
    ``on_batch(job)`` after a batch is in the cache, ``on_finish(job)`` at the end,
    whether it finished, was stopped (:meth:`stop`, after the current step; finished
    batches stay in the cache) or failed (``error``).
    """

    def __init__(
        self,
        search: PatternSearch,
        settings: PatternSettings,
        filters: list[int],
        cache: PatternCache,
        *,
        step_size: float | None = None,
        memory_budget_mb: float = 512,
        on_step: Callable[["PatternJob"], None] | None = None,
        on_preview: Callable[["PatternJob"], None] | None = None,
        preview_every: int = 5,
        preview_share: float = PREVIEW_SHARE,
        on_batch: Callable[["PatternJob"], None] | None = None,
        on_finish: Callable[["PatternJob"], None] | None = None,
    ):
        self.search, self.settings, self.filters, self.cache = search, settings, list(filters), cache
        self._step_size, self._memory_budget_mb = step_size, memory_budget_mb
        self._on_step, self._on_batch = on_step, on_batch
        self._on_preview, self._preview_every, self._preview_share = on_preview, preview_every, preview_share
        self.previews: dict[int, np.ndarray] = {}  # of the batch under way; replaced, not mutated
        self.previewed_at = 0  # steps_done when ``previews`` were taken
        total_steps = math.ceil(len(self.filters) / search.batch_size(memory_budget_mb)) * settings.steps
        super().__init__(self._search, name=f"patterns of {settings.layer}", total=total_steps, on_finish=on_finish)

    @property
    def steps_done(self) -> int:
        return self.done

    @property
    def total_steps(self) -> int:
        return self.total

    def covers(self, filters) -> bool:
        """Whether this job is running, not stopping, and will compute every one of ``filters``."""
        return self.running and not self.stopping and set(filters) <= set(self.filters)

    @property
    def computed(self) -> int:
        """How many of this job's filters are in the cache."""
        return len(self.filters) - len(self.cache.missing(self.settings, self.filters))

    def _stopped(self) -> bool:  # stopped means some filters not computed, whoever stopped the search
        return self.computed < len(self.filters)

    def _search(self, progress, should_stop):
        def step_or_stop():  # called before every ascent step
            self._notify(self._on_step)
            self.done += 1
            return should_stop()

        def on_batch(done, total, result):
            rows = zip(result.filters.tolist(), result.patterns, result.start_loss, result.final_loss)
            for index, image, start_loss, final_loss in rows:
                self.cache.add(self.settings, index, ComputedPattern(image, float(start_loss), float(final_loss)))
            self.previews = {}
            self._notify(self._on_batch)

        def on_preview(step, result):
            self.previews, self.previewed_at = dict(zip(result.filters.tolist(), result.patterns)), self.steps_done
            self._notify(self._on_preview)

        self.search.run(
            self.filters,
            steps=self.settings.steps,
            step_size=self._step_size,
            value_range=self.settings.value_range,
            seed=self.settings.seed,
            memory_budget_mb=self._memory_budget_mb,
            style=self.settings.style,
            on_batch=on_batch,
            on_preview=on_preview if self._on_preview is not None else None,
            preview_every=self._preview_every,
            preview_share=self._preview_share,
            should_stop=step_or_stop,
        )
