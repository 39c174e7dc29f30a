"""style="lucid" filter patterns (core/lucid.py) and previews of both styles.

Expected values come from numpy written from lucent's formulas (the orthonormal
inverse real FFT, the colour matrix, the sigmoid), a Keras sub-model for
activations, keras.optimizers.Adam for the update, and runs with fewer steps for
the previews.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core import lucid
from cnnviz_widgets.core.errors import InputError
from cnnviz_widgets.core.pattern_jobs import PatternCache, PatternJob, PatternSettings
from cnnviz_widgets.core.patterns import PatternSearch, PreviewThrottle
from conftest import small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=24)


@pytest.fixture(scope="module")
def search(model):
    return PatternSearch(model, "conv2", size=None)


def sub_model_activation(model, layer, images, filters):
    """Each image's mean activation of its own filter, from a Keras sub-model."""
    activations = np.asarray(keras.Model(model.input, model.get_layer(layer).output)(images))
    return np.array([activations[i, ..., f].mean() for i, f in enumerate(filters)])


def test_decode_is_lucents_formula_in_numpy():
    fourier = lucid.FourierImage(10, 7, 3)
    spectra = np.random.default_rng(0).normal(0, 0.3, (2, *fourier.spectrum_shape)).astype(np.float32)
    frequencies = np.sqrt(np.fft.fftfreq(10)[:, None] ** 2 + np.fft.rfftfreq(7)[None, :] ** 2)
    scale = 1 / np.maximum(frequencies, 1 / 10)
    planes = np.fft.irfft2((spectra[..., 0] + 1j * spectra[..., 1]) * scale, s=(10, 7), norm="ortho") / 4
    colors = lucid.COLOR_CORRELATION_SVD_SQRT / np.linalg.norm(lucid.COLOR_CORRELATION_SVD_SQRT, axis=0).max()
    expected = 1 / (1 + np.exp(-(planes.transpose(0, 2, 3, 1) @ colors.T)))
    np.testing.assert_allclose(fourier.decode(tf.constant(spectra)).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(12, 12, 3), (9, 14, 3), (8, 8, 1)])
def test_an_encoded_image_decodes_back(shape):
    fourier = lucid.FourierImage(*shape)
    images = np.random.default_rng(1).uniform(0.05, 0.95, (2, *shape)).astype(np.float32)
    np.testing.assert_allclose(fourier.decode(tf.constant(fourier.encode(images))).numpy(), images, atol=1e-4)


def test_decorrelated_colour_keeps_the_value_range(model):
    fourier = lucid.FourierImage(16, 16, 3)
    wild = fourier.decode(tf.constant(np.random.default_rng(2).normal(0, 50, (3, *fourier.spectrum_shape)), tf.float32))
    assert 0 <= wild.numpy().min() and wild.numpy().max() <= 1
    for low, high in ((0.0, 255.0), (-1.0, 1.0)):
        result = PatternSearch(model, "conv2", size=None).run([3, 7], steps=6, style="lucid", value_range=(low, high))
        assert low <= result.images.min() and result.images.max() <= high
        expected = np.round((result.images - low) / (high - low) * 255)
        np.testing.assert_allclose(result.patterns, expected, atol=1)


def test_lucid_is_deterministic_for_a_seed_and_changes_with_it(search):
    first = search.run([0, 3, 7], steps=6, seed=4, style="lucid")
    again = search.run([0, 3, 7], steps=6, seed=4, style="lucid")
    other = search.run([0, 3, 7], steps=6, seed=5, style="lucid")
    np.testing.assert_allclose(again.images, first.images, atol=1e-3)
    assert np.abs(other.images - first.images).mean() > 1


def test_a_pattern_does_not_depend_on_its_batch(search):
    together = search.run([0, 3, 7], steps=4, style="lucid")
    alone = search.run([3], steps=4, style="lucid", memory_budget_mb=1e-6)
    np.testing.assert_allclose(alone.images[0], together.images[1], atol=1e-2)


def test_the_target_activation_rises_over_the_steps():
    model = cw.demo.load_model()
    layer = "conv3"
    filters = list(range(8))
    search = PatternSearch(model, layer, size=None)
    short = search.run(filters, steps=3, style="lucid", value_range=(0.0, 1.0))
    long = search.run(filters, steps=40, style="lucid", value_range=(0.0, 1.0))
    start = sub_model_activation(model, layer, search._fourier.decode(search._fourier.start([(0, f, 0) for f in filters])), filters)
    np.testing.assert_allclose(long.start_loss, start, rtol=1e-3, atol=1e-4)
    reached = sub_model_activation(model, layer, long.images, filters)
    np.testing.assert_allclose(long.final_loss, reached, rtol=1e-3, atol=1e-4)
    assert np.median(reached - start) > 0 and (reached > start).mean() >= 0.75
    assert np.median(reached) > np.median(sub_model_activation(model, layer, short.images, filters))


