import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import InputError
from cnnviz_widgets.core.patterns import PatternSearch, deprocess
from conftest import nested_cnn, small_cnn


def s1_loop(model, layer_name, filter_index, start, steps, step_size=1.0):
    """Deep Learning with Python 5.4, one filter at a time, ported to TF2."""
    submodel = keras.Model(model.inputs, model.get_layer(layer_name).output)
    image = tf.constant(start[None])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(submodel(image, training=False)[..., filter_index])
        grads = tape.gradient(loss, image)
        grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5
        image = image + grads * step_size
    return image.numpy()[0]


def s1_deprocess(x):
    x = x - x.mean()
    x /= x.std() + 1e-5
    x *= 0.1
    x += 0.5
    x = np.clip(x, 0, 1)
    return (x * 255).astype("uint8")


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=24)


def test_batched_ascent_equals_the_tutorial_loop_per_filter(model):
    search = PatternSearch(model, "conv2", size=None)
    result = search.run([0, 3, 7], steps=10, seed=5)
    for row, filter_index in enumerate([0, 3, 7]):
        start = search.gray_noise([filter_index], 5, 0.0, 255.0)[0]
        expected = s1_loop(model, "conv2", filter_index, start, steps=10)
        np.testing.assert_allclose(result.images[row], expected, rtol=1e-4, atol=1e-2)
        np.testing.assert_array_equal(result.patterns[row], s1_deprocess(result.images[row]))


def test_start_is_the_tutorials_gray_noise(model):
    start = PatternSearch(model, "conv1", size=None).gray_noise([0, 1], 0, 0.0, 255.0)
    assert start.min() >= 128 and start.max() <= 148
    assert abs(start.mean() - 138) < 1
    scaled = PatternSearch(model, "conv1", size=None).gray_noise([0, 1], 0, 0.0, 1.0)
    np.testing.assert_allclose(scaled, start / 255, rtol=1e-6)


@pytest.fixture(scope="module")
def demo_ascent():
    """40 S1 steps for the first 16 filters of the trained demo model's conv3."""
    demo = cw.demo.load_model()
    result = PatternSearch(demo, "conv3").run(range(16), steps=40, value_range=(0.0, 1.0))
    responses = cw.activations(demo, result.images, layers="conv3")["conv3"].mean(axis=(1, 2))[:, :16]
    return result, responses


def test_target_activation_rises_far_above_its_start(demo_ascent):
    result, _ = demo_ascent
    # A ReLU filter silent on gray noise has no gradient to climb (S1 shows such blanks).
    alive = result.start_loss > 1e-6
    assert alive.sum() >= 8
    rise = result.final_loss[alive] / result.start_loss[alive]
    assert rise.min() >= 2 and np.median(rise) >= 10


def test_each_pattern_excites_its_own_filter_more_than_other_filters_patterns_do(demo_ascent):
    result, responses = demo_ascent
    alive = result.start_loss > 1e-6
    np.testing.assert_allclose(np.diag(responses), result.final_loss, rtol=1e-4, atol=1e-5)
    own_pattern_is_best = responses.argmax(axis=0) == np.arange(16)
    assert own_pattern_is_best[alive].mean() >= 0.8


