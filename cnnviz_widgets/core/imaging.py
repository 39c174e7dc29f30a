"""Turn arrays into pictures: normalisation, tile grids, colormaps, resizing, overlays, bar pictures, panels side by side, PNG.

Conventions:
- a value in [0, 1] is a display intensity; pictures leave this module as uint8;
- a constant input (a dead channel, a flat kernel) has no contrast to stretch and
  becomes mid-gray: 128 from :func:`normalize_channels`, 0.5 from :func:`normalize`;
- NaN or infinite values raise :class:`InputError`; they have no colour.
"""

from __future__ import annotations

import difflib
import functools
import io
import math
from dataclasses import dataclass

import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image

from .errors import InputError, InputTypeError

MID_GRAY = 128


def _finite(a, what: str) -> np.ndarray:
    array = np.asarray(a)
    if array.dtype.kind not in "iuf":
        raise InputTypeError(f"{what} has dtype {array.dtype}; pass a numeric array.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # integers are always finite
        raise InputError(
            f"{what} contains {int((~np.isfinite(array)).sum())} NaN or infinite value(s); replace them "
            "first, e.g. np.nan_to_num(a)."
        )
    return array


# -- normalisation ---------------------------------------------------------------


def normalize_channels(a, axis: int | None = -1) -> np.ndarray:
    """Each channel as ``(a - mean) / std * 64 + 128`` clipped to uint8 0..255.

    The display normalisation of "Deep Learning with Python" 5.4. Mean and std are
    taken per channel over every other axis, so pass ONE image's feature map, e.g.
    (H, W, C); ``axis=None`` treats the whole array as one channel. A constant
    channel (std 0, e.g. a dead ReLU) becomes 128.
    """
    array = _finite(a, "The activation").astype(np.float64)
    spatial = None if axis is None else tuple(i for i in range(array.ndim) if i != axis % array.ndim)
    mean = array.mean(axis=spatial, keepdims=True)
    std = array.std(axis=spatial, keepdims=True)
    # A constant channel is divided by 1, not by its std: 0 would give NaN, and
    # a rounding error above 0 would stretch it to 64 or 192. Max == min is exact.
    dead = array.max(axis=spatial, keepdims=True) == array.min(axis=spatial, keepdims=True)
    scaled = (array - mean) / np.where(dead, 1.0, std) * 64 + MID_GRAY
    return np.clip(scaled, 0, 255).astype(np.uint8)


def normalize(a, scale: str = "global", bounds=None) -> np.ndarray:
    """Min-max to float32 [0, 1] over the whole array (``"global"``) or per ``a[i]`` (``"tile"``).

    ``bounds=(low, high)`` of a larger array that ``a`` was cut from scales the cut as
    the whole would be, without normalising the whole. A constant array (or tile) becomes 0.5.
    """
    array = _finite(a, "The array").astype(np.float64)
    if scale == "global":
        axes = None
    elif scale == "tile":
        axes = tuple(range(1, array.ndim))
    else:
        raise InputError(f"scale must be 'global' or 'tile', got {scale!r}.")
    if bounds is None:
        low = array.min(axis=axes, keepdims=True)
        span = array.max(axis=axes, keepdims=True) - low
    else:
        low, high = (np.float64(bound) for bound in bounds)
        span = high - low
    flat = span == 0
    scaled = (array - low) / np.where(flat, 1.0, span)
    return np.where(flat, 0.5, scaled).astype(np.float32)


def to_uint8_image(image) -> np.ndarray:
    """One image as uint8 RGB (H, W, 3).

    Takes uint8, integers in 0..255, floats in [0, 1] (scaled by 255) or floats in
    [0, 255] (an image whose maximum is at most 1 counts as [0, 1]). Grayscale
    (H, W) or (H, W, 1) is repeated to RGB; an alpha channel is dropped.
    """
    array = _finite(image, "The image")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"The image has shape {array.shape}; pass one image (H, W), (H, W, 1), "
            "(H, W, 3) or (H, W, 4). Take one image of a batch with images[0]."
        )
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError(
                f"The image has values in [{array.min():g}, {array.max():g}], not pixels "
                "in [0, 1] or [0, 255]. Pass the raw image, not the preprocessed one, "
                "or rescale it with normalize(image)."
            )
        if array.dtype.kind == "f" and array.max(initial=0) <= 1:
            array = array * 255
        array = np.round(array).astype(np.uint8)
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return array[..., :3]


# -- tile grids ------------------------------------------------------------------


