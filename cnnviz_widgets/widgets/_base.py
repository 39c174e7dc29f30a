"""What the three widgets share: refusing bad values, bar charts, image views, PNG export.

No model maths here: widgets call ``cnnviz_widgets.core`` and only lay out and draw.
"""

from __future__ import annotations

import base64
import html

import bqplot
import ipywidgets as widgets
import numpy as np
from traitlets import TraitError, Unicode, observe

from ..core import imaging
from ..core.errors import CnnvizError


class WidgetValueError(CnnvizError, TraitError, ValueError):
    """A trait value the widget refused; the widget keeps its previous state."""


class VisualizerWidget(widgets.VBox):
    """A VBox with an error line and a static PNG of what it shows.

    Subclasses validate traits with ``@validate`` and call :meth:`refuse` for a bad
    value: the message shows in the widget and raises from code, and traitlets
    leaves the old value in place. They implement :meth:`panels`.
    """

    error = Unicode("", help="Why the last value was refused; empty after a good one.")

    def __init__(self, **kwargs):
        self._error_line = widgets.HTML(layout=widgets.Layout(min_height="0"))
        super().__init__(**kwargs)

    def refuse(self, message: str):
        self.error = message
        raise WidgetValueError(message)

    def accept(self):
        """Clear a shown error after a value was accepted."""
        self.error = ""

    @observe("error")
    def _show_error(self, change):
        text = html.escape(change["new"])
        self._error_line.value = f'<span style="color:#b00020">{text}</span>' if text else ""

    def panels(self) -> list[np.ndarray]:
        """The pictures this widget shows now, uint8 (H, W, 3), left to right."""
        raise NotImplementedError

    def to_png(self) -> bytes:
        """A PNG of what the widget shows, for export and where widgets do not render."""
        pictures = [imaging.to_uint8_image(p) for p in self.panels()]
        height = max(p.shape[0] for p in pictures)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 8), (0, 0)), constant_values=255) for p in pictures]
        return imaging.to_png(np.concatenate(padded, axis=1)[:, :-8])

    def _repr_mimebundle_(self, **kwargs):
        # nbconvert and GitHub cannot draw widgets; they fall back to this PNG.
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.to_png()).decode("ascii")
        return bundle


def image_view(width: str = "256px") -> widgets.Image:
    """A PNG image widget; upscale small maps with imaging.upscale to keep pixels crisp."""
    return widgets.Image(format="png", layout=widgets.Layout(width=width))


def show(view: widgets.Image, picture: np.ndarray):
    view.value = imaging.to_png(imaging.to_uint8_image(picture))


class BarChart:
    """A bqplot bar chart whose bars can be clicked to select one.

    Composition as in bqplot: a Figure holds a Bars mark over an ordinal x scale
    and a linear y scale. ``on_select(callback)`` calls ``callback(index)`` when a
    bar is clicked (the front end sets ``bars.selected``).
    """

    def __init__(self, title: str = "", x_label: str = "", y_label: str = "", height: str = "220px"):
        x_scale, y_scale = bqplot.OrdinalScale(), bqplot.LinearScale()
        self.bars = bqplot.Bars(
            x=[],
            y=[],
            scales={"x": x_scale, "y": y_scale},
            interactions={"click": "select", "hover": "tooltip"},
            tooltip=bqplot.Tooltip(fields=["x", "y"], formats=["", ".4g"]),
            selected_style={"fill": "#d62728"},
            unselected_style={"opacity": 0.8},
        )
        axes = [
            bqplot.Axis(scale=x_scale, label=x_label, tick_values=[] if not x_label else None),
            bqplot.Axis(scale=y_scale, orientation="vertical", label=y_label, tick_format=".3g"),
        ]
        self.figure = bqplot.Figure(
            marks=[self.bars],
            axes=axes,
            title=title,
            layout=widgets.Layout(height=height, width="100%"),
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 10},
        )

    def show(self, labels, values, selected: int | None = None):
        with self.bars.hold_sync():
            self.bars.x = list(labels)
            self.bars.y = np.asarray(values, dtype=float)
            self.bars.selected = None if selected is None else [int(selected)]

    def on_select(self, callback):
        def forward(change):
            if change["new"] is not None and len(change["new"]) == 1:
                callback(int(change["new"][0]))

        self.bars.observe(forward, "selected")
