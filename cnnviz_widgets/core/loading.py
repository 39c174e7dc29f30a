"""Load a saved Keras model without running code that came with the file."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import h5py
import keras
from packaging.specifiers import SpecifierSet

from .errors import InputError, InputTypeError, KerasVersionError, UnsupportedModelError, listed

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
# Keras releases that load untrusted files safely: earlier ones ignore safe mode for .h5 files
# (CVE-2025-9905, fixed in 3.11.3), can be led around it by a .keras config (CVE-2025-9906,
# fixed in 3.11.0), load a TFSMLayer's SavedModel graph in it (CVE-2026-1462, fixed in 3.12.1
# and 3.13.2), or unpack a decompression bomb (fixed in 3.15.1). The bundled demo files, saved
# by Keras 3.15, need 3.15 anyway. pyproject.toml requires the same (tests/test_loading.py checks).
SAFE_KERAS = ">=3.15.1"
# What Keras raises for a file it cannot read (after the checks here), and for a refusal in safe mode.
DAMAGED_FILE_ERRORS = (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile)


def load_model(path) -> keras.Model:
    """The model saved at ``path`` (``.keras``, or legacy ``.h5``), in Keras' safe mode, not compiled.

    Safe mode refuses a file holding Python code, such as a ``Lambda`` layer's
    function, which is stored as bytecode and would run while loading; that raises
    :class:`UnsupportedModelError` with the reason and the way to load a file you
    trust. ``compile=False``: the widgets only run the model, so its optimizer, loss
    and metrics (custom ones included) are not needed. A Keras too old to keep safe
    mode, a folder, a weights-only or a damaged file raise a :class:`CnnvizError` that
    says what to do instead.
    """
    check_keras_loads_safely()
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(
            f"path must be the path of a model file, a str or pathlib.Path; got {type(path).__name__} {path!r}."
        )
    path = Path(path)
    if path.is_dir():
        raise InputError(_folder_message(path))
    if path.suffix not in MODEL_FILE_SUFFIXES:
        raise InputError(
            f"'{path}' is not a Keras model file: cw.load_model reads .keras files (and legacy "
            ".h5). Save a model with model.save('name.keras')."
        )
    if not path.is_file():
        raise InputError(f"There is no model file at '{path}' (looked in '{path.resolve().parent}'); check the path.")
    if path.suffix == ".keras":
        _check_keras_archive(path)
    else:
        _check_h5_model(path)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except DAMAGED_FILE_ERRORS as error:
        if "arbitrary code execution" not in str(error):
            raise _unreadable(path, error) from error
        raise UnsupportedModelError(
            f"'{path}' holds Python code (a Lambda layer, or a lambda used as a function), which "
            "Keras stores as bytecode that would run while the file loads: a model file can carry "
            "any code, so it is not loaded. Only if you trust where the file comes from, load it "
            "yourself with keras.saving.load_model(path, safe_mode=False) and pass that model to "
            "the widgets. To share such a model safely, replace the Lambda by a custom layer "
            "registered with @keras.saving.register_keras_serializable()."
        ) from error


def check_keras_loads_safely():
    """Refuse to load anything with a Keras whose safe mode can be bypassed (pinned below pyproject's floor)."""
    if not SpecifierSet(SAFE_KERAS).contains(keras.__version__, prereleases=True):
        raise KerasVersionError(
            f"Keras {keras.__version__} can run code hidden in a model file even in safe mode "
            "(CVE-2025-9905, CVE-2025-9906, CVE-2026-1462) or unpack a decompression bomb, so "
            "cw.load_model does not load with it. "
            f'Upgrade Keras: pip install --upgrade "keras{SAFE_KERAS}"'
        )


def _folder_message(path: Path) -> str:
    if (path / "saved_model.pb").is_file():
        return (
            f"'{path}' is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model: it can "
            "only be called, not inspected, through keras.layers.TFSMLayer(path, "
            "call_endpoint='serving_default'). To use the widgets, load the model in the code that "
            "made it and save it with model.save('name.keras')."
        )
    inside = sorted(child.name for child in path.iterdir() if child.suffix in MODEL_FILE_SUFFIXES)
    found = f" Model files in it: {listed(inside)}." if inside else ""
    return f"'{path}' is a folder, not a model file: pass the path of a .keras (or .h5) file.{found}"


def _check_keras_archive(path: Path):
    """A .keras file is a zip holding the model's config.json (and its weights)."""
    damaged = (
        f"'{path}' is not a .keras archive (those are zip files): it is damaged, cut short, or "
        "another format renamed. Save the model again with model.save('name.keras')."
    )
    if not zipfile.is_zipfile(path):
        raise InputError(damaged)
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read("config.json") if "config.json" in archive.namelist() else None
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{damaged} ({type(error).__name__}: {error})") from error
    if text is None:
        raise InputError(
            f"'{path}' is a zip file without the config.json of a .keras archive: it was not "
            "written by model.save('name.keras'). Save the model again with model.save."
        )
    try:
        json.loads(text)
    except ValueError as error:  # json.JSONDecodeError, or bytes that are not UTF-8
        raise InputError(
            f"The config.json in '{path}' is not valid JSON ({error}): the file is damaged. "
            "Save the model again with model.save('name.keras')."
        ) from error


def _check_h5_model(path: Path):
    """A legacy .h5 model is an HDF5 file whose attributes hold the model's config; weights-only files lack it."""
    try:
        with h5py.File(path, "r") as file:
            has_model = "model_config" in file.attrs
    except OSError as error:
        raise InputError(
            f"'{path}' is not a readable HDF5 file ({error}): it is damaged, cut short, or another "
            "format renamed. Save the model again with model.save('name.keras')."
        ) from error
    if not has_model:
        raise InputError(
            f"'{path}' holds weights only, no model (a model.save_weights file): build the same model "
            "in code, call model.load_weights(path), and pass that model to the widgets."
        )


def _unreadable(path: Path, error: Exception) -> InputError:
    return InputError(
        f"Keras could not load '{path}' ({type(error).__name__}: {error}). The file is damaged, was "
        "saved by an incompatible Keras, or uses custom layers: import the code that registers them "
        "(@keras.saving.register_keras_serializable()) before loading, or save the model again "
        "with model.save('name.keras')."
    )