@dataclass(frozen=True)
class GridLayout:
    """Where the tiles of a :func:`grid` lie: tile ``i`` is at row ``i // columns``."""

    count: int
    tile_height: int
    tile_width: int
    columns: int
    gap: int

    @classmethod
    def for_tiles(cls, count: int, tile_shape, columns: int = 16, gap: int = 1) -> "GridLayout":
        if count < 1 or columns < 1 or gap < 0:
            raise InputError(
                f"A grid needs at least one tile, columns >= 1 and gap >= 0; got "
                f"{count} tile(s), columns={columns}, gap={gap}."
            )
        height, width = tile_shape[:2]
        return cls(count, int(height), int(width), min(int(columns), count), int(gap))

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the whole grid image; gaps only between tiles."""
        return (
            self.rows * (self.tile_height + self.gap) - self.gap,
            self.columns * (self.tile_width + self.gap) - self.gap,
        )

    def origin(self, index: int) -> tuple[int, int]:
        """(top, left) pixel of tile ``index``."""
        row, column = divmod(index, self.columns)
        return row * (self.tile_height + self.gap), column * (self.tile_width + self.gap)

    def index_at(self, y: float, x: float) -> int | None:
        """The tile under pixel (y, x) of the grid image; None on a gap or an empty cell."""
        if y < 0 or x < 0:
            return None
        row, inside_y = divmod(int(y), self.tile_height + self.gap)
        column, inside_x = divmod(int(x), self.tile_width + self.gap)
        if column >= self.columns or inside_y >= self.tile_height or inside_x >= self.tile_width:
            return None
        index = row * self.columns + column
        return index if index < self.count else None


def grid(tiles, columns: int = 16, gap: int = 1, fill=0) -> np.ndarray:
    """Tiles (N, h, w) or (N, h, w, C) as one image, row by row, ``gap`` pixels apart.

    Like ``skimage.util.montage`` with gaps between (not around) the tiles; gaps and
    the empty cells of a last, short row are ``fill``. Use
    ``GridLayout.for_tiles(len(tiles), tiles.shape[1:], columns, gap)`` to find a
    tile's position or the tile under a click.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim not in (3, 4):
        raise InputError(
            f"Tiles have shape {tiles.shape}; pass a stack (N, h, w) or (N, h, w, C). "
            "Wrap a single image as image[None]."
        )
    layout = GridLayout.for_tiles(len(tiles), tiles.shape[1:], columns, gap)
    image = np.full(layout.shape + tiles.shape[3:], fill, dtype=tiles.dtype)
    for index, tile in enumerate(tiles):
        top, left = layout.origin(index)
        image[top : top + layout.tile_height, left : left + layout.tile_width] = tile
    return image


def montage(tiles, upscale: int = 1, columns: int = 16, gap: int = 1) -> np.ndarray:
    """Float tiles in [0, 1], (N, h, w) or (N, h, w, C), as one uint8 :func:`grid` picture,
    each tile enlarged ``upscale`` times (nearest neighbour) so the gaps stay ``gap`` wide."""
    pixels = np.round(np.asarray(tiles) * 255).astype(np.uint8)
    enlarged = np.repeat(np.repeat(pixels, upscale, axis=1), upscale, axis=2)
    return grid(enlarged, columns, gap)


# -- resizing --------------------------------------------------------------------


