"""LayerExplorer: the widget that shows what every layer of a model computes, image by image.

It only wires: traits, controls, observers and layout. What it shows (pictures, charts,
readouts, what a click selects) is built by :mod:`cnnviz_widgets.core.layer_views`,
whose docstring describes the three views.

The model only runs through :class:`~cnnviz_widgets.core.activation_cache.ActivationCache`:
changing the layer or channel never runs it, a new image runs it once for every
layer, and the "images" view runs one batched pass per layer it shows.
"""

from __future__ import annotations

import html
from collections import OrderedDict

import ipywidgets as widgets
import matplotlib
import numpy as np
from traitlets import Int, Unicode, observe

from ..core import imaging, layer_views
from ..core.activation_cache import ActivationCache
from ..core.errors import InputError, UnknownLayerError
from ..core.layer_views import NORMALIZATIONS, VIEWS, Pick, Picture, Settings, Signal
from ._base import Choice, VisualizerWidget, checks, image_view, pixelated_style, show
from ._charts import BarChart, ColorBar, PictureFigure

COMMON_COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "gray_r", "jet", "RdBu_r")
NORMALIZATION_LABELS = {"channel": "per channel", "layer": "per layer"}
MAP_BOX_PX = 320
# A grid's widest. bqplot keeps the picture's aspect in a narrower cell, but not the
# figure's height: wider boxes left a blank band under the grid in a 560-px cell.
GRID_BOX_PX = 640
CONTENTS_KEPT = 32  # pictures kept for instant revisits: a grid page is ~0.3 MB
INPUT_BOX_PX = 256  # the input's width on the page; the browser enlarges the image's own pixels


