"""cw.faithfulness: deletion and insertion curves (Petsiuk et al. 2018) against a brute-force loop."""

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import InputError, UnsupportedModelError
from cnnviz_widgets.core.trust.faithfulness import centre_prior_maps, pixel_ranks, random_maps
from cnnviz_widgets.demo import shapes

from conftest import small_cnn

scipy_ndimage = pytest.importorskip("scipy.ndimage")


def _brute_force_curve(model, image, class_index, saliency, metric, steps, baseline_image):
    """One image, one step at a time, ``model(x)`` directly: the probability as the top pixels go (or come)."""
    height, width, channels = image.shape
    order = np.argsort(-saliency.ravel())  # the test maps have no ties
    curve = []
    for step in range(steps + 1):
        chosen = order[: round(step * height * width / steps)]
        start, end = (image, baseline_image) if metric == "deletion" else (baseline_image, image)
        perturbed = start.reshape(-1, channels).copy()
        perturbed[chosen] = end.reshape(-1, channels)[chosen]
        probabilities = keras.ops.convert_to_numpy(model(perturbed.reshape(1, height, width, channels)))
        curve.append(probabilities[0, class_index])
    return np.array(curve)


def _baseline_image(image, baseline):
    if baseline == "zero":
        return np.zeros_like(image)
    if baseline == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1)), image.shape)
    sigma = max(image.shape[:2]) / 16  # the documented σ; scipy's "mirror" is numpy's "reflect" padding
    return scipy_ndimage.gaussian_filter(image.astype(np.float64), (sigma, sigma, 0), mode="mirror", truncate=3.0)


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
@pytest.mark.parametrize("baseline", ["blur", "mean", "zero"])
def test_curves_match_a_brute_force_loop(metric, baseline):
    model = small_cnn(size=16)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    maps = rng.permutation(3 * 256).reshape(3, 16, 16).astype(np.float32)  # distinct values: one order
    classes = [0, 2, 4]
    # batch_size 4 does not divide 3 images × 6 points: rows of one image straddle batches
    result = cw.faithfulness(model, x, classes, maps, metric, steps=5, baseline=baseline, batch_size=4)
    expected = np.stack(
        [_brute_force_curve(model, x[i], classes[i], maps[i], metric, 5, _baseline_image(x[i], baseline)) for i in range(3)]
    )
    np.testing.assert_allclose(result.curves, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.fractions, np.linspace(0, 1, 6))
    np.testing.assert_allclose(result.auc, np.trapezoid(expected, np.linspace(0, 1, 6), axis=1), rtol=1e-4, atol=1e-6)
    assert result.metric == metric and result.baseline == baseline


@pytest.mark.parametrize("size", [(4, 64), (64, 4), (1, 40)])
def test_the_blur_of_a_wide_or_narrow_image_reflects_again_and_again(size):
    # the blur's radius, 3σ = 3·64/16 = 12 px, is more than the short side: one reflection cannot pad it
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1, *size, 3)).astype(np.float32)
    maps = rng.permutation(size[0] * size[1]).reshape(1, *size).astype(np.float32)
    result = cw.faithfulness(model, x, 1, maps, "insertion", steps=4)
    expected = _brute_force_curve(model, x[0], 1, maps[0], "insertion", 4, _baseline_image(x[0], "blur"))
    np.testing.assert_allclose(result.curves[0], expected, rtol=1e-4, atol=1e-6)


def test_a_map_on_the_object_beats_random_and_centre_on_demo_images():
    model = cw.demo.load_model()
    images, labels, masks = shapes.generate(12, seed=31, shapes_per_image=2)
    object_maps = masks[:, 0] + np.random.default_rng(0).uniform(0, 0.01, masks[:, 0].shape)  # the first shape
    for metric in ("deletion", "insertion"):
        ours = cw.faithfulness(model, images, labels[:, 0], object_maps, metric, steps=10)
        baselines = cw.faithfulness_baselines(model, images, labels[:, 0], metric, steps=10)
        for name, other in baselines.items():
            if metric == "deletion":
                assert ours.auc.mean() < other.auc.mean() - 0.05, name
            else:
                assert ours.auc.mean() > other.auc.mean() + 0.05, name
    assert ours.better == "higher"


