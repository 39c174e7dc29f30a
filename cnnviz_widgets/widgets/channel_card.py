"""ChannelCard: one channel seen whole (issue 14, section 3).

It only wires: the card's values come from ``core/channel_card.py`` (kernel, top dataset
examples with the channel's map over them, mean activation, Grad-CAM contribution), its
feature visualisation from a ``core/pattern_jobs.PatternJob`` in the background, with
progress, kept in a ``PatternCache``. ``cw.link`` keeps its layer and channel in step
with the other widgets.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets
import numpy as np
from traitlets import Int, Unicode, observe

from ..core import imaging
from ..core.channel_card import ChannelCards, LayerJob
from ..core.errors import CnnvizError
from ..core.pattern_jobs import PatternCache, PatternJob, PatternSettings
from ..core.patterns import STYLES, PatternSearch
from ._base import Choice, VisualizerWidget, checks, image_view, show
from ._closing import stop_and_join
from ._charts import PictureFigure

PANEL_PX = 200
EXAMPLES_PX = 260
EXAMPLE_GAP = 2
PATTERN_STEPS = 40


class ChannelCard(VisualizerWidget):
    """One channel of a layer seen whole: its kernel, its feature visualisation, the dataset
    images that excite it most (its map over each), its mean activation and, for a chosen
    image, its Grad-CAM contribution.

    ``ChannelCard(model, data, *, preprocess=None, class_names=None, k=9, value_range=None, **traits)``.
    ``data`` are raw images (N, H, W, C) as shown; ``preprocess`` maps them to what the
    model takes; ``class_names`` one per class. ``k``: top examples per channel. ``value_range``: the pixel range of the
    feature visualisation, None: (0, 1) for data within 0..1, else (0, 255).

    Traits: ``layer`` (a layer with (height, width, channels) maps; default the last
    convolution Grad-CAM explains), ``channel`` (default: the most active over ``data``), ``image_index`` (None, or the image whose
    Grad-CAM contribution is shown; a click on an example chooses it) and ``class_index``
    (None: the model's top class for that image); ``style`` of the feature visualisation, 'lucid'
    (default) or 'tutorial' (see cw.filter_patterns). ``card`` is the core value shown.
    """

    layer = Unicode(help="The layer of the channel, one of layer_names.")
    channel = Int(0, help="The channel shown, 0 .. channels of the layer - 1.")
    image_index = Int(None, allow_none=True, help="Image whose Grad-CAM contribution is shown; None: none.")
    class_index = Int(None, allow_none=True, help="Class of that contribution; None: the model's top class for the image.")
    style = Choice(STYLES, "lucid", help="The feature visualisation's style, as cw.filter_patterns' (lucid: one that looks like something).")
    _job: PatternJob | None = None  # the running feature visualisation, if any; a refused constructor has none
    _layer_job: LayerJob | None = None  # the examples and means of a new layer, computed in the background
    _closing = False  # set by close(): no job starts after it
    _stopped_jobs: list = []  # jobs stopped but perhaps still in their last step (replaced, never mutated)

    def __init__(self, model, data, *, preprocess=None, class_names=None, k: int = 9, value_range=None, **traits):
        super().__init__()
        self._cards = ChannelCards(model, data, preprocess=preprocess, k=k, class_names=class_names)
        self._preprocess = preprocess
        self._value_range = value_range or self._cards.value_range
        self.layer_names = self._cards.layer_names
        self.card = None
        self._pattern_cache = PatternCache()
        self._draw_lock = threading.RLock()  # the jobs' threads draw too

        self.layer_menu = widgets.Dropdown(options=self.layer_names, description="layer")
        self.channel_box = widgets.IntText(description="channel", layout=widgets.Layout(width="170px"))
        self.summary = widgets.HTML()
        self.layer_progress = widgets.IntProgress(min=0, max=1, layout=widgets.Layout(width="300px", display="none"))
        self._kernel_caption, self._kernel_view = widgets.HTML(), image_view(f"{PANEL_PX}px")
        self._pattern_caption, self._pattern_view = widgets.HTML(), image_view(f"{PANEL_PX}px")
        self.progress = widgets.IntProgress(min=0, max=PATTERN_STEPS, layout=widgets.Layout(width=f"{PANEL_PX}px"))
        self._examples_caption = widgets.HTML()
        self.examples_figure = PictureFigure(EXAMPLES_PX)
        self.examples_figure.on_click(self._pick_example)
        self.contribution_note = widgets.HTML()
        self._examples_layout = None

        traits = {"layer": self._cards.default_layer, **traits}
        if traits["layer"] in self.layer_names:  # computed here, so the widget opens showing its card
            most_active = self._cards.most_active_channel(traits["layer"])
            traits.setdefault("channel", most_active)  # channel 0 may be dead: its examples and pattern would say nothing
        self.set_traits_in_order(traits)
        self._bind(self.layer_menu, "layer")
        self._bind(self.channel_box, "channel")
        self.layer_menu.value, self.channel_box.value = self.layer, self.channel
        self.children = [
            widgets.HBox([self.layer_menu, self.channel_box], layout=_row_layout()),
            widgets.HBox([self.summary, self.layer_progress], layout=_row_layout()),
            widgets.HBox(
                [
                    _panel(PANEL_PX, self._kernel_caption, self._kernel_view),
                    _panel(PANEL_PX, self._pattern_caption, self._pattern_view, self.progress),
                    _panel(EXAMPLES_PX, self._examples_caption, self.examples_figure.figure),
                ],
                layout=_row_layout(),
            ),
            self.contribution_note,
            self._error_line,
        ]

    # -- validation --------------------------------------------------------------

    @checks("layer")
    def _valid_layer(self, proposal):
        return self._cards.checked_layer(proposal["value"])

    @checks("channel")
    def _valid_channel(self, proposal):
        count = self._cards.channel_count(self.layer)
        return self.refuse_outside("channel", proposal["value"], count, f"layer '{self.layer}' has {count} channels")

    @checks("image_index")
    def _valid_image_index(self, proposal):
        if proposal["value"] is None:
            return None
        count = len(self._cards.images)
        return self.refuse_outside("image_index", proposal["value"], count, f"the data has {count} images")

    @checks("class_index")
    def _valid_class_index(self, proposal):
        return None if proposal["value"] is None else self._cards.checked_class(proposal["value"])

    # -- reactions ---------------------------------------------------------------

    @observe("layer")
    def _layer_changed(self, change):
        channel = min(self.channel, self._cards.channel_count(self.layer) - 1)
        if channel != self.channel:
            self.channel = channel  # its observer draws
        else:
            self._draw()

    @observe("channel", "image_index", "class_index")
    def _draw(self, change=None):
        with self._draw_lock:
            if not self.layer:
                return  # a trait given to the constructor before the layer
            if self._cards.has_layer(self.layer):
                self._draw_card()
            else:
                self._compute_layer()  # draws when done

    def _draw_card(self):
        card = self.card = self._cards.card(self.layer, self.channel, self.image_index, self.class_index)
        self.summary.value = f"<b>{html.escape(card.summary())}</b>"
        if card.kernel is None:
            self._kernel_caption.value = f"<b>kernel</b><br><i>{html.escape(self.layer)} has no kernel</i>"
            self._kernel_view.layout.display = "none"
        else:
            shape = "×".join(map(str, card.kernel.shape))
            self._kernel_caption.value = (
                f"<b>kernel</b> {shape}<br><small>red +, blue −, white 0; ±{card.kernel_bound:.3g}</small>"
            )
            show(self._kernel_view, imaging.upscale_to(card.kernel_picture, PANEL_PX))
            self._kernel_view.layout.display = None
        examples = card.examples
        picture, self._examples_layout = imaging.square_grid(examples.pictures, EXAMPLE_GAP)
        self.examples_figure.show(picture, box_px=EXAMPLES_PX)
        self._examples_caption.value = (
            f"<b>top {len(examples.indices)} images</b> (map over each, what the layer sees at its maximum framed; click one)<br>"
            f"<small>images {', '.join(map(str, examples.indices.tolist()))}; "
            f"map blue 0 → red {examples.peak:.3g} (the best maximum)</small>"
        )
        self._show_contribution()
        self._show_pattern()

    def _compute_layer(self):
        job = self._layer_job
        if self._closing or job is not None and job.layer == self.layer and not job.finished:
            return
        self._stop_layer_job()
        self.summary.value = f"⏳ computing layer {html.escape(self.layer)} over {len(self._cards.images)} images…"
        job = self._layer_job = LayerJob(self._cards, self.layer, on_progress=self._layer_advanced, on_finish=self._layer_computed)
        self.layer_progress.value, self.layer_progress.max = 0, job.total
        self.layer_progress.layout.display = None
        job.start()

    def _stop_layer_job(self):
        """Stop computing a layer (nothing of it is kept); a stopped job no longer draws."""
        if self._layer_job is not None:
            self._retire(self._layer_job)
            self._layer_job = None
            self.layer_progress.layout.display = "none"

    # The jobs' callbacks run in their threads; they draw only while the job is still this widget's.

    def _layer_advanced(self, job: LayerJob):
        if self._layer_job is job:
            self.layer_progress.value = job.done

    def _layer_computed(self, job: LayerJob):
        if self._layer_job is not job:
            return
        self.layer_progress.layout.display = "none"
        if job.error is not None:
            self.summary.value = f'<span style="color:#b00020">{html.escape(str(job.error))}</span>'
        elif job.layer == self.layer:
            self._draw()

    def _show_contribution(self):
        contribution = self.card.contribution
        if self.image_index is None:
            note = "Click an example (or set image_index) to see this channel's part in its Grad-CAM."
        elif contribution is None:
            note = f"Grad-CAM does not explain layer '{self.layer}'; pick a convolution before the output."
        else:
            name = self._cards.class_names[contribution.class_index]
            note = (
                f"Grad-CAM of '{name}' on image {contribution.image_index}: contribution "
                f"{contribution.value:+.3g} (weight {contribution.weight:+.3g} × mean activation), "
                f"rank {contribution.rank} of {contribution.channels} channels by size"
            )
        self.contribution_note.value = html.escape(note)

    def _pick_example(self, row: int, column: int):
        position = self._examples_layout.index_at(row, column)
        if position is not None and position < len(self.card.examples.indices):
            self.image_index = int(self.card.examples.indices[position])

    # -- feature visualisation in the background ---------------------------------------

    def _pattern_settings(self) -> PatternSettings:
        search = PatternSearch.shared(self._cards.model, self.layer, preprocess=self._preprocess)
        return PatternSettings(self.layer, search.image_shape[:2], PATTERN_STEPS, 0, tuple(self._value_range), self.style)

    @observe("style")
    def _show_pattern(self, change=None):
        with self._draw_lock:
            try:
                settings = self._pattern_settings()
            except CnnvizError as error:
                self._pattern_caption.value = f"<b>feature visualisation</b><br><i>{html.escape(str(error))}</i>"
                self.progress.layout.display = "none"
                return
            computed = self._pattern_cache.patterns(settings).get(self.channel)
            if computed is None:
                self._pattern_caption.value = "<b>feature visualisation</b><br><small>computing…</small>"
                self._start_job(settings)
                return
            self.progress.layout.display = "none"  # the caption says it is done: a full bar said nothing more
            self._pattern_caption.value = (
                f"<b>feature visualisation</b><br><small>mean activation {computed.start_loss:.3g} → "
                f"{computed.final_loss:.3g} in {PATTERN_STEPS} steps</small>"
            )
            show(self._pattern_view, imaging.upscale_to(computed.image, PANEL_PX))

    def _start_job(self, settings: PatternSettings):
        if self._closing or self._job is not None and self._job.covers([self.channel]) and self._job.settings == settings:
            return
        self.stop_pattern()
        search = PatternSearch.shared(self._cards.model, self.layer, preprocess=self._preprocess)
        job = PatternJob(search, settings, [self.channel], self._pattern_cache, on_step=self._report, on_finish=self._finished)
        self.progress.value, self.progress.max = 0, job.total_steps
        self.progress.layout.display = None
        self._job = job
        job.start()

    def wait(self):
        """Wait until what the card shows is computed: a new layer's examples, then the feature visualisation."""
        if self._layer_job is not None:
            self._layer_job.wait()  # its end draws the card, which starts the feature visualisation
        if self._job is not None:
            self._job.wait()

    def stop_pattern(self):
        if self._job is not None:
            self._retire(self._job)
            self._job = None

    def _retire(self, job):
        """Stop ``job``; it still ends its current step or batch, which holds this widget: close() waits for it too."""
        job.stop()
        self._stopped_jobs = [*(kept for kept in self._stopped_jobs if kept.running), job]

    def _report(self, job: PatternJob):
        if self._job is job:
            self.progress.value = min(job.steps_done, self.progress.max)

    def _finished(self, job: PatternJob):
        if self._job is not job:
            return
        if job.error is not None:
            self._pattern_caption.value = f"<b>feature visualisation</b><br><i>{html.escape(str(job.error))}</i>"
            self.progress.layout.display = "none"
        elif job.settings == self._pattern_settings() and self.channel in job.filters:
            self._show_pattern()

    def close(self):
        """Stop the jobs first: their threads hold this widget and draw on it."""
        with self._draw_lock:  # a job's thread drawing now could start another job, which would outlive the widget
            self._closing = True
            jobs = [self._layer_job, self._job]
            self._stop_layer_job()
            self.stop_pattern()
        stop_and_join(*jobs, *self._stopped_jobs)
        super().close()

    def panels(self) -> list[np.ndarray]:
        """The kernel (if any), the feature visualisation (if computed) and the top examples, uint8 RGB."""
        card = self.card
        shown = [] if card.kernel_picture is None else [imaging.to_uint8_image(card.kernel_picture)]
        pattern = self._pattern_cache.patterns(self._pattern_settings()).get(self.channel)
        if pattern is not None:
            shown.append(imaging.to_uint8_image(pattern.image))
        return [*shown, imaging.square_grid(card.examples.pictures, EXAMPLE_GAP)[0]]


def _row_layout() -> widgets.Layout:
    return widgets.Layout(flex_flow="row wrap", align_items="flex-start", overflow="visible")


def _panel(width_px: int, *parts) -> widgets.VBox:
    # As wide as its picture: a long caption wraps instead of pushing the next panel to a new row.
    return widgets.VBox(list(parts), layout=widgets.Layout(width=f"{width_px}px", margin="0 12px 8px 0", overflow="visible"))
