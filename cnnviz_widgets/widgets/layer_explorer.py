"""LayerExplorer: what every layer of a model computes, image by image.

The views follow the tutorials (shared/SEEDS.md):

- ``"channel"``: one channel as a map, coloured like ``matshow(cmap="viridis")`` (S0, S1);
- ``"grid"``: every channel, 16 a row, each as ``(a - mean) / std * 64 + 128`` (S1);
- ``"images"``: one channel for every image (S4).

The two tiled views are overviews: a grid picture is at most ``GRID_MAX_WIDTH_PX``
wide, larger maps shrink (area averaging) to fit, and a click still reads the
full-resolution value under it. The channel view shows a map at full resolution.

Layers with one value per unit (Dense, Flatten) are bar charts of the units; 1-D
convolution outputs (steps, channels) are a chart along the steps, or a picture with
one row per channel (grid) or per image (images).

The model only runs through :class:`~cnnviz_widgets.core.activation_cache.ActivationCache`:
changing the layer or channel never runs it, a new image runs it once for every
layer, and the "images" view runs one batched pass per layer it shows.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable

import ipywidgets as widgets
import matplotlib
import numpy as np
from traitlets import Int, Unicode, observe

from ..core import imaging
from ..core.activation_cache import ActivationCache
from ..core.errors import InputError, UnknownLayerError
from ..core.inputs import as_images, image_shape
from ._base import BarChart, PictureFigure, VisualizerWidget, checks, image_view, raw_image_picture, show

VIEWS = ("channel", "grid", "images")
NORMALIZATIONS = (("per channel", "channel"), ("per layer", "layer"))
COMMON_COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "gray_r", "jet", "RdBu_r")
GRID_COLUMNS = 16
# 16 tiles of 64 px: what a notebook column shows anyway; a VGG16 block1 grid at
# full resolution is 3599×899 px and takes half a second to encode as PNG.
GRID_MAX_WIDTH_PX = 1039
GAP_ROW = 255  # the palette row of the white gaps between tiles
WHITE = 255
MAP_BOX_PX = 320
INPUT_BOX_PX = 256
BAR_COLOUR = np.array([70, 130, 180], dtype=np.uint8)  # bqplot's steelblue
SELECTED_BAR_COLOUR = np.array([214, 39, 40], dtype=np.uint8)  # BarChart's selected fill


class LayerExplorer(VisualizerWidget):
    """Feature maps of any layer of ``model`` for ``images``, with clickable charts.

    ``images`` are the raw pixels shown to the user, a batch (N, H, W, C) or one
    image; ``preprocess`` (called once on the whole batch) maps them to what the
    model takes. Set the traits from code or with the controls:

    - ``layer``: one of ``layer_names``; the first layer with a 4-D output by default.
      Changing it keeps ``channel`` when the new layer has it, else the last channel.
    - ``channel``: channel (unit, for Dense layers) shown.
    - ``image_index``: image shown.
    - ``view``: ``"channel"``, ``"grid"`` or ``"images"`` (see the module docstring).
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
    view = Unicode("channel", help="'channel', 'grid' or 'images'.")
    colormap = Unicode("viridis", help="matplotlib colormap of the maps.")
    normalization = Unicode("channel", help="'channel' (each map on its own scale) or 'layer' (one scale).")

    def __init__(self, model, images, preprocess=None):
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
            widgets.HBox(
                [self.input_view, self.map_figure.figure, self.signal_chart.figure],
                layout=widgets.Layout(align_items="flex-start"),  # keep the input square
            ),
            self.readout,
            self.means_chart.figure,
        ]
        self._show_input()
        spatial = self.cache.graph.spatial_paths(4)
        self.layer = spatial[0] if spatial else self.layer_names[0]

    def _build_controls(self):
        graph = self.cache.graph
        self.layer_dropdown = widgets.Dropdown(
            options=[(_layer_label(graph.info(path)), path) for path in self.layer_names],
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
        self.normalization_buttons = widgets.ToggleButtons(options=NORMALIZATIONS, value=self.normalization)
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
        self.map_figure.on_click(lambda row, column: self._content.click(row, column))
        self.signal_chart = BarChart()
        self.signal_chart.figure.layout.width = f"{MAP_BOX_PX * 3 // 2}px"
        self.signal_chart.on_select(lambda index: self._content.click(index))
        self.means_chart = BarChart(title="Mean activation per channel", x_label="channel", y_label="mean")
        self.means_chart.on_select(lambda channel: setattr(self, "channel", channel))
        self.readout = widgets.HTML()

    # -- state ---------------------------------------------------------------------

    @property
    def activation(self) -> np.ndarray:
        """Output of the current layer for the current image, batch axis dropped."""
        return self.cache.for_image(self.image_index)[self.layer]

    def _channel_count(self) -> int:
        return self.activation.shape[-1]

    def _channel_noun(self) -> str:
        return "unit" if self.activation.ndim == 1 else "channel"

    # -- validation: a refused value raises, shows in `error`, and changes nothing --

    def _refuse_unless_finite(self, layer: str, image_index: int, all_images: bool):
        """Refuse a state that would show NaN or infinite values: they have no colour."""
        shown = [self.cache.for_image(image_index)[layer]]
        if all_images:
            shown.append(self._every_image(layer))
        bad = sum(int((~np.isfinite(values)).sum()) for values in shown)
        if bad:
            images = "the images" if all_images else f"image {image_index}"
            self.refuse(
                f"Layer '{layer}' outputs {bad} NaN or infinite value(s) for {images}, which cannot "
                "be drawn. The model computes them: check the images' scale and preprocess, and "
                "the weights of this layer and the layers before it."
            )

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
        channel, count = proposal["value"], self._channel_count()
        self.refuse_outside(
            channel, count, f"channel {channel} is out of range: layer '{self.layer}' has {count} {self._channel_noun()}s"
        )
        return channel

    @checks("image_index")
    def _check_image_index(self, proposal):
        index, count = proposal["value"], len(self.cache)
        self.refuse_outside(index, count, f"image_index {index} is out of range: there are {count} images")
        # The images view's other images were checked with the layer: only this one is new.
        self._refuse_unless_finite(self.layer, index, all_images=False)
        return index

    @checks("view")
    def _check_view(self, proposal):
        if proposal["value"] not in VIEWS:
            self.refuse(f"Unknown view {proposal['value']!r}. Use one of: {', '.join(VIEWS)}.")
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

    @checks("normalization")
    def _check_normalization(self, proposal):
        values = [value for _, value in NORMALIZATIONS]
        if proposal["value"] not in values:
            self.refuse(f"Unknown normalization {proposal['value']!r}. Use one of: {', '.join(values)}.")
        return proposal["value"]

    # -- reactions -----------------------------------------------------------------

    @observe("layer")
    def _layer_changed(self, change):
        self._probe = None
        self._show_channel_means()
        channel = min(self.channel, self._channel_count() - 1)
        if channel != self.channel:
            self.channel = channel  # its observer draws
        else:
            self._draw()

    @observe("image_index")
    def _image_changed(self, change):
        self._show_input()
        self._show_channel_means()
        self._draw()

    @observe("channel")
    def _channel_changed(self, change):
        self._draw()

    @observe("view", "colormap", "normalization")
    def _style_changed(self, change):
        self._draw()

    # -- drawing -------------------------------------------------------------------

    def _show_input(self):
        picture = self._input_picture()
        show(self.input_view, imaging.upscale_to(picture, INPUT_BOX_PX))

    def _input_picture(self) -> np.ndarray:
        graph = self.cache.graph
        raw = as_images(graph, self.cache.images[self.image_index : self.image_index + 1])[0]
        if image_shape(graph) is None and len(graph.inputs[0].shape) != 4:  # a signal (steps, features): one row per feature
            return imaging.colormap(imaging.normalize(raw.reshape(len(raw), -1).T), "gray")
        return raw_image_picture(raw)

    def _show_channel_means(self):
        activation = self.activation
        # A Dense layer's units are already shown as bars by the signal chart.
        self.means_chart.figure.layout.display = "none" if activation.ndim == 1 else None
        means = activation.reshape(-1, activation.shape[-1]).mean(axis=0)
        self.means_chart.show(
            [str(channel) for channel in range(len(means))], means, selected=min(self.channel, len(means) - 1)
        )

    def _draw(self):
        """Redraw what depends on the channel and the view settings."""
        slider = self.channel_slider
        with slider.hold_sync(), slider.hold_trait_notifications():
            slider.max = self._channel_count() - 1
            slider.value = self.channel
            slider.description = self._channel_noun()
        self.means_chart.bars.selected = [self.channel]
        # A grid shows every channel and the images view every image: moving the
        # channel or image must not rebuild and re-encode them.
        units = self.activation.ndim == 1
        shows_one_channel = self.view != "grid" or units
        shows_one_image = self.view != "images" or units
        key = (
            self.layer,
            self.view,
            self.colormap,
            self.normalization,
            self.channel if shows_one_channel else None,
            self.image_index if shows_one_image else None,
        )
        if key != self._content_key:
            self._content = self._build_content()
            self._content_key = key
            self._show_content()
        self._show_readout()

    def _show_content(self):
        content = self._content
        is_picture = isinstance(content, _Picture)
        self.map_figure.figure.layout.display = None if is_picture else "none"
        self.signal_chart.figure.layout.display = "none" if is_picture else None
        if is_picture:
            self.map_figure.show(content.rows, content.palette)
        else:
            self.signal_chart.figure.title = content.title
            self.signal_chart.show(_index_labels(len(content.values)), content.values, content.selected)

    def _show_readout(self):
        activation, channel = self.activation, self.channel
        if activation.ndim == 1:
            text = (
                f"{self.layer} · unit {channel} of {len(activation)}: {activation[channel]:.4g} "
                f"(layer min {activation.min():.4g}, max {activation.max():.4g})"
            )
        else:
            values = self._channel_values(activation)
            text = (
                f"{self.layer} · channel {channel} of {activation.shape[-1]}: min {values.min():.4g}, "
                f"max {values.max():.4g}, mean {values.mean():.4g}"
            )
            if self._probe is None:
                text += " · click the map for a value"
            else:
                where = f"step {self._probe[0]}" if values.ndim == 1 else f"row {self._probe[0]}, column {self._probe[1]}"
                text += f" · at {where}: {values[self._probe]:.4g}"
        self.readout.value = html.escape(text)

    def _channel_values(self, activation) -> np.ndarray:
        """The current channel as a map (rows, columns) or a signal (steps,)."""
        maps = _as_maps(activation) if activation.ndim > 2 else activation
        return maps[..., self.channel]

    # -- what the map area shows, and what a click on it means -------------------

    def _build_content(self):
        activation = self.activation
        if activation.ndim == 1:
            return self._units_across_images() if self.view == "images" else self._units(activation)
        if self.view == "images":
            return self._channel_across_images()
        if self.view == "grid":
            return self._all_channels(activation)
        if activation.ndim == 2:
            return self._channel_along_steps(activation)
        return self._channel_map(activation)

    def _units(self, activation):
        return _Signal(
            title=f"{self.layer}: value of every unit",
            values=activation,
            selected=self.channel,
            click=lambda unit: setattr(self, "channel", unit),
        )

    def _every_image(self, layer: str) -> np.ndarray:
        """``layer`` for every image as the images view draws it: maps as their tiles.

        The tiles of all channels come from one batched pass and stay cached, so a
        channel move runs nothing; a layer of thousands of images is never held at
        full size (10,000 small images held 3.8 GB and ran the model on every move).
        """
        if len(self.cache.graph.info(layer).output_shape) < 4:  # units or steps: drawn as they are
            return self.cache.for_layer(layer)
        side = _tile_side(_image_columns(len(self.cache)))
        return self.cache.summarised(
            layer, f"tiles of {side} px", lambda batch: imaging.shrink_to_fit(_as_maps(batch, batched=True), side)
        )

    def _units_across_images(self):
        values = self.cache.for_layer(self.layer)[:, self.channel]
        return _Signal(
            title=f"{self.layer}: unit {self.channel} for every image",
            values=values,
            selected=self.image_index,
            click=lambda image: setattr(self, "image_index", image),
        )

    def _channel_along_steps(self, activation):
        return _Signal(
            title=f"{self.layer}: channel {self.channel} along the steps",
            values=activation[:, self.channel],
            selected=None if self._probe is None else self._probe[0],
            click=lambda step: self._pick((step,)),
        )

    def _channel_map(self, activation):
        maps = _as_maps(activation)
        if self.normalization == "layer":
            scaled = imaging.normalize(maps[..., self.channel], bounds=(maps.min(), maps.max()))
        else:
            scaled = imaging.normalize(maps[..., self.channel])
        return self._coloured(scaled, click=lambda row, column: self._pick((row, column)))

    def _all_channels(self, activation):
        axis = -1 if self.normalization == "channel" else None
        if activation.ndim == 2:  # (steps, channels): one row per channel
            scaled = imaging.normalize_channels(activation, axis=axis).T / 255
            return self._coloured(scaled, click=lambda row, column: self._pick((column,), channel=row))
        maps = _as_maps(activation)
        shown = imaging.shrink_to_fit(maps, _tile_side(GRID_COLUMNS))
        scaled = np.moveaxis(imaging.normalize_channels(shown, axis=axis), -1, 0) / 255
        return self._tiled(scaled, GRID_COLUMNS, maps.shape[:2], lambda channel, probe: self._pick(probe, channel=channel))

    def _channel_across_images(self):
        layer = self._every_image(self.layer)
        scale = "tile" if self.normalization == "channel" else "global"
        if layer.ndim == 3:  # (images, steps, channels): one row per image
            scaled = imaging.normalize(layer[..., self.channel], scale)
            return self._coloured(scaled, click=lambda row, column: self._pick((column,), image=row))
        scaled = imaging.normalize(layer[..., self.channel], scale)
        map_shape = _as_maps(self.activation).shape[:2]
        columns = _image_columns(len(layer))
        return self._tiled(scaled, columns, map_shape, lambda image, probe: self._pick(probe, image=image))

    def _coloured(self, values, click) -> _Picture:
        """Values in [0, 1] in the current colormap."""
        return _Picture(imaging.colormap_index(values), imaging.colormap_table(self.colormap), click)

    def _tiled(self, values, columns: int, map_shape, pick) -> _Picture:
        """Tiles of values in [0, 1], coloured, as one grid picture with white gaps.

        The maps had ``map_shape`` (height, width) before they shrank to tiles; a click
        calls ``pick(tile, (row, column))`` with the position in the full-size map.
        The palette's last row is the gaps' white, so the colormap's top colour gives
        way to the one just below it (one 256th of the range, not visible).
        """
        rows = np.minimum(imaging.colormap_index(values), GAP_ROW - 1)
        palette = np.concatenate([imaging.colormap_table(self.colormap)[:GAP_ROW], [[WHITE] * 3]]).astype(np.uint8)
        layout = imaging.GridLayout.for_tiles(len(rows), rows.shape[1:], columns)
        height, width = map_shape

        def click(row, column):
            index = layout.index_at(row, column)
            if index is not None:
                top, left = layout.origin(index)
                pick(index, ((row - top) * height // layout.tile_height, (column - left) * width // layout.tile_width))

        return _Picture(imaging.grid(rows, columns, fill=GAP_ROW), palette, click)

    def _pick(self, probe, channel=None, image=None):
        """A click on a value: remember where, then select the clicked channel or image."""
        self._probe = probe
        if channel is not None:
            self.channel = channel
        if image is not None:
            self.image_index = image
        if channel is None and image is None and isinstance(self._content, _Signal):
            self._content.selected = probe[0]  # a step of a 1-D map: the chart marks it
        self._show_readout()

    # -- static export -------------------------------------------------------------

    def panels(self) -> list[np.ndarray]:
        """The input image and the map (or a bar picture of a chart), one pixel per value."""
        return [self._input_picture(), self._content.picture()]


@dataclass
class _Picture:
    """A picture for the map area as palette rows; ``click(row, column)`` handles a click on it."""

    rows: np.ndarray
    palette: np.ndarray
    click: Callable[[int, int], None]

    def picture(self) -> np.ndarray:
        return self.palette[self.rows]


@dataclass
class _Signal:
    """A bar chart for the map area; ``click(index)`` handles a click on a bar."""

    title: str
    values: np.ndarray
    selected: int | None
    click: Callable[[int], None]

    def picture(self) -> np.ndarray:
        return _bar_picture(self.values, self.selected)


def _tile_side(columns: int) -> int:
    """The largest tile side that keeps ``columns`` tiles, 1 px apart, within GRID_MAX_WIDTH_PX."""
    return max(1, (GRID_MAX_WIDTH_PX + 1) // columns - 1)


def _image_columns(count: int) -> int:
    """Columns of the images view: a square grid of ``count`` tiles."""
    return math.ceil(math.sqrt(count))


def _as_maps(activation: np.ndarray, batched: bool = False) -> np.ndarray:
    """(…, H, W, C) as (H', W, C), or (N, H', W, C): extra spatial axes (Conv3D depth) stack into the height."""
    lead = activation.shape[:1] if batched else ()
    return activation.reshape(*lead, -1, *activation.shape[-2:])


def _index_labels(count: int) -> list[str]:
    return [str(index) for index in range(count)]


def _layer_label(info) -> str:
    shape = "×".join("?" if size is None else str(size) for size in info.output_shape[1:])
    return f"{info.path} · {info.kind} · {shape}"


def _bar_picture(values, selected: int | None = None, height: int = 120, bar_px: int = 3) -> np.ndarray:
    """Bars from a zero line, ``selected`` in red, one white column between bars.

    A static stand-in for a bqplot bar chart, for :meth:`LayerExplorer.panels`.
    """
    values = np.asarray(values, dtype=np.float64)
    top, bottom = max(values.max(), 0.0), min(values.min(), 0.0)
    span = (top - bottom) or 1.0
    ends = np.round((top - values) / span * (height - 1))
    zero = np.round(top / span * (height - 1))
    rows = np.arange(height)[:, None]
    filled = (rows >= np.minimum(ends, zero)) & (rows <= np.maximum(ends, zero))
    colours = np.tile(BAR_COLOUR, (len(values), 1))
    if selected is not None:
        colours[selected] = SELECTED_BAR_COLOUR
    picture = np.where(filled[..., None], colours[None], WHITE).astype(np.uint8)
    picture = np.repeat(picture, bar_px + 1, axis=1)
    picture[:, bar_px :: bar_px + 1] = WHITE
    return picture
