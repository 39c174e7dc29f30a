import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import UnknownLayerError
from conftest import nested_cnn, small_cnn


def test_every_top_level_layer_equals_a_keras_submodel(images):
    model = small_cnn()
    result = cw.activations(model, images)
    assert list(result) == cw.layer_names(model)
    for name, array in result.items():
        expected = keras.Model(model.inputs, model.get_layer(name).output)(images, training=False)
        np.testing.assert_allclose(array, expected, atol=1e-5, err_msg=name)


def test_nested_layers_equal_a_hand_written_forward_through_the_base(images):
    model, base = nested_cnn()
    pixels = images * 255
    result = cw.activations(model, pixels, layers=["base/c1", "base/bn", "base/c2", "head"])
    scaled = pixels / 255.0
    for inner in ["c1", "bn", "c2"]:
        expected = keras.Model(base.inputs, base.get_layer(inner).output)(scaled, training=False)
        np.testing.assert_allclose(result[f"base/{inner}"], expected, atol=1e-5, err_msg=inner)
    np.testing.assert_allclose(result["head"], model(pixels, training=False), atol=1e-5)


def test_two_levels_deep(images):
    model, base = nested_cnn(levels=2)
    result = cw.activations(model, images, layers="wrap1/base/c2")
    expected = keras.Model(base.inputs, base.get_layer("c2").output)(images / 255.0)
    np.testing.assert_allclose(result["wrap1/base/c2"], expected, atol=1e-5)


def test_all_layers_come_from_one_forward_pass(images):
    model = small_cnn(counter=True)
    counter = model.get_layer("counter")
    cw.activations(model, images)
    assert int(counter.calls.numpy()) == 1
    cw.activations(model, images, layers=["conv1", "conv2", "predictions"])
    assert int(counter.calls.numpy()) == 2


def test_inference_mode_dropout_and_batchnorm(images):
    model = small_cnn()
    result = cw.activations(model, images, layers=["conv1", "bn", "conv2", "drop"])
    np.testing.assert_allclose(result["drop"], result["conv2"])
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    eps = model.get_layer("bn").epsilon
    expected = (result["conv1"] - mean) / np.sqrt(var + eps) * gamma + beta
    np.testing.assert_allclose(result["bn"], expected, atol=1e-4)


def test_batching_gives_the_same_arrays():
    model = small_cnn()
    x = np.random.default_rng(0).uniform(size=(5, 16, 16, 3)).astype("float32")
    whole = cw.activations(model, x, layers=["conv2"])
    pieces = cw.activations(model, x, layers=["conv2"], batch_size=2)
    assert pieces["conv2"].shape[0] == 5
    np.testing.assert_allclose(whole["conv2"], pieces["conv2"], atol=1e-6)


def test_unknown_layer(images):
    with pytest.raises(UnknownLayerError, match="Unknown layer 'conv9'. Available: conv1"):
        cw.activations(small_cnn(), images, layers=["conv9"])


def test_sequential_built_by_a_first_call():
    model = keras.Sequential([keras.layers.Conv2D(3, 3, name="conv"), keras.layers.Flatten(name="flat")])
    x = np.random.default_rng(1).uniform(size=(2, 6, 6, 1)).astype("float32")
    model(x)
    result = cw.activations(model, x)
    np.testing.assert_allclose(result["flat"], model(x), atol=1e-6)
    np.testing.assert_allclose(result["conv"], model.layers[0](x), atol=1e-6)
