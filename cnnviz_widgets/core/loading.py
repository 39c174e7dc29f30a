"""Load a saved Keras model without running code that came with the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from .errors import InputError, UnsupportedModelError

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model(path) -> keras.Model:
    """The model saved at ``path`` (``.keras``, or legacy ``.h5``), in Keras' safe mode, not compiled.

    Safe mode refuses a file holding Python code, such as a ``Lambda`` layer's
    function, which is stored as bytecode and would run while loading; that raises
    :class:`UnsupportedModelError` with the reason and the way to load a file you
    trust. ``compile=False``: the widgets only run the model, so its optimizer, loss
    and metrics (custom ones included) are not needed.
    """
    path = Path(path)
    if path.suffix not in MODEL_FILE_SUFFIXES:
        raise InputError(
            f"'{path}' is not a Keras model file: cw.load_model reads .keras files (and legacy "
            ".h5). Save a model with model.save('name.keras'). A TensorFlow SavedModel folder "
            "can only be called, not inspected: keras.layers.TFSMLayer(path, call_endpoint='serving_default')."
        )
    if not path.is_file():
        raise InputError(f"There is no model file at '{path}' (looked in '{path.resolve().parent}'); check the path.")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise InputError(
            f"'{path}' is not a .keras archive (those are zip files): it is damaged, cut short, or "
            "another format renamed. Save the model again with model.save('name.keras')."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as error:
        if "arbitrary code execution" not in str(error):
            raise
        raise UnsupportedModelError(
            f"'{path}' holds Python code (a Lambda layer, or a lambda used as a function), which "
            "Keras stores as bytecode that would run while the file loads: a model file can carry "
            "any code, so it is not loaded. Only if you trust where the file comes from, load it "
            "yourself with keras.saving.load_model(path, safe_mode=False) and pass that model to "
            "the widgets. To share such a model safely, replace the Lambda by a custom layer "
            "registered with @keras.saving.register_keras_serializable()."
        ) from error
