"""The bqplot pieces the widgets compose: a clickable bar chart, a colour bar, a clickable picture.

Each composes a bqplot Figure of Marks and Scales and exposes ``figure`` to lay out; no maths
beyond placing values on scales (pictures come from ``cnnviz_widgets.core.imaging``).
"""

from __future__ import annotations

import math
from typing import Callable

import bqplot
import ipywidgets as widgets
import numpy as np

from ..core import imaging
from ._closing import owned_widgets

TICK_SPACING_PX = 35  # about this much axis per labelled tick: d3's default of ten ticks crowds a small chart


def tick_count(length_px: float) -> int:
    """How many round ticks (``imaging.nice_ticks``) an axis ``length_px`` long has room for.

    One more than the spaces: ``nice_ticks`` keeps its ticks inside the range, so they land
    more than 25 px apart on any axis of 100 px or more.
    """
    return max(2, int(length_px // TICK_SPACING_PX) + 1)


def round_ticks(low: float, high: float, length_px: float) -> np.ndarray:
    """Round tick values within ``low..high``, as many as an axis ``length_px`` long has room for."""
    return imaging.nice_ticks(low, high, tick_count(length_px))


class BarChart:
    """A bqplot bar chart whose bars can be clicked to select one.

    Composition as in bqplot: a Figure holds a Bars mark over an ordinal x scale
    and a linear y scale. ``on_select(callback)`` calls ``callback(index)`` when a
    bar is clicked (the front end sets ``bars.selected``). Behind the bars, a
    transparent full-height bar per value takes the clicks a bar too short to hit
    would miss (a probability of 0.007 is under a pixel high); it has scales of its
    own, the same bands on x and a fixed 0..1 on y, so that new values redraw the
    chart once, not once for each mark sharing a scale whose domain changed. At most
    ``MAX_X_TICKS`` x labels show (bqplot's ``num_ticks`` thins an ordinal axis
    evenly); names, and thinned numbers, are slanted so that neighbours do not run together.
    The y axis gets round ``tick_values`` as many as the plot's height has room for (bqplot's
    ``num_ticks`` alone spaces ticks evenly from the lowest to the highest value: 0.516, 0.251, -0.0132).
    """

    MAX_X_TICKS = 10
    SLANTED_MARGIN_PX = 70  # room under the axis for slanted names

    def __init__(self, title: str = "", x_label: str = "", y_label: str = "", height_px: int = 220):
        self.height_px = height_px
        x_scale, y_scale = bqplot.OrdinalScale(), bqplot.LinearScale()
        self.hit_area = bqplot.Bars(
            x=[],
            y=[],
            scales={"x": bqplot.OrdinalScale(), "y": bqplot.LinearScale(min=0.0, max=1.0)},
            colors=["white"],
            opacities=[0.0],
            interactions={"click": "select", "hover": "tooltip"},
            tooltip=bqplot.Tooltip(fields=["x"]),
        )
        self.bars = bqplot.Bars(
            x=[],
            y=[],
            scales={"x": x_scale, "y": y_scale},
            interactions={"click": "select", "hover": "tooltip"},
            tooltip=bqplot.Tooltip(fields=["x", "y"], formats=["", ".4g"]),
            selected_style={"fill": "#d62728"},
            unselected_style={"opacity": 0.8},
        )
        self.x_axis = bqplot.Axis(scale=x_scale, label=x_label, label_offset="30px", num_ticks=self.MAX_X_TICKS)
        self.y_axis = bqplot.Axis(
            scale=y_scale, orientation="vertical", label=y_label, tick_format=".3~g", label_offset="50px"
        )
        self.figure = bqplot.Figure(
            marks=[self.hit_area, self.bars],
            axes=[self.x_axis, self.y_axis],
            title=title,
            layout=widgets.Layout(height=f"{height_px}px", width="100%"),
            fig_margin={"top": 40, "bottom": 40, "left": 70, "right": 10},
            display_toolbar=False,  # its pan/zoom/save box covers the top bars on hover
        )

    def show(self, labels, values, selected: int | None = None):
        labels = [str(label) for label in labels]
        values = np.asarray(values, dtype=float)
        slanted = len(labels) > self.MAX_X_TICKS or any(not label.lstrip("-").isdigit() for label in labels)
        highest, lowest = values.max(initial=0.0), values.min(initial=0.0)
        margin = self.SLANTED_MARGIN_PX if slanted else 40
        plot_height_px = self.height_px - self.figure.fig_margin["top"] - margin
        with self.hit_area.hold_sync(), self.bars.hold_sync(), self.x_axis.hold_sync(), self.y_axis.hold_sync():
            self.x_axis.tick_rotate = -30 if slanted else 0
            # A slanted label ends at its tick: centred, its first half rose over the axis line.
            self.x_axis.tick_style = {"text-anchor": "end"} if slanted else {}
            self.hit_area.x = labels
            self.hit_area.y = np.ones(len(values))  # the chart's full height
            # The y scale spans the values and the bars' base: 0, the extremes' initial value.
            self.y_axis.tick_values = round_ticks(lowest, highest, plot_height_px)
            self.bars.x = labels
            self.bars.y = values
            self.bars.selected = None if selected is None else [int(selected)]
        if self.figure.fig_margin["bottom"] != margin:
            self.figure.fig_margin = {**self.figure.fig_margin, "bottom": margin}

    def on_select(self, callback):
        def forward(change):
            if change["new"] is not None and len(change["new"]) == 1:
                callback(int(change["new"][0]))

        def forward_hit(change):
            forward(change)
            if change["new"]:
                self.hit_area.selected = None  # a second click on the same spot selects again

        self.bars.observe(forward, "selected")
        self.hit_area.observe(forward_hit, "selected")


class ColorBar:
    """The colour scale of a colour-mapped picture: the colormap as a vertical bar, valued ``low`` (bottom) to ``high`` (top).

    The bar is a bqplot Image of the colormap's 256 colours on a linear y scale with
    an axis, so a new picture only sends two numbers; a new colormap sends a 256×1
    PNG. The bar itself lies on a fixed 0..1 scale and only the axis on the values':
    new bounds are one message and one redraw, not two. (bqplot's own ColorAxis keeps 100 px free at both ends of its bar: beside
    a 320-px map it drew a 120-px bar.) Its ticks are round values, as many as its height
    has room for: the layout's, where a widget sets it in px to follow a picture, else ``height_px``.
    """

    WIDTH_PX = 80  # the bar and its tick labels
    MARGIN_PX = 6  # above and below the bar: room for half a tick label

    def __init__(self, colormap: str = "viridis", label: str = "", height_px: int = 320):
        self.height_px = height_px
        self.scale = bqplot.LinearScale(min=0.0, max=1.0)
        self.colormap = colormap
        self.gradient = bqplot.Image(
            image=_colormap_column(colormap),
            x=(0.0, 1.0),
            y=(0.0, 1.0),
            scales={"x": bqplot.LinearScale(min=0.0, max=1.0), "y": bqplot.LinearScale(min=0.0, max=1.0)},
        )
        self.axis = bqplot.Axis(
            scale=self.scale, orientation="vertical", side="right", label=label, tick_format=".3~g", label_offset="42px"
        )
        self.figure = bqplot.Figure(
            marks=[self.gradient],
            axes=[self.axis],
            padding_x=0,
            padding_y=0,
            fig_margin={"top": self.MARGIN_PX, "bottom": self.MARGIN_PX, "left": 0, "right": self.WIDTH_PX - 16},
            display_toolbar=False,
            layout=widgets.Layout(width=f"{self.WIDTH_PX}px", height=f"{height_px}px", flex="0 0 auto"),
        )

    def show(self, low: float, high: float, colormap: str | None = None, label: str | None = None):
        """Bounds (and optionally colormap and label) of the picture now shown."""
        if colormap is not None and colormap != self.colormap:
            # bqplot redraws an Image mark for a new `image` widget, not for a new value of the old one.
            old, self.colormap = self.gradient.image, colormap
            self.gradient.image = _colormap_column(colormap)
            for part in owned_widgets(old):  # the image and its layout
                part.close()
        with self.scale.hold_sync(), self.axis.hold_sync():
            self.scale.min, self.scale.max = float(low), float(high)
            self.axis.tick_values = round_ticks(float(low), float(high), self._bar_length_px())
        if label is not None:
            self.axis.label = label

    def _bar_length_px(self) -> float:
        height = self.figure.layout.height or ""
        return (float(height.removesuffix("px")) if height.endswith("px") else self.height_px) - 2 * self.MARGIN_PX


def _colormap_column(colormap: str) -> widgets.Image:
    """Matplotlib colormap ``colormap`` as a 1×256 PNG column, its top colour at the top."""
    return widgets.Image(format="png", value=imaging.to_png(imaging.colormap_table(colormap)[::-1, None]))


class PictureFigure:
    """A bqplot Image mark on pixel scales: shows a uint8 picture, reports clicked pixels.

    The mark spans x in 0..width and y in 0..height with the top row at y = height,
    so the front end's click at (click_x, click_y) is pixel
    (row = height - click_y, column = click_x). Only clicks are reported: bqplot's
    Image mark sends no position on hover.
    """

    def __init__(self, box_px: int = 320):
        self.box_px = box_px
        self.shape = (1, 1)
        self._shown_box_px = box_px
        self._fills_width = False
        self.x_scale = bqplot.LinearScale(min=0, max=1)
        self.y_scale = bqplot.LinearScale(min=0, max=1)
        # bqplot's Image mark redraws when its `image` trait changes, not when that
        # Image widget's value does: show() fills the hidden buffer, then swaps it in.
        self._buffers = (widgets.Image(format="png"), widgets.Image(format="png"))
        self.image = self._buffers[0]
        self.mark = bqplot.Image(image=self.image, scales={"x": self.x_scale, "y": self.y_scale})
        self.figure = bqplot.Figure(
            marks=[self.mark],
            padding_x=0,
            padding_y=0,
            fig_margin={"top": 0, "bottom": 0, "left": 0, "right": 0},
            layout=widgets.Layout(width=f"{box_px}px", height=f"{box_px}px"),
            display_toolbar=False,  # on hover, its pan/zoom/save box covered the picture's top right
        )

    def show(self, picture: np.ndarray, palette: np.ndarray | None = None, box_px: int | None = None, fill_width=False):
        """Show uint8 ``picture``; with ``palette``, its pixels are palette rows (see ``imaging.to_png``).

        ``box_px`` (the box given at creation by default) is the side of the box it fits
        into; with ``fill_width`` it shrinks, keeping its aspect, to a narrower cell.
        """
        height, width = picture.shape[:2]
        box_px = box_px or self.box_px
        if ((height, width), box_px, fill_width) != (self.shape, self._shown_box_px, self._fills_width):
            self.shape, self._shown_box_px, self._fills_width = (height, width), box_px, fill_width
            pixel_px = box_px / max(height, width)
            with self.x_scale.hold_sync(), self.y_scale.hold_sync(), self.mark.hold_sync():
                self.x_scale.max, self.y_scale.max = width, height
                self.mark.x, self.mark.y = (0, width), (0, height)
            shown_width, shown_height = max(16, round(width * pixel_px)), max(16, round(height * pixel_px))
            with self.figure.hold_sync(), self.figure.layout.hold_sync():
                # bqplot draws within these width/height bounds: the picture keeps its aspect when the cell is narrower.
                ratio = shown_width / shown_height  # in an order that never has min > max
                self.figure.min_aspect_ratio = min(self.figure.min_aspect_ratio, ratio)
                self.figure.max_aspect_ratio = self.figure.min_aspect_ratio = ratio
                self.figure.layout.width = "100%" if fill_width else f"{shown_width}px"
                self.figure.layout.max_width = f"{shown_width}px"
                self.figure.layout.height = f"{shown_height}px"
        hidden = self._buffers[1] if self.image is self._buffers[0] else self._buffers[0]
        hidden.value = imaging.to_png(picture, palette)
        self.image = self.mark.image = hidden

    def on_click(self, callback: Callable[[int, int], None]):
        """Call ``callback(row, column)`` with the pixel under a click."""

        def forward(_mark, content):
            data = content.get("data") or {}
            if data.get("click_x") is None or data.get("click_y") is None:
                return
            height, width = self.shape
            row = min(max(math.floor(height - data["click_y"]), 0), height - 1)
            column = min(max(math.floor(data["click_x"]), 0), width - 1)
            callback(row, column)

        self.mark.on_element_click(forward)
