import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core import weights
from cnnviz_widgets.core.errors import NoKernelError, UnknownLayerError, UnsupportedModelError
from conftest import s3_model


S3_ROWS = [
    ("L0_conv2d", "L0_conv2d/kernel", (3, 3, 1, 1), True, 9),
    ("L0_conv2d", "L0_conv2d/bias", (1,), True, 1),
    ("L2_dense", "L2_dense/kernel", (100, 10), True, 1000),
    ("L3_dense", "L3_dense/kernel", (10, 1), True, 10),
    ("L3_dense", "L3_dense/bias", (1,), True, 1),
    ("L4_bn", "L4_bn/gamma", (1,), True, 1),
    ("L4_bn", "L4_bn/beta", (1,), True, 1),
    ("L4_bn", "L4_bn/moving_mean", (1,), False, 1),
    ("L4_bn", "L4_bn/moving_variance", (1,), False, 1),
]


def rows_of(table):
    return [(r["layer"], r["name"], r["shape"], r["trainable"], r["params"]) for r in table]


@pytest.fixture(scope="module")
def vgg_in_sequential():
    keras.utils.set_random_seed(4)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    return model, base


# -- weight_table and param_counts (S3) ------------------------------------------


def test_s3_weight_table_names_shapes_and_trainable_flags():
    model = s3_model()
    table = weights.weight_table(model)
    assert rows_of(table) == S3_ROWS
    assert {r["dtype"] for r in table} == {"float32"}
    assert sum(r["params"] for r in table) == 1025
    assert sum(r["params"] for r in table if not r["trainable"]) == 2


def test_s3_param_counts_match_keras():
    model = s3_model()
    counts = weights.param_counts(model)
    assert counts == {"total": 1025, "trainable": 1023, "non_trainable": 2}
    assert counts["total"] == model.count_params()
    assert counts["non_trainable"] == sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)


def test_weight_table_of_one_layer():
    assert rows_of(weights.weight_table(s3_model(), "L4_bn")) == S3_ROWS[5:]
    with pytest.raises(UnknownLayerError, match="L4_bn"):
        weights.weight_table(s3_model(), "L5_bn")


def test_sequential_inside_sequential_is_flattened_and_freezing_is_seen():
    inner = s3_model(name="inner")
    model = keras.Sequential(
        [keras.Input((10, 10, 1)), inner, keras.layers.Dense(2, name="head")], name="outer"
    )
    expected = [("inner/" + layer, *rest) for layer, *rest in S3_ROWS]
    expected += [("head", "head/kernel", (1, 2), True, 2), ("head", "head/bias", (2,), True, 2)]
    assert rows_of(weights.weight_table(model)) == expected
    assert weights.param_counts(model) == {"total": 1029, "trainable": 1027, "non_trainable": 2}

    inner.trainable = False
    table = weights.weight_table(model)
    assert [r["trainable"] for r in table] == [False] * len(S3_ROWS) + [True, True]
    counts = weights.param_counts(model)
    assert counts == {"total": model.count_params(), "trainable": 4, "non_trainable": 1025}


def test_weight_table_sums_to_count_params_on_a_nested_application(vgg_in_sequential):
    model, _ = vgg_in_sequential
    table = weights.weight_table(model)
    assert table[0]["layer"] == "vgg16/block1_conv1" and table[0]["name"] == "block1_conv1/kernel"
    assert sum(r["params"] for r in table) == model.count_params()


# -- kernels and biases ----------------------------------------------------------


def test_filter_weights_and_bias_are_the_layers_own():
    model = s3_model()
    conv = model.get_layer("L0_conv2d")
    np.testing.assert_array_equal(weights.filter_weights(model, "L0_conv2d"), conv.get_weights()[0])
    np.testing.assert_array_equal(weights.bias(model, "L0_conv2d"), conv.get_weights()[1])
    np.testing.assert_array_equal(
        weights.filter_weights(model, "L2_dense"), model.get_layer("L2_dense").kernel.numpy()
    )
    assert weights.bias(model, "L2_dense") is None
    assert weights.kernel_shape(model, "L2_dense") == model.get_layer("L2_dense").get_weights()[0].shape
    with pytest.raises(NoKernelError):
        weights.kernel_shape(model, "L1_flatten")


