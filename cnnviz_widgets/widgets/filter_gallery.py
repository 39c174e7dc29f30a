"""FilterGallery: a layer's kernels as pictures (S0, S2, S3) and its filter patterns (S1).

Two views of the same filters, switched with ``view``:

- ``"weights"``: every kernel as a tile grid (RGB for the 3-channel first layer,
  BGR-corrected for caffe-mode models; one gray tile per input channel otherwise),
  the selected filter enlarged with its bias, a histogram of the layer's weights
  and the table of its named weights;
- ``"patterns"``: gradient-ascent patterns (``cw.filter_patterns``), computed on
  demand in a background thread, batch by batch, with progress and a Stop button.

``channel`` selects one filter in both views; clicking a tile selects it too.
Layers with thousands of filters are shown a page at a time: the grids hold the
page of filters that contains ``channel``.
"""

from __future__ import annotations

import html
import math
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import bqplot
import ipywidgets as widgets
import numpy as np
from traitlets import Any, Float, Int, Tuple, Unicode, Union, observe

from ..core import checks as core_checks
from ..core import imaging
from ..core.errors import CnnvizError, listed
from ..core.graph import LayerGraph
from ..core.patterns import (
    MEMORY_BUDGET_MEANING,
    PREPROCESS_MEANING,
    SEED_MEANING,
    STEP_SIZE_MEANING,
    STEPS_MEANING,
    PatternSearch,
)
from ..core.weights import (
    bias,
    display_kernel,
    filter_weights,
    is_bgr_kernel,
    kernel_layer_names,
    kernel_shape,
    kernel_tiles,
    param_counts,
    weight_table,
)
from ._base import PictureFigure, VisualizerWidget, checks, image_view, show

VIEWS = ("weights", "patterns")
SCALES = ("tile", "global")
GAP = 1  # pixels between kernel tiles, as in S2
PATTERN_GAP = 5  # S1's margins between patterns
MAX_GRID_WIDTH = 2048  # kernel tiles shrink (down to 1 px per weight) to fit this width
MAX_GRID_PIXELS = 2**22  # a kernel page beyond this is cut into pages of filters
MAX_UPSCALE = 8  # S2/S3 enlarge each weight to 8×8 pixels…
MAX_TILE_SIZE = 64  # …but big tiles (a Dense unit's 28×28 weights) less
ENLARGED_SIZE = 256  # pixels of the enlarged filter or pattern
GRID_BOX_PX = 420  # the grids are drawn to fit this box
HISTOGRAM_BINS = 40

