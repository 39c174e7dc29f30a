import matplotlib
import numpy as np
import pytest

from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.errors import InputError, InputTypeError


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# -- normalize_channels ----------------------------------------------------------


def test_normalize_channels_is_the_book_formula_per_channel(rng):
    # channel 1 is faint: an epsilon added to its std would visibly change it
    activation = (rng.normal(3, 5, (9, 7, 4)) * [1, 1e-5, 10, 1]).astype("float32")
    expected = np.empty(activation.shape, np.uint8)
    for channel in range(4):
        image = activation[:, :, channel].astype(np.float64)
        image = (image - image.mean()) / image.std() * 64 + 128
        expected[:, :, channel] = np.clip(image, 0, 255).astype(np.uint8)
    result = imaging.normalize_channels(activation)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


def test_normalize_channels_axis_picks_the_channel_axis(rng):
    activation = rng.normal(size=(5, 6, 3))
    channels_first = np.moveaxis(activation, -1, 0)
    np.testing.assert_array_equal(
        imaging.normalize_channels(channels_first, axis=0),
        np.moveaxis(imaging.normalize_channels(activation), -1, 0),
    )
    whole = imaging.normalize_channels(activation, axis=None)
    by_hand = (activation - activation.mean()) / activation.std() * 64 + 128
    np.testing.assert_array_equal(whole, np.clip(by_hand, 0, 255).astype(np.uint8))


def test_dead_channel_is_mid_gray_not_nan(rng):
    activation = rng.normal(size=(150, 150, 3)).astype("float32")
    activation[:, :, 1] = 0.0  # a dead ReLU channel
    activation[:, :, 2] = 0.1  # constant, not exactly representable
    with np.errstate(all="raise"):
        result = imaging.normalize_channels(activation)
    assert (result[:, :, 1] == 128).all()
    assert (result[:, :, 2] == 128).all()
    assert result[:, :, 0].std() > 10


def test_normalize_channels_refuses_nan():
    activation = np.ones((4, 4, 2))
    activation[1, 2, 0] = np.nan
    with pytest.raises(InputError, match="nan_to_num"):
        imaging.normalize_channels(activation)


# -- normalize -------------------------------------------------------------------


def test_normalize_global_and_per_tile(rng):
    tiles = rng.normal(size=(3, 4, 5)) * np.array([1, 10, 100])[:, None, None]
    overall = imaging.normalize(tiles)
    np.testing.assert_allclose(overall, (tiles - tiles.min()) / (tiles.max() - tiles.min()), atol=1e-6)
    per_tile = imaging.normalize(tiles, scale="tile")
    for tile, result in zip(tiles, per_tile):
        np.testing.assert_allclose(result, (tile - tile.min()) / (tile.max() - tile.min()), atol=1e-6)
    assert per_tile.dtype == np.float32


def test_normalize_a_cut_with_the_bounds_of_the_whole(rng):
    maps = rng.normal(size=(6, 5, 4)).astype(np.float32)
    cut = imaging.normalize(maps[..., 2], bounds=(maps.min(), maps.max()))
    np.testing.assert_array_equal(cut, imaging.normalize(maps)[..., 2])
    np.testing.assert_array_equal(imaging.normalize(np.ones((2, 2)), bounds=(1.0, 1.0)), 0.5)