def test_filter_weights_is_public():
    assert cw.filter_weights is weights.filter_weights and "filter_weights" in cw.__all__


def test_filter_weights_of_a_nested_layer(vgg_in_sequential):
    model, base = vgg_in_sequential
    kernel = weights.filter_weights(model, "vgg16/block3_conv2")
    assert kernel.shape == (3, 3, 256, 256)
    np.testing.assert_array_equal(kernel, base.get_layer("block3_conv2").kernel.numpy())
    with pytest.raises(UnknownLayerError, match="vgg16/block1_conv1"):
        weights.filter_weights(model, "block1_conv1")


@pytest.mark.parametrize(
    "layer, attribute",
    [
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), "kernel"),
        (keras.layers.SeparableConv2D(4, 3), "depthwise_kernel"),
        (keras.layers.Conv2DTranspose(4, 3), "kernel"),
    ],
)
def test_filter_weights_of_other_conv_layers(layer, attribute):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layer(inputs))
    expected = getattr(layer, attribute).numpy()
    np.testing.assert_array_equal(weights.filter_weights(model, layer.name), expected)
    assert weights.kernel_shape(model, layer.name) == expected.shape


@pytest.mark.parametrize("layer", ["L1_flatten", "L4_bn"])
def test_layers_without_kernel_name_the_ones_with(layer):
    with pytest.raises(NoKernelError) as caught:
        weights.filter_weights(s3_model(), layer)
    message = str(caught.value)
    assert f"'{layer}'" in message
    assert "Layers with kernels: L0_conv2d, L2_dense, L3_dense." in message
    assert isinstance(caught.value, UnsupportedModelError) and isinstance(caught.value, ValueError)
    with pytest.raises(NoKernelError):
        weights.bias(s3_model(), layer)


# -- kernel tiles ----------------------------------------------------------------


def minmax(a):
    return (a - a.min()) / (a.max() - a.min())


@pytest.fixture
def rgb_kernel():
    return np.random.default_rng(5).normal(size=(7, 7, 3, 6)).astype("float32")


def test_rgb_tiles_are_each_filter_min_maxed(rgb_kernel):
    tiles = weights.kernel_tiles(rgb_kernel)
    assert tiles.shape == (6, 7, 7, 3)
    for index, tile in enumerate(tiles):
        np.testing.assert_allclose(tile, minmax(rgb_kernel[:, :, :, index]), atol=1e-6)


def test_bgr_reverses_the_channels(rgb_kernel):
    np.testing.assert_array_equal(
        weights.kernel_tiles(rgb_kernel, bgr=True), weights.kernel_tiles(rgb_kernel)[..., ::-1]
    )


def test_global_scale_keeps_filters_comparable(rgb_kernel):
    rgb_kernel[:, :, :, 0] *= 0.01
    tiles = weights.kernel_tiles(rgb_kernel, scale="global")
    expected = minmax(rgb_kernel).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(tiles, expected, atol=1e-6)
    assert np.ptp(tiles[0]) < 0.05 < np.ptp(tiles[1])


def test_gray_tiles_go_filter_by_filter(rgb_kernel):
    tiles = weights.kernel_tiles(rgb_kernel, rgb=False)
    assert tiles.shape == (18, 7, 7)
    for f in range(6):
        for c in range(3):
            np.testing.assert_allclose(tiles[f * 3 + c], minmax(rgb_kernel[:, :, c, f]), atol=1e-6)
    kernel = np.random.default_rng(6).normal(size=(3, 3, 4, 2))
    assert weights.kernel_tiles(kernel).shape == (8, 3, 3)
    np.testing.assert_allclose(weights.kernel_tiles(kernel)[5], minmax(kernel[:, :, 1, 1]), atol=1e-6)


