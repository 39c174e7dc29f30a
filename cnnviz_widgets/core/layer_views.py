"""What LayerExplorer shows of one layer, as plain values: the picture or chart, what a click on it selects, the readout and the channel means.

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

Everything comes from an :class:`~cnnviz_widgets.core.activation_cache.ActivationCache`,
so building a view never runs the model for an image it already ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import imaging
from .activation_cache import ActivationCache
from .inputs import as_images, image_shape

VIEWS = ("channel", "grid", "images")
NORMALIZATIONS = ("channel", "layer")
GRID_COLUMNS = 16
# 16 tiles of 64 px: what a notebook column shows anyway; a VGG16 block1 grid at
# full resolution is 3599×899 px and takes half a second to encode as PNG.
GRID_MAX_WIDTH_PX = 1039
GAP_ROW = 255  # the palette row of the white gaps between tiles


@dataclass(frozen=True)
class Settings:
    """What the user chose: ``view`` one of VIEWS, ``normalization`` one of NORMALIZATIONS."""

    layer: str
    channel: int
    image_index: int
    view: str
    colormap: str
    normalization: str


@dataclass(frozen=True)
class Pick:
    """What a click selects: a position inside a channel's map or signal, and maybe a channel or an image."""

    probe: tuple[int, ...] | None
    channel: int | None = None
    image: int | None = None


@dataclass
class Picture:
    """A picture as palette rows; ``locate(row, column)`` says what the pixel there selects (None: a gap)."""

    rows: np.ndarray
    palette: np.ndarray
    locate: Callable[[int, int], Pick | None]

    def picture(self) -> np.ndarray:
        return self.palette[self.rows]


@dataclass
class Signal:
    """A bar chart of ``values``; ``locate(index)`` says what the bar ``index`` selects."""

    title: str
    values: np.ndarray
    selected: int | None
    locate: Callable[[int], Pick]

    def picture(self) -> np.ndarray:
        """A static stand-in for the chart, one bar per value."""
        return imaging.bar_picture(self.values, self.selected)


def content_key(settings: Settings, activation: np.ndarray) -> tuple:
    """The settings the content of ``settings`` depends on: equal keys, same content.

    A grid shows every channel and the images view every image, so moving the channel
    or the image must not rebuild and re-encode them.
    """
    units = activation.ndim == 1
    shows_one_channel = settings.view != "grid" or units
    shows_one_image = settings.view != "images" or units
    return (
        settings.layer,
        settings.view,
        settings.colormap,
        settings.normalization,
        settings.channel if shows_one_channel else None,
        settings.image_index if shows_one_image else None,
    )


def content(cache: ActivationCache, settings: Settings, probe: tuple[int, ...] | None = None) -> Picture | Signal:
    """The picture or chart of the map area; ``probe`` is the last clicked step of a 1-D channel."""
    activation = cache.for_image(settings.image_index)[settings.layer]
    if activation.ndim == 1:
        return _units_across_images(cache, settings) if settings.view == "images" else _units(activation, settings)
    if settings.view == "images":
        return _channel_across_images(cache, settings, activation)
    if settings.view == "grid":
        return _all_channels(activation, settings)
    if activation.ndim == 2:
        return _channel_along_steps(activation, settings, probe)
    return _channel_map(activation, settings)


def readout(activation: np.ndarray, layer: str, channel: int, probe: tuple[int, ...] | None) -> str:
    """One line on the shown channel (or unit) and, after a click, the value under it."""
    if activation.ndim == 1:
        return (
            f"{layer} · unit {channel} of {len(activation)}: {activation[channel]:.4g} "
            f"(layer min {activation.min():.4g}, max {activation.max():.4g})"
        )
    values = channel_values(activation, channel)
    text = (
        f"{layer} · channel {channel} of {activation.shape[-1]}: min {values.min():.4g}, "
        f"max {values.max():.4g}, mean {values.mean():.4g}"
    )
    if probe is None:
        return text + " · click the map for a value"
    where = f"step {probe[0]}" if values.ndim == 1 else f"row {probe[0]}, column {probe[1]}"
    return text + f" · at {where}: {values[probe]:.4g}"


def channel_values(activation: np.ndarray, channel: int) -> np.ndarray:
    """``channel`` of one image's layer output as a map (rows, columns) or a signal (steps,)."""
    maps = _as_maps(activation) if activation.ndim > 2 else activation
    return maps[..., channel]


def channel_means(activation: np.ndarray) -> np.ndarray:
    """The mean of every channel (every unit's value, for a Dense layer) of one image's layer output."""
    return activation.reshape(-1, activation.shape[-1]).mean(axis=0)


def input_picture(cache: ActivationCache, image_index: int) -> np.ndarray:
    """Image ``image_index`` as the user gave it, as uint8 RGB; a signal (steps, features) as one gray row per feature."""
    graph = cache.graph
    raw = as_images(graph, cache.images[image_index : image_index + 1])[0]
    if image_shape(graph) is None and len(graph.inputs[0].shape) != 4:
        return imaging.colormap(imaging.normalize(raw.reshape(len(raw), -1).T), "gray")
    return imaging.raw_image_picture(raw)


