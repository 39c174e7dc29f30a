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

import ipywidgets as widgets
import matplotlib
import numpy as np
from traitlets import Int, Unicode, observe

from ..core import imaging, layer_views
from ..core.activation_cache import ActivationCache
from ..core.errors import InputError, UnknownLayerError
from ..core.layer_views import NORMALIZATIONS, VIEWS, Pick, Picture, Settings, Signal
from ._base import BarChart, Choice, PictureFigure, VisualizerWidget, checks, image_view, show

COMMON_COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "gray_r", "jet", "RdBu_r")
NORMALIZATION_LABELS = {"channel": "per channel", "layer": "per layer"}
MAP_BOX_PX = 320
INPUT_BOX_PX = 256


class LayerExplorer(VisualizerWidget):
    """Feature maps of any layer of ``model`` for ``images``, with clickable charts.

    ``LayerExplorer(model, images, *, preprocess=None, **traits)``: ``images`` are the
    raw pixels shown to the user, a batch (N, H, W, C) or one image; ``preprocess``
    (called once on the whole batch) maps them to what the model takes; any trait
    below may be given as a keyword. Set the traits from code or with the controls:

    - ``layer``: one of ``layer_names``; the first layer with a 4-D output by default.
      Changing it keeps ``channel`` when the new layer has it, else the last channel.
    - ``channel``: channel (unit, for Dense layers) shown.
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

    def __init__(self, model, images, *, preprocess=None, **traits):
        self.cache = ActivationCache(model, images, preprocess)
        self.layer_names = list(self.cache.graph.paths)
        self._probe = None  # position of the last clicked value inside a channel map
        self._content = None
        self._content_key = None
        self._build_controls()
        self._build_views()
        super().__init__()
        self.children = [
            widgets.HBox([self.layer_dropdown, self.view_buttons]),
            widgets.HBox([self.channel_slider, self.image_slider]),
            widgets.HBox([self.colormap_dropdown, self.normalization_buttons]),
            self._error_line,
            self._view_box,
            self.readout,
            self._means_box,
        ]
        self._show_input()
        spatial = self.cache.graph.spatial_paths(4)
        self.set_traits_in_order({"layer": spatial[0] if spatial else self.layer_names[0], **traits})

    def _build_controls(self):
        self.layer_dropdown = widgets.Dropdown(
            options=[(layer_views.layer_label(self.cache.graph.info(path)), path) for path in self.layer_names],
            description="layer",
            layout=widgets.Layout(width="460px"),
        )
        self.view_buttons = widgets.ToggleButtons(options=VIEWS, value=self.view)
        # Channel moves never run the model, so the slider can follow the mouse;
        # an image move may cost a forward pass, so it only reports where it stops.
        self.channel_slider = widgets.IntSlider(description="channel", max=0, continuous_update=True)
        self.image_slider = widgets.IntSlider(
            description="image",
            max=len(self.cache) - 1,
            continuous_update=False,
            layout=widgets.Layout(display="none" if len(self.cache) == 1 else None),
        )
        # Every matplotlib name up front: changing a Dropdown's options re-selects
        # its first option, which would set the trait back behind our back.
        colormaps = COMMON_COLORMAPS + tuple(sorted(set(matplotlib.colormaps) - set(COMMON_COLORMAPS)))
        self.colormap_dropdown = widgets.Dropdown(options=colormaps, value=self.colormap, description="colormap")
        self.normalization_buttons = widgets.ToggleButtons(
            options=[(NORMALIZATION_LABELS[value], value) for value in NORMALIZATIONS], value=self.normalization
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
        self.input_view = image_view(f"{INPUT_BOX_PX}px")
        self.map_figure = PictureFigure(MAP_BOX_PX)
        self.map_figure.on_click(lambda row, column: self._pick(self._content.locate(row, column)))
        self.signal_chart = BarChart()
        # A chart not shown is taken out of the page rather than given display: none: a
        # bqplot Figure drawn at size 0 sets negative <rect> sizes, an error in the console.
        self._view_box = widgets.HBox(
            [self.input_view, self.map_figure.figure], layout=widgets.Layout(align_items="flex-start")  # keep the input square
        )
        self.signal_chart.figure.layout.width = f"{MAP_BOX_PX * 3 // 2}px"
        self.signal_chart.on_select(lambda index: self._pick(self._content.locate(index)))
        self.means_chart = BarChart(title="Mean activation per channel", x_label="channel", y_label="mean")
        self._means_box = widgets.Box([self.means_chart.figure])
        self.means_chart.on_select(lambda channel: setattr(self, "channel", channel))
        self.readout = widgets.HTML()

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
        self._show_channel_means()
        channel = min(self.channel, self.activation.shape[-1] - 1)
        if channel != self.channel:
            self.channel = channel  # its observer draws
        else:
            self._draw()

    @observe("image_index")
    def _image_changed(self, change):
        self._show_input()
        self._show_channel_means()
        self._draw()

    @observe("channel", "view", "colormap", "normalization")
    def _shown_changed(self, change):
        self._draw()

    # -- drawing -------------------------------------------------------------------

    def _show_input(self):
        show(self.input_view, imaging.upscale_to(layer_views.input_picture(self.cache, self.image_index), INPUT_BOX_PX))

    def _show_channel_means(self):
        activation = self.activation
        # A Dense layer's units are already shown as bars by the signal chart.
        self._means_box.children = () if activation.ndim == 1 else (self.means_chart.figure,)
        means = layer_views.channel_means(activation)
        self.means_chart.show(_index_labels(len(means)), means, selected=min(self.channel, len(means) - 1))

    def _draw(self):
        """Redraw what depends on the channel and the view settings."""
        slider = self.channel_slider
        with slider.hold_sync(), slider.hold_trait_notifications():
            slider.max = self.activation.shape[-1] - 1
            slider.value = self.channel
            slider.description = self._channel_noun()
        self.means_chart.bars.selected = [self.channel]
        settings = self._settings()
        key = layer_views.content_key(settings, self.activation)
        if key != self._content_key:
            self._content = layer_views.content(self.cache, settings, self._probe)
            self._content_key = key
            self._show_content()
        self._show_readout()

    def _show_content(self):
        content = self._content
        is_picture = isinstance(content, Picture)
        self._view_box.children = (self.input_view, self.map_figure.figure if is_picture else self.signal_chart.figure)
        if is_picture:
            self.map_figure.show(content.rows, content.palette)
        else:
            self.signal_chart.figure.title = content.title
            self.signal_chart.show(_index_labels(len(content.values)), content.values, content.selected)

    def _show_readout(self):
        self.readout.value = html.escape(layer_views.readout(self.activation, self.layer, self.channel, self._probe))

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


def _index_labels(count: int) -> list[str]:
    return [str(index) for index in range(count)]
