"""FilterGallery: the widget that shows a layer's kernels (S0, S2, S3) and its filter patterns (S1).

Only wiring: traits, controls, observers and layout. What it shows comes from core:
kernel pages and histograms from ``core/weights.py``, patterns from a
``core/pattern_jobs.PatternJob`` that runs in the background and fills a
``PatternCache`` (the patterns view's wiring is ``_filter_patterns.py``). Two views of the same filters, switched with ``view``:

- ``"weights"``: every kernel as a tile grid, the selected filter enlarged with its
  bias, a histogram of the layer's weights and the table of its named weights;
- ``"patterns"``: gradient-ascent patterns, computed on demand batch by batch, with
  progress and a Stop button.

``channel`` selects one filter in both views; clicking a tile selects it too. Layers
with thousands of filters are shown a page at a time: the page that holds ``channel``.
"""

from __future__ import annotations

import html
import threading

import bqplot
import ipywidgets as widgets
import numpy as np
from traitlets import Any, Float, Int, Tuple, Unicode, Union, observe

from ..core import checks as core_checks
from ..core import imaging
from ..core.errors import CnnvizError, listed
from ..core.graph import LayerGraph
from ..core.pattern_jobs import PatternCache
from ..core.patterns import (
    MEMORY_BUDGET_MEANING,
    PREPROCESS_MEANING,
    SEED_MEANING,
    STEP_SIZE_MEANING,
    STEPS_MEANING,
)
from ..core.weights import (
    KernelPages,
    WeightHistogram,
    bias,
    default_kernel_layer,
    display_kernel,
    filter_weights,
    is_bgr_kernel,
    kernel_layer_names,
    param_counts,
    weight_table,
)
from ._base import Choice, VisualizerWidget, checks, image_view, show
from ._filter_patterns import ENLARGED_SIZE, PatternsView, TileGrid

GAP = 1  # pixels between kernel tiles, as in S2
HISTOGRAM_BINS = 40
# Set in this order: the settings, then the layer (which draws), then what is checked against the layer.
TRAIT_ORDER = ("view", "bgr", "scale", "steps", "seed", "value_range", "patterns_per_page", "layer", "size", "channel")