def test_kernel_tiles_other_ranks_and_refusals():
    conv1d = np.random.default_rng(7).normal(size=(5, 2, 3))
    assert weights.kernel_tiles(conv1d).shape == (6, 1, 5)
    with pytest.raises(ValueError, match="Dense"):
        weights.kernel_tiles(np.zeros((100, 10)))
    with pytest.raises(ValueError, match="need 3"):
        weights.kernel_tiles(np.zeros((3, 3, 4, 2)), bgr=True)


# -- BGR detection and montages (S2) ---------------------------------------------


@pytest.mark.parametrize(
    "application, options, caffe",
    [
        ("VGG19", {}, True),
        ("ResNet50V2", {}, False),
        ("MobileNet", {"alpha": 0.25}, False),
        ("EfficientNetB0", {}, False),
    ],
)
def test_is_caffe_mode(application, options, caffe):
    build = getattr(keras.applications, application)
    model = build(weights=None, include_top=False, input_shape=(32, 32, 3), **options)
    assert weights.is_caffe_mode(model) is caffe
    assert not weights.is_caffe_mode(s3_model())


def test_caffe_mode_is_found_in_a_nested_base(vgg_in_sequential):
    model, base = vgg_in_sequential
    assert weights.is_caffe_mode(base) and weights.is_caffe_mode(model)
    assert weights.is_bgr_kernel(model, "vgg16/block1_conv1")
    assert not weights.is_bgr_kernel(model, "vgg16/block1_conv2")


def test_resnet50_first_layer_montage_as_in_s2():
    keras.utils.set_random_seed(8)
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    montage = weights.kernel_montage(model, "conv1_conv")
    assert montage.shape == (8 * 56 + 7, 8 * 56 + 7, 3) and montage.dtype == np.uint8

    kernel = model.get_layer("conv1_conv").kernel.numpy()
    for index in (0, 9, 63):
        rgb = minmax(kernel[:, :, ::-1, index])
        expected = np.kron(np.round(rgb * 255), np.ones((8, 8, 1)))
        top, left = (index // 8) * 57, (index % 8) * 57
        np.testing.assert_allclose(montage[top : top + 56, left : left + 56], expected, atol=1)
    assert (montage[56, :] == 0).all() and (montage[:, 56] == 0).all()


def test_montage_without_bgr_and_gray_layers():
    model = s3_model()
    montage = weights.kernel_montage(model, "L0_conv2d", upscale=2)
    assert montage.shape == (6, 6)  # one 3×3 gray tile, twice as large
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")
    plain = keras.Model(inputs, conv(inputs), name="vgg16_lookalike")
    assert not weights.is_caffe_mode(plain)
    montage = weights.kernel_montage(plain, "conv", upscale=1, gap=0)
    expected = minmax(conv.kernel.numpy()[:, :, :, 0])
    np.testing.assert_allclose(montage[:3, :3], np.round(expected * 255), atol=1)


def test_depthwise_kernel_over_rgb_is_drawn_gray_one_tile_per_output_channel():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(inputs))
    kernel, rgb = weights.display_kernel(model, "depthwise")
    assert not rgb and kernel.shape == (3, 3, 1, 6)
    np.testing.assert_array_equal(kernel[:, :, 0, 1], model.get_layer("depthwise").get_weights()[0][:, :, 0, 1])
    montage = weights.kernel_montage(model, "depthwise", upscale=1)
    assert montage.ndim == 2 or np.array_equal(montage[..., 0], montage[..., 1])
    assert weights.kernel_layer_names(model) == ["depthwise"]


# -- the values a kernel view shows ----------------------------------------------


