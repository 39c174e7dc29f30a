"""Caches over a model's graph stay bounded, still reuse what they compiled, and never keep the model."""

import gc
import itertools
import weakref

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core import graph as graph_module
from cnnviz_widgets.core.graph import MAX_CACHED_PER_KIND, LayerGraph, function_key
from cnnviz_widgets.core.patterns import PatternSearch
from conftest import nested_cnn, small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=12)


@pytest.fixture(scope="module")
def any_size():
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    return keras.Model(inputs, outputs)


def scaled_by(factor):
    return lambda x: x * factor


def scaled_by_setting(settings):
    return lambda x: x * settings.scale


def divided(x):
    return x / 255.0


def test_fresh_lambdas_reuse_one_compiled_search(model):
    graph = LayerGraph.of(model)
    searches = set()
    for _ in range(200):
        preprocess = lambda x: x / 255.0  # noqa: E731 - a new lambda each time, as in a loop or a re-run cell
        patterns = cw.filter_patterns(model, "conv1", [0, 1], size=12, steps=1, preprocess=preprocess)
        searches.add(PatternSearch.shared(model, "conv1", size=12, preprocess=preprocess))
    (search,) = searches
    assert search._step.experimental_get_tracing_count() == 1
    assert len(graph._memo["patterns"]) <= MAX_CACHED_PER_KIND
    own_search = cw.filter_patterns(model, "conv1", [0, 1], size=12, steps=1, preprocess=divided)
    assert PatternSearch.shared(model, "conv1", size=12, preprocess=divided) is not search
    np.testing.assert_array_equal(patterns, own_search)


def test_functions_that_compute_different_things_get_different_searches(model):
    assert function_key(scaled_by(2.0)) == function_key(scaled_by(2.0))
    assert function_key(scaled_by(2.0)) != function_key(scaled_by(3.0))
    twice, thrice = (PatternSearch.shared(model, "conv2", size=12, preprocess=scaled_by(f)) for f in (2.0, 3.0))
    assert twice is not thrice
    weights = np.ones(3, np.float32)  # a capture that can change in place: the function itself is the key
    assert function_key(scaled_by(weights)) != function_key(scaled_by(weights))


def test_a_lambda_reading_a_changed_setting_is_compiled_anew(model):
    class Settings:
        scale = 1.0

    settings = Settings()
    first = PatternSearch.shared(model, "conv2", size=12, preprocess=scaled_by_setting(settings))
    first.run([0], steps=1)  # traced with scale 1
    settings.scale = 0.0
    second = PatternSearch.shared(model, "conv2", size=12, preprocess=scaled_by_setting(settings))
    assert second is not first
    # The model now sees zeros whatever the image: no gradient, so the start noise stays.
    np.testing.assert_allclose(second.run([0], steps=2).images, second.gray_noise([0]), atol=1e-6)


def test_a_changed_global_is_a_different_function(model):
    namespace = {"SCALE": 2.0}
    exec("def preprocess(x):\n    return x * SCALE", namespace)
    before = function_key(namespace["preprocess"])
    namespace["SCALE"] = 3.0
    assert function_key(namespace["preprocess"]) != before


def test_many_sizes_keep_a_bounded_number_of_searches(any_size):
    graph = LayerGraph.of(any_size)
    evicted = weakref.ref(PatternSearch.shared(any_size, "conv1", size=8))
    for size in range(9, 209):
        PatternSearch.shared(any_size, "conv1", size=size)
    gc.collect()
    assert len(graph._memo["patterns"]) <= MAX_CACHED_PER_KIND
    assert evicted() is None
    latest = PatternSearch.shared(any_size, "conv1", size=208)
    assert latest.image_shape == (208, 208, 3)
    assert PatternSearch.shared(any_size, "conv1", size=208) is latest


def test_many_layer_lists_keep_a_bounded_number_of_functions(model, images):
    x = images[:, :12, :12]
    graph = LayerGraph.of(model)
    lists = list(itertools.combinations(graph.paths, 2))[: 2 * MAX_CACHED_PER_KIND + 4]
    for layers in lists:
        cw.activations(model, x, layers=list(layers))
    assert len(graph._memo["function"]) <= MAX_CACHED_PER_KIND
    assert len(graph._memo["model"]) <= MAX_CACHED_PER_KIND
    latest = graph.function_for(lists[-1])
    traces = latest.experimental_get_tracing_count()
    again = cw.activations(model, x, layers=list(lists[-1]))
    assert graph.function_for(lists[-1]) is latest
    assert latest.experimental_get_tracing_count() == traces
    expected = keras.Model(model.input, [model.get_layer(name).output for name in lists[-1]])(x)
    for name, value in zip(lists[-1], expected):
        np.testing.assert_allclose(again[name], value, rtol=1e-5, atol=1e-6)


def test_eviction_keeps_other_kinds(model, monkeypatch):
    monkeypatch.setattr(graph_module, "MAX_CACHED_PER_KIND", 2)
    graph = LayerGraph(model)  # a fresh graph: the model's own is shared with the other tests
    function = graph.function_for(["conv1"])
    for size in range(20, 30):
        graph.cached(("patterns", size), object)
    assert graph.function_for(["conv1"]) is function
    assert len(graph._memo["patterns"]) == 2


@pytest.mark.parametrize("kind", ["functional", "sequential", "nested"])
def test_cached_graphs_do_not_keep_models_alive(kind, images):
    if kind == "functional":
        model = small_cnn()
    elif kind == "sequential":
        model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv1")])
    else:
        model, _ = nested_cnn()
    layer = LayerGraph.of(model).spatial_paths()[0]
    cw.activations(model, images)
    cw.filter_patterns(model, layer, [0], size=16, steps=1)
    if kind != "sequential":
        cw.grad_cam(model, images, 0)
    model_ref = weakref.ref(model)
    del model
    gc.collect()
    assert model_ref() is None