class FilterGallery(PatternsView, VisualizerWidget):
    """The filters of a layer: kernels as pictures (``view="weights"``) or as patterns (``"patterns"``).

    ``FilterGallery(model, *, preprocess=None, step_size=None, memory_budget_mb=512, **traits)``.

    Traits (settable at construction and later; a bad value is refused and shown):
    ``layer`` (default the first convolution), ``channel``, ``view``, ``bgr``, ``scale``,
    and for patterns ``steps``, ``size``, ``seed``, ``value_range``, ``patterns_per_page``;
    see each trait's help.

    Keyword-only, constructor only: ``preprocess`` (a differentiable function from
    pixels to what the model eats, e.g. ``keras.applications.vgg16.preprocess_input``),
    ``step_size`` (None: value range / 255) and ``memory_budget_mb`` (sets how many
    filters one compiled batch ascends; the grid fills batch by batch).

    Patterns are computed only on request (the Compute button or
    :meth:`compute_patterns`) and cached per (layer, size, steps, seed, value_range)
    and filter, so revisiting a layer shows them at once.
    """

    layer = Unicode(help="The layer whose filters are shown: a layer with a kernel, 'outer/inner' when nested.")
    channel = Int(0, help="The selected filter (output channel) in both views, 0 .. filter_count - 1.")
    view = Choice(("weights", "patterns"), default_value="weights", help="Kernels as pictures, or patterns.")
    bgr = Any(
        "auto",
        help="'auto' reverses the colour channels of the first kernel of caffe-mode models (VGG, ResNet); True or False force it.",
    )
    bgr.allow_none = False  # Any lets None past the validator; Any(allow_none=False) does not change that
    scale = Choice(
        ("tile", "global"),
        default_value="tile",
        help="Kernel tile contrast: 'tile' (min-max each tile, S2) or 'global' (one min-max over the page, S3).",
    )
    steps = Int(40, help="Gradient ascent steps per pattern.")
    size = Union(
        [Int(), Tuple(Int(), Int())],
        default_value=None,
        allow_none=True,
        help="Pattern size in pixels, or (height, width); None: the model's input size, else 64.",
    )
    seed = Int(0, help="Seed of the gray-noise start images.")
    value_range = Tuple(
        Float(),
        Float(),
        default_value=(0.0, 255.0),
        help="Pixel range of the model's inputs: (0, 255) as in S1, (0, 1) for models on scaled images.",
    )
    patterns_per_page = Int(64, help="Patterns on the grid (S1 shows 64); the page holds `channel`.")

    def __init__(
        self,
        model,
        *,
        preprocess=None,
        step_size: float | None = None,
        memory_budget_mb: float = 512,
        **traits,
    ):
        settings = {name: traits.pop(name) for name in TRAIT_ORDER if name in traits}
        super().__init__(**traits)
        self._model = model
        self._graph = LayerGraph.of(model)
        self.layer_names = kernel_layer_names(model)
        if not self.layer_names:
            self.refuse(f"Model '{model.name}' has no layer with a kernel (Conv*, Dense, Depthwise…) to show.")
        self._preprocess = core_checks.function_or_none("preprocess", preprocess, PREPROCESS_MEANING)
        self._step_size = (
            None if step_size is None else core_checks.positive_number("step_size", step_size, STEP_SIZE_MEANING)
        )
        self._memory_budget_mb = core_checks.positive_number("memory_budget_mb", memory_budget_mb, MEMORY_BUDGET_MEANING)
        self._kernel: np.ndarray | None = None  # the current layer's, as display_kernel gives it
        self._rgb = False
        self._pages: KernelPages | None = None
        self._weight_page = None  # the KernelPage on the grid
        self._pattern_grid_key = None
        self._pattern_cache = PatternCache()
        self._draw_lock = threading.RLock()
        self._build_views()
        settings.setdefault("layer", default_kernel_layer(model))
        for name in TRAIT_ORDER:
            if name in settings:
                setattr(self, name, settings[name])

    # -- what it shows -----------------------------------------------------------

    @property
    def weights(self) -> np.ndarray:
        """The kernel of the current layer, as Keras stores it (``cw.filter_weights``)."""
        return filter_weights(self._model, self.layer)

    @property
    def filter_count(self) -> int:
        return self._pages.count

    def panels(self) -> list[np.ndarray]:
        """The grid and the enlarged filter of the current view, uint8 RGB."""
        if self.view == "weights":
            pictures = [self._weights_grid.picture, self._weights_filter_picture]
        else:
            pictures = [self._patterns_grid.picture, self._pattern_picture]
        return [imaging.to_uint8_image(picture) for picture in pictures]

    # -- views -----------------------------------------------------------------

    def _build_views(self):
        self.layer_dropdown = widgets.Dropdown(options=self.layer_names, description="Layer")
        self.channel_slider = widgets.IntSlider(min=0, max=0, description="Filter")
        self.view_buttons = widgets.ToggleButtons(options=[("Weights", "weights"), ("Patterns", "patterns")])
        self._bind(self.layer_dropdown, "layer")
        self._bind(self.channel_slider, "channel")
        self._bind(self.view_buttons, "view")

        self._weights_grid = TileGrid(self._select)
        self._weights_filter_view = image_view(f"{ENLARGED_SIZE}px")
        self._weights_filter_picture = np.zeros((1, 1, 3), np.uint8)
        self._weights_caption = widgets.HTML()
        self._histogram = self._build_histogram()
        self._weight_table = widgets.HTML()
        selected_filter = widgets.VBox([self._weights_filter_view, self._weights_caption])
        weights_box = widgets.VBox(
            [
                widgets.HBox([self._weights_grid.view.figure, selected_filter]),
                widgets.HBox([self._histogram, self._weight_table]),
            ]
        )

        patterns_box = self._build_patterns_view()
        self._views = {"weights": weights_box, "patterns": patterns_box}
        self._view_box = widgets.Box([weights_box])
        self.children = [
            widgets.HBox([self.layer_dropdown, self.channel_slider, self.view_buttons]),
            self._error_line,
            self._view_box,
        ]

    def _build_histogram(self) -> bqplot.Figure:
        x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale(min=0)
        scales = {"x": x_scale, "y": y_scale}
        self._layer_bars = bqplot.Bars(x=[], y=[], scales=scales, colors=["#9e9e9e"], padding=0.05)
        self._filter_line = bqplot.Lines(x=[], y=[], scales=scales, colors=["#d62728"], stroke_width=2)
        axes = [
            bqplot.Axis(scale=x_scale, label="weight", tick_format=".2g"),
            bqplot.Axis(scale=y_scale, orientation="vertical", label="fraction of weights", tick_format=".2g"),
        ]
        return bqplot.Figure(
            marks=[self._layer_bars, self._filter_line],
            axes=axes,
            title="Weights of the layer (bars) and of the selected filter (line)",
            layout=widgets.Layout(width="420px", height="260px"),
            fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 10},
        )

    def _select(self, channel: int):
        self.channel = channel

    # -- validation ------------------------------------------------------------

    @checks("layer")
    def _valid_layer(self, proposal):
        layer = proposal["value"]
        if layer not in self.layer_names:
            reason = "has no kernel" if layer in self._graph.paths else "is not a layer of this model"
            self.refuse(f"Layer '{layer}' {reason}. Layers with kernels: {listed(self.layer_names)}.")
        return layer

    @checks("channel")
    def _valid_channel(self, proposal):
        channel = proposal["value"]
        self.refuse_outside(
            channel,
            self.filter_count,
            f"Filter {channel} does not exist: layer '{self.layer}' has {self.filter_count} filters",
        )
        return channel

    @checks("bgr")
    def _valid_bgr(self, proposal):
        value = proposal["value"]
        if not (isinstance(value, (bool, np.bool_)) or value == "auto"):
            self.refuse(f"bgr={value!r} is not 'auto', True or False.")
        return value if value == "auto" else bool(value)

    def _checked(self, check, *args):
        """What core ``check(*args)`` returns, or its error as this widget's refusal."""
        try:
            return check(*args)
        except CnnvizError as error:
            self.refuse(str(error))

    @checks("steps", "patterns_per_page", "seed")
    def _valid_count(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        meaning, minimum = {
            "steps": (STEPS_MEANING, 1),  # the core takes 0 (the start noise); a gallery shows ascended patterns
            "patterns_per_page": ("how many patterns the grid shows", 1),
            "seed": (SEED_MEANING, 0),
        }[name]
        return self._checked(core_checks.count, name, value, meaning, minimum)

    @checks("size")
    def _valid_size(self, proposal):
        size = proposal["value"]
        if size is not None:
            self._checked(self._search, size)
        return size

    @checks("value_range")
    def _valid_value_range(self, proposal):
        return self._checked(core_checks.value_range, "value_range", proposal["value"])

    # -- reactions -----------------------------------------------------------------

    @observe("layer")
    def _on_layer(self, _):
        self._kernel, self._rgb = display_kernel(self._model, self.layer)
        self._show_layer_weights()
        self._on_tile_style(None)
        self._on_pattern_settings_change(None)

    @observe("bgr", "scale")
    def _on_tile_style(self, _):
        """New kernel tiles from the kernel already read: bgr and scale change only how it is drawn."""
        if self._kernel is None:
            return  # still constructing: the layer is set last
        bgr = self._rgb and (is_bgr_kernel(self._model, self.layer) if self.bgr == "auto" else self.bgr)
        self._pages = KernelPages(self._kernel, self._rgb, bgr, self.scale, GAP)
        self._weight_page = None
        channel = min(self.channel, self.filter_count - 1)
        if channel != self.channel:
            self.channel = channel  # _on_channel draws
        else:
            self._show_filter_weights()
        self.channel_slider.max = self.filter_count - 1

    @observe("channel")
    def _on_channel(self, _):
        self._show_filter_weights()
        self._show_patterns()

    @observe("view")
    def _on_view(self, change):
        self._view_box.children = [self._views[change["new"]]]

    @observe("steps", "size", "seed", "value_range", "patterns_per_page")
    def _on_pattern_settings_change(self, _):
        if self._pages is None:
            return  # still constructing
        if self._job is not None and self._job.settings != self._pattern_settings_or_none():
            self._drop_job()
        self.size_box.value = self._shown_size()
        self._show_patterns()

    def close(self):
        """Stop a pattern run first: its thread holds this widget and draws on it."""
        job = self._job
        if job is not None:
            self._drop_job()
            if job.thread is not threading.current_thread():
                job.thread.join()
        super().close()

    # -- weights view ------------------------------------------------------------

    def _show_layer_weights(self):
        self._layer_histogram = WeightHistogram.of(self._kernel, HISTOGRAM_BINS)
        with self._layer_bars.hold_sync():
            self._layer_bars.x = self._layer_histogram.centres
            self._layer_bars.y = self._layer_histogram.fractions
        self._weight_table.value = weight_table_html(self._model, self.layer)

    def _show_filter_weights(self):
        pages, channel = self._pages, self.channel
        filters = pages.page_of(channel)
        if self._weight_page is None or self._weight_page.filters != filters:
            page = self._weight_page = pages.page(filters)
            self._weights_grid.show(page.picture, page.layout, filters.start, page.tiles_per_filter)
        self._weights_filter_picture = self._weight_page.filter_picture(channel, ENLARGED_SIZE)
        show(self._weights_filter_view, self._weights_filter_picture)

        own = WeightHistogram.of(pages.kernel[..., channel], self._layer_histogram.edges)
        with self._filter_line.hold_sync():
            self._filter_line.x = self._layer_bars.x
            self._filter_line.y = own.fractions
        self._weights_caption.value = self._filter_caption(own, filters)

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