class LayerExplorer(VisualizerWidget):
    """Feature maps of any layer of ``model`` for ``images``, with clickable charts.

    ``LayerExplorer(model, images, *, preprocess=None, class_names=None, **traits)``:
    ``images`` are the raw pixels shown to the user, a batch (N, H, W, C) or one image;
    ``preprocess`` (called once on the whole batch) maps them to what the model takes;
    ``class_names`` label the bars of the model's (first) output layer (without them, a
    demo model's or a 1000-unit output's known names, else "class index" numbers); any
    trait below may be given as a keyword. Set the traits from code or with the controls:

    - ``layer``: one of ``layer_names``; the first layer with a 4-D output by default.
      Changing it keeps ``channel`` when the new layer has it, else the last channel.
    - ``channel``: channel (unit, for Dense layers) shown; by default the most active
      channel of the first layer shown (largest mean |activation| on the image).
    - ``image_index``: image shown.
    - ``view``: ``"channel"``, ``"grid"`` or ``"images"`` (see :mod:`cnnviz_widgets.core.layer_views`).
    - ``colormap``: any matplotlib colormap name.
    - ``normalization``: ``"channel"`` stretches every map on its own; ``"layer"`` puts
      everything shown on one scale: the whole layer of the image in the channel and
      grid views, channel ``channel`` of all images in the images view.

    Clicking a bar of the channel chart selects that channel; clicking the map reads
    the value under the pointer, and in the grid and images views also selects the
    clicked tile's channel or image. A bad value is refused with a message in
    ``error`` and the previous value stays.
    """

    layer = Unicode(help="Path of the shown layer, one of layer_names.")
    channel = Int(0, help="Channel (unit, for Dense layers) shown.")
    image_index = Int(0, help="Index of the image shown.")
    view = Choice(VIEWS, "channel", help="'channel', 'grid' or 'images'.")
    # Any matplotlib colormap, also one registered after this class was defined: not an Enum.
    colormap = Unicode("viridis", help="matplotlib colormap of the maps.")
    normalization = Choice(NORMALIZATIONS, "channel", help="'channel' (each map on its own scale) or 'layer' (one scale).")

    def __init__(self, model, images, *, preprocess=None, class_names=None, **traits):
        self.cache = ActivationCache(model, images, preprocess)
        self.layer_names = list(self.cache.graph.paths)
        self._classes = layer_views.class_output(model, self.cache.graph, class_names)
        self._probe = None  # position of the last clicked value inside a channel map
        self._content = None
        self._content_key = None
        self._contents = OrderedDict()  # content_key -> content, most recently shown last
        self._build_controls()
        self._build_views()
        super().__init__()
        # Rows wrap rather than squeeze their controls or scroll sideways in a narrow cell.
        wrapping = dict(flex_flow="row wrap", max_width="100%")
        self._controls = [
            widgets.HBox([self.layer_dropdown, self.view_buttons], layout=widgets.Layout(**wrapping)),
            widgets.HBox([self.channel_slider, self.image_slider], layout=widgets.Layout(**wrapping)),
            widgets.HBox([self.colormap_dropdown, self.normalization_buttons], layout=widgets.Layout(**wrapping)),
            self._error_line,
        ]
        # What is hidden is taken out of the page, not set to display: none: bqplot
        # lays a hidden figure out at 0 px and logs negative sizes in the console.
        self._map_box = widgets.HBox([self.map_figure.figure], layout=widgets.Layout(max_width="100%"))
        # keep the input square; a wide grid goes under the input, not off the side
        self._picture_row = widgets.HBox(
            [self.input_view], layout=widgets.Layout(align_items="flex-start", **wrapping)
        )
        self.children = [*self._controls, self._picture_row, self.readout, pixelated_style()]
        self._show_input()
        spatial = self.cache.graph.spatial_paths(4)
        self.set_traits_in_order({"layer": spatial[0] if spatial else self.layer_names[0], **traits})
        if "channel" not in traits:
            self.channel = layer_views.most_active_channel(self.activation)

    def _build_controls(self):
        self.layer_dropdown = widgets.Dropdown(
            options=[(layer_views.layer_label(self.cache.graph.info(path)), path) for path in self.layer_names],
            description="layer",
            layout=widgets.Layout(width="460px", max_width="100%"),
        )
        self.view_buttons = widgets.ToggleButtons(
            options=VIEWS, value=self.view, style={"button_width": "84px"}, layout=widgets.Layout(width="auto")
        )
        # Channel moves never run the model, so the slider can follow the mouse;
        # an image move may cost a forward pass, so it only reports where it stops.
        self.channel_slider = widgets.IntSlider(
            description="channel", max=0, continuous_update=True, layout=widgets.Layout(min_width="280px")
        )
        self.image_slider = widgets.IntSlider(
            description="image",
            max=len(self.cache) - 1,
            continuous_update=False,
            layout=widgets.Layout(display="none" if len(self.cache) == 1 else None, min_width="280px"),
        )
        # Every matplotlib name up front: changing a Dropdown's options re-selects
        # its first option, which would set the trait back behind our back.
        colormaps = COMMON_COLORMAPS + tuple(sorted(set(matplotlib.colormaps) - set(COMMON_COLORMAPS)))
        self.colormap_dropdown = widgets.Dropdown(options=colormaps, value=self.colormap, description="colormap")
        self.normalization_buttons = widgets.ToggleButtons(
            options=[(NORMALIZATION_LABELS[value], value) for value in NORMALIZATIONS],
            value=self.normalization,
            style={"button_width": "100px"},
            layout=widgets.Layout(width="auto"),
        )
        controls = {
            "layer": self.layer_dropdown,
            "view": self.view_buttons,
            "channel": self.channel_slider,
            "image_index": self.image_slider,
            "colormap": self.colormap_dropdown,
            "normalization": self.normalization_buttons,
        }
        for name, control in controls.items():
            self._bind(control, name)

    def _build_views(self):
        self.input_view = image_view(f"{INPUT_BOX_PX}px", pixelated=True)
        self.map_figure = PictureFigure(MAP_BOX_PX)
        self.map_figure.figure.layout.flex = "0 1 auto"  # a grid gives way to its colour bar
        self.map_figure.on_click(lambda row, column: self._pick(self._content.locate(row, column)))
        self.color_bar = ColorBar(self.colormap, height_px=MAP_BOX_PX)
        self.signal_chart = BarChart()
        self.signal_chart.figure.layout.width = f"{MAP_BOX_PX * 3 // 2}px"
        self.signal_chart.figure.layout.max_width = "100%"
        self.signal_chart.on_select(lambda index: self._pick(self._content.locate(index)))
        self.means_chart = BarChart(title="Mean activation per channel", x_label="channel", y_label="mean")
        self.means_chart.on_select(lambda channel: setattr(self, "channel", channel))
        self.readout = widgets.HTML()
        self._busy_sign = "⏳ "  # leads the readout while a layer or image change computes

    # -- state ---------------------------------------------------------------------

    @property
    def activation(self) -> np.ndarray:
        """Output of the current layer for the current image, batch axis dropped."""
        return self.cache.for_image(self.image_index)[self.layer]

    def _settings(self) -> Settings:
        return Settings(self.layer, self.channel, self.image_index, self.view, self.colormap, self.normalization)

    def _channel_noun(self) -> str:
        return "unit" if self.activation.ndim == 1 else "channel"

    # -- validation: a refused value raises, shows in `error`, and changes nothing --

    def _refuse_unless_finite(self, layer: str, image_index: int, all_images: bool):
        message = layer_views.unshowable(self.cache, layer, image_index, all_images)
        if message:
            self.refuse(message)

    @checks("layer")
    def _check_layer(self, proposal):
        try:
            self.cache.graph.info(proposal["value"])
        except UnknownLayerError as error:
            self.refuse(str(error))
        self._refuse_unless_finite(proposal["value"], self.image_index, all_images=self.view == "images")
        return proposal["value"]

    @checks("channel")
    def _check_channel(self, proposal):
        count = self.activation.shape[-1]
        why = f"layer '{self.layer}' has {count} {self._channel_noun()}s"
        return self.refuse_outside("channel", proposal["value"], count, why)

    @checks("image_index")
    def _check_image_index(self, proposal):
        count = len(self.cache)
        index = self.refuse_outside("image_index", proposal["value"], count, f"there are {count} images")
        # The images view's other images were checked with the layer: only this one is new.
        self._refuse_unless_finite(self.layer, index, all_images=False)
        return index

    @checks("view")
    def _check_view(self, proposal):
        self._refuse_unless_finite(self.layer, self.image_index, all_images=proposal["value"] == "images")
        return proposal["value"]

    @checks("colormap")
    def _check_colormap(self, proposal):
        try:
            imaging.colormap_table(proposal["value"])
        except InputError as error:
            self.refuse(str(error))
        if proposal["value"] not in self.colormap_dropdown.options:
            self.refuse(
                f"Colormap {proposal['value']!r} was registered after this LayerExplorer was "
                "created, so its menu lacks it; create a new LayerExplorer to use it."
            )
        return proposal["value"]

    # -- reactions -----------------------------------------------------------------

    @observe("layer")
    def _layer_changed(self, change):
        self._probe = None
        self._say_busy(f"computing layer {self.layer}…")
        channel = min(self.channel, self.activation.shape[-1] - 1)
        if channel != self.channel:
            self.channel = channel  # its observer draws
        else:
            self._draw()
        self._show_channel_means()  # after the map: the page applies the messages in turn

    @observe("image_index")
    def _image_changed(self, change):
        self._say_busy(f"computing image {self.image_index}…")
        self._show_input()
        self._draw()
        self._show_channel_means()  # after the map, as for a layer

    @observe("channel", "view", "colormap", "normalization")
    def _shown_changed(self, change):
        self._draw()
        if change["name"] == "channel":  # a new layer or image sends its means chart with the selection
            self.means_chart.bars.selected = [self.channel]

    # -- drawing -------------------------------------------------------------------

    def _say_busy(self, what: str):
        """Say, before the work starts, that the picture is about to change (the controls already show the new value)."""
        self.readout.value = f"<b>{self._busy_sign}{html.escape(what)}</b>"

    def _show_input(self):
        show(self.input_view, layer_views.input_picture(self.cache, self.image_index))

    def _show_channel_means(self):
        activation = self.activation
        # A Dense layer's units are already shown as bars by the signal chart.
        _show_only_if(self, self.means_chart.figure, activation.ndim > 1)
        means = layer_views.channel_means(activation)
        self.means_chart.show(_index_labels(len(means)), means, selected=min(self.channel, len(means) - 1))

    def _draw(self):
        """Redraw what depends on the channel and the view settings, the map first."""
        settings = self._settings()
        key = layer_views.content_key(settings, self.activation)
        if key != self._content_key:
            self._content = self._contents.pop(key, None) or layer_views.content(
                self.cache, settings, self._probe, self._classes
            )
            self._contents[key] = self._content
            while len(self._contents) > CONTENTS_KEPT:
                self._contents.popitem(last=False)
            self._content_key = key
            self._show_content()
        slider = self.channel_slider
        with slider.hold_sync(), slider.hold_trait_notifications():
            slider.max = self.activation.shape[-1] - 1
            slider.value = self.channel
            slider.description = self._channel_noun()
        self._show_readout()

    def _show_content(self):
        content = self._content
        is_picture = isinstance(content, Picture)
        has_scale = is_picture and content.scale is not None
        _set_children(self._picture_row, [self.input_view, self._map_box if is_picture else self.signal_chart.figure])
        _set_children(self._map_box, [self.map_figure.figure] + ([self.color_bar.figure] if has_scale else []))
        if is_picture:
            wide = self.view == "grid" and self.activation.ndim > 2
            self._map_box.layout.width = "100%" if wide else None
            self.map_figure.show(content.rows, content.palette, GRID_BOX_PX if wide else MAP_BOX_PX, fill_width=wide)
            self.color_bar.figure.layout.height = self.map_figure.figure.layout.height
        if has_scale:
            self.color_bar.show(content.scale.low, content.scale.high, self.colormap, content.scale.unit)
        if not is_picture:
            self.signal_chart.figure.title, self.signal_chart.x_axis.label = content.title, content.x_label
            labels = content.labels or _index_labels(len(content.values))
            self.signal_chart.show(labels, content.values, content.selected)

    def _show_readout(self):
        text = layer_views.readout(self.activation, self.layer, self.channel, self._probe)
        notes = (layer_views.grid_page_note, layer_views.grid_dead_note) if self.view == "grid" else ()
        self.readout.value = html.escape(text + "".join(note(self.activation, self.channel) for note in notes))

    def _pick(self, pick: Pick | None):
        """A click on a value: remember where, then select the clicked channel or image."""
        if pick is None:  # a gap between tiles
            return
        self._probe = pick.probe
        if pick.channel is not None:
            self.channel = pick.channel
        if pick.image is not None:
            self.image_index = pick.image
        if pick.channel is None and pick.image is None and isinstance(self._content, Signal):
            self._content.selected = pick.probe[0]  # a step of a 1-D map: the chart marks it
        self._show_readout()

    # -- static export -------------------------------------------------------------

    def panels(self) -> list[np.ndarray]:
        """The input image and the map (or a bar picture of a chart), one pixel per value."""
        return [layer_views.input_picture(self.cache, self.image_index), self._content.picture()]


def _set_children(box: widgets.Box, children: list):
    if list(box.children) != children:  # an unchanged list would still re-render the box
        box.children = children


def _show_only_if(box: widgets.Box, part, shown: bool):
    """``part`` last among ``box``'s children, or not among them."""
    _set_children(box, [child for child in box.children if child is not part] + ([part] if shown else []))


def _index_labels(count: int) -> list[str]:
    return [str(index) for index in range(count)]