def test_warp_by_a_whole_pixel_shift_moves_the_image():
    image = np.random.default_rng(3).random((1, 12, 12, 2)).astype(np.float32)
    shift = np.array([[1, 0, 2, 0, 1, -1, 0, 0]], np.float32)  # output (x, y) reads input (x + 2, y - 1)
    moved = lucid.warp(tf.constant(image), tf.constant(shift)).numpy()
    np.testing.assert_allclose(moved[0, 1:, :-2], image[0, :-1, 2:], atol=1e-6)


def test_random_transforms_scale_and_rotate_about_the_centre_within_bounds():
    transforms = lucid.random_transforms([(0, 1, 0, 1)], 50, (32, 32, 3))[0]
    a, b, tx, c, d, ty = transforms[:, :6].T
    scale = 1 / np.sqrt(a * d - b * c)
    assert (scale >= 0.9 - 1e-5).all() and (scale <= 1.1 + 1e-5).all()
    angle = np.degrees(np.arctan2(b, a))
    assert np.abs(angle).max() <= 10 + 1e-4 and np.abs(angle).max() > 5
    centre = np.array([15.5, 15.5])
    shift = np.stack([a * centre[0] + b * centre[1] + tx, c * centre[0] + d * centre[1] + ty], 1) - centre
    assert np.abs(shift).max() <= lucid.JITTER_PX + 1e-4 and np.abs(shift).max() > lucid.JITTER_PX / 2
    prefix = lucid.random_transforms([(0, 1, 0, 1)], 5, (32, 32, 3))[0]
    np.testing.assert_allclose(prefix, transforms[:5])


def test_adam_ascent_is_keras_adam_on_the_negated_gradient():
    start = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    gradients = [np.random.default_rng(s).normal(size=(3, 5)).astype(np.float32) for s in range(3)]
    variable = keras.Variable(start)
    optimizer = keras.optimizers.Adam(0.05, epsilon=lucid.ADAM_EPSILON)
    ours, first, second = tf.constant(start), tf.zeros((3, 5)), tf.zeros((3, 5))
    for step, gradient in enumerate(gradients, 1):
        optimizer.apply_gradients([(-gradient, variable)])
        ours, first, second = lucid.adam_ascent(ours, gradient, first, second, float(step), 0.05)
    np.testing.assert_allclose(ours.numpy(), variable.numpy(), atol=1e-5)


def test_gram_similarity_is_the_mean_cosine_to_the_same_filters_images():
    activations = np.random.default_rng(5).random((3, 4, 4, 6)).astype(np.float32)
    same = np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], np.float32)
    grams = [a.reshape(-1, 6).T @ a.reshape(-1, 6) for a in activations]
    cosine = lambda i, j: (grams[i] * grams[j]).sum() / np.linalg.norm(grams[i]) / np.linalg.norm(grams[j])  # noqa: E731
    expected = [(cosine(0, 1) + cosine(0, 2)) / 2, cosine(1, 0), cosine(2, 0)]
    np.testing.assert_allclose(lucid.gram_similarity(tf.constant(activations), tf.constant(same)).numpy(), expected, rtol=1e-5)


def test_diversity_makes_the_images_of_one_filter_less_alike(model, search):
    def similarity(result):
        activations = keras.Model(model.input, model.get_layer("conv2").output)(result.images)
        return lucid.gram_similarity(activations, tf.constant([[0.0, 1.0], [1.0, 0.0]])).numpy().mean()

    plain = search.run([5, 5], steps=15, style="lucid")
    diverse = search.run([5, 5], steps=15, style="lucid", diversity=1e3)
    assert np.abs(plain.images[0] - plain.images[1]).mean() > 1  # each occurrence has its own start
    # ReLU maps of one filter have Gram matrices alike to 0.99: the penalty moves the last digits.
    assert similarity(diverse) < similarity(plain) - 1e-4


