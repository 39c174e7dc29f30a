"""The weights half of FilterGallery: the kernel grid, the enlarged filter, the weight histogram and table.

A mixin of :class:`~cnnviz_widgets.widgets.filter_gallery.FilterGallery`, which
declares the traits and reacts to them; what it draws are core values
(``core/weights.py``: KernelPages, WeightHistogram, weight_table). :class:`TileGrid`,
the clickable grid, serves the patterns view too.
"""

from __future__ import annotations

import html

import bqplot
import ipywidgets as widgets
import numpy as np

from ..core import imaging
from ..core.weights import WeightHistogram, bias, param_counts, weight_table
from ._base import image_view, show
from ._charts import ColorBar, PictureFigure, round_ticks

ENLARGED_SIZE = 256  # pixels of the enlarged filter or pattern
GRID_BOX_PX = 420  # the grids are drawn to fit this box
HISTOGRAM_BINS = 40
HISTOGRAM_HEIGHT_PX = 260
HISTOGRAM_MARGIN = {"top": 40, "bottom": 45, "left": 70, "right": 20}


class TileGrid:
    """A grid picture whose clicks report the index of the tile under the pointer."""

    def __init__(self, on_select, box_px: int = GRID_BOX_PX):
        self.view = PictureFigure(box_px)
        self.picture = np.zeros((1, 1, 3), np.uint8)
        self._on_select = on_select
        self._layout: imaging.GridLayout | None = None
        self.view.on_click(self._clicked)

    def show(self, picture: np.ndarray, layout: imaging.GridLayout, first_index: int = 0, tiles_per_index: int = 1):
        """Draw uint8 ``picture``; a click on tile ``t`` of ``layout`` selects ``first_index + t // tiles_per_index``.

        ``tiles_per_index`` > 1 when a filter is several tiles (one per input channel).
        """
        self.picture = picture
        self._layout, self._first_index, self._tiles_per_index = layout, first_index, tiles_per_index
        self.view.show(picture)  # a gray PNG is a third of an RGB one

    def _clicked(self, row: int, column: int):
        tile = self._layout.index_at(row, column)
        if tile is not None:
            self._on_select(self._first_index + tile // self._tiles_per_index)


class WeightsView:
    """The kernels of the gallery's layer as pictures, a page of filters at a time, and how its weights spread."""

    def _build_weights_view(self) -> widgets.VBox:
        self._weight_page = None  # the KernelPage on the grid
        self._weights_grid = TileGrid(self._select)
        self._weights_filter_view = image_view(f"{ENLARGED_SIZE}px")
        self._weights_filter_picture = np.zeros((1, 1, 3), np.uint8)
        self._weights_caption = widgets.HTML()
        self._kernel_colour_bar = ColorBar("gray", "weight", height_px=GRID_BOX_PX)
        # Shown by being a child: a hidden (display: none) bqplot figure draws negative sizes.
        self._kernel_scale_box = widgets.Box()
        self._kernel_legend = widgets.HTML(layout=widgets.Layout(max_width=f"{GRID_BOX_PX}px"))
        self._histogram = self._build_histogram()
        self._weight_table = widgets.HTML()
        grid = widgets.VBox([self._weights_grid.view.figure, self._kernel_legend])
        selected_filter = widgets.VBox([self._weights_filter_view, self._weights_caption])
        wrapping = widgets.Layout(flex_flow="row wrap")
        return widgets.VBox(
            [
                widgets.HBox([grid, self._kernel_scale_box, selected_filter], layout=wrapping),
                widgets.HBox([self._histogram, self._weight_table], layout=wrapping),
            ]
        )

    def _build_histogram(self) -> bqplot.Figure:
        x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale(min=0)
        scales = {"x": x_scale, "y": y_scale}
        self._layer_bars = bqplot.Bars(x=[], y=[], scales=scales, colors=["#9e9e9e"], padding=0.05)
        self._filter_line = bqplot.Lines(x=[], y=[], scales=scales, colors=["#d62728"], stroke_width=2)
        axes = [
            bqplot.Axis(scale=x_scale, label="weight", tick_format=".2~g"),
            bqplot.Axis(
                scale=y_scale,
                orientation="vertical",
                label="share of weights",
                tick_format=".1~%",
                label_offset="50px",
            ),
        ]
        return bqplot.Figure(
            marks=[self._layer_bars, self._filter_line],
            axes=axes,
            title="Weights: layer (gray bars), filter (red line)",
            title_style={"font-size": "14px"},
            layout=widgets.Layout(width=f"{GRID_BOX_PX}px", height=f"{HISTOGRAM_HEIGHT_PX}px"),
            fig_margin=HISTOGRAM_MARGIN,
        )

    def _show_layer_weights(self):
        self._layer_histogram = WeightHistogram.of(self._kernel, HISTOGRAM_BINS)
        with self._layer_bars.hold_sync():
            self._layer_bars.x = self._layer_histogram.centres
            self._layer_bars.y = self._layer_histogram.fractions
        self._histogram.axes[0].tick_values = self._layer_histogram.ticks()
        self._weight_table.value = weight_table_html(self._model, self.layer)

    def _show_filter_weights(self):
        pages, channel = self._pages, self.channel
        self._drawn_channel = channel
        filters = pages.page_of(channel)
        if self._weight_page is None or self._weight_page.filters != filters:
            page = self._weight_page = pages.page(filters)
            self._weights_grid.show(page.picture, page.layout, filters.start, page.tiles_per_filter)
            self._show_kernel_scale(page)
        self._weights_filter_picture = self._weight_page.filter_picture(channel, ENLARGED_SIZE)
        show(self._weights_filter_view, self._weights_filter_picture)

        own = WeightHistogram.of(pages.kernel[..., channel], self._layer_histogram.edges)
        with self._filter_line.hold_sync():
            self._filter_line.x = self._layer_bars.x
            self._filter_line.y = own.fractions
        # Round shares up to the higher of bars and line (the scale's top), not d3's tick every 1 %.
        highest_share = max(self._layer_histogram.fractions.max(), own.fractions.max())
        plot_height_px = HISTOGRAM_HEIGHT_PX - HISTOGRAM_MARGIN["top"] - HISTOGRAM_MARGIN["bottom"]
        self._histogram.axes[1].tick_values = round_ticks(0.0, highest_share, plot_height_px)
        self._weights_caption.value = self._filter_caption(own, filters)

    def _show_kernel_scale(self, page):
        """The colour bar where one scale holds for the page's tiles, and what the colours mean."""
        shared = page.weight_range is not None
        if shared:
            self._kernel_colour_bar.show(*page.weight_range, colormap=page.colormap)
        self._kernel_scale_box.children = [self._kernel_colour_bar.figure] if shared else []
        self._kernel_legend.value = KERNEL_LEGENDS[self._pages.rgb, self.scale]

    def _filter_caption(self, own: WeightHistogram, page: range) -> str:
        biases = bias(self._model, self.layer)
        if biases is None:
            bias_text = "no bias"
        elif len(biases) == self.filter_count:
            bias_text = f"bias {biases[self.channel]:+.4g}"
        else:
            bias_text = "bias added after the pointwise step"  # separable convolutions
        colours = " (BGR kernel shown as RGB)" if self._pages.bgr else ""
        paging = f"<br>grid: filters {page.start}–{page.stop - 1}" if len(page) < self.filter_count else ""
        return (
            f"<b>filter {self.channel}</b> of {self.filter_count}{colours}<br>{bias_text}<br>"
            f"weights {own.minimum:.4g} … {own.maximum:.4g}, mean {own.mean:+.3g}{paging}"
        )


_PER_TILE = "Each tile is stretched to its own min–max: compare shapes, not strengths across tiles."
_RGB_COLOURS = (
    "A tile's colour is the input colour the filter responds to; its opposite colour "
    "(cyan for red, magenta for green, yellow for blue) is one it is driven down by."
)
KERNEL_LEGENDS = {  # (colour tiles, scale) → what the colours of the kernel grid mean
    (False, "tile"): f"Dark: the tile's most negative weight, light: its most positive. {_PER_TILE}",
    (False, "global"): "One scale for the page (bar): black its lowest weight, white its highest; strengths compare.",
    (False, "signed"): "One scale for the layer, symmetric around 0 (bar): "
    "<b style='color:#b2182b'>red</b> positive, <b style='color:#2166ac'>blue</b> negative, white 0.",
    (True, "tile"): f"{_RGB_COLOURS} {_PER_TILE}",
    (True, "global"): f"{_RGB_COLOURS} One scale for the page (bar) over the three channels.",
    (True, "signed"): f"Mid-gray is 0. {_RGB_COLOURS} One scale for the layer, symmetric around 0 (bar).",
}


def weight_table_html(model, layer: str) -> str:
    """The layer's named weights (core weight_table) and the model's parameter counts as an HTML table."""
    cell = 'style="padding:2px 8px;text-align:{}"'
    columns = ("weight", "shape", "dtype", "trainable", "params")
    header = "".join(f"<th {cell.format('left')}>{name}</th>" for name in columns)
    rows = "".join(
        f"<tr><td {cell.format('left')}>{html.escape(row['name'])}</td>"
        f"<td {cell.format('left')}>{row['shape']}</td>"
        f"<td {cell.format('left')}>{row['dtype']}</td>"
        f"<td {cell.format('center')}>{'yes' if row['trainable'] else 'no'}</td>"
        f"<td {cell.format('right')}>{row['params']:,}</td></tr>"
        for row in weight_table(model, layer)
    )
    counts = param_counts(model)
    return (
        f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"
        f"<div>model: {counts['total']:,} params, {counts['trainable']:,} trainable, "
        f"{counts['non_trainable']:,} non-trainable</div>"
    )
