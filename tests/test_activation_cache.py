import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core import activation_cache
from cnnviz_widgets.core.activation_cache import ActivationCache
from cnnviz_widgets.core.errors import InputError, UnknownLayerError
from conftest import small_cnn


@pytest.fixture(scope="module")
def counted_model():
    return small_cnn(counter=True)


def runs(model) -> int:
    """Times the model's graph really ran, counted inside the graph."""
    return int(model.get_layer("counter").calls.numpy())


def test_one_image_is_one_pass_for_every_layer(counted_model, images):
    cache = ActivationCache(counted_model, images)
    before = runs(counted_model)
    result = cache.for_image(2)
    assert (cache.forward_passes, runs(counted_model) - before) == (1, 1)
    expected = cw.activations(counted_model, images[2:3])
    assert list(result) == cw.layer_names(counted_model)
    for path, array in expected.items():
        np.testing.assert_allclose(result[path], array[0], atol=1e-6, err_msg=path)


def test_a_cached_image_costs_no_pass(counted_model, images):
    cache = ActivationCache(counted_model, images)
    first = cache.for_image(1)
    before = runs(counted_model)
    assert cache.for_image(1) is first
    assert (cache.forward_passes, runs(counted_model) - before) == (1, 0)


def test_one_layer_over_every_image_is_one_batched_pass(counted_model, images):
    cache = ActivationCache(counted_model, images)
    before = runs(counted_model)
    layer = cache.for_layer("conv2")
    cache.for_layer("conv2")
    assert (cache.forward_passes, runs(counted_model) - before) == (1, 1)
    np.testing.assert_allclose(layer, cw.activations(counted_model, images, layers="conv2")["conv2"], atol=1e-6)