@dataclass
class KernelPages:
    """How a layer's kernel is drawn: tiles per filter, grid columns, enlargement, filters per page."""

    kernel: np.ndarray  # (kh, kw, cin, filters), see display_kernel
    rgb: bool
    bgr: bool
    scale: str

    def __post_init__(self):
        kh, kw, cin, count = self.kernel.shape
        self.count = count
        self.tiles_per_filter = 1 if self.rgb else cin
        # One row per filter when it has several gray tiles; otherwise a square grid.
        self.columns = self.tiles_per_filter if self.tiles_per_filter > 1 else math.ceil(math.sqrt(count))
        fitting = min((MAX_GRID_WIDTH // self.columns - GAP) // kw, MAX_TILE_SIZE // max(kh, kw))
        self.upscale = int(np.clip(fitting, 1, MAX_UPSCALE))
        filter_pixels = self.tiles_per_filter * (kh * self.upscale + GAP) * (kw * self.upscale + GAP)
        self.per_page = min(count, max(1, MAX_GRID_PIXELS // filter_pixels))
        if self.per_page < count and self.tiles_per_filter == 1:
            self.columns = math.ceil(math.sqrt(self.per_page))

    def page(self, channel: int) -> range:
        start = channel // self.per_page * self.per_page
        return range(start, min(start + self.per_page, self.count))

    def tiles(self, filters: range) -> np.ndarray:
        """Float [0, 1] tiles of ``filters``; ``scale="global"`` min-maxes over those filters."""
        shown = self.kernel[..., filters.start : filters.stop]
        return kernel_tiles(shown, rgb=self.rgb, bgr=self.bgr, scale=self.scale)

    def grid(self, tiles: np.ndarray) -> tuple[np.ndarray, imaging.GridLayout]:
        """``tiles`` enlarged and laid out: the same picture as core kernel_montage, and where each tile lies."""
        kh, kw = tiles.shape[1:3]
        layout = imaging.GridLayout.for_tiles(len(tiles), (kh * self.upscale, kw * self.upscale), self.columns, GAP)
        return imaging.montage(tiles, self.upscale, self.columns, GAP), layout


class PatternSettings(NamedTuple):
    """What a computed pattern depends on; the key of the pattern cache."""

    layer: str
    size: tuple  # (height, width)
    steps: int
    seed: int
    value_range: tuple


@dataclass
class ComputedPattern:
    image: np.ndarray  # uint8 (height, width, C)
    start_loss: float  # the filter's mean activation on the gray-noise start
    final_loss: float  # ... after the last ascent step


@dataclass
class PatternJob:
    """One background run of PatternSearch over the missing filters of a page."""

    settings: PatternSettings
    filters: list
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    steps_done: int = 0
    error: BaseException | None = None


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


class FilterGallery(VisualizerWidget):
    """The filters of a layer: kernels as pictures (``view="weights"``) or as patterns (``"patterns"``).

    Settings (traits, also settable later; a bad value is refused and shown):

    - ``layer``: a layer with a kernel (Conv*, Dense, Depthwise…), "outer/inner" when
      nested; default the first convolution. ``layer_names`` lists them;
    - ``channel``: the selected filter, 0 .. ``filter_count`` - 1;
    - ``bgr``: ``"auto"`` reverses the colour channels of the first kernel of
      caffe-mode models (VGG, ResNet), True or False force it;
    - ``scale``: kernel tile contrast, ``"tile"`` (min-max each tile, S2) or
      ``"global"`` (one min-max over the filters shown, S3);
    - patterns: ``steps``, ``size`` (pixels or (height, width); None: the model's input size, else 64),
      ``seed``, ``value_range`` (the pixel range of the model's inputs: (0, 255)
      as in S1, (0, 1) for models on scaled images), ``patterns_per_page``.

    Constructor only: ``preprocess`` (a differentiable function from pixels to what
    the model eats, e.g. ``keras.applications.vgg16.preprocess_input``),
    ``step_size`` (None: value range / 255) and ``memory_budget_mb`` (sets how many
    filters one compiled batch ascends; the grid fills batch by batch).

    Patterns are computed only on request (the Compute button or
    :meth:`compute_patterns`) and cached per (layer, size, steps, seed, value_range)
    and filter, so revisiting a layer shows them at once.
    """

    layer = Unicode(help="The layer whose filters are shown; only layers with a kernel.")
    channel = Int(0, help="The selected filter (output channel) in both views.")
    view = Unicode("weights", help="'weights' or 'patterns'.")
    bgr = Any("auto", help="'auto', True or False: reverse the colour channels of 3-channel kernels.")
    bgr.allow_none = False  # Any lets None past the validator; Any(allow_none=False) does not change that
    scale = Unicode("tile", help="Kernel tile contrast: 'tile' (each its own) or 'global'.")
    steps = Int(40, help="Gradient ascent steps per pattern.")
    size = Union(
        [Int(), Tuple(Int(), Int())],
        default_value=None,
        allow_none=True,
        help="Pattern size in pixels, or (height, width); None: the model's input size, else 64.",
    )
    seed = Int(0, help="Seed of the gray-noise start images.")
    value_range = Tuple(Float(), Float(), default_value=(0.0, 255.0), help="Pixel range of the model's inputs.")
    patterns_per_page = Int(64, help="Patterns on the grid (S1 shows 64); the page holds `channel`.")
    _job: PatternJob | None = None  # the pattern run under way, if any

    def __init__(
        self,
        model,
        layer: str | None = None,
        *,
        channel: int = 0,
        view: str = "weights",
        bgr="auto",
        scale: str = "tile",
        steps: int = 40,
        size: int | tuple | None = None,
        seed: int = 0,
        value_range=(0.0, 255.0),
        patterns_per_page: int = 64,
        preprocess=None,
        step_size: float | None = None,
        memory_budget_mb: float = 512,
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        self._weight_page: range | None = None
        self._pattern_grid_key = None
        self._pattern_cache: dict[PatternSettings, dict[int, ComputedPattern]] = {}
        self._draw_lock = threading.RLock()
        self._build_views()
        # Settings first, then the layer (which draws), then what is checked against the layer.
        self.view, self.bgr, self.scale = view, bgr, scale
        self.steps, self.seed, self.value_range, self.patterns_per_page = steps, seed, value_range, patterns_per_page
        self.layer = layer if layer is not None else self._default_layer()
        self.size = size
        self.channel = channel

    # -- what it shows -----------------------------------------------------------

    @property
    def weights(self) -> np.ndarray:
        """The kernel of the current layer, as Keras stores it (``cw.filter_weights``)."""
        return filter_weights(self._model, self.layer)

    @property
    def filter_count(self) -> int:
        return self._pages.count

    @property
    def patterns(self) -> dict[int, np.ndarray]:
        """Computed patterns of the current layer and settings: filter index → uint8 (size, size, C)."""
        try:
            computed = self._pattern_cache.get(self._pattern_settings(), {})
        except CnnvizError:
            return {}
        return {index: pattern.image for index, pattern in sorted(computed.items())}

    @property
    def computing(self) -> bool:
        return self._job is not None and self._job.thread.is_alive()

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

        self.steps_box, self.size_box, self.seed_box = (
            widgets.IntText(description=name, layout=widgets.Layout(width="150px"))
            for name in ("Steps", "Size", "Seed")
        )
        self._bind(self.steps_box, "steps")
        self._bind(self.size_box, "size", shown=lambda size: self._shown_size())
        self._bind(self.seed_box, "seed")
        self.compute_button = widgets.Button(description="Compute", icon="play", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.compute_button.on_click(lambda _: self._compute_from_button())
        self.stop_button.on_click(lambda _: self.stop_patterns())
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="Steps")
        self._pattern_status = widgets.HTML()
        self._patterns_grid = TileGrid(self._select)
        self._pattern_view = image_view(f"{ENLARGED_SIZE}px")
        self._pattern_picture = np.zeros((1, 1, 3), np.uint8)
        self._pattern_caption = widgets.HTML()
        selected_pattern = widgets.VBox([self._pattern_view, self._pattern_caption])
        patterns_box = widgets.VBox(
            [
                widgets.HBox([self.steps_box, self.size_box, self.seed_box]),
                widgets.HBox([self.compute_button, self.stop_button, self.progress, self._pattern_status]),
                widgets.HBox([self._patterns_grid.view.figure, selected_pattern]),
            ]
        )

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
        why = f"layer '{self.layer}' has {self.filter_count} filters"
        return self.refuse_outside("Filter", proposal["value"], self.filter_count, why, problem="does not exist")

    @checks("view", "scale")
    def _valid_choice(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        allowed = {"view": VIEWS, "scale": SCALES}[name]
        if value not in allowed:
            self.refuse(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}.")
        return value

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
        self._pages = KernelPages(self._kernel, self._rgb, bgr, self.scale)
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

    # -- weights view ------------------------------------------------------------

    def _show_layer_weights(self):
        kernel = self._kernel
        counts, self._histogram_edges = np.histogram(kernel, bins=HISTOGRAM_BINS)
        with self._layer_bars.hold_sync():
            self._layer_bars.x = (self._histogram_edges[:-1] + self._histogram_edges[1:]) / 2
            self._layer_bars.y = counts / kernel.size
        self._weight_table.value = weight_table_html(self._model, self.layer)

    def _show_filter_weights(self):
        pages, channel = self._pages, self.channel
        page = pages.page(channel)
        if page != self._weight_page:
            self._weight_tiles = pages.tiles(page)
            picture, layout = pages.grid(self._weight_tiles)
            self._weights_grid.show(picture, layout, page.start, pages.tiles_per_filter)
            self._weight_page = page

        first = (channel - page.start) * pages.tiles_per_filter
        own_tiles = self._weight_tiles[first : first + pages.tiles_per_filter]
        self._weights_filter_picture = enlarged(np.round(own_tiles * 255).astype(np.uint8))
        show(self._weights_filter_view, self._weights_filter_picture)

        values = pages.kernel[..., channel]
        counts, _ = np.histogram(values, bins=self._histogram_edges)
        with self._filter_line.hold_sync():
            self._filter_line.x = self._layer_bars.x
            self._filter_line.y = counts / values.size
        self._weights_caption.value = self._filter_caption(values, page)

    def _filter_caption(self, values: np.ndarray, page: range) -> str:
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
            f"weights {values.min():.4g} … {values.max():.4g}, mean {values.mean():+.3g}{paging}"
        )

    # -- patterns view -------------------------------------------------------------

    def _search(self, size) -> PatternSearch:
        """The compiled search for the current layer, shared with cw.filter_patterns."""
        return PatternSearch.shared(self._model, self.layer, size=size, preprocess=self._preprocess)

    def _pattern_settings(self) -> PatternSettings:
        """The cache key of the current patterns; raises why the layer has none."""
        size = self._search(self.size).image_shape[:2]
        return PatternSettings(self.layer, size, self.steps, self.seed, tuple(self.value_range))

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
        outputs = self._search(self.size).num_filters
        start = min(self.channel, outputs - 1) // self.patterns_per_page * self.patterns_per_page
        return range(start, min(start + self.patterns_per_page, outputs))

    def compute_patterns(self, wait: bool = False) -> threading.Thread | None:
        """Compute the grid's missing patterns in a background thread, batch by batch.

        Returns the thread, or None when every pattern on the grid is cached.
        ``wait=True`` joins it and re-raises what went wrong in it. A run under way
        that covers the grid is returned, not started twice; one for other filters
        is stopped (what it finished stays cached).
        """
        settings = self._pattern_settings()
        computed = self._pattern_cache.setdefault(settings, {})
        missing = [index for index in self._pattern_page() if index not in computed]
        if not missing:
            return None
        job = self._job
        if not (self.computing and not job.stop.is_set() and set(missing) <= set(job.filters)):
            job = self._start_job(settings, missing, computed)
        if wait:
            job.thread.join()
            if job.error is not None:
                raise job.error
        return job.thread

    def stop_patterns(self):
        """Stop after the current step; finished batches stay on the grid and in the cache."""
        if self._job is not None:
            self._job.stop.set()

    def close(self):
        """Stop a pattern run first: its thread holds this widget and draws on it."""
        job = self._job
        if job is not None:
            self._drop_job()
            if job.thread is not threading.current_thread():
                job.thread.join()
        super().close()

    def _compute_from_button(self):
        try:
            self.compute_patterns()
        except CnnvizError as error:
            self._pattern_status.value = html.escape(str(error))

    def _start_job(self, settings: PatternSettings, missing: list, computed: dict) -> PatternJob:
        self._drop_job()
        search = self._search(self.size)
        job = PatternJob(settings, missing)
        batches = math.ceil(len(missing) / search.batch_size(self._memory_budget_mb))
        self.progress.value, self.progress.max = 0, batches * settings.steps
        job.thread = threading.Thread(
            target=self._run_job, args=(job, search, computed), name=f"FilterGallery {settings.layer}", daemon=True
        )
        self._job = job
        self.compute_button.disabled, self.stop_button.disabled = True, False
        self._pattern_status.value = f"computing {len(missing)} pattern(s)…"
        job.thread.start()
        return job

    def _drop_job(self):
        """Stop the current run and stop showing its progress; what it finished stays cached."""
        self.stop_patterns()
        self._job = None
        self.compute_button.disabled, self.stop_button.disabled = False, True
        self.progress.value = 0
        self._pattern_status.value = ""

    def _run_job(self, job: PatternJob, search: PatternSearch, computed: dict):
        """The background thread. It fills the cache; the widget only while the job is still its own."""

        def should_stop():  # called before every ascent step
            self._report(job)
            job.steps_done += 1
            return job.stop.is_set()

        def on_batch(done, total, result):
            rows = zip(result.filters.tolist(), result.patterns, result.start_loss, result.final_loss)
            for index, image, start_loss, final_loss in rows:
                computed[index] = ComputedPattern(image, float(start_loss), float(final_loss))
            self._report(job)
            if self._job is job:
                self._show_patterns()

        try:
            search.run(
                job.filters,
                steps=job.settings.steps,
                step_size=self._step_size,
                value_range=job.settings.value_range,
                seed=job.settings.seed,
                memory_budget_mb=self._memory_budget_mb,
                on_batch=on_batch,
                should_stop=should_stop,
            )
        except Exception as error:  # shown in the widget; compute_patterns(wait=True) re-raises it
            job.error = error
        self._finish(job, computed)

    def _report(self, job: PatternJob):
        if self._job is job:
            self.progress.value = min(job.steps_done, self.progress.max)

    def _finish(self, job: PatternJob, computed: dict):
        if self._job is not job:
            return
        self.compute_button.disabled, self.stop_button.disabled = False, True
        done = sum(index in computed for index in job.filters)
        if job.error is not None:
            self._pattern_status.value = f'<span style="color:#b00020">failed: {html.escape(str(job.error))}</span>'
        elif done < len(job.filters):
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
            computed = self._pattern_cache.get(settings, {})
            page = self._pattern_page()
            blank = np.zeros(self._search(self.size).image_shape, np.uint8)
            # A channel move within the page changes the enlarged pattern, not the grid.
            grid_key = (settings, page, frozenset(index for index in page if index in computed))
            if grid_key != self._pattern_grid_key:
                tiles = np.stack([computed[index].image if index in computed else blank for index in page])
                columns = math.ceil(math.sqrt(len(tiles)))
                layout = imaging.GridLayout.for_tiles(len(tiles), tiles.shape[1:], columns, PATTERN_GAP)
                self._patterns_grid.show(imaging.grid(tiles, columns, PATTERN_GAP), layout, page.start)
                self._pattern_grid_key = grid_key

            selected = computed.get(self.channel)
            self._pattern_picture = enlarged((blank if selected is None else selected.image)[None])
            show(self._pattern_view, self._pattern_picture)
            if selected is None:
                caption = "not computed yet: press Compute"
            else:
                caption = f"mean activation {selected.start_loss:.3g} → {selected.final_loss:.3g}"
            self._pattern_caption.value = f"<b>filter {self.channel}</b><br>{caption}"

    def _default_layer(self) -> str:
        """The first convolution, else the first layer with a kernel."""
        convolutions = [p for p in self.layer_names if len(kernel_shape(self._model, p)) >= 3]
        return (convolutions or self.layer_names)[0]


def enlarged(tiles: np.ndarray) -> np.ndarray:
    """uint8 tiles of one filter as one picture about ENLARGED_SIZE pixels across, nearest neighbour."""
    picture = imaging.grid(tiles, columns=math.ceil(math.sqrt(len(tiles))), gap=GAP)
    return imaging.upscale_to(picture, ENLARGED_SIZE)


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