def test_a_kernel_page_of_every_filter_is_kernel_montage():
    from conftest import small_cnn

    model = small_cnn(size=16)
    kernel, rgb = weights.display_kernel(model, "conv2")
    page = weights.kernel_page(kernel, range(12), rgb=rgb, upscale=8, columns=8)
    np.testing.assert_array_equal(page.picture, weights.kernel_montage(model, "conv2", columns=8))
    assert page.tiles_per_filter == 8 and page.layout.shape == page.picture.shape[:2]
    top, left = page.layout.origin(9 * 8 + 5)  # filter 9, input channel 5
    assert page.filters.start + page.layout.index_at(top, left) // page.tiles_per_filter == 9


def test_a_kernel_page_of_some_filters_min_maxes_their_tiles_and_enlarges_one():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 10)).astype(np.float32)
    page = weights.kernel_page(kernel, range(4, 8), rgb=False, scale="global", upscale=2, columns=2)
    shown = kernel[..., 4:8]
    expected = (shown - shown.min()) / (shown.max() - shown.min())
    # tile f * cin + c is kernel[:, :, c, f]
    np.testing.assert_allclose(page.tiles[1 * 2 + 1], expected[:, :, 1, 1], atol=1e-6)
    own = np.round(page.tiles[2:4] * 255).astype(np.uint8)  # filter 5: two gray tiles side by side
    enlarged = [np.repeat(np.repeat(tile, 2, 0), 2, 1) for tile in own]  # (14 - 1 gap) // 6 = 2 times
    side_by_side = np.concatenate([enlarged[0], np.zeros((6, 1), np.uint8), enlarged[1]], axis=1)
    np.testing.assert_array_equal(page.filter_picture(5, 14), side_by_side)


def test_kernel_pages_cut_a_large_layer_into_pages_that_hold_the_channel(monkeypatch):
    kernel = np.zeros((3, 3, 8, 12), np.float32)
    monkeypatch.setattr(weights, "MAX_GRID_PIXELS", 5 * 8 * 25 * 25)  # five filters of 8 tiles, 25 px each
    pages = weights.KernelPages(kernel, rgb=False, bgr=False, scale="tile")
    assert (pages.upscale, pages.columns, pages.per_page) == (8, 8, 5)
    assert [pages.page_of(channel) for channel in (0, 7, 11)] == [range(0, 5), range(5, 10), range(10, 12)]
    assert pages.page(range(10, 12)).picture.shape == (2 * 25 - 1, 8 * 25 - 1)


def test_weight_histogram_is_numpys_with_the_range_and_mean():
    values = np.random.default_rng(1).normal(size=(3, 3, 4, 6))
    layer = weights.WeightHistogram.of(values, 40)
    counts, edges = np.histogram(values, bins=40)
    np.testing.assert_allclose(layer.fractions, counts / values.size)
    np.testing.assert_allclose(layer.centres, (edges[:-1] + edges[1:]) / 2)
    own = weights.WeightHistogram.of(values[..., 2], layer.edges)  # one filter on the layer's bins
    np.testing.assert_allclose(own.fractions, np.histogram(values[..., 2], bins=edges)[0] / values[..., 2].size)
    assert (own.minimum, own.maximum) == (values[..., 2].min(), values[..., 2].max())
    assert own.mean == pytest.approx(values[..., 2].mean())


def test_the_default_kernel_layer_is_the_first_convolution():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(4, name="pixelwise")(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    model = keras.Model(inputs, x)
    assert weights.default_kernel_layer(model) == "conv"
    assert weights.default_kernel_layer(keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, name="d")])) == "d"


def test_signed_scale_puts_zero_at_the_middle_of_one_layer_wide_scale(rgb_kernel):
    bound = np.abs(rgb_kernel).max()
    tiles = weights.kernel_tiles(rgb_kernel, scale="signed")
    np.testing.assert_allclose(tiles, (0.5 + rgb_kernel / (2 * bound)).transpose(3, 0, 1, 2), atol=1e-6)
    halved = weights.kernel_tiles(rgb_kernel, scale="signed", signed_bound=2 * bound)
    np.testing.assert_allclose(halved - 0.5, (tiles - 0.5) / 2, atol=1e-6)


