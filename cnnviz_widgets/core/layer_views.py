"""What LayerExplorer shows of one layer, as plain values: the picture or chart, what a click on it selects, the readout and the channel means.

The views follow the tutorials (shared/SEEDS.md):

- ``"channel"``: one channel as a map, coloured like ``matshow(cmap="viridis")`` (S0, S1);
- ``"grid"``: every channel, 8 a row, each as ``(a - mean) / std * 64 + 128`` (S1);
- ``"images"``: one channel for every image (S4).

The two tiled views are overviews: a grid picture is at most ``GRID_MAX_WIDTH_PX``
wide, larger maps shrink (area averaging) to fit, and a click still reads the
full-resolution value under it. A grid shows one page of ``GRID_PAGE`` channels, the
page of the selected channel. The channel view shows a map at full resolution.

Every picture carries its :class:`ColourScale`, what its colours mean. A channel
that is constant (a dead ReLU: 0 everywhere) has no contrast to stretch: it is drawn
in the colormap's bottom colour, not mid-scale, and the readout says so.

Layers with one value per unit (Dense, Flatten) are bar charts of the units; 1-D
convolution outputs (steps, channels) are a chart along the steps, or a picture with
one row per channel (grid) or per image (images).

Everything comes from an :class:`~cnnviz_widgets.core.activation_cache.ActivationCache`,
so building a view never runs the model for an image it already ran.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import imaging
from .activation_cache import ActivationCache
from .class_names import class_names_for, known_class_names
from .inputs import as_images, image_shape

VIEWS = ("channel", "grid", "images")
NORMALIZATIONS = ("channel", "layer")
# 8 tiles a row stay larger than 48 px in a notebook cell of 1000-px window with the
# file browser open (~560 px); 16 were 35 px there.
GRID_COLUMNS = 8
# 8 tiles of 96 px: what a notebook column shows anyway; a VGG16 block1 grid at
# full resolution is 3599×899 px and takes half a second to encode as PNG.
GRID_MAX_WIDTH_PX = 775
GRID_PAGE = 4 * GRID_COLUMNS  # channels a grid shows at once: 4 rows of tiles
GAP_ROW = 255  # the palette row of the white gaps between tiles
HATCH_ROWS = (GAP_ROW - 2, GAP_ROW - 1)  # the palette rows of a dead channel's gray stripes
HATCH_COLOURS = ((200, 200, 200), (150, 150, 150))
# A channel within this fraction of the layer's largest |value| of 0 everywhere is
# dead: float rounding leaves dead ReLU outputs at 0 exactly, but a bias or a batch
# norm after it can shift them by a few ulps.
DEAD_TOLERANCE = 1e-6


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


@dataclass(frozen=True)
class ColourScale:
    """What a picture's colours mean: the colormap's bottom is ``low``, its top ``high``, in ``unit``."""

    low: float
    high: float
    unit: str


@dataclass
class Picture:
    """A picture as palette rows; ``locate(row, column)`` says what the pixel there selects (None: a gap).

    ``scale`` is None where the colours mean no value: a constant channel has no contrast.
    """

    rows: np.ndarray
    palette: np.ndarray
    locate: Callable[[int, int], Pick | None]
    scale: ColourScale | None = None

    def picture(self) -> np.ndarray:
        return self.palette[self.rows]


@dataclass
class Signal:
    """A bar chart of ``values``; ``locate(index)`` says what the bar ``index`` selects."""

    title: str
    values: np.ndarray
    selected: int | None
    locate: Callable[[int], Pick]
    labels: list[str] | None = None  # of the bars; None: their indices
    x_label: str = ""  # what a bar is

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
    grid_page = grid_channels(activation, settings.channel)
    return (
        settings.layer,
        settings.view,
        settings.colormap,
        settings.normalization,
        settings.channel if shows_one_channel else (grid_page.start, grid_page.stop),
        settings.image_index if shows_one_image else None,
    )


@dataclass(frozen=True)
class ClassOutput:
    """The layer whose units are the model's classes, and their names (None: only their indices are known)."""

    path: str
    names: list[str] | None


def class_output(model, graph, class_names=None) -> ClassOutput | None:
    """The model's first output if it scores classes (one value per class), named by ``class_names``
    or by the names known offline (a demo model's, ImageNet's for 1000 classes)."""
    path = graph.output_path(0)
    shape = graph.info(path).output_shape
    if len(shape) != 2:
        return None
    if class_names is not None:
        return ClassOutput(path, class_names_for(shape[-1], class_names))
    return ClassOutput(path, known_class_names(model, shape[-1]))


