"""FilterGallery: the widget that shows a layer's kernels (S0, S2, S3) and its filter patterns (S1).

Map: this file holds the traits, their checks, the reactions and the layout; the
two views are mixins, ``_filter_weights.py`` (kernel grid, enlarged filter, weight
histogram and table) and ``_filter_patterns.py`` (controls and the background
pattern job it observes). What they draw are core values: ``core/weights.py``
(KernelPages, WeightHistogram, weight_table) and ``core/pattern_jobs.py``
(PatternJob, PatternCache).

``view`` switches between the two views of the same filters; ``channel`` selects
one filter in both, and clicking a tile selects it too. Layers with thousands of
filters are shown a page at a time: the page that holds ``channel``.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from traitlets import Any, Float, Int, Tuple, Unicode, Union, observe

from ..core import checks as core_checks
from ..core import imaging
from ..core.errors import listed
from ..core.graph import LayerGraph
from ..core.patterns import (
    MEMORY_BUDGET_MEANING,
    PREPROCESS_MEANING,
    SEED_MEANING,
    STEP_SIZE_MEANING,
    STEPS_MEANING,
)
from ..core.weights import (
    KernelPages,
    default_kernel_layer,
    display_kernel,
    filter_weights,
    is_bgr_kernel,
    kernel_layer_names,
    strongest_filter,
)
from ._base import Choice, VisualizerWidget, checks
from ._filter_patterns import PatternsView
from ._filter_weights import WeightsView

# Set in this order: the settings, then the layer (which draws), then what is checked against the layer.
class FilterGallery(WeightsView, PatternsView, VisualizerWidget):
    """The filters of a layer: kernels as pictures (``view="weights"``) or as patterns (``"patterns"``).

    ``FilterGallery(model, *, preprocess=None, step_size=None, memory_budget_mb=512, **traits)``.

    Traits (settable at construction and later; a bad value is refused and shown):
    ``layer`` (default the first convolution), ``channel``, ``view``, ``bgr``, ``scale``,
    and for patterns ``style``, ``steps``, ``size``, ``seed``, ``value_range``, ``patterns_per_page``;
    see each trait's help.

    Keyword-only, constructor only: ``preprocess`` (a differentiable function from
    pixels to what the model eats, e.g. ``keras.applications.vgg16.preprocess_input``),
    ``step_size`` (None: value range / 255) and ``memory_budget_mb`` (sets how many
    filters one compiled batch ascends; the grid fills batch by batch).

    Patterns are computed only on request (the Compute button or
    :meth:`compute_patterns`) and cached per (layer, size, steps, seed, value_range,
    style) and filter, so revisiting a layer shows them at once. While they are
    computed the grid shows the images forming, a preview every few steps.
    """

    # Declared in the order the constructor sets them: a channel is checked against the layer and size.
    view = Choice(("weights", "patterns"), default_value="weights", help="Kernels as pictures, or patterns.")
    bgr = Any(
        "auto",
        help="'auto' reverses the colour channels of the first kernel of caffe-mode models (VGG, ResNet); "
        "True or False force it.",
    )
    bgr.allow_none = False  # Any lets None past the validator; Any(allow_none=False) does not change that
    scale = Choice(
        ("tile", "global", "signed"),
        default_value="tile",
        help="Kernel tile contrast: 'tile' (min-max each tile, S2), 'global' (one min-max over the page, S3) "
        "or 'signed' (one scale symmetric around 0 for the layer: white 0, red positive, blue negative).",
    )
    style = Choice(
        ("tutorial", "lucid"),
        default_value="tutorial",
        help="'tutorial': S1's gradient ascent on pixels; 'lucid': Olah et al.'s Fourier-space image with "
        "decorrelated colour and random jitter, scale and rotation (patterns that look like something).",
    )
    steps = Int(40, help="Gradient ascent steps per pattern.")
    seed = Int(0, help="Seed of the gray-noise start images.")
    value_range = Tuple(
        Float(),
        Float(),
        default_value=(0.0, 255.0),
        help="Pixel range of the model's inputs: (0, 255) as in S1, (0, 1) for models on scaled images.",
    )
    patterns_per_page = Int(64, help="Patterns on the grid (S1 shows 64); the page holds `channel`.")
    layer = Unicode(help="The layer whose filters are shown: a layer with a kernel, 'outer/inner' when nested.")
    size = Union(
        [Int(), Tuple(Int(), Int())],
        default_value=None,
        allow_none=True,
        help="Pattern size in pixels, or (height, width); None: the model's input size, else 64.",
    )
    channel = Int(
        0,
        help="The selected filter (output channel) in both views, 0 .. filter_count - 1; "
        "the gallery, and a new layer, open on the filter with the largest weights.",
    )

    def __init__(
        self,
        model,
        *,
        preprocess=None,
        step_size: float | None = None,
        memory_budget_mb: float = 512,
        **traits,
    ):
        super().__init__()
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
        self._drawn_channel = self.channel  # the filter the views show: a layer change tells a new channel from it
        self._build_views()
        self.set_traits_in_order({"layer": default_kernel_layer(model), **traits})

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
        # Fixed widths: in a narrow row flexbox shrinks a slider to a dot and stacks toggle buttons.
        self.channel_slider = widgets.IntSlider(
            min=0, max=0, description="Filter", layout=widgets.Layout(width="320px", flex="0 0 auto")
        )
        self.view_buttons = widgets.ToggleButtons(
            options=[("Weights", "weights"), ("Patterns", "patterns")],
            style={"button_width": "90px"},
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self._bind(self.layer_dropdown, "layer")
        self._bind(self.channel_slider, "channel")
        self._bind(self.view_buttons, "view")

        weights_box, patterns_box = self._build_weights_view(), self._build_patterns_view()
        self._views = {"weights": weights_box, "patterns": patterns_box}
        self._view_box = widgets.Box([weights_box])
        self.children = [
            widgets.HBox(
                [self.layer_dropdown, self.channel_slider, self.view_buttons],
                layout=widgets.Layout(flex_flow="row wrap"),
            ),
            self._error_line,
            self._view_box,
        ]

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
        # The layer's own count: in hold_trait_notifications the layer is new before its kernel is read.
        count = display_kernel(self._model, self.layer)[0].shape[-1]
        why = f"layer '{self.layer}' has {count} filters"
        return self.refuse_outside("Filter", proposal["value"], count, why, problem="does not exist")

    @checks("bgr")
    def _valid_bgr(self, proposal):
        value = proposal["value"]
        if not (isinstance(value, (bool, np.bool_)) or value == "auto"):
            self.refuse(f"bgr={value!r} is not 'auto', True or False.")
        return value if value == "auto" else bool(value)

    @checks("steps", "patterns_per_page", "seed")
    def _valid_count(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        meaning, minimum = {
            "steps": (STEPS_MEANING, 1),  # the core takes 0 (the start noise); a gallery shows ascended patterns
            "patterns_per_page": ("how many patterns the grid shows", 1),
            "seed": (SEED_MEANING, 0),
        }[name]
        return core_checks.count(name, value, meaning, minimum)

    @checks("size")
    def _valid_size(self, proposal):
        size = proposal["value"]
        if size is not None:
            self._search(size)
        return size

    @checks("value_range")
    def _valid_value_range(self, proposal):
        return core_checks.value_range("value_range", proposal["value"])

    # -- reactions -----------------------------------------------------------------

    @observe("layer")
    def _on_layer(self, _):
        self._kernel, self._rgb = display_kernel(self._model, self.layer)
        self._show_layer_weights()
        # A new layer opens on its strongest filter, as the gallery does (filter 0 may be dead, its pattern
        # the start noise), unless a channel was set with the layer (constructor, hold_trait_notifications).
        # traitlets drops a held value equal to the current one: such a channel is not seen as set.
        channel_set_with_layer = self.channel != self._drawn_channel
        self._show_kernel(self.channel if channel_set_with_layer else strongest_filter(self._kernel))
        self._on_pattern_settings_change(None)

    @observe("bgr", "scale")
    def _on_tile_style(self, _):
        """New kernel tiles from the kernel already read: bgr and scale change only how it is drawn."""
        if self._kernel is not None:  # else still constructing: the layer is set last
            self._show_kernel(self.channel)

    def _show_kernel(self, channel: int):
        """Kernel pages of the current kernel and style, showing ``channel`` (clamped to the layer's filters)."""
        bgr = self._rgb and (is_bgr_kernel(self._model, self.layer) if self.bgr == "auto" else self.bgr)
        self._pages = KernelPages(self._kernel, self._rgb, bgr, self.scale)
        self._weight_page = None
        channel = min(channel, self.filter_count - 1)
        drawn_by_slider = channel != self.channel  # the slider's binding sets the channel, and _on_channel draws
        # Held: a new maximum alone would clamp the slider's value to the old one, and set that channel.
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = self.filter_count - 1
            self.channel_slider.value = channel
        if not drawn_by_slider:
            self._show_filter_weights()

    @observe("channel")
    def _on_channel(self, _):
        self._show_filter_weights()
        self._show_patterns()

    @observe("view")
    def _on_view(self, change):
        self._view_box.children = [self._views[change["new"]]]

    @observe("style", "steps", "size", "seed", "value_range", "patterns_per_page")
    def _on_pattern_settings_change(self, _):
        if self._pages is not None:  # else still constructing
            self._show_pattern_settings()