def test_a_layer_of_every_image_runs_in_batches_that_fit_the_batch_budget(counted_model, images, monkeypatch):
    graph = cw.core.graph.LayerGraph.of(counted_model)
    largest = max(np.prod(graph.info(path).output_shape[1:]) for path in graph.paths) * 4
    monkeypatch.setattr(activation_cache, "BATCH_BYTES", 2 * largest)
    cache = ActivationCache(counted_model, images)
    before = runs(counted_model)
    layer = cache.for_layer("conv1")
    assert (cache.forward_passes, runs(counted_model) - before) == (1, -(-len(images) // 2))
    np.testing.assert_allclose(layer, cw.activations(counted_model, images, layers="conv1")["conv1"], atol=1e-6)


def test_images_and_layers_share_one_memory_budget(counted_model, images):
    one_image = sum(a.nbytes for a in ActivationCache(counted_model, images).for_image(0).values())
    cache = ActivationCache(counted_model, images, max_bytes=one_image)
    cache.for_image(0)
    cache.for_layer("conv1")  # together over budget, but each is the newest of its kind
    cache.for_image(0)
    assert cache.forward_passes == 2
    cache.for_image(1)  # the older image goes, the layer stays
    cache.for_layer("conv1")
    assert cache.forward_passes == 3
    cache.for_image(0)
    assert cache.forward_passes == 4


def test_least_recently_used_image_is_dropped_first(counted_model, images):
    one_image = sum(a.nbytes for a in ActivationCache(counted_model, images).for_image(0).values())
    cache = ActivationCache(counted_model, images, max_bytes=2 * one_image)
    for index in (0, 1, 0, 2):  # 1 is now the least recently used
        cache.for_image(index)
    assert cache.forward_passes == 3
    cache.for_image(0)
    cache.for_image(2)
    assert cache.forward_passes == 3
    cache.for_image(1)
    assert cache.forward_passes == 4


def test_the_newest_entry_stays_even_over_budget(counted_model, images):
    cache = ActivationCache(counted_model, images, max_bytes=0)
    cache.for_image(0)
    cache.for_image(0)
    assert cache.forward_passes == 1
    cache.for_image(1)
    cache.for_image(0)
    assert cache.forward_passes == 3


def test_preprocess_feeds_the_model_and_keeps_the_raw_images(counted_model, images):
    raw = (images * 255).astype(np.uint8)
    cache = ActivationCache(counted_model, raw, preprocess=lambda batch: batch / 255.0)
    np.testing.assert_array_equal(cache.images, raw)
    expected = cw.activations(counted_model, raw / 255.0, layers="conv1")["conv1"]
    np.testing.assert_allclose(cache.for_image(3)["conv1"], expected[3], atol=1e-5)


def test_an_in_place_preprocess_leaves_the_callers_images_alone(counted_model, images):
    original = images.copy()

    def scale_in_place(batch):  # as keras.applications' preprocess_input does to float arrays
        batch -= 0.5
        return batch

    cache = ActivationCache(counted_model, images, preprocess=scale_in_place)
    np.testing.assert_array_equal(images, original)
    np.testing.assert_array_equal(cache.images, original)
    np.testing.assert_allclose(cache.inputs, original - 0.5)


def test_a_failing_preprocess_is_named(counted_model, images):
    def broken(batch):
        raise KeyError("mean")

    with pytest.raises(InputError, match=r"preprocess raised KeyError: 'mean'.*shape \(4, 16, 16, 3\)"):
        ActivationCache(counted_model, images, preprocess=broken)


def test_a_preprocess_output_the_model_cannot_take_is_named(counted_model, images):
    with pytest.raises(InputError, match="returned by preprocess does not fit the model.*channel"):
        ActivationCache(counted_model, images, preprocess=lambda batch: batch[..., :1])
    with pytest.raises(InputError, match="preprocess returned 2 images for 4"):
        ActivationCache(counted_model, images, preprocess=lambda batch: batch[:2])


def test_one_image_without_a_batch_axis(counted_model, images):
    cache = ActivationCache(counted_model, images[0])
    assert len(cache) == 1
    np.testing.assert_array_equal(cache.images, images[:1])
    preprocessed = ActivationCache(counted_model, images[0], preprocess=lambda batch: batch * 2)
    assert preprocessed.images.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(preprocessed.inputs, images[:1] * 2)


def test_bad_index_and_layer_are_refused(counted_model, images):
    cache = ActivationCache(counted_model, images)
    with pytest.raises(InputError, match=r"there are 4 images, so use 0\.\.3"):
        cache.for_image(4)
    for not_an_index in (True, 1.0):  # True was image 1; 1.0 failed inside numpy's slicing
        with pytest.raises(InputError, match=rf"Image index {not_an_index} is out of range"):
            cache.for_image(not_an_index)
    with pytest.raises(UnknownLayerError, match="Available: counter, conv1"):
        cache.for_layer("conv9")
    assert cache.forward_passes == 0


def test_cached_arrays_cannot_be_written(counted_model, images):
    cache = ActivationCache(counted_model, images)
    with pytest.raises(ValueError, match="read-only"):
        cache.for_image(0)["conv1"][0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        cache.for_layer("conv1")[0, 0, 0, 0] = 1.0


def test_a_summary_of_a_layer_is_one_pass_that_keeps_only_the_summaries(counted_model, images, monkeypatch):
    graph = cw.core.graph.LayerGraph.of(counted_model)
    largest = max(np.prod(graph.info(path).output_shape[1:]) for path in graph.paths) * 4
    monkeypatch.setattr(activation_cache, "BATCH_BYTES", largest)  # one image a batch
    cache = ActivationCache(counted_model, images)
    before = runs(counted_model)
    batches = []

    def channel_means(batch):
        batches.append(len(batch))
        return batch.mean(axis=(1, 2))

    means = cache.summarised("conv1", "means", channel_means)
    assert cache.summarised("conv1", "means", channel_means) is means
    assert (cache.forward_passes, runs(counted_model) - before, batches) == (1, len(images), [1] * len(images))
    expected = cw.activations(counted_model, images, layers="conv1")["conv1"].mean(axis=(1, 2))
    np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-6)
