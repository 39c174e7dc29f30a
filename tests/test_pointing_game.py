"""cw.pointing_game (Zhang et al. 2018): does a map's maximum fall on the object?"""

import re

import numpy as np
import pytest

import cnnviz_widgets
import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import InputError
from cnnviz_widgets.demo import shapes


def _square_mask(size=20, top=5, left=5, side=4):
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _bump(size, row, column):
    rows, columns = np.mgrid[:size, :size]
    return np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / 8.0)


def test_hits_misses_tolerance_plateaus_and_flat_maps():
    mask = _square_mask()  # rows and columns 5..8
    maps = np.stack([_bump(20, 6, 7), _bump(20, 15, 15), _bump(20, 11, 6), np.full((20, 20), 0.3)])
    plateau = np.zeros((20, 20))
    plateau[6, 6] = plateau[15, 15] = 1.0  # two equal peaks, one off the object
    maps = np.concatenate([maps, plateau[None]])
    masks = np.broadcast_to(mask, maps.shape)
    result = cw.pointing_game(maps, masks)
    np.testing.assert_array_equal(result.hits, [True, False, False, False, False])
    np.testing.assert_array_equal(result.flat, [False, False, False, True, False])
    assert result.score == pytest.approx(0.2)
    # row 11 is 3 px below the square's last row (8): in with a 3 px tolerance, not with 2
    assert cw.pointing_game(maps[2:3], masks[2:3], tolerance=3).hits[0]
    assert not cw.pointing_game(maps[2:3], masks[2:3], tolerance=2).hits[0]


def _brute_force_hits(maps, masks, tolerance):
    """Every peak pixel against every region pixel: the distance matrix, fine at 12 px."""
    hits = []
    for values, mask in zip(maps, masks):
        if values.min() == values.max():  # flat: no peak, a miss
            hits.append(False)
            continue
        peaks, region = np.argwhere(values == values.max()), np.argwhere(mask)
        distances = np.sqrt(((peaks[:, None] - region[None]) ** 2).sum(axis=-1)).min(axis=1)
        hits.append(distances.max() <= tolerance)
    return np.array(hits)


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3, 4, 6, 1000])
def test_plateaus_and_tolerances_agree_with_every_peak_to_region_distance(tolerance):
    rng = np.random.default_rng(tolerance)
    maps = (rng.random((200, 12, 12)) < rng.uniform(-0.1, 0.3, (200, 1, 1))).astype(float)  # binary maps: plateaus
    masks = rng.random((200, 12, 12)) < rng.uniform(0.005, 0.2, (200, 1, 1))
    masks[:, 6, 6] = True  # no empty region
    maps[:, 6, 6] = 1.0  # one peak in the region, the only one in some maps
    maps[::9] = rng.choice([0.0, 1.0], size=(len(maps[::9]), 1, 1))  # and flat maps, all zeros or all ones
    expected = _brute_force_hits(maps, masks, tolerance)
    np.testing.assert_array_equal(cw.pointing_game(maps, masks, tolerance).hits, expected)
    assert 0 < expected.sum() < len(expected) or tolerance > 12  # the cases test both outcomes


@pytest.mark.parametrize("tolerance", [0, 15])
def test_a_binary_map_at_224_pixels_with_a_large_plateau_is_scored(tolerance):
    """A 150² px peak against a 224 × 100 px region: the peak × region distance matrix would be 3.4e8 entries."""
    maps = np.zeros((2, 224, 224))
    maps[:, 40:190, 40:190] = 1.0
    masks = np.zeros((2, 224, 224), bool)
    masks[0, :, 30:130] = True  # the plateau's columns 130..189 lie 1..60 px off the region
    masks[1, 25:205, 25:205] = True  # covers the plateau
    np.testing.assert_array_equal(cw.pointing_game(maps, masks, tolerance).hits, [False, True])
    shifted = np.zeros_like(masks)
    shifted[:, :, 30:175] = True  # 15 px from the plateau's last column, 189
    assert cw.pointing_game(maps[:1], shifted[:1], tolerance).hits[0] == (tolerance == 15)


def test_grad_cam_points_at_the_named_shape_on_two_shape_demo_images():
    model = cw.demo.load_model()
    images, labels, masks = shapes.generate(16, seed=41, shapes_per_image=2)
    maps = np.concatenate([cw.grad_cam(model, images, labels[:, j]) for j in range(2)])
    regions = np.concatenate([masks[:, 0], masks[:, 1]])
    result = cw.pointing_game(maps, regions)
    # independently: the mask at the argmax, for maps with a single maximum
    single = [i for i, m in enumerate(maps) if np.sum(m >= m.max() - 1e-6 * np.ptp(m)) == 1]
    expected = [regions[i][np.unravel_index(np.argmax(maps[i]), maps[i].shape)] for i in single]
    np.testing.assert_array_equal(result.hits[single], expected)
    assert result.score >= 0.8  # about 0.9 on the held-out images (benchmark P9b)
    # the other shape's mask is not where the class's map points
    swapped = cw.pointing_game(maps, np.concatenate([masks[:, 1], masks[:, 0]]))
    assert swapped.score < 0.3