@pytest.mark.parametrize("style", ["tutorial", "lucid"])
def test_previews_arrive_before_the_batch_ends_and_are_the_images_so_far(search, style):
    events = []
    result = search.run(
        [0, 3],
        steps=7,
        style=style,
        on_preview=lambda step, batch: events.append(("preview", step, batch.images.copy(), batch.patterns)),
        on_batch=lambda done, total, batch: events.append(("batch", done)),
        preview_every=3,
        preview_share=1,  # every due preview, however long it takes
    )
    assert [event[:2] for event in events] == [("preview", 3), ("preview", 6), ("batch", 2)]
    for _, step, images, patterns in events[:2]:
        fewer = search.run([0, 3], steps=step, style=style)
        np.testing.assert_allclose(images, fewer.images, rtol=1e-4, atol=1e-2)
        assert patterns.dtype == np.uint8 and patterns.shape == result.patterns.shape


@pytest.mark.parametrize("style", ["tutorial", "lucid"])
def test_previewing_every_step_leaves_the_patterns_as_they_are(search, style):
    steps = []
    previewed = search.run([0, 3, 5], steps=6, style=style, seed=2, on_preview=lambda step, _: steps.append(step), preview_every=1, preview_share=1)
    plain = search.run([0, 3, 5], steps=6, style=style, seed=2)
    assert steps == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(previewed.images, plain.images, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(previewed.final_loss, plain.final_loss, rtol=1e-5, atol=1e-6)


def test_previews_beyond_their_share_of_the_time_are_skipped(search):
    steps = []
    search.run([0, 3], steps=12, on_preview=lambda step, _: steps.append(step), preview_every=1, preview_share=1e-9)
    assert steps == [1]  # the first preview is always taken; any later one would pass a billionth of the time


def test_the_preview_throttle_keeps_previews_within_their_share():
    now = [0.0]
    throttle = PreviewThrottle(0.1, clock=lambda: now[0])
    taken = []
    for step in range(1, 101):
        now[0] += 1.0  # a step takes 1 s
        if throttle.allowed():
            with throttle.timed():
                now[0] += 2.3  # a preview 2.3 s
            taken.append(step)
    assert taken[:3] == [1, 21, 42]  # the next preview waits until those before are a tenth of the time
    assert 2.3 * len(taken) <= 0.1 * now[0] + 2.3  # within the share, give or take the last preview


@pytest.mark.parametrize("share", [0, -0.1, 1.5, float("nan"), "some"])
def test_a_bad_preview_share_is_refused(search, share):
    with pytest.raises(InputError, match="preview_share is the largest share"):
        search.run([0], steps=1, preview_share=share)


def test_unknown_style_is_refused_with_one_clear_error(model):
    for call in (
        lambda: cw.filter_patterns(model, "conv2", [0], size=None, style="lucent"),
        lambda: PatternSearch(model, "conv2", size=None).run([0], style=None),
    ):
        with pytest.raises(InputError, match="style must be 'tutorial' .* or 'lucid' .*; got"):
            call()


@pytest.mark.parametrize("diversity", [-1, "a lot", float("nan")])
def test_bad_diversity_is_refused(search, diversity):
    with pytest.raises(InputError, match="diversity is the weight"):
        search.run([0], style="lucid", diversity=diversity)


def test_stop_mid_batch_keeps_nothing_of_that_batch(search):
    steps_taken = []

    def should_stop():
        steps_taken.append(1)
        return len(steps_taken) > 3

    result = search.run([0, 3, 7], steps=20, style="lucid", should_stop=should_stop)
    assert len(result.filters) == 0 and result.images.shape == (0, *search.image_shape)
    assert len(steps_taken) == 4


def test_a_job_previews_and_stops_mid_batch(model):
    search = PatternSearch.shared(model, "conv2")
    settings = PatternSettings("conv2", search.image_shape[:2], 30, 0, (0.0, 255.0), "lucid")
    cache, previews = PatternCache(), []

    def stop_at_second_preview(job):
        previews.append(dict(job.previews))
        if len(previews) == 2:
            job.stop()

    job = PatternJob(search, settings, [3, 7], cache, on_preview=stop_at_second_preview, preview_every=2, preview_share=1)
    job.start().wait()
    assert job.outcome == "stopped" and job.computed == 0 and job.steps_done == 5
    assert [sorted(p) for p in previews] == [[3, 7], [3, 7]]
    expected = cw.filter_patterns(model, "conv2", [3, 7], size=None, steps=4, style="lucid")
    np.testing.assert_allclose(np.stack([previews[1][3], previews[1][7]]), expected, atol=2)
    grid, _ = cache.page_picture(settings, range(4), search.image_shape, 2, previews=previews[1])
    assert grid.max() > 0 and cache.patterns(settings) == {}