def test_grad_cam_beats_the_random_map_on_demo_images():
    model = cw.demo.load_model()
    images, labels = cw.demo.load_images()
    images, labels = images[:12], labels[:12]
    maps = cw.grad_cam(model, images, labels)
    deletion = cw.faithfulness(model, images, labels, maps, "deletion", steps=10)
    insertion = cw.faithfulness(model, images, labels, maps, "insertion", steps=10)
    random_deletion = cw.faithfulness_baselines(model, images, labels, "deletion", steps=10)["random"]
    random_insertion = cw.faithfulness_baselines(model, images, labels, "insertion", steps=10)["random"]
    assert deletion.auc.mean() < random_deletion.auc.mean()
    assert insertion.auc.mean() > random_insertion.auc.mean()
    # the curves start at the model's probability of the class on the image itself
    probabilities = keras.ops.convert_to_numpy(model(images))[np.arange(12), labels]
    np.testing.assert_allclose(deletion.curves[:, 0], probabilities, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(insertion.curves[:, -1], probabilities, rtol=1e-4, atol=1e-6)


def test_baseline_maps_are_seeded_and_the_centre_prior_peaks_in_the_middle():
    random_a, random_b, other = (random_maps(2, (9, 7), seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(random_a, random_b)
    assert not np.array_equal(random_a, other)
    centre = centre_prior_maps(2, (9, 7))
    assert centre.shape == (2, 9, 7) and np.unravel_index(np.argmax(centre[0]), (9, 7)) == (4, 3)
    public = cw.baseline_maps(2, (9, 7), seed=1)  # what faithfulness_baselines runs
    assert public.keys() == {"random", "centre"}
    np.testing.assert_array_equal(public["random"], other)
    np.testing.assert_array_equal(public["centre"], centre)


def test_ties_are_taken_in_a_seeded_order_not_row_by_row():
    model = small_cnn(size=16)
    x = np.random.default_rng(4).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    flat = np.zeros((1, 16, 16), np.float32)
    ranks = pixel_ranks(flat, seed=0)
    assert sorted(ranks.ravel()) == list(range(256))
    assert ranks[0, :8].max() > 128  # the first half-rows are not all first in line
    curves = [cw.faithfulness(model, x, 1, flat, steps=4, seed=seed).curves for seed in (5, 5, 6)]
    np.testing.assert_allclose(curves[0], curves[1])
    assert np.abs(curves[0] - curves[2]).max() > 1e-4


def test_an_image_model_behind_a_reshape_works():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8))
    x = keras.layers.Reshape((8, 8, 1))(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8)).astype(np.float32)
    maps = np.random.default_rng(1).random((2, 8, 8))
    result = cw.faithfulness(model, x, 1, maps, "deletion", steps=4, baseline="zero")
    assert result.curves.shape == (2, 5)
    np.testing.assert_allclose(result.curves[:, -1], keras.ops.convert_to_numpy(model(np.zeros((2, 8, 8))))[:, 1], rtol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"maps": np.zeros((2, 8, 8))}, "one map per image"),
        ({"maps": np.full((2, 16, 16), np.nan)}, "NaN"),
        ({"metric": "removal"}, "metric must be one of"),
        ({"baseline": "noise"}, "baseline must be one of"),
        ({"steps": 0}, "steps"),
        ({"class_index": [0, 1, 2]}, "3 entries for 2 image"),
        ({"class_index": 9}, "class_index 9 is out of range"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(change, message):
    model = small_cnn(size=16)
    arguments = {"x": np.zeros((2, 16, 16, 3)), "class_index": 0, "maps": np.zeros((2, 16, 16)), "metric": "deletion", "steps": 3}
    arguments.update(change)
    with pytest.raises(InputError, match=message):
        cw.faithfulness(model, **arguments)


def test_a_model_without_image_input_is_refused():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(UnsupportedModelError, match="one image input"):
        cw.faithfulness(model, np.zeros((1, 5)), 0, np.zeros((1, 5)))


def test_a_model_that_gives_nan_is_refused_not_drawn():
    model = small_cnn(size=16)
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([np.full_like(kernel, np.nan), bias])
    with pytest.raises(UnsupportedModelError, match="NaN"):
        cw.faithfulness(model, np.ones((1, 16, 16, 3)), 0, np.random.default_rng(0).random((1, 16, 16)), steps=2)
