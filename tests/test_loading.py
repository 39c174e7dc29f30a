"""cw.load_model: safe mode, a clear refusal for files that carry code, and models that work everywhere."""

import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from packaging.requirements import Requirement

import cnnviz_widgets as cw
from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core import loading
from cnnviz_widgets.core.errors import CnnvizError, InputError, KerasVersionError, UnsupportedModelError
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
    with pytest.raises(InputError, match=r"is a folder, not a model file"):
        cw.load_model(tmp_path)
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

    gallery = FilterGallery(loaded, layer="conv2")
    np.testing.assert_array_equal(gallery.weights, original.get_layer("conv2").get_weights()[0])

    viewer = GradCamViewer(loaded, images[0], class_index=3)
    np.testing.assert_allclose(viewer.heatmap, cw.grad_cam(original, images[:1], 3, layer=viewer.layer)[0], atol=1e-5)
    np.testing.assert_allclose(viewer.probabilities, np.asarray(original(images[:1]))[0], rtol=1e-5)


# -- a Keras whose safe mode can be bypassed ------------------------------------------


@pytest.mark.parametrize("version", ["3.0.0", "3.10.0", "3.11.2", "3.11.3", "3.12.1", "3.13.1", "3.13.2", "3.15.0"])
def test_a_keras_too_old_to_load_safely_is_refused_before_the_file_is_read(tmp_path, monkeypatch, version):
    path = tmp_path / "lambda.h5"
    model_with_a_lambda().save(path)  # Keras 3.0-3.11.2 would run its code (CVE-2025-9905)
    monkeypatch.setattr(keras, "__version__", version)
    with pytest.raises(KerasVersionError, match=rf"Keras {version} can run code .* pip install --upgrade \"keras>=3\.15\.1\""):
        cw.load_model(path)


@pytest.mark.parametrize("version", ["3.15.1", "3.16.0", "4.0.0.dev2027"])
def test_a_keras_with_a_safe_mode_that_holds_loads(tmp_path, monkeypatch, version):
    small_cnn().save(tmp_path / "model.keras")
    monkeypatch.setattr(keras, "__version__", version)
    assert cw.load_model(tmp_path / "model.keras").get_layer("conv1") is not None


def test_pyproject_requires_a_keras_that_loads_safely():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    (keras_requirement,) = [r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "keras"]
    assert str(keras_requirement.specifier) == str(Requirement(f"keras{loading.SAFE_KERAS}").specifier)


# -- damaged files, folders, weights only: one error that says what to do ----------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model saved as .keras and .h5, and its weights alone."""
    folder = tmp_path_factory.mktemp("saved")
    model = small_cnn()
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    model.save_weights(folder / "model.weights.h5")
    return folder


def rewritten_archive(saved, path, drop=(), replace=None):
    """saved/model.keras with the members in ``drop`` left out and those in ``replace`` replaced."""
    with zipfile.ZipFile(saved / "model.keras") as original, zipfile.ZipFile(path, "w") as copy:
        for name in original.namelist():
            if name not in drop:
                copy.writestr(name, (replace or {}).get(name, original.read(name)))
    return path


def cut_short(source: Path, path: Path):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_truncated_keras_file_is_called_damaged(saved, tmp_path):
    with pytest.raises(InputError, match=r"not a \.keras archive .*damaged, cut short.*model\.save\('name\.keras'\)"):
        cw.load_model(cut_short(saved / "model.keras", tmp_path / "cut.keras"))


def test_a_zip_without_config_json_is_not_a_keras_archive(saved, tmp_path):
    path = rewritten_archive(saved, tmp_path / "no_config.keras", drop=["config.json"])
    with pytest.raises(InputError, match=r"zip file without the config\.json of a \.keras archive.*model\.save"):
        cw.load_model(path)


def test_a_broken_config_json_is_called_damaged(saved, tmp_path):
    path = rewritten_archive(saved, tmp_path / "broken.keras", replace={"config.json": b'{"class_name": "Functional", '})
    with pytest.raises(InputError, match=r"config\.json in .* is not valid JSON \(.*line 1.*\): the file is damaged"):
        cw.load_model(path)


def test_damaged_weights_inside_a_keras_archive_are_named(saved, tmp_path):
    path = rewritten_archive(saved, tmp_path / "weights.keras", replace={"model.weights.h5": b"not HDF5"})
    with pytest.raises(InputError, match=r"Keras could not load .*weights\.keras' \(OSError: .*\)\. The file is damaged"):
        cw.load_model(path)


def test_a_truncated_h5_file_is_called_damaged(saved, tmp_path):
    with pytest.raises(InputError, match=r"not a readable HDF5 file \(.*truncated.*\): it is damaged, cut short"):
        cw.load_model(cut_short(saved / "model.h5", tmp_path / "cut.h5"))


def test_a_text_file_named_h5_is_not_read_as_a_model(tmp_path):
    (tmp_path / "notes.h5").write_text("these are not weights")
    with pytest.raises(InputError, match=r"not a readable HDF5 file .*another format renamed"):
        cw.load_model(tmp_path / "notes.h5")


def test_a_weights_only_file_says_to_build_the_model_and_load_the_weights(saved):
    with pytest.raises(InputError, match=r"weights only, no model.*build the same model in code, call model\.load_weights\(path\)"):
        cw.load_model(saved / "model.weights.h5")
    # The advice works.
    rebuilt = small_cnn()
    rebuilt.load_weights(saved / "model.weights.h5")
    np.testing.assert_array_equal(rebuilt.get_layer("conv1").get_weights()[0], cw.load_model(saved / "model.h5").get_layer("conv1").get_weights()[0])


def test_a_folder_names_the_model_files_in_it(saved):
    with pytest.raises(InputError, match=r"is a folder, not a model file.*Model files in it: model\.h5, model\.keras, model\.weights\.h5"):
        cw.load_model(saved)


def test_a_saved_model_folder_points_to_tfsm_layer(tmp_path):
    small_cnn().export(tmp_path / "exported", verbose=False)
    with pytest.raises(InputError, match=r"TensorFlow SavedModel folder.*keras\.layers\.TFSMLayer\(path, call_endpoint='serving_default'\).*model\.save"):
        cw.load_model(tmp_path / "exported")


def test_every_damaged_file_error_is_a_cnnviz_error(saved, tmp_path):
    """What the checks do not catch (a config that is valid JSON but no model) is Keras' error, wrapped."""
    path = rewritten_archive(saved, tmp_path / "odd.keras", replace={"config.json": b'{"foo": 1}'})
    with pytest.raises(CnnvizError, match=r"Keras could not load .*odd\.keras' \(ValueError: .*\)"):
        cw.load_model(path)
