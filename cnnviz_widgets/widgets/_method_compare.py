"""GradCamViewer's compare row: one class's maps by two to four methods side by side, one colour bar for all.

It only lays out: the maps come from ``core/attribution/explanation.py`` (each method's
map computed once per layer, class and evidence), the pictures from ``core/imaging.py``.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

from ..core import imaging
from ..core.attribution import METHODS
from ..core.attribution.explanation import MAX_COMPARED, method_title
from ._base import image_view, show
from ._charts import ColorBar

COMPARE_PANEL_PX = 120  # four maps and the colour bar side by side in a 560-px output before the row wraps
COMPARE_DISPLAY_SIZE = 192


class MethodComparison:
    """A row of up to MAX_COMPARED captioned maps in [0, 1] and their shared colour bar; ``box`` is the row to lay out."""

    def __init__(self, colormap: str):
        self.colormap = colormap
        self._captions = [widgets.HTML() for _ in range(MAX_COMPARED)]
        self._views = [image_view("100%") for _ in range(MAX_COMPARED)]
        self._panels = [
            widgets.VBox(
                [caption, view],
                layout=widgets.Layout(
                    flex=f"1 1 {COMPARE_PANEL_PX}px",
                    min_width=f"{COMPARE_PANEL_PX}px",
                    max_width=f"{COMPARE_DISPLAY_SIZE}px",
                    margin="0 8px 8px 0",
                ),
            )
            for caption, view in zip(self._captions, self._views)
        ]
        self.scale = ColorBar(colormap, label="heat (1 = peak)", height_px=COMPARE_DISPLAY_SIZE)
        self.scale.show(0.0, 1.0)
        self.note = widgets.HTML()
        row = widgets.HBox(
            [*self._panels, self.scale.figure],
            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start", overflow="visible"),
        )
        # The row joins the box only while it has maps: bqplot draws a figure under display:none
        # at size 0, which logs negative <rect> sizes in the browser console.
        self._content = (row, self.note)
        self.box = widgets.VBox([], layout=widgets.Layout(display="none"))
        self.maps: list[np.ndarray] = []

    def show(self, titled_maps: list[tuple[str, np.ndarray]], note: str = ""):
        """Show (caption, map) pairs left to right, or hide the row when there are none."""
        self.maps = [heatmap for _, heatmap in titled_maps]
        with self.box.hold_sync():
            for index, panel in enumerate(self._panels):
                panel.layout.display = None if index < len(titled_maps) else "none"
            for (title, heatmap), caption, view in zip(titled_maps, self._captions, self._views):
                caption.value = f"<b>{html.escape(title)}</b>"
                show(view, imaging.upscale_to(imaging.colormap(heatmap, self.colormap), COMPARE_DISPLAY_SIZE))
            self.note.value = f"<i>{html.escape(note)}</i>" if note else ""
            self.box.children = self._content if titled_maps else ()
            self.box.layout.display = None if titled_maps else "none"

    def pictures(self) -> list[np.ndarray]:
        """The maps shown, colour-mapped uint8 RGB, left to right."""
        return [imaging.colormap(heatmap, self.colormap) for heatmap in self.maps]


def method_tags(methods: list[str]) -> widgets.TagsInput:
    """The compare box: TagsInput has no (label, value) pairs, so its tags are the methods' titles
    ("Grad-CAM", as the captions say), which :func:`method_titles` and :func:`method_ids` translate."""
    return widgets.TagsInput(
        value=method_titles(methods), allowed_tags=method_titles(METHODS), placeholder="compare methods"
    )


def method_titles(methods) -> list[str]:
    return [method_title(method) for method in methods]


def method_ids(titles) -> list[str]:
    """The methods of ``titles``; a title of no method stays as it is, for the viewer to refuse."""
    ids = {method_title(method): method for method in METHODS}
    return [ids.get(title, title) for title in titles]