def upscale(image, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: every pixel of (H, W[, C]) becomes a factor×factor block."""
    if int(factor) != factor or factor < 1:
        raise InputError(f"factor must be a whole number >= 1, got {factor!r}.")
    factor = int(factor)
    return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


def upscale_to(image, side_px: int) -> np.ndarray:
    """``image`` enlarged by the whole factor that brings its longer side nearest to,
    and not over, ``side_px`` (1 for an image already that large): crisp pixels."""
    image = np.asarray(image)
    return upscale(image, max(1, side_px // max(image.shape[:2])))


def resize(image, size, method: str = "bilinear") -> np.ndarray:
    """(H, W), (H, W, C) or a batch (N, H, W, C) resized to ``size`` = (height, width), as float32.

    ``method`` is any ``tf.image.resize`` method: "bilinear", "nearest", "bicubic", …
    """
    array = _finite(image, "The image")
    gray = array.ndim == 2
    if gray:
        array = array[..., None]
    if array.ndim not in (3, 4):
        raise InputError(
            f"Cannot resize an array of shape {array.shape}; pass (H, W), (H, W, C) or (N, H, W, C)."
        )
    try:
        resized = tf.image.resize(array, tuple(size), method=method).numpy().astype(np.float32)
    except ValueError as error:
        raise InputError(f"Cannot resize with method {method!r}: {error}") from error
    return resized[..., 0] if gray else resized


def shrink_to_fit(maps, max_side: int) -> np.ndarray:
    """Maps (H, W, C) or (N, H, W, C) area-averaged so that neither side exceeds ``max_side``.

    Both sides shrink by the same factor (rounded, at least 1 px); maps that fit are
    returned as they are. Area averaging keeps a thin bright line visible as a
    dimmer one, where subsampling would drop it.
    """
    array = np.asarray(maps)
    height, width = array.shape[-3:-1]
    if max(height, width) <= max_side:
        return array
    factor = max_side / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return tf.image.resize(array, size, method="area").numpy()


# -- colour ----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def colormap_table(name: str) -> np.ndarray:
    """The (256, 3) uint8 RGB lookup table of matplotlib colormap ``name``."""
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        known = sorted(matplotlib.colormaps)
        close = difflib.get_close_matches(name, known, n=3) if isinstance(name, str) else []
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InputError(
            f"Unknown colormap {name!r}.{hint} Try 'viridis', 'gray', 'jet', 'magma', "
            f"'inferno', 'RdBu_r'; all {len(known)} names are in matplotlib.colormaps."
        ) from None
    table = cmap(np.linspace(0, 1, 256), bytes=True)[:, :3]
    table.flags.writeable = False
    return table


def colormap_hex(name: str, count: int = 16) -> list[str]:
    """``count`` colours of matplotlib colormap ``name``, evenly from its bottom to its top,
    as '#rrggbb' strings: the stops of a front-end colour scale that matches our pictures."""
    table = colormap_table(name)
    rows = np.round(np.linspace(0, len(table) - 1, count)).astype(int)
    return ["#%02x%02x%02x" % tuple(int(c) for c in table[row]) for row in rows]


def colormap(values, name: str = "viridis") -> np.ndarray:
    """Values in [0, 1] (clipped) as uint8 RGB, shape ``values.shape + (3,)``.

    Same colours as ``matplotlib.colormaps[name](values, bytes=True)``, from a
    cached 256-entry table, so it is cheap enough to run on every slider move.
    """
    return colormap_table(name)[colormap_index(values)]


def colormap_index(values) -> np.ndarray:
    """Values in [0, 1] (clipped) as uint8 rows of a :func:`colormap_table`.

    matplotlib's own binning: value v falls in row floor(v * 256). With the table as
    palette, ``to_png(colormap_index(v), palette=colormap_table(name))`` is the PNG of
    ``colormap(v, name)``, a third of the bytes to encode.
    """
    array = _finite(values, "The values")
    return np.minimum(np.clip(array, 0, 1) * 256, 255).astype(np.uint8)


def overlay(image, heatmap, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """``heatmap`` (h, w) in [0, 1] coloured and blended over ``image``, as uint8 RGB.

    The heatmap is resized (bilinear) to the image and mixed as
    ``(1 - alpha) * image + alpha * colour``: alpha is the heatmap's opacity, 0 shows
    the image alone and 1 the heatmap alone. (The Grad-CAM tutorials instead add
    ``0.4 * colour`` to the image and rescale the sum; a blend never saturates.)
    ``image`` is anything :func:`to_uint8_image` accepts.
    """
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha is the heatmap's opacity and must be in [0, 1], got {alpha!r}.")
    picture = to_uint8_image(image)
    heat = _finite(heatmap, "The heatmap")
    if heat.ndim != 2:
        raise InputError(f"The heatmap has shape {heat.shape}; pass one (h, w) map, e.g. heatmaps[0].")
    # A map already at the image's size (GradCamViewer's) is not resized on every class or alpha change.
    colour = colormap(heat if heat.shape == picture.shape[:2] else resize(heat, picture.shape[:2]), cmap)
    blended = (1 - alpha) * picture + alpha * colour.astype(np.float64)
    return np.round(blended).astype(np.uint8)


# -- PNG -------------------------------------------------------------------------


def to_png(array, palette=None) -> bytes:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as PNG bytes (gray, RGB, RGBA).

    With ``palette`` (up to 256 uint8 RGB rows), ``array`` is (H, W) row numbers and the
    PNG is indexed: one byte a pixel, which encodes about six times faster than RGB.
    """
    array = np.asarray(array)
    if palette is not None:
        return _indexed_png(array, np.asarray(palette))
    if array.dtype != np.uint8:
        raise InputTypeError(
            f"PNG needs uint8 pixels, got {array.dtype}. Convert with to_uint8_image(a), "
            "normalize_channels(a) or colormap(normalize(a))."
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 and not (array.ndim == 3 and array.shape[-1] in (3, 4)):
        raise InputError(f"Cannot make a PNG of shape {array.shape}; pass (H, W), (H, W, 3) or (H, W, 4).")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _indexed_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    if indices.dtype != np.uint8 or indices.ndim != 2:
        raise InputError(f"An indexed PNG needs (H, W) uint8 palette rows, got {indices.dtype} {indices.shape}.")
    if palette.dtype != np.uint8 or palette.ndim != 2 or palette.shape[1] != 3 or not 0 < len(palette) <= 256:
        raise InputError(f"A PNG palette is 1..256 uint8 RGB rows, got {palette.dtype} {palette.shape}.")
    if indices.max(initial=0) >= len(palette):
        raise InputError(f"Pixel {indices.max()} has no row in a palette of {len(palette)}.")
    picture = Image.frombytes("P", indices.shape[::-1], np.ascontiguousarray(indices).tobytes())
    picture.putpalette(palette.tobytes())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """The pixels of PNG ``data`` as a uint8 array; an indexed PNG comes back as RGB."""
    picture = Image.open(io.BytesIO(data))
    return np.asarray(picture.convert("RGB") if picture.mode == "P" else picture)


# -- pages of tiles --------------------------------------------------------------


def page_of(index: int, per_page: int, count: int) -> range:
    """The page of ``per_page`` items (of ``count``) that holds ``index``; an index past the end is on the last page."""
    start = min(index, count - 1) // per_page * per_page
    return range(start, min(start + per_page, count))


def square_grid(tiles, gap: int = 1) -> tuple[np.ndarray, GridLayout]:
    """Tiles as an about-square :func:`grid` picture, and where each tile lies in it."""
    tiles = np.asarray(tiles)
    columns = math.ceil(math.sqrt(len(tiles)))
    return grid(tiles, columns, gap), GridLayout.for_tiles(len(tiles), tiles.shape[1:], columns, gap)
# -- pictures of what a widget shows ---------------------------------------------------

WHITE = 255
BAR_COLOUR = np.array([70, 130, 180], dtype=np.uint8)  # bqplot's steelblue
SELECTED_BAR_COLOUR = np.array([214, 39, 40], dtype=np.uint8)  # the widgets' selected-bar fill
PANEL_GAP_PX = 8


def raw_image_picture(image) -> np.ndarray:
    """One raw image as uint8 RGB; values that are not pixels (a preprocessed image) are stretched to show."""
    array = np.asarray(image)
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        array = normalize(array)
    return to_uint8_image(array)


def bar_picture(values, selected: int | None = None, height: int = 120, bar_px: int = 3) -> np.ndarray:
    """Bars from a zero line, ``selected`` in red, one white column between bars.

    A static stand-in for a bar chart, for a widget's PNG export.
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


def side_by_side(pictures, panel_px: int) -> np.ndarray:
    """Pictures left to right, top-aligned on white; each enlarged by the whole factor that fits
    ``panel_px`` (see :func:`upscale_to`), so a 28×28 digit or a 7×7 map is not a speck."""
    enlarged = [upscale_to(to_uint8_image(picture), panel_px) for picture in pictures]
    height = max(picture.shape[0] for picture in enlarged)
    padded = [
        np.pad(picture, ((0, height - picture.shape[0]), (0, PANEL_GAP_PX), (0, 0)), constant_values=WHITE)
        for picture in enlarged
    ]
    return np.concatenate(padded, axis=1)[:, :-PANEL_GAP_PX]


def nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """At most ``count`` round values (1, 2, 2.5 or 5 × 10^k apart, the closest that fit) within
    ``low..high``: axis ticks whose labels stay short and do not run together. A range with
    an infinite or NaN end has no ticks."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return np.array([], dtype=float)
    span = (high - low) / count
    if not span > 0:  # an empty range, or one narrower than the smallest float
        return np.array([low], dtype=float)
    exponent = math.floor(math.log10(span)) if span < math.inf else 308  # wider than the largest float
    steps = (mantissa * 10.0**power for power in (exponent, exponent + 1) for mantissa in (1, 2, 2.5, 5))
    for step in (step for step in steps if 0 < step < math.inf):  # 10.0**-324 is 0
        ticks = np.arange(math.ceil(low / step), math.floor(high / step) + 1) * step
        if len(ticks) <= count:
            return ticks
    return np.array([low, high], dtype=float)


def outline(picture, box, colour=(255, 255, 255)) -> np.ndarray:
    """A copy of uint8 RGB ``picture`` with a 1-px frame drawn just inside ``box``
    (top, left, bottom, right; bottom and right exclusive)."""
    framed = np.array(picture, dtype=np.uint8)
    top, left, bottom, right = (int(v) for v in box)
    if bottom <= top or right <= left:
        return framed
    framed[[top, bottom - 1], left:right] = colour
    framed[top:bottom, [left, right - 1]] = colour
    return framed
