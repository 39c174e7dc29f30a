import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core.errors import ModelNotBuiltError, UnknownLayerError, UnsupportedModelError
from cnnviz_widgets.core.graph import LayerGraph
from conftest import nested_cnn, small_cnn


def test_functional_names_are_its_layers_in_order():
    model = small_cnn()
    expected = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert cw.layer_names(model) == expected


def test_nested_base_layers_are_named_outer_slash_inner():
    model, _ = nested_cnn()
    assert cw.layer_names(model) == ["scale", "base/c1", "base/bn", "base/c2", "gap", "head"]


def test_two_levels_of_nesting():
    model, _ = nested_cnn(levels=2)
    assert "wrap1/base/c2" in cw.layer_names(model)


@pytest.mark.parametrize("build", ["build", "first_call"])
def test_sequential_without_input(build):
    model = keras.Sequential([keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(name="flat"), keras.layers.Dense(2, name="out")])
    if build == "build":
        model.build((None, 8, 8, 1))
    else:
        model(np.zeros((1, 8, 8, 1), "float32"))
    assert cw.layer_names(model) == ["conv", "flat", "out"]


def test_unbuilt_sequential_says_how_to_build_it():
    model = keras.Sequential([keras.layers.Conv2D(4, 3)])
    with pytest.raises(ModelNotBuiltError, match=r"model.build\(\(None, H, W, C\)\)"):
        cw.layer_names(model)


def test_subclassed_model_is_refused_clearly():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(UnsupportedModelError, match="subclassed"):
        cw.layer_names(net)


def test_not_a_model_is_a_type_of_value_error():
    with pytest.raises(ValueError, match="Expected a keras.Model"):
        cw.layer_names("vgg16")


def test_unknown_layer_lists_the_valid_ones_and_suggests_the_nested_path():
    model, _ = nested_cnn()
    with pytest.raises(UnknownLayerError) as error:
        LayerGraph.of(model).info("c2")
    assert "Did you mean 'base/c2'?" in str(error.value)
    assert "Available: scale, base/c1" in str(error.value)


def test_graph_is_cached_per_model_and_leaves_the_model_usable():
    model = small_cnn()
    assert LayerGraph.of(model) is LayerGraph.of(model)
    conv = model.get_layer("conv2")
    submodel = keras.Model(model.inputs, conv.output)
    x = np.ones((1, 16, 16, 3), "float32")
    assert submodel(x).shape == (1, 5, 5, 12)
    assert model(x).shape == (1, 5)


@pytest.mark.parametrize(
    "application, size",
    [(keras.applications.VGG16, 32), (keras.applications.ResNet50, 32), (keras.applications.MobileNetV2, 32)],
)
def test_keras_applications(application, size):
    model = application(weights=None, input_shape=(size, size, 3), classes=7)
    expected = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert cw.layer_names(model) == expected


def test_application_nested_in_sequential_for_transfer_learning():
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    model = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(2, name="out")])
    names = cw.layer_names(model)
    inner = [layer.name for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert names == [f"{base.name}/{name}" for name in inner] + ["gap", "out"]
    assert "." in base.name  # 'mobilenetv2_1.00_32': dots in names are fine


def test_output_shapes_of_nested_layers():
    model, base = nested_cnn()
    graph = LayerGraph.of(model)
    assert graph.info("base/c2").output_shape == tuple(base.get_layer("c2").output.shape)


def test_cached_builds_a_key_once_for_threads_that_ask_together_and_other_keys_do_not_wait():
    import threading
    import time

    graph = LayerGraph.of(small_cnn())
    building, release = threading.Event(), threading.Event()
    builds = []

    def slow_build():
        builds.append(threading.current_thread().name)
        building.set()
        release.wait(10)
        return object()

    results = {}
    threads = [
        threading.Thread(target=lambda name=name: results.update({name: graph.cached(("test", "slow"), slow_build)}), name=name)
        for name in ("first", "second")
    ]
    threads[0].start()
    assert building.wait(10)
    threads[1].start()
    time.sleep(0.2)  # lets the second thread reach cached() while the first builds; no timing is asserted
    assert graph.cached(("test", "other"), lambda: "built at once") == "built at once"  # another key is not blocked
    release.set()
    for thread in threads:
        thread.join(10)
    assert builds == ["first"]
    assert results["first"] is results["second"] is graph.cached(("test", "slow"), slow_build)


def test_cached_keeps_a_value_that_is_none_and_forgets_a_failed_build():
    graph = LayerGraph.of(small_cnn())
    calls = []
    assert graph.cached(("test", "none"), lambda: calls.append(1)) is None
    assert graph.cached(("test", "none"), lambda: calls.append(1)) is None and calls == [1]
    with pytest.raises(ZeroDivisionError):
        graph.cached(("test", "fails"), lambda: 1 / 0)
    assert graph.cached(("test", "fails"), lambda: "second try") == "second try"


def test_inference_functions_of_many_layers_do_not_warn_of_retracing(retracing_warnings):
    # Each layer list gets a compiled function that traces once; TensorFlow must not count them
    # as one function retraced (ChannelCard on VGG16 printed the warning into the notebook).
    graph = LayerGraph.of(cw.demo.load_model())
    for path in graph.paths[:12]:
        graph.run([path], [cw.demo.load_images()[0][:3]], batch_size=2)
    assert not retracing_warnings