def unshowable(cache: ActivationCache, layer: str, image_index: int, all_images: bool) -> str | None:
    """Why ``layer`` cannot be drawn for the image (or every image): NaN or infinite values have no colour."""
    shown = [cache.for_image(image_index)[layer]]
    if all_images:
        shown.append(every_image(cache, layer))
    bad = sum(int((~np.isfinite(values)).sum()) for values in shown)
    if not bad:
        return None
    images = "the images" if all_images else f"image {image_index}"
    return (
        f"Layer '{layer}' outputs {bad} NaN or infinite value(s) for {images}, which cannot "
        "be drawn. The model computes them: check the images' scale and preprocess, and "
        "the weights of this layer and the layers before it."
    )


def every_image(cache: ActivationCache, layer: str) -> np.ndarray:
    """``layer`` for every image as the images view draws it: maps as their tiles.

    The tiles of all channels come from one batched pass and stay cached, so a
    channel move runs nothing; a layer of thousands of images is never held at
    full size (10,000 small images held 3.8 GB and ran the model on every move).
    """
    if len(cache.graph.info(layer).output_shape) < 4:  # units or steps: drawn as they are
        return cache.for_layer(layer)
    side = _tile_side(_image_columns(len(cache)))
    return cache.summarised(
        layer, f"tiles of {side} px", lambda batch: imaging.shrink_to_fit(_as_maps(batch, batched=True), side)
    )


def layer_label(info) -> str:
    """A layer's menu entry: path, kind and output shape."""
    shape = "×".join("?" if size is None else str(size) for size in info.output_shape[1:])
    return f"{info.path} · {info.kind} · {shape}"


# -- the contents of the map area ----------------------------------------------------


def _units(activation, settings: Settings) -> Signal:
    return Signal(
        title=f"{settings.layer}: value of every unit",
        values=activation,
        selected=settings.channel,
        locate=lambda unit: Pick(None, channel=unit),
    )


def _units_across_images(cache: ActivationCache, settings: Settings) -> Signal:
    return Signal(
        title=f"{settings.layer}: unit {settings.channel} for every image",
        values=cache.for_layer(settings.layer)[:, settings.channel],
        selected=settings.image_index,
        locate=lambda image: Pick(None, image=image),
    )


def _channel_along_steps(activation, settings: Settings, probe) -> Signal:
    return Signal(
        title=f"{settings.layer}: channel {settings.channel} along the steps",
        values=activation[:, settings.channel],
        selected=None if probe is None else probe[0],
        locate=lambda step: Pick((step,)),
    )


def _channel_map(activation, settings: Settings) -> Picture:
    maps = _as_maps(activation)
    bounds = (maps.min(), maps.max()) if settings.normalization == "layer" else None
    scaled = imaging.normalize(maps[..., settings.channel], bounds=bounds)
    return _coloured(scaled, settings.colormap, lambda row, column: Pick((row, column)))


def _all_channels(activation, settings: Settings) -> Picture:
    axis = -1 if settings.normalization == "channel" else None
    if activation.ndim == 2:  # (steps, channels): one row per channel
        scaled = imaging.normalize_channels(activation, axis=axis).T / 255
        return _coloured(scaled, settings.colormap, lambda row, column: Pick((column,), channel=row))
    maps = _as_maps(activation)
    shown = imaging.shrink_to_fit(maps, _tile_side(GRID_COLUMNS))
    scaled = np.moveaxis(imaging.normalize_channels(shown, axis=axis), -1, 0) / 255
    return _tiled(
        scaled, GRID_COLUMNS, maps.shape[:2], settings.colormap, lambda channel, probe: Pick(probe, channel=channel)
    )


def _channel_across_images(cache: ActivationCache, settings: Settings, activation) -> Picture:
    layer = every_image(cache, settings.layer)
    scale = "tile" if settings.normalization == "channel" else "global"
    scaled = imaging.normalize(layer[..., settings.channel], scale)
    if layer.ndim == 3:  # (images, steps, channels): one row per image
        return _coloured(scaled, settings.colormap, lambda row, column: Pick((column,), image=row))
    map_shape = _as_maps(activation).shape[:2]
    return _tiled(
        scaled, _image_columns(len(layer)), map_shape, settings.colormap, lambda image, probe: Pick(probe, image=image)
    )


def _coloured(values, colormap: str, locate) -> Picture:
    """Values in [0, 1] in ``colormap``."""
    return Picture(imaging.colormap_index(values), imaging.colormap_table(colormap), locate)


def _tiled(values, columns: int, map_shape, colormap: str, pick) -> Picture:
    """Tiles of values in [0, 1], coloured, as one grid picture with white gaps.

    The maps had ``map_shape`` (height, width) before they shrank to tiles; a click
    on a tile is ``pick(tile, (row, column))`` with the position in the full-size map.
    The palette's last row is the gaps' white, so the colormap's top colour gives
    way to the one just below it (one 256th of the range, not visible).
    """
    rows = np.minimum(imaging.colormap_index(values), GAP_ROW - 1)
    palette = np.concatenate([imaging.colormap_table(colormap)[:GAP_ROW], [[imaging.WHITE] * 3]]).astype(np.uint8)
    layout = imaging.GridLayout.for_tiles(len(rows), rows.shape[1:], columns)
    height, width = map_shape

    def locate(row, column):
        index = layout.index_at(row, column)
        if index is None:
            return None
        top, left = layout.origin(index)
        return pick(index, ((row - top) * height // layout.tile_height, (column - left) * width // layout.tile_width))

    return Picture(imaging.grid(rows, columns, fill=GAP_ROW), palette, locate)


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
