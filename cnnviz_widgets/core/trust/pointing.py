"""The pointing game (Zhang et al. 2018, "Top-down Neural Attention by Excitation
Backprop", section 5.1): does a map's maximum fall on the object?

A map scores a hit when its peak lies in the object's region (``tolerance`` pixels
around it count too: the paper allows 15 px at 224 px), else a miss; the score is
the fraction of hits. A peak shared by several pixels (a plateau) is a hit only if
every one of them is in the region, and a flat map, which points nowhere, is a miss,
so a method cannot score by saying nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks
from ..errors import InputError, listed

PEAK_TOLERANCE = 1e-6  # of the map's range: values this close to the maximum are the peak too


@dataclass(frozen=True)
class PointingGame:
    hits: np.ndarray  # (N,) bool: the map's peak lies in its region
    flat: np.ndarray  # (N,) bool: the map is flat (a miss)

    @property
    def score(self) -> float:
        """The fraction of maps that hit."""
        return float(self.hits.mean())


def pointing_game(maps, masks, tolerance: int = 0) -> PointingGame:
    """Hits of ``maps`` (N, H, W) on the regions ``masks`` (N, H, W) bool, e.g. the demo's
    ``shapes.generate(...)`` masks; ``tolerance`` pixels (Euclidean) around a region count as in it.

    Maps at another size than the masks (a layer's map, not resized to the image) are
    refused rather than resized here: the interpolation decides which pixels tie at the peak.
    """
    maps, masks = np.asarray(maps, np.float64), np.asarray(masks)
    if maps.ndim != 3 or masks.ndim != 3 or len(maps) != len(masks):
        raise InputError(f"maps and masks must both be (N, H, W), one region per map; got {maps.shape} and {masks.shape}.")
    if maps.shape != masks.shape:
        size, region_size = "×".join(map(str, maps.shape[1:])), "×".join(map(str, masks.shape[1:]))
        raise InputError(
            f"The maps are {size} px but the masks {region_size} px: a peak is looked up in its mask pixel by pixel, "
            "so give maps at the masks' size (cw.attribute's are at the input's size; resize others with "
            f"cnnviz_widgets.core.imaging.resize(maps[..., None], {masks.shape[1:]})[..., 0])."
        )
    if len(maps) == 0:
        raise InputError("There are no maps to score: give at least one map and its mask.")
    if masks.dtype != bool:
        raise InputError(f"masks must be bool arrays, True on the object; got dtype {masks.dtype} (masks > 0.5 makes one).")
    if not np.isfinite(maps).all():
        raise InputError("maps hold NaN or infinity, which has no peak; compute them again or replace them (np.nan_to_num).")
    tolerance = checks.count("tolerance", tolerance, "how many pixels around a region still count as in it")
    empty = np.flatnonzero(~masks.any(axis=(1, 2)))
    if len(empty):
        raise InputError(f"The masks of maps {listed(map(str, empty), 10)} are empty: every map needs a region for its peak to hit; leave those maps out.")
    hits, flat = np.zeros(len(maps), bool), np.zeros(len(maps), bool)
    for index, (values, mask) in enumerate(zip(maps, masks)):
        peaks = peak_pixels(values)
        flat[index] = len(peaks) == 0
        hits[index] = not flat[index] and _all_within(mask, peaks, tolerance)
    return PointingGame(hits, flat)


def peak_pixels(map_) -> np.ndarray:
    """(K, 2) rows and columns of a map's (H, W) peak, as the pointing game scores it: every pixel
    within ``PEAK_TOLERANCE`` of the range from the maximum (a plateau has many; ``np.argmax`` gives
    its first only), none for a flat map, which points nowhere."""
    values = np.asarray(map_, np.float64)
    span = np.ptp(values)
    if span <= PEAK_TOLERANCE * max(np.abs(values).max(), np.finfo(np.float32).tiny):
        return np.empty((0, 2), np.int64)
    return np.argwhere(values >= values.max() - PEAK_TOLERANCE * span)


def _all_within(mask: np.ndarray, points: np.ndarray, tolerance: int) -> bool:
    """Whether every one of ``points`` (P, 2) lies within ``tolerance`` pixels (Euclidean) of a True pixel of ``mask``.

    A point (r, c) is within when some row offset d in [-t, t] has a True pixel in row
    r + d at most sqrt(t² − d²) columns from c: O(pixels + P·t), not P × region distances
    (a plateau on a 224-px binary map would need gigabytes).
    """
    if tolerance == 0:
        return bool(mask[points[:, 0], points[:, 1]].all())
    column_gaps = _column_gaps(mask)
    rows, columns = points[:, 0], points[:, 1]
    within = np.zeros(len(points), bool)
    reach = min(tolerance, mask.shape[0] - 1)  # rows further than the image's height do not exist
    for offset in range(-reach, reach + 1):
        shifted = rows + offset
        inside = (shifted >= 0) & (shifted < mask.shape[0])
        gaps = np.full(len(points), np.inf)
        gaps[inside] = column_gaps[shifted[inside], columns[inside]]
        within |= gaps**2 + offset**2 <= tolerance**2
    return bool(within.all())


def _column_gaps(mask: np.ndarray) -> np.ndarray:
    """(H, W) each pixel's distance in columns to the nearest True pixel of its own row (inf if the row has none)."""
    columns = np.arange(mask.shape[1], dtype=np.float64)
    last_true = np.maximum.accumulate(np.where(mask, columns, -np.inf), axis=1)
    next_true = np.minimum.accumulate(np.where(mask, columns, np.inf)[:, ::-1], axis=1)[:, ::-1]
    return np.minimum(columns - last_true, next_true - columns)