def content(
    cache: ActivationCache, settings: Settings, probe: tuple[int, ...] | None = None, classes: ClassOutput | None = None
) -> Picture | Signal:
    """The picture or chart of the map area; ``probe`` is the last clicked step of a 1-D channel;
    ``classes`` says which layer's units are classes, and their names."""
    activation = cache.for_image(settings.image_index)[settings.layer]
    if activation.ndim == 1:
        if settings.view == "images":
            return _units_across_images(cache, settings)
        return _units(activation, settings, classes)
    if settings.view == "images":
        return _channel_across_images(cache, settings, activation)
    if settings.view == "grid":
        return _all_channels(activation, settings)
    if activation.ndim == 2:
        return _channel_along_steps(activation, settings, probe)
    return _channel_map(activation, settings)


def grid_page_note(activation: np.ndarray, channel: int) -> str:
    """For a grid that shows one page of the layer's channels: which page, and how to see the others
    ("" when every channel fits on one page)."""
    page = grid_channels(activation, channel)
    if len(page) == activation.shape[-1]:
        return ""
    return f" · grid of channels {page.start}–{page.stop - 1} of {activation.shape[-1]}: move the channel for others"


def readout(activation: np.ndarray, layer: str, channel: int, probe: tuple[int, ...] | None) -> str:
    """One line on the shown channel (or unit) and, after a click, the value under it."""
    if activation.ndim == 1:
        return (
            f"{layer} · unit {channel} of {len(activation)}: {activation[channel]:.4g} "
            f"(layer min {activation.min():.4g}, max {activation.max():.4g})"
        )
    values = channel_values(activation, channel)
    text = f"{layer} · channel {channel} of {activation.shape[-1]}: "
    if is_dead(values, activation):
        text += "dead (0 everywhere)"
    elif values.min() == values.max():
        text += f"constant ({values.min():.4g} everywhere)"
    else:
        text += f"min {values.min():.4g}, max {values.max():.4g}, mean {values.mean(dtype=np.float64):.4g}"
    if probe is None:
        return text + " · click the map for a value"
    where = f"step {probe[0]}" if values.ndim == 1 else f"row {probe[0]}, column {probe[1]}"
    return text + f" · at {where}: {values[probe]:.4g}"


def channel_values(activation: np.ndarray, channel: int) -> np.ndarray:
    """``channel`` of one image's layer output as a map (rows, columns) or a signal (steps,)."""
    maps = _as_maps(activation) if activation.ndim > 2 else activation
    return maps[..., channel]


def is_dead(values: np.ndarray, activation: np.ndarray) -> bool:
    """Whether channel ``values`` of layer output ``activation`` is 0 everywhere, within DEAD_TOLERANCE."""
    peak = np.abs(values).max()
    return bool(peak == 0 or peak <= DEAD_TOLERANCE * layer_peak(activation))


def dead_channels(activation: np.ndarray) -> np.ndarray:
    """One bool a channel (unit) of one image's layer output: whether it is dead, as :func:`is_dead` says."""
    flat = activation.reshape(-1, activation.shape[-1])
    peaks = np.maximum(flat.max(axis=0), -flat.min(axis=0))
    return (peaks == 0) | (peaks <= DEAD_TOLERANCE * layer_peak(activation))


def grid_dead_note(activation: np.ndarray, channel: int) -> str:
    """For a grid: which of its tiles are dead channels, drawn as gray stripes ("" when none is)."""
    page = grid_channels(activation, channel)
    dead = [str(page.start + index) for index in np.flatnonzero(dead_channels(activation)[page.start : page.stop])]
    if activation.ndim < 3 or not dead:
        return ""
    return f" · striped gray: dead (0 everywhere): channel{'s' if len(dead) > 1 else ''} {', '.join(dead)}"


_PEAKS: dict[int, float] = {}  # id of a live layer output -> its largest |value|