def test_a_signed_gray_page_is_the_diverging_colormap_over_the_layers_bound():
    import matplotlib

    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 2, 6)).astype(np.float32)
    pages = weights.KernelPages(kernel, rgb=False, bgr=False, scale="signed")
    page = pages.page(range(2, 4))
    bound = float(np.abs(kernel).max())
    assert page.weight_range == (-bound, bound) and page.colormap == "RdBu_r"
    value = kernel[1, 2, 1, 3]  # filter 3, input channel 1: tile (3 - 2) * 2 + 1
    expected = matplotlib.colormaps["RdBu_r"](0.5 + value / (2 * bound), bytes=True)[:3]
    np.testing.assert_allclose(page.tiles[3][1, 2] * 255, expected, atol=0.5)
    assert page.picture.shape[-1] == 3


def test_a_global_page_states_its_weight_range_and_a_tile_page_none():
    kernel = np.random.default_rng(4).normal(size=(3, 3, 1, 5)).astype(np.float32)
    shown = kernel[..., 1:3]
    page = weights.kernel_page(kernel, range(1, 3), rgb=False, scale="global")
    assert page.weight_range == pytest.approx((shown.min(), shown.max()))
    assert weights.kernel_page(kernel, range(1, 3), rgb=False).weight_range is None


def test_the_strongest_filter_has_the_largest_norm():
    kernel = np.zeros((3, 3, 2, 4), np.float32)
    kernel[..., 1] = 0.5  # 18 weights: norm sqrt(4.5)
    kernel[0, 0, 0, 2] = -2.0  # norm 2: one big weight does not beat many
    assert weights.strongest_filter(kernel) == 1


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (-0.02552, 0.0255, [-0.02, -0.01, 0.0, 0.01, 0.02]),
        (-0.36, 0.3955, [-0.2, 0.0, 0.2]),
        (0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ],
)
def test_histogram_ticks_are_a_few_round_weights_in_its_range(low, high, expected):
    histogram = weights.WeightHistogram.of(np.array([low, high]), 40)
    np.testing.assert_allclose(histogram.ticks(5), expected, atol=1e-12)


def test_a_bfloat16_kernel_is_shown_as_float32_read_only_values():
    conv = keras.layers.Conv2D(4, 3, name="conv", dtype="bfloat16")
    model = keras.Sequential([keras.Input((8, 8, 3)), conv])
    kernel, _ = weights.display_kernel(model, "conv")
    assert kernel.dtype == np.float32 and not kernel.flags.writeable
    np.testing.assert_array_equal(kernel, np.asarray(conv.kernel.value, dtype=np.float32))
    assert cw.FilterGallery(model).channel == weights.strongest_filter(kernel)


def test_an_empty_range_has_one_tick():
    from cnnviz_widgets.core import imaging

    np.testing.assert_array_equal(imaging.nice_ticks(3.0, 3.0), [3.0])


def test_a_displayed_kernel_is_a_read_only_snapshot_of_the_variable_not_a_copy():
    dense = keras.layers.Dense(6, name="dense")
    model = keras.Sequential([keras.Input((12,)), dense])
    before = dense.get_weights()[0]
    kernel, _ = weights.display_kernel(model, "dense")
    assert not kernel.flags.writeable
    variable_buffer = np.asarray(tf.convert_to_tensor(dense.kernel.value))  # a read shares the buffer
    assert np.shares_memory(kernel, variable_buffer)  # VGG16's fc1 would be 411 MB more
    np.testing.assert_array_equal(kernel, before.reshape(3, 4, 1, 6))
    dense.kernel.assign(np.ones((12, 6), np.float32))
    np.testing.assert_array_equal(kernel, before.reshape(3, 4, 1, 6))  # TensorFlow copies on the assign
    np.testing.assert_array_equal(weights.display_kernel(model, "dense")[0], np.ones((3, 4, 1, 6)))
    assert weights.signed_weight_bound(kernel) == np.abs(before).max()
