"""The patterns half of FilterGallery: its controls, the background PatternJob it observes, and drawing.

A mixin of :class:`~cnnviz_widgets.widgets.filter_gallery.FilterGallery`, which
declares the traits (``style``, ``steps``, ``size``, ``seed``, ``value_range``,
``patterns_per_page``) and checks them; the job and its cache are core values
(``core/pattern_jobs.py``).
"""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets
import numpy as np

from ..core import imaging
from ..core.errors import CnnvizError
from ..core.pattern_jobs import PatternCache, PatternJob, PatternSettings
from ..core.patterns import PatternSearch
from ._base import image_view, show
from ._closing import stop_and_join
from ._filter_weights import ENLARGED_SIZE, GRID_BOX_PX, TileGrid

PATTERN_GAP = 5  # S1's margins between patterns


class PatternsView:
    """Patterns of the gallery's layer, computed on request in a PatternJob and drawn from its cache."""

    _job: PatternJob | None = None  # the pattern run shown, if any
    _closing = False  # set by close(): no run starts after it
    _stopped_jobs: list = []  # runs stopped but perhaps still in their last step (the list is replaced, never mutated)

    @property
    def patterns(self) -> dict[int, np.ndarray]:
        """Computed patterns of the current layer and settings: filter index → uint8 (size, size, C)."""
        settings = self._pattern_settings_or_none()
        if settings is None:
            return {}
        return {index: pattern.image for index, pattern in self._pattern_cache.patterns(settings).items()}

    @property
    def computing(self) -> bool:
        # Not the thread's life: on_finish runs in the thread, and must see the run as over.
        return self._job is not None and not self._job.finished

    def _build_patterns_view(self) -> widgets.VBox:
        self._pattern_cache = PatternCache()
        self._pattern_grid_key = None  # what the grid shows: settings, page and the filters computed
        self._enlarged_source = None  # (shape, image) the enlarged pattern was drawn from: a run's end redraws nothing
        self._draw_lock = threading.RLock()  # the job's thread draws too
        # Each box starts at its trait's value: _bind only passes on changes, and the default is none.
        self.steps_box, self.size_box, self.seed_box = (
            widgets.IntText(value=value, description=name, layout=widgets.Layout(width="150px"))
            for name, value in (("Steps", self.steps), ("Size", 0), ("Seed", self.seed))
        )
        self._bind(self.steps_box, "steps")
        self._bind(self.size_box, "size", shown=lambda size: self._shown_size())
        self._bind(self.seed_box, "seed")
        self.style_buttons = widgets.ToggleButtons(
            options=[("Tutorial", "tutorial"), ("Lucid", "lucid")],
            value=self.style,
            tooltips=["S1's gradient ascent on pixels", "Fourier-space image, decorrelated colour, random transforms"],
            style={"button_width": "80px"},
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self._bind(self.style_buttons, "style")
        self.compute_button = widgets.Button(description="Compute", icon="play", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.compute_button.on_click(lambda _: self._compute_from_button())
        self.stop_button.on_click(lambda _: self.stop_patterns())
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="progress")
        self._pattern_status = widgets.HTML()
        self._patterns_grid = TileGrid(self._select)
        box = f"{GRID_BOX_PX}px"
        self._patterns_placeholder = widgets.HTML(
            layout=widgets.Layout(width=box, height=box, border="1px dashed #9e9e9e", align_items="center")
        )
        self._patterns_grid_box = widgets.Box([self._patterns_placeholder])
        self._pattern_view = image_view(f"{ENLARGED_SIZE}px")
        self._pattern_picture = np.zeros((1, 1, 3), np.uint8)
        self._pattern_caption = widgets.HTML()
        selected_pattern = widgets.VBox([self._pattern_view, self._pattern_caption])
        wrapping = widgets.Layout(flex_flow="row wrap")
        return widgets.VBox(
            [
                widgets.HBox([self.style_buttons, self.steps_box, self.size_box, self.seed_box], layout=wrapping),
                widgets.HBox(
                    [self.compute_button, self.stop_button, self.progress, self._pattern_status], layout=wrapping
                ),
                widgets.HBox([self._patterns_grid_box, selected_pattern], layout=wrapping),
            ]
        )

    def _show_placeholder_or_grid(self, any_computed: bool, page: range, settings: PatternSettings):
        """Until a pattern of the page is computed, words saying how to get them, not a black grid."""
        if any_computed:
            self._patterns_grid_box.children = [self._patterns_grid.view.figure]
            return
        self._patterns_placeholder.value = (
            '<div style="padding:40% 24px 0;text-align:center;color:#616161">'
            f"Patterns of filters {page.start}–{page.stop - 1} are not computed yet.<br>"
            f"Press <b>Compute</b> ({settings.steps} gradient ascent steps each).</div>"
        )
        self._patterns_grid_box.children = [self._patterns_placeholder]

    def _show_pattern_settings(self):
        """New settings: a run for other settings stops (what it finished stays cached), the grid is redrawn."""
        if self._job is not None and self._job.settings != self._pattern_settings_or_none():
            self._drop_job()
        self.size_box.value = self._shown_size()
        self._show_patterns()

    def _search(self, size) -> PatternSearch:
        """The compiled search for the current layer, shared with cw.filter_patterns."""
        return PatternSearch.shared(self._model, self.layer, size=size, preprocess=self._preprocess)

    def _pattern_settings(self) -> PatternSettings:
        """The cache key of the current patterns; raises why the layer has none."""
        size = self._search(self.size).image_shape[:2]
        return PatternSettings(self.layer, size, self.steps, self.seed, tuple(self.value_range), self.style)

    def _pattern_settings_or_none(self) -> PatternSettings | None:
        try:
            return self._pattern_settings()
        except CnnvizError:
            return None

    def _shown_size(self) -> int:
        """What the Size box shows: the height the patterns will have (0 where the layer has none)."""
        settings = self._pattern_settings_or_none()
        return 0 if settings is None else settings.size[0]

    def _pattern_page(self) -> range:
        # A separable convolution has fewer output channels than depthwise filters.
        return imaging.page_of(self.channel, self.patterns_per_page, self._search(self.size).num_filters)

    def compute_patterns(self, wait: bool = False) -> threading.Thread | None:
        """Compute the grid's missing patterns in a background thread, batch by batch.

        Returns the thread, or None when every pattern on the grid is cached (or the gallery is closed).
        ``wait=True`` joins it and re-raises what went wrong in it. A run under way
        that covers the grid is returned, not started twice; one for other filters
        is stopped (what it finished stays cached).
        """
        if self._closing:
            return None
        settings = self._pattern_settings()
        missing = self._pattern_cache.missing(settings, self._pattern_page())
        if not missing:
            return None
        job = self._job
        if job is None or not job.covers(missing):
            job = self._start_job(settings, missing)
        if wait:
            job.wait()
        return job.thread

    def stop_patterns(self):
        """Stop after the current step; finished batches stay on the grid and in the cache."""
        if self._job is not None:
            self._job.stop()

    def close(self):
        """Stop the pattern runs first, and wait for those stopped before: their threads hold this widget and draw on it."""
        self._closing = True
        if self._job is not None:  # a refused constructor built no controls to reset
            self._drop_job()
        stop_and_join(*self._stopped_jobs)
        super().close()

    def _compute_from_button(self):
        try:
            self.compute_patterns()
        except CnnvizError as error:
            self._pattern_status.value = html.escape(str(error))

    def _start_job(self, settings: PatternSettings, missing: list) -> PatternJob:
        self._drop_job()
        job = PatternJob(
            self._search(self.size),
            settings,
            missing,
            self._pattern_cache,
            step_size=self._step_size,
            memory_budget_mb=self._memory_budget_mb,
            on_step=self._report,
            on_preview=self._on_preview,
            on_batch=self._on_batch,
            on_finish=self._on_finish,
        )
        self.progress.value, self.progress.max = 0, job.total_steps
        self._job = job
        self.compute_button.disabled, self.stop_button.disabled = True, False
        self._report_filters(job)
        return job.start()

    def _drop_job(self):
        """Stop the current run and stop showing its progress; what it finished stays cached.

        It still ends its current step, which holds this widget: close() waits for it."""
        if self._job is not None:
            self._job.stop()
            # Alive, not finished: `finished` is set before on_finish runs, which close() must join.
            self._stopped_jobs = [*(kept for kept in self._stopped_jobs if kept.running), self._job]
        self._job = None
        self.compute_button.disabled, self.stop_button.disabled = False, True
        self.progress.value = 0
        self._pattern_status.value = ""

    # The job's callbacks run in its thread; they draw only while the job is still this widget's.

    def _report(self, job: PatternJob):
        if self._job is job:
            self.progress.value = min(job.steps_done, self.progress.max)

    def _report_filters(self, job: PatternJob):
        self._pattern_status.value = f"computing: {job.computed} / {len(job.filters)} filters"

    def _on_preview(self, job: PatternJob):
        if self._job is job:
            self._show_patterns()

    def _on_batch(self, job: PatternJob):
        self._report(job)
        if self._job is job:
            self._report_filters(job)
            self._show_patterns()

    def _on_finish(self, job: PatternJob):
        if self._job is not job:
            return
        self.compute_button.disabled, self.stop_button.disabled = False, True
        outcome, done = job.outcome, job.computed
        if outcome == "failed":
            self._pattern_status.value = f'<span style="color:#b00020">failed: {html.escape(str(job.error))}</span>'
        elif outcome == "stopped":
            self._pattern_status.value = f"stopped: {done} of {len(job.filters)} computed"
        else:
            self._pattern_status.value = f"done: {done} pattern(s)"
        self._show_patterns()

    def _show_patterns(self):
        with self._draw_lock:
            try:
                settings = self._pattern_settings()
            except CnnvizError as error:
                self.compute_button.disabled = True
                self._pattern_status.value = html.escape(str(error))
                return
            self.compute_button.disabled = self.computing
            computed = self._pattern_cache.patterns(settings)
            job = self._job
            previewing = job is not None and job.settings == settings
            previews, previewed_at = (job.previews, job.previewed_at) if previewing else ({}, 0)
            page = self._pattern_page()
            image_shape = self._search(self.size).image_shape
            # A channel move within the page changes the enlarged pattern, not the grid.
            grid_key = (settings, page, frozenset(index for index in page if index in computed), previewed_at)
            if grid_key != self._pattern_grid_key:
                picture, layout = self._pattern_cache.page_picture(settings, page, image_shape, PATTERN_GAP, previews)
                self._patterns_grid.show(picture, layout, page.start)
                self._pattern_grid_key = grid_key
                self._show_placeholder_or_grid(any(i in computed or i in previews for i in page), page, settings)

            selected, preview = computed.get(self.channel), previews.get(self.channel)
            image = preview if selected is None else selected.image
            drawn = self._enlarged_source
            if drawn is None or drawn[0] != image_shape or drawn[1] is not image:  # an array: `is`, not ==
                self._pattern_picture = imaging.upscale_to(np.zeros(image_shape, np.uint8) if image is None else image, ENLARGED_SIZE)
                show(self._pattern_view, self._pattern_picture)
                self._enlarged_source = (image_shape, image)
            self._pattern_view.layout.display = "none" if image is None else None
            if selected is None and preview is not None:
                caption = "forming: a preview of the ascent under way"
            elif selected is None:
                caption = "not computed yet: press Compute"
            else:
                caption = f"mean activation {selected.start_loss:.3g} → {selected.final_loss:.3g}"
            self._pattern_caption.value = f"<b>filter {self.channel}</b><br>{caption}"
