"""cw.sanity_check: the cascading model-parameter randomisation test (Adebayo et al. 2018)."""

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import InputError, UnsupportedModelError

from conftest import small_cnn


def _ranks_with_ties(values):
    """Average ranks, written out pairwise: how many are smaller, plus half of the others equal."""
    smaller = (values[:, None] > values[None, :]).sum(axis=1)
    equal = (values[:, None] == values[None, :]).sum(axis=1) - 1
    return smaller + equal / 2


def _spearman(a, b):
    ranks_a, ranks_b = _ranks_with_ties(a.ravel()), _ranks_with_ties(b.ravel())
    ranks_a, ranks_b = ranks_a - ranks_a.mean(), ranks_b - ranks_b.mean()
    return (ranks_a * ranks_b).sum() / np.sqrt((ranks_a**2).sum() * (ranks_b**2).sum())


@pytest.fixture(scope="module")
def demo_check():
    model = cw.demo.load_model()
    images, labels = cw.demo.load_images()
    weights = [w.copy() for w in model.get_weights()]
    maps_before = cw.grad_cam(model, images[:4], labels[:4])
    calls = []
    result = cw.sanity_check(model, images[:4], labels[:4], progress=lambda done, total: calls.append((done, total)))
    return model, images[:4], labels[:4], weights, maps_before, calls, result


def test_grad_cam_loses_its_map_as_the_layers_are_randomised(demo_check):
    model, images, labels, _, maps_before, _, result = demo_check
    assert result.layers == ["predictions", "conv4", "bn3", "conv3", "bn2", "conv2", "bn1", "conv1"]
    assert result.maps.shape == (9, 4, 64, 64) and result.complete
    np.testing.assert_allclose(result.maps[0], maps_before, atol=1e-5)  # step 0: the user's model's maps
    assert result.rank_correlation.shape == result.ssim.shape == (8, 4)
    # the paper's finding for Grad-CAM: the map does not survive losing the weights
    assert np.abs(result.rank_correlation).mean(axis=1).max() < 0.5
    assert not np.allclose(result.maps[1], result.maps[0], atol=0.05)


def test_the_users_model_is_unchanged(demo_check):
    model, images, labels, weights, maps_before, _, _ = demo_check
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(cw.grad_cam(model, images, labels), maps_before, atol=1e-6)


def test_rank_correlations_agree_with_an_independent_spearman(demo_check):
    *_, result = demo_check
    for step in range(len(result.layers)):
        for image in range(4):
            original, randomised = result.maps[0, image], result.maps[step + 1, image]
            expected = 0.0 if np.ptp(randomised) < 1e-6 else _spearman(original, randomised)
            assert result.rank_correlation[step, image] == pytest.approx(expected, abs=1e-6)


def test_progress_counts_the_original_and_every_step(demo_check):
    *_, calls, result = demo_check
    assert calls == [(done, 9) for done in range(1, 10)]


def test_ssim_of_a_map_with_itself_is_one_and_falls_with_noise():
    maps = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    noisy = np.clip(maps + np.random.default_rng(1).normal(0, 0.3, maps.shape), 0, 1).astype(np.float32)
    values = cw.core.trust.sanity.ssim(maps, np.stack([maps, noisy]))
    np.testing.assert_allclose(values[0], 1, atol=1e-5)
    assert values[1].max() < 0.9


def test_stop_returns_the_steps_done():
    model = small_cnn(size=16)
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    predicted = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    asked = []
    result = cw.sanity_check(model, x, predicted, layer="conv2", should_stop=lambda: len(asked.append(1) or asked) > 2)
    assert not result.complete
    assert result.layers == ["predictions", "conv2"]
    assert result.maps.shape == (3, 2, 16, 16) and result.rank_correlation.shape == (2, 2)


def test_frozen_layers_are_randomised_and_preprocessing_statistics_are_not():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Normalization(mean=0.5, variance=0.25, name="normalize")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="frozen_conv", trainable=False)(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="depthwise")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    predicted = int(np.argmax(keras.ops.convert_to_numpy(model(x))))
    result = cw.sanity_check(model, x, predicted)
    assert result.layers == ["head", "depthwise", "frozen_conv"]
    assert np.isfinite(result.maps).all()


def test_a_flat_original_map_and_an_unknown_method_are_refused():
    model = small_cnn(size=16)
    with pytest.raises(InputError, match="flat"):
        cw.sanity_check(model, np.zeros((1, 16, 16, 3)), 0)
    with pytest.raises(InputError, match="Unknown method 'nope'"):
        cw.sanity_check(model, np.zeros((1, 16, 16, 3)), 0, method="nope")


def test_a_model_without_weights_is_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ReLU()(inputs)
    outputs = keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(UnsupportedModelError, match="nothing to randomise"):
        cw.sanity_check(keras.Model(inputs, outputs), np.ones((1, 8, 8, 3)), 0)


@pytest.mark.parametrize("normalize", [False, True])
def test_normalize_is_refused_since_the_scores_need_maps_in_unit_range(normalize):
    model = small_cnn(size=16)
    x = np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    with pytest.raises(InputError, match="always computes them with normalize=True; leave normalize out"):
        cw.sanity_check(model, x, 0, normalize=normalize)