@pytest.mark.parametrize(
    "maps, masks, message",
    [
        (np.zeros((4, 4)), np.ones((4, 4), bool), r"both be \(N, H, W\)"),
        (np.zeros((2, 4, 4)), np.ones((3, 4, 4), bool), r"one region per map"),
        (np.zeros((0, 4, 4)), np.ones((0, 4, 4), bool), "no maps"),
        (np.zeros((1, 4, 4)), np.ones((1, 4, 4)), "bool"),
        (np.full((1, 4, 4), np.nan), np.ones((1, 4, 4), bool), "NaN"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool), "empty"),
    ],
)
def test_bad_arguments_are_refused(maps, masks, message):
    with pytest.raises(InputError, match=message):
        cw.pointing_game(maps, masks)


def test_flat_maps_are_misses_even_on_a_region_that_covers_their_first_pixel():
    """An all-zero map has no peak: np.argmax would say pixel (0, 0), which these regions cover."""
    maps = np.stack([np.zeros((8, 8)), np.full((8, 8), -2.0), np.full((8, 8), 1e-30), np.full((8, 8), 0.5, np.float32)])
    everywhere, corner = np.ones((8, 8), bool), np.zeros((8, 8), bool)
    corner[0, 0] = True
    for mask in (everywhere, corner):
        masks = np.broadcast_to(mask, maps.shape)
        assert all(mask[np.unravel_index(np.argmax(m), m.shape)] for m in maps)  # what a naive argmax would score
        result = cw.pointing_game(maps, masks, tolerance=3)
        np.testing.assert_array_equal(result.hits, [False] * 4)
        np.testing.assert_array_equal(result.flat, [True] * 4)
        assert result.score == pytest.approx(0.0, abs=1e-12)  # no hits among four maps


def test_a_peak_tied_to_rounding_is_a_plateau_and_a_lower_one_is_not():
    mask = _square_mask()  # rows and columns 5..8
    on_object = _bump(20, 6, 7)  # peak 1.0 at (6, 7), on the object
    maps = np.stack([on_object] * 3).astype(np.float32)
    maps[0, 15, 15] = np.nextafter(np.float32(1.0), np.float32(0.0))  # one float32 step below: a tie, off the object
    maps[1, 15, 15] = 0.99  # a second, lower peak off the object
    maps[2, 7, 7] = np.nextafter(np.float32(1.0), np.float32(0.0))  # the tie on the object
    result = cw.pointing_game(maps, np.broadcast_to(mask, maps.shape))
    np.testing.assert_array_equal(result.hits, [False, True, True])
    np.testing.assert_array_equal(result.flat, [False, False, False])


def test_maps_at_another_size_than_the_masks_are_refused_with_a_fix_that_works():
    model = cw.demo.load_model()
    images, labels, masks = shapes.generate(4, seed=41, shapes_per_image=2)
    layer_maps = cw.core.attribution.GradCam.shared(model).explain(images, labels[:, :1]).maps[:, 0]  # at conv4's 16 × 16
    with pytest.raises(InputError, match=r"maps are 16×16 px but the masks 64×64 px.*imaging\.resize") as refusal:
        cw.pointing_game(layer_maps, masks[:, 0])
    fix = re.search(r"(cnnviz_widgets\.core\.imaging\.resize\(.*\)\[\.\.\., 0\])", str(refusal.value)).group(1)
    resized = eval(fix, {"cnnviz_widgets": cnnviz_widgets, "maps": layer_maps})
    expected = cw.pointing_game(cw.grad_cam(model, images, labels[:, 0]), masks[:, 0])
    np.testing.assert_array_equal(cw.pointing_game(resized, masks[:, 0]).hits, expected.hits)


def test_empty_masks_are_refused_by_index():
    masks = np.ones((5, 4, 4), bool)
    masks[[1, 3]] = False
    with pytest.raises(InputError, match=r"masks of maps 1, 3 are empty"):
        cw.pointing_game(np.random.default_rng(0).random((5, 4, 4)), masks)


def test_peak_pixels_are_every_pixel_of_a_plateau_and_none_of_a_flat_map():
    plateau = np.zeros((6, 7))
    plateau[[1, 4], [2, 5]] = 3.0
    plateau[0, 0] = 3.0 - 1e-9  # within the tolerance of the peak
    np.testing.assert_array_equal(cw.peak_pixels(plateau), [[0, 0], [1, 2], [4, 5]])
    assert cw.peak_pixels(np.full((5, 5), 0.7)).shape == (0, 2)
    one = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(cw.peak_pixels(one), [np.unravel_index(np.argmax(one), one.shape)])