def layer_peak(activation: np.ndarray) -> float:
    """The largest |value| of a layer output (NaN or inf where it has one), scanned once while
    that array lives (a VGG16 block1 layer took 1.7 ms a channel move): the entry goes with the array,
    which must not change meanwhile (layer outputs are not written to)."""
    key = id(activation)
    if key in _PEAKS:
        return _PEAKS[key]
    peak = float(max(activation.max(), -activation.min()))  # np.abs would copy the layer
    try:
        weakref.finalize(activation, _PEAKS.pop, key, None)
    except TypeError:  # not weakly referenceable (a numpy scalar): never kept under an id that gets reused
        return peak
    _PEAKS[key] = peak
    return peak


def most_active_channel(activation: np.ndarray) -> int:
    """The channel (unit) of one image's layer output with the largest mean |activation|: one worth showing first."""
    return int(np.abs(activation).reshape(-1, activation.shape[-1]).mean(axis=0, dtype=np.float64).argmax())


def grid_channels(activation: np.ndarray, channel: int) -> range:
    """The channels of the grid page that holds ``channel``: all of them for a 1-D layer (one thin row each)."""
    count = activation.shape[-1]
    return range(count) if activation.ndim < 3 else imaging.page_of(channel, GRID_PAGE, count)


def channel_means(activation: np.ndarray) -> np.ndarray:
    """The mean of every channel (every unit's value, for a Dense layer) of one image's layer output."""
    # float64: a float32 sum of finite values can overflow to inf.
    return activation.reshape(-1, activation.shape[-1]).mean(axis=0, dtype=np.float64)


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
    # A NaN or inf anywhere makes the peak one, and the peak is scanned once per array.
    if all(math.isfinite(layer_peak(values)) for values in shown):
        return None
    bad = sum(int((~np.isfinite(values)).sum()) for values in shown)
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


def _units(activation, settings: Settings, classes: ClassOutput | None) -> Signal:
    is_classes = classes is not None and classes.path == settings.layer
    names = classes.names if is_classes else None
    return Signal(
        title=f"{settings.layer}: value of every unit",
        values=activation,
        selected=settings.channel,
        locate=lambda unit: Pick(None, channel=unit),
        labels=names,
        # Unnamed classes' bars are numbered: say that the numbers are class indices (names need no
        # title, which their slanted labels would run into).
        x_label=("" if names else "class index") if is_classes else "unit",
    )


def _units_across_images(cache: ActivationCache, settings: Settings) -> Signal:
    return Signal(
        title=f"{settings.layer}: unit {settings.channel} for every image",
        values=cache.for_layer(settings.layer)[:, settings.channel],
        selected=settings.image_index,
        locate=lambda image: Pick(None, image=image),
        x_label="image",
    )


def _channel_along_steps(activation, settings: Settings, probe) -> Signal:
    return Signal(
        title=f"{settings.layer}: channel {settings.channel} along the steps",
        values=activation[:, settings.channel],
        selected=None if probe is None else probe[0],
        locate=lambda step: Pick((step,)),
        x_label="step",
    )


def _channel_map(activation, settings: Settings) -> Picture:
    maps = _as_maps(activation)
    values = maps[..., settings.channel]
    shown = maps if settings.normalization == "layer" else values
    low, high = float(shown.min()), float(shown.max())
    if low == high:  # no contrast: the bottom colour, not the mid-scale one that reads as a value
        return _coloured(np.zeros(values.shape), settings.colormap, lambda row, column: Pick((row, column)))
    scaled = imaging.normalize(values, bounds=(low, high))
    scale = ColourScale(low, high, "value" if settings.normalization == "channel" else "value (layer scale)")
    return _coloured(scaled, settings.colormap, lambda row, column: Pick((row, column)), scale)


def _all_channels(activation, settings: Settings) -> Picture:
    """The grid page of ``settings.channel``, each map as ``(a - mean) / std * 64 + 128``: 0..255 spans ±2 std."""
    per_channel = settings.normalization == "channel"
    axis = -1 if per_channel else None
    if per_channel:
        scale = ColourScale(-2.0, 2.0, "σ from channel mean")
    else:
        mean, std = float(activation.mean(dtype=np.float64)), float(activation.std(dtype=np.float64))
        scale = ColourScale(mean - 2 * std, mean + 2 * std, "value (layer mean ± 2σ)") if std > 0 else None
    if activation.ndim == 2:  # (steps, channels): one row per channel
        scaled = _bottom_if_constant(imaging.normalize_channels(activation, axis=axis), activation, per_channel).T / 255
        return _coloured(scaled, settings.colormap, lambda row, column: Pick((column,), channel=row), scale)
    page = grid_channels(activation, settings.channel)
    maps = _as_maps(activation)[..., page.start : page.stop]
    shown = imaging.shrink_to_fit(maps, _tile_side(GRID_COLUMNS))
    normalized = _bottom_if_constant(imaging.normalize_channels(shown, axis=axis), shown, per_channel)
    scaled = np.moveaxis(normalized, -1, 0) / 255
    return _tiled(
        scaled,
        GRID_COLUMNS,
        maps.shape[:2],
        settings.colormap,
        lambda tile, probe: Pick(probe, channel=page.start + tile),
        scale,
        hatched=dead_channels(activation)[page.start : page.stop],
    )


