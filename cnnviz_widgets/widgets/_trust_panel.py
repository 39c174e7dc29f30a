"""GradCamViewer's trust panel: "can I trust this map?", by deletion/insertion curves and the sanity check.

It only wires: the checks run in ``core/map_checks.py``'s background jobs (the kernel stays
free, a Stop button ends them) and are kept there per (check, method, layer, class,
evidence); this file draws their curves (bqplot Lines) and the cascade's maps.
"""

from __future__ import annotations

import html
import threading
from typing import Callable

import bqplot
import ipywidgets as widgets
import numpy as np

from ..core import imaging
from ..core.jobs import BackgroundJob
from ..core.map_checks import METRICS, CascadeView, MapChecks, MapSettings
from ._base import image_view, show
from ._charts import round_ticks

CURVE_COLOURS = {"map": "#d62728", "random": "#7f7f7f", "centre": "#1f77b4"}
CURVE_CHART_PX = (340, 240)  # width, height
CURVE_CHART_MARGIN = {"top": 40, "bottom": 45, "left": 65, "right": 15}  # left: the y title clear of "0.75"
CASCADE_PICTURE_PX = 96
CHECK_LABELS = {"curves": "Deletion / insertion", "cascade": "Sanity check"}


class TrustPanel:
    """The panel under the viewer's maps; ``box`` is what to lay out.

    ``current()`` gives the settings and the heatmap of the map the viewer shows; call
    :meth:`show_for` when they change.
    """

    def __init__(self, checks: MapChecks, current: Callable[[], tuple[MapSettings, np.ndarray]], colormap: str):
        self._checks, self._current, self._colormap = checks, current, colormap
        self.job: BackgroundJob | None = None
        self._draw_lock = threading.RLock()  # the job's thread draws too
        self.buttons = {
            check: widgets.Button(description=label, icon="play", layout=widgets.Layout(width="auto"))
            for check, label in CHECK_LABELS.items()
        }
        for check, button in self.buttons.items():
            button.on_click(lambda _, check=check: self.run(check))
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.stop_button.on_click(lambda _: self.job.stop() if self.job is not None else None)
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="160px", display="none"))
        self.status = widgets.HTML()
        self._check = ""  # of self.job
        self._line: tuple[MapSettings, str] | None = None  # the last check's map, and what the line says of it
        self.curve_charts = {metric: CurveChart(metric) for metric in METRICS}
        self.cascade_row = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", overflow="visible"))
        self.cascade_caption = widgets.HTML()
        self.box = widgets.VBox(
            [
                widgets.HTML("<b>Can I trust this map?</b>"),
                widgets.HBox(
                    [*self.buttons.values(), self.stop_button, self.progress, self.status],
                    layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
                ),
                widgets.HBox([chart.box for chart in self.curve_charts.values()], layout=widgets.Layout(flex_flow="row wrap")),
                self.cascade_caption,
                self.cascade_row,
            ]
        )

    def run(self, check: str) -> BackgroundJob:
        """Start ``check`` ("curves" or "cascade") of the map shown, replacing a job still running."""
        if self.job is not None and not self.job.finished:
            self.job.stop()
        settings, heatmap = self._current()
        self.progress.value, self.progress.max = 0, 1
        self.stop_button.disabled = False
        self.job = self._checks.job(check, settings, heatmap, on_progress=self._report, on_finish=self._on_finish)
        self._check = check  # of self.job
        self._say(settings, f"{CHECK_LABELS[check]}: running…")
        return self.job.start()

    def show_for(self, settings: MapSettings):
        """Show the kept checks of the map of ``settings``, empty where none ran yet."""
        with self._draw_lock:
            curves = self._checks.result("curves", settings)
            for metric, chart in self.curve_charts.items():
                chart.show(None if curves is None else curves[metric])
            self._show_cascade(self._checks.result("cascade", settings))
            self._show_line(settings)

    # The job's callbacks run in its thread; they draw only while the job is still this panel's.

    def _report(self, job: BackgroundJob):
        if job is self.job:
            self.progress.max, self.progress.value = job.total, job.done

    def _on_finish(self, job: BackgroundJob):
        with self._draw_lock:  # the kernel's thread may draw another map's checks in between
            if job is not self.job:
                return
            self.stop_button.disabled = True
            what = CHECK_LABELS[self._check]
            if job.outcome == "failed":
                text = f'<span style="color:#b00020">{what} failed: {html.escape(str(job.error))}</span>'
            else:
                text = f"{what}: {job.outcome}"
            self._say(self._line[0], text)
            self.show_for(self._current()[0])
            if job.outcome == "stopped" and isinstance(job.result, CascadeView):  # a stopped cascade is shown, not kept
                self._show_cascade(job.result)

    def _say(self, settings: MapSettings, text: str):
        """What the line says of the check of ``settings``' map; shown while that map is."""
        self._line = (settings, text)
        self._show_line(settings)

    def _show_line(self, settings: MapSettings):
        """The line of the last check, if it is of the map shown: a cleared check leaves no "done" beside it.
        The bar shows only while that check runs: before any, it was an empty grey box."""
        described = self._line is not None and self._line[0] == settings
        self.status.value = self._line[1] if described else ""
        running = described and self.job is not None and not self.job.finished
        self.progress.layout.display = None if running else "none"

    def _show_cascade(self, cascade):
        if cascade is None:
            self.cascade_caption.value, self.cascade_row.children = "", ()
            return
        old = self.cascade_row.children
        captions = ["original", *cascade.layers]
        notes = ["", *(f"ρ = {rho:.2f}" for rho in cascade.correlations)]
        self.cascade_row.children = [
            _cascade_cell(caption, imaging.colormap(heatmap, self._colormap), note)
            for caption, heatmap, note in zip(captions, cascade.maps, notes)
        ]
        for cell in old:
            cell.close()
        fate = "" if cascade.complete else " (stopped early)"
        self.cascade_caption.value = (
            "<small>Sanity check: the layers' weights randomised from the top down, one more each picture; "
            f"a map that explains the model fades, its rank correlation ρ with the original falls to 0{fate}.</small>"
        )