def test_shape_dtype_and_determinism(model):
    first = cw.filter_patterns(model, "conv1", range(4), size=24, steps=5, seed=1)
    again = cw.filter_patterns(model, "conv1", range(4), size=24, steps=5, seed=1)
    other = cw.filter_patterns(model, "conv1", range(4), size=24, steps=5, seed=2)
    assert first.shape == (4, 24, 24, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_memory_budget_splits_batches_without_changing_results(model):
    search = PatternSearch(model, "conv2", size=None)
    assert search.batch_size(memory_budget_mb=0.01) == 1
    assert search.batch_size(memory_budget_mb=512) > 100
    calls = []
    small = search.run(range(4), steps=5, memory_budget_mb=0.01, on_batch=lambda done, total, r: calls.append((done, total)))
    large = search.run(range(4), steps=5)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    np.testing.assert_allclose(small.images, large.images, rtol=1e-5, atol=1e-3)


def test_activation_count_matches_real_layer_outputs(model):
    search = PatternSearch(model, "conv2", size=None)
    outputs = cw.activations(model, np.zeros((1, 24, 24, 3)), layers=["conv1", "bn", "pool1", "conv2"])
    expected = sum(a.size for a in outputs.values()) + 24 * 24 * 3
    assert search._activation_count() == expected


def test_stopping_keeps_finished_batches(model):
    search = PatternSearch(model, "conv2", size=None)
    steps_taken = []

    def should_stop():
        steps_taken.append(1)
        return len(steps_taken) > 2 * 5  # stop during the third batch of one filter

    result = search.run(range(6), steps=5, memory_budget_mb=0.01, should_stop=should_stop)
    np.testing.assert_array_equal(result.filters, [0, 1])
    assert result.patterns.shape == (2, 24, 24, 3)


def test_nested_layer_and_preprocess():
    model, _ = nested_cnn()
    patterns = cw.filter_patterns(model, "base/c2", [0, 1], size=16, steps=5)
    assert patterns.shape == (2, 16, 16, 3)
    seen = []
    cw.filter_patterns(model, "base/c1", [0], size=16, steps=2, preprocess=lambda x: seen.append(1) or x / 2)
    assert seen


def test_dense_layer_filters():
    model = small_cnn(size=16)
    patterns = cw.filter_patterns(model, "predictions", [0, 4], size=16, steps=5)
    assert patterns.shape == (2, 16, 16, 3)


def test_any_size_for_models_without_fixed_input():
    model = keras.applications.VGG16(weights=None, include_top=False)
    patterns = cw.filter_patterns(model, "block1_conv2", [0, 1], size=20, steps=3)
    assert patterns.shape == (2, 20, 20, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=[12]), r"has 12 filters, so use 0..11"),
        (dict(filters=[]), "filters is empty"),
        (dict(filters=[0], size=32), r"takes 24x24 images"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    kwargs = {"size": 24, **kwargs}
    with pytest.raises(InputError, match=message):
        cw.filter_patterns(model, "conv2", **kwargs)


def test_a_reversed_value_range_is_refused_rather_than_descending(model):
    """(1, 0) gave a negative span: start noise outside the range and steps that lower the activation."""
    search = PatternSearch(model, "conv2", size=None)
    with pytest.raises(InputError, match=r"value_range .* low < high.*got \(1, 0\)"):
        search.run([0], steps=1, value_range=(1, 0))
    ascended = search.run([0], steps=5, value_range=(0, 1))
    assert ascended.final_loss[0] > ascended.start_loss[0]


def test_value_range_and_counts_may_be_lists_and_numpy_numbers(model):
    search = PatternSearch(model, "conv2", size=None)
    expected = search.run([0, 1], steps=2, seed=3, value_range=(0.0, 1.0), memory_budget_mb=512).images
    same = search.run([0, 1], steps=np.int64(2), seed=np.int32(3), value_range=np.array([0, 1]), memory_budget_mb=np.float32(512))
    np.testing.assert_allclose(same.images, expected, rtol=1e-6)
    np.testing.assert_allclose(search.run([0, 1], steps=2, seed=3, value_range=[0, 1]).images, expected, rtol=1e-6)


def test_deprocess_of_constant_image_is_mid_gray_not_nan():
    assert np.all(deprocess(np.full((1, 4, 4, 3), 7.0)) == 127)


def test_a_search_is_shared_by_every_size_that_resolves_to_the_same_images():
    model = small_cnn()  # fixed 16×16 input
    default = PatternSearch.shared(model, "conv1")
    assert PatternSearch.shared(model, "conv1", size=16) is default
    assert default.image_shape == (16, 16, 3)
    assert PatternSearch.shared(model, "conv2") is not default
    with pytest.raises(InputError):
        PatternSearch.shared(model, "conv1", size=64)