def test_normalize_constant_is_half():
    tiles = np.stack([np.zeros((2, 2)), np.arange(4.0).reshape(2, 2)])
    per_tile = imaging.normalize(tiles, scale="tile")
    np.testing.assert_array_equal(per_tile[0], 0.5)
    np.testing.assert_allclose(per_tile[1], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    np.testing.assert_array_equal(imaging.normalize(np.full((3, 3), 7.0)), 0.5)
    with pytest.raises(InputError, match="'global' or 'tile'"):
        imaging.normalize(tiles, scale="channel")


# -- grid ------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [(), (3,)])
def test_grid_places_tile_i_at_its_row_and_column(channels):
    count, height, width, columns, gap = 11, 3, 5, 4, 2
    tiles = np.arange(1, count + 1, dtype=np.uint8).reshape(-1, 1, 1, *([1] * len(channels)))
    tiles = np.broadcast_to(tiles, (count, height, width, *channels))
    image = imaging.grid(tiles, columns=columns, gap=gap, fill=0)
    rows = 3
    assert image.shape == (rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, *channels)
    for index in range(count):
        top = (index // columns) * (height + gap)
        left = (index % columns) * (width + gap)
        assert (image[top : top + height, left : left + width] == index + 1).all()
    assert np.count_nonzero(image) == tiles.size  # everything else is fill


def test_grid_layout_maps_pixels_back_to_tiles():
    tiles = np.arange(7, dtype=np.float32).reshape(7, 1, 1) * np.ones((7, 4, 6))
    image = imaging.grid(tiles, columns=3, gap=1, fill=-1)
    layout = imaging.GridLayout.for_tiles(len(tiles), tiles.shape[1:], columns=3, gap=1)
    assert layout.shape == image.shape
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            index = layout.index_at(y, x)
            assert (index is None) == (image[y, x] == -1), (y, x)
            if index is not None:
                assert image[y, x] == index
    assert layout.index_at(-1, 0) is None
    assert layout.origin(4) == (5, 7)


def test_grid_with_fewer_tiles_than_columns_is_one_row():
    image = imaging.grid(np.ones((3, 2, 2)), columns=16, gap=1)
    assert image.shape == (2, 3 * 2 + 2)


def test_s1_pattern_grid_shape():
    patterns = np.zeros((64, 64, 64, 3), np.uint8)
    assert imaging.grid(patterns, columns=8, gap=5).shape == (8 * 64 + 7 * 5, 8 * 64 + 7 * 5, 3)


# -- resizing --------------------------------------------------------------------


def test_upscale_is_nearest_neighbour(rng):
    image = rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    big = imaging.upscale(image, 8)
    np.testing.assert_array_equal(big, np.kron(image, np.ones((8, 8, 1), np.uint8)))
    with pytest.raises(InputError):
        imaging.upscale(image, 1.5)


def test_upscale_to_uses_the_largest_whole_factor_that_fits(rng):
    image = rng.integers(0, 255, (7, 5), dtype=np.uint8)
    np.testing.assert_array_equal(imaging.upscale_to(image, 30), imaging.upscale(image, 4))
    assert imaging.upscale_to(image, 3).shape == (7, 5)

def test_montage_enlarges_tiles_and_keeps_gaps_one_pixel():
    tiles = np.array([[[0.0]], [[1.0]]])
    expected = np.array([[0, 0, 0, 255, 255], [0, 0, 0, 255, 255]], np.uint8)
    np.testing.assert_array_equal(imaging.montage(tiles, upscale=2, columns=2, gap=1), expected)

def test_resize_nearest_and_bilinear():
    image = np.array([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(imaging.resize(image, (4, 4), method="nearest"), imaging.upscale(image, 2))
    smooth = imaging.resize(image, (4, 6))
    assert smooth.shape == (4, 6) and smooth.dtype == np.float32
    assert smooth.min() >= 0 and smooth.max() <= 3
    assert len(np.unique(smooth)) > 4  # interpolated values between the four pixels
    np.testing.assert_allclose(imaging.resize(np.full((5, 5, 3), 0.25), (9, 2)), 0.25, atol=1e-6)



def test_shrink_to_fit_averages_blocks_and_keeps_maps_that_fit(rng):
    maps = rng.normal(size=(2, 100, 50, 3)).astype(np.float32)
    small = imaging.shrink_to_fit(maps, 20)
    blocks = maps.reshape(2, 20, 5, 10, 5, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(small, blocks, atol=1e-5)
    one = maps[0]
    assert imaging.shrink_to_fit(one, 100) is one
    assert imaging.shrink_to_fit(np.ones((300, 2, 1)), 30).shape == (30, 1, 1)

# -- colour ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["viridis", "jet", "gray", "magma"])
def test_colormap_matches_matplotlib(rng, name):
    values = np.concatenate([rng.uniform(0, 1, 500), np.linspace(0, 1, 256), [0.0, 1.0]]).reshape(2, -1)
    expected = matplotlib.colormaps[name](values, bytes=True)[..., :3]
    result = imaging.colormap(values, name)
    assert result.shape == values.shape + (3,) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


def test_colormap_clips_out_of_range_values():
    result = imaging.colormap(np.array([-5.0, 1e30]), "viridis")
    np.testing.assert_array_equal(result, imaging.colormap(np.array([0.0, 1.0]), "viridis"))


def test_unknown_colormap_names_valid_ones():
    with pytest.raises(InputError, match="viridis") as caught:
        imaging.colormap(np.zeros(3), "viridiss")
    assert "Did you mean" in str(caught.value)


# -- images and overlays ---------------------------------------------------------


def test_to_uint8_image_reads_common_pixel_formats(rng):
    pixels = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    np.testing.assert_array_equal(imaging.to_uint8_image(pixels), pixels)
    np.testing.assert_array_equal(imaging.to_uint8_image(pixels / 255.0), pixels)
    np.testing.assert_array_equal(imaging.to_uint8_image(pixels.astype("float32")), pixels)
    gray = imaging.to_uint8_image(pixels[..., :1])
    np.testing.assert_array_equal(gray, np.repeat(pixels[..., :1], 3, axis=-1))
    np.testing.assert_array_equal(imaging.to_uint8_image(pixels[..., 0]), gray)
    rgba = np.concatenate([pixels, np.full((5, 6, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(imaging.to_uint8_image(rgba), pixels)


def test_to_uint8_image_refuses_preprocessed_and_batched_images(rng):
    with pytest.raises(InputError, match="raw image"):
        imaging.to_uint8_image(rng.normal(0, 50, (4, 4, 3)))
    with pytest.raises(InputError, match=r"images\[0\]"):
        imaging.to_uint8_image(np.zeros((2, 4, 4, 3)))


def test_overlay_blends_the_coloured_heatmap(rng):
    image = rng.uniform(0, 1, (6, 8, 3))
    heatmap = rng.uniform(0, 1, (6, 8))
    picture = np.round(image * 255)
    heat = matplotlib.colormaps["jet"](heatmap, bytes=True)[..., :3]
    expected = np.round(0.6 * picture + 0.4 * heat).astype(np.uint8)
    result = imaging.overlay(image, heatmap, alpha=0.4)
    assert result.dtype == np.uint8
    np.testing.assert_allclose(result.astype(int), expected.astype(int), atol=1)
    np.testing.assert_array_equal(imaging.overlay(image, heatmap, alpha=0), picture.astype(np.uint8))
    np.testing.assert_array_equal(imaging.overlay(image, heatmap, alpha=1), heat)


def test_overlay_resizes_the_heatmap_to_the_image():
    image = np.zeros((32, 24), np.uint8)
    result = imaging.overlay(image, np.full((2, 2), 1.0), alpha=1.0, cmap="jet")
    assert result.shape == (32, 24, 3)
    red = imaging.colormap(np.array(1.0), "jet")
    np.testing.assert_array_equal(result, np.broadcast_to(red, (32, 24, 3)))
    with pytest.raises(InputError, match="opacity"):
        imaging.overlay(image, np.zeros((2, 2)), alpha=1.5)


# -- PNG -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_png_round_trips(rng, shape):
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    data = imaging.to_png(pixels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(imaging.from_png(data), pixels)


def test_png_needs_uint8():
    with pytest.raises(InputTypeError, match="to_uint8_image"):
        imaging.to_png(np.zeros((3, 3)))


def test_an_indexed_png_of_colormap_rows_shows_the_colormap(rng):
    values = rng.uniform(-0.1, 1.1, (70, 90))
    rows = imaging.colormap_index(values)
    data = imaging.to_png(rows, palette=imaging.colormap_table("magma"))
    np.testing.assert_array_equal(imaging.from_png(data), matplotlib.colormaps["magma"](values, bytes=True)[..., :3])
    assert len(data) < len(imaging.to_png(imaging.colormap(values, "magma")))


@pytest.mark.parametrize(
    "rows, palette, message",
    [
        (np.zeros((2, 2), np.int64), np.zeros((4, 3), np.uint8), "uint8"),
        (np.full((2, 2), 4, np.uint8), np.zeros((4, 3), np.uint8), "no row"),
        (np.zeros((2, 2), np.uint8), np.zeros((300, 3), np.uint8), "1..256"),
    ],
)
def test_an_indexed_png_refuses_rows_outside_its_palette(rows, palette, message):
    with pytest.raises(InputError, match=message):
        imaging.to_png(rows, palette=palette)


def test_a_bar_picture_draws_bars_from_the_zero_line():
    picture = imaging.bar_picture([2.0, -1.0], selected=1, height=4, bar_px=1)
    white, blue, red = [255] * 3, list(imaging.BAR_COLOUR), list(imaging.SELECTED_BAR_COLOUR)
    # rows run 2 (top) .. -1 (bottom): the zero line is row 2; every bar is followed by a white column
    expected = [[blue, white, white, white], [blue, white, white, white], [blue, white, red, white], [white, white, red, white]]
    np.testing.assert_array_equal(picture, np.array(expected, dtype=np.uint8))


def test_side_by_side_enlarges_small_pictures_and_aligns_them_on_top():
    small, tall = np.zeros((2, 2, 3), np.uint8), np.full((10, 3, 3), 7, np.uint8)
    joined = imaging.side_by_side([small, tall], panel_px=8)
    assert joined.shape == (10, 8 + imaging.PANEL_GAP_PX + 3, 3)
    np.testing.assert_array_equal(joined[:8, :8], 0)  # 2×2 enlarged 4×
    np.testing.assert_array_equal(joined[8:, :8], 255)
    np.testing.assert_array_equal(joined[:, 8 : 8 + imaging.PANEL_GAP_PX], 255)
    np.testing.assert_array_equal(joined[:, -3:], 7)


def test_a_raw_image_that_is_not_pixels_is_stretched_to_show():
    pixels = np.array([[[0.0, 128.0, 255.0]]])
    np.testing.assert_array_equal(imaging.raw_image_picture(pixels), [[[0, 128, 255]]])
    centred = pixels - 128
    np.testing.assert_array_equal(imaging.raw_image_picture(centred), [[[0, 128, 255]]])


def test_colormap_hex_samples_matplotlibs_colormap_from_bottom_to_top():
    import matplotlib

    stops = imaging.colormap_hex("viridis", count=5)
    expected = [matplotlib.colors.to_hex(matplotlib.colormaps["viridis"](v)) for v in np.linspace(0, 1, 5)]
    assert len(stops) == 5
    for got, want in zip(stops, expected):
        # One row of the 256-row table apart at most: neighbouring rows differ by a few levels.
        assert np.abs(np.array(matplotlib.colors.to_rgb(got)) - matplotlib.colors.to_rgb(want)).max() <= 4 / 255


@pytest.mark.parametrize("low, high", [(np.nan, 1.0), (0.0, np.nan), (0.0, np.inf), (-np.inf, 0.0)])
def test_a_range_with_an_infinite_or_nan_end_has_no_ticks(low, high):
    assert len(imaging.nice_ticks(low, high, 5)) == 0


@pytest.mark.parametrize(
    "low, high", [(-1e308, 1e308), (0.0, 5e-324), (0.0, 1e-320), (-1.7e308, -1e308), (1e300, 1.0000001e300)]
)
def test_ticks_of_extreme_finite_ranges_are_finite_and_within_the_range(low, high):
    ticks = imaging.nice_ticks(low, high, 5)
    assert 1 <= len(ticks) <= 5 and np.isfinite(ticks).all()
    assert low <= ticks.min() and ticks.max() <= high