class CurveChart:
    """A metric's curves of the map and its baselines; under it, their areas side by side (a bqplot legend covered the curves).
    ``box`` is what to lay out."""

    def __init__(self, metric: str):
        self.metric = metric
        x_scale, y_scale = bqplot.LinearScale(min=0.0, max=1.0), bqplot.LinearScale(min=0.0, max=1.0)
        self.lines = bqplot.Lines(
            x=[], y=[], scales={"x": x_scale, "y": y_scale}, colors=list(CURVE_COLOURS.values())
        )
        removed = "removed" if metric == "deletion" else "revealed"
        (width, height), margin = CURVE_CHART_PX, CURVE_CHART_MARGIN
        # Both axes run 0 to 1: round ticks, as many as fit, not d3's eleven.
        x_ticks = round_ticks(0.0, 1.0, width - margin["left"] - margin["right"])
        y_ticks = round_ticks(0.0, 1.0, height - margin["top"] - margin["bottom"])
        self.figure = bqplot.Figure(
            marks=[self.lines],
            axes=[
                bqplot.Axis(scale=x_scale, label=f"fraction of pixels {removed}", tick_format=".2~f", tick_values=x_ticks),
                bqplot.Axis(
                    scale=y_scale,
                    orientation="vertical",
                    label="probability",
                    tick_format=".2~f",
                    tick_values=y_ticks,
                    label_offset="45px",
                ),
            ],
            title=metric,
            layout=widgets.Layout(width=f"{width}px", height=f"{height}px"),
            fig_margin=margin,
        )
        self.key = widgets.HTML(layout=widgets.Layout(max_width="400px"))  # wraps, so two charts stay side by side
        self.box = widgets.VBox([self.figure, self.key], layout=widgets.Layout(margin="0 12px 8px 0"))
        self.show(None)

    def show(self, view):
        with self.lines.hold_sync(), self.figure.hold_sync():
            if view is None:
                self.lines.x, self.lines.y = [], []
                self.figure.title, self.key.value = f"{self.metric}: not run yet", ""
                return
            self.lines.x = view.fractions
            self.lines.y = np.stack([view.curves[name] for name in CURVE_COLOURS])
            self.figure.title = f"{self.metric} ({view.better} area is better)"
        areas = (f'<span style="color:{colour}">■ {name} {view.auc[name]:.3f}</span>' for name, colour in CURVE_COLOURS.items())
        against = "<br>a map against the class: removing its pixels should raise the probability" if view.counterfactual else ""
        self.key.value = "<small>area under the curve: " + " &nbsp; ".join(areas) + against + "</small>"


def _cascade_cell(caption: str, picture: np.ndarray, note: str) -> widgets.VBox:
    view = image_view(f"{CASCADE_PICTURE_PX}px")
    show(view, imaging.upscale_to(picture, CASCADE_PICTURE_PX))
    return widgets.VBox(
        [widgets.HTML(f"<small>{html.escape(caption)}</small>"), view, widgets.HTML(f"<small>{html.escape(note)}</small>")],
        layout=widgets.Layout(width=f"{CASCADE_PICTURE_PX + 8}px", margin="0 4px 4px 0"),
    )