def _bottom_if_constant(normalized: np.ndarray, values: np.ndarray, per_channel: bool) -> np.ndarray:
    """Per channel, a constant channel (``normalize_channels`` makes it mid-scale) set to the bottom colour."""
    if not per_channel:
        return normalized
    flat = values.reshape(-1, values.shape[-1])
    return np.where(flat.max(axis=0) == flat.min(axis=0), np.uint8(0), normalized)


def _channel_across_images(cache: ActivationCache, settings: Settings, activation) -> Picture:
    layer = every_image(cache, settings.layer)
    values = layer[..., settings.channel]
    if settings.normalization == "channel":
        scaled, scale = imaging.normalize(values, "tile"), ColourScale(0.0, 1.0, "each image min → max")
        flat = values.reshape(len(values), -1)
        constant = (flat.max(axis=1) == flat.min(axis=1)).reshape(-1, *[1] * (values.ndim - 1))
        scaled = np.where(constant, np.float32(0), scaled)  # the bottom colour, as in the other views
    else:
        low, high = float(values.min()), float(values.max())
        scaled = imaging.normalize(values, "global") if low < high else np.zeros(values.shape, np.float32)
        scale = ColourScale(low, high, "value") if low < high else None
    if layer.ndim == 3:  # (images, steps, channels): one row per image
        return _coloured(scaled, settings.colormap, lambda row, column: Pick((column,), image=row), scale)
    map_shape = _as_maps(activation).shape[:2]
    return _tiled(
        scaled,
        _image_columns(len(layer)),
        map_shape,
        settings.colormap,
        lambda image, probe: Pick(probe, image=image),
        scale,
    )


def _coloured(values, colormap: str, locate, scale: ColourScale | None = None) -> Picture:
    """Values in [0, 1] in ``colormap``."""
    return Picture(imaging.colormap_index(values), imaging.colormap_table(colormap), locate, scale)


def _tiled(values, columns: int, map_shape, colormap: str, pick, scale: ColourScale | None, hatched=None) -> Picture:
    """Tiles of values in [0, 1], coloured, as one grid picture with white gaps.

    The maps had ``map_shape`` (height, width) before they shrank to tiles; a click
    on a tile is ``pick(tile, (row, column))`` with the position in the full-size map.
    The tiles where ``hatched`` (one bool a tile) is true are gray stripes: dead
    channels, which a colour would show as a value. The palette's last row is the
    gaps' white and the two before it the stripes' grays, so the colormap's top colours
    give way to the one just below them (three 256ths of the range, not visible).
    """
    rows = np.minimum(imaging.colormap_index(values), HATCH_ROWS[0] - 1)
    if hatched is not None and np.any(hatched):
        rows[np.asarray(hatched)] = _stripes(rows.shape[1:])
    colours = [imaging.colormap_table(colormap)[: HATCH_ROWS[0]], HATCH_COLOURS, [[imaging.WHITE] * 3]]
    palette = np.concatenate(colours).astype(np.uint8)
    layout = imaging.GridLayout.for_tiles(len(rows), rows.shape[1:], columns)
    height, width = map_shape

    def locate(row, column):
        index = layout.index_at(row, column)
        if index is None:
            return None
        top, left = layout.origin(index)
        return pick(index, ((row - top) * height // layout.tile_height, (column - left) * width // layout.tile_width))

    return Picture(imaging.grid(rows, columns, fill=GAP_ROW), palette, locate, scale)


def _stripes(shape) -> np.ndarray:
    """Diagonal stripes of the two HATCH_ROWS over a tile of ``shape``, each about a 16th of the tile wide."""
    rows, columns = np.indices(shape)
    width = max(1, max(shape) // 16)
    return np.where((rows + columns) // width % 2 == 0, *HATCH_ROWS).astype(np.uint8)


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
