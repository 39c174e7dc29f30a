"""cw.load_model: safe mode, a clear refusal for files that carry code, and models that work everywhere."""

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core.errors import InputError, UnsupportedModelError
from conftest import small_cnn


def model_with_a_lambda():
    inputs = keras.Input((8, 8, 3))
    doubled = keras.layers.Lambda(lambda x: x * 2, name="double")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(doubled))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_file_with_a_lambda_layer_is_refused_with_the_reason(tmp_path, suffix):
    path = tmp_path / f"lambda{suffix}"
    model_with_a_lambda().save(path)
    with pytest.raises(UnsupportedModelError) as refused:
        cw.load_model(path)
    message = str(refused.value)
    for words in ["Lambda layer", "bytecode that would run while the file loads", "trust", "keras.saving.load_model(path, safe_mode=False)"]:
        assert words in message, message
    # The way out works, and it is the user's own call.
    assert keras.saving.load_model(path, safe_mode=False).get_layer("double") is not None


def test_a_missing_file_a_wrong_suffix_and_a_damaged_archive_name_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"no model file at '.*missing\.keras'.*check the path"):
        cw.load_model(tmp_path / "missing.keras")
    with pytest.raises(InputError, match=r"not a Keras model file.*model\.save\('name\.keras'\).*TFSMLayer"):
        cw.load_model(tmp_path)  # a SavedModel-style folder
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InputError, match="not a Keras model file"):
        cw.load_model(tmp_path / "notes.txt")
    (tmp_path / "damaged.keras").write_bytes(b"PK but not really")
    with pytest.raises(InputError, match=r"not a \.keras archive.*damaged"):
        cw.load_model(tmp_path / "damaged.keras")


def test_a_saved_model_loads_uncompiled_and_works_in_every_widget(tmp_path):
    original = small_cnn(classes=5)
    original.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    original.save(tmp_path / "model.keras")
    loaded = cw.load_model(str(tmp_path / "model.keras"))
    assert not loaded.compiled  # the widgets only run it
    images = np.random.default_rng(4).uniform(0, 1, (3, 16, 16, 3)).astype("float32")

    explorer = LayerExplorer(loaded, images)
    explorer.layer, explorer.image_index = "conv2", 2
    expected = keras.Model(original.inputs, original.get_layer("conv2").output)(images[2:3], training=False)[0]
    np.testing.assert_allclose(explorer.activation, expected, atol=1e-5)

    gallery = FilterGallery(loaded, "conv2")
    np.testing.assert_array_equal(gallery.weights, original.get_layer("conv2").get_weights()[0])

    viewer = GradCamViewer(loaded, images[0], class_index=3)
    np.testing.assert_allclose(viewer.heatmap, cw.grad_cam(original, images[:1], 3, layer=viewer.layer)[0], atol=1e-5)
    np.testing.assert_allclose(viewer.probabilities, np.asarray(original(images[:1]))[0], rtol=1e-5)
