"""Bundled, offline demo models and images (no downloads).

``shapes`` (the default): a functional RGB CNN that tells five shapes apart on
textured, coloured 64×64 backgrounds; Grad-CAM points at the right shape.
``digits``: the S0 tutorial's Sequential MNIST network, trained on scikit-learn's
8×8 digits upscaled to 28×28.

    model = load_model()                 # or load_model("digits")
    images, labels = load_images()       # held-out images the model never saw
    CLASS_NAMES[labels[0]]               # or class_names("digits")

``train.py`` reproduces the files in ``data/``; ``shapes.generate`` draws more
shapes images, with masks of where each shape lies.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from ..core.class_names import remember_class_names
from ..core.errors import CnnvizError
from ..core.loading import load_model as _load_model_file
from . import shapes

__all__ = ["CLASS_NAMES", "MODEL_NAMES", "UnknownDemoError", "class_names", "load_history", "load_images", "load_model", "shapes"]

MODEL_NAMES = ("shapes", "digits")
CLASS_NAMES = list(shapes.CLASS_NAMES)
_CLASS_NAMES = {"shapes": shapes.CLASS_NAMES, "digits": [str(digit) for digit in range(10)]}
_DATA_DIR = Path(__file__).parent / "data"


class UnknownDemoError(CnnvizError, ValueError):
    """A demo model name that is not bundled."""


def _checked(name: str) -> str:
    if name not in MODEL_NAMES:
        raise UnknownDemoError(f"Unknown demo model {name!r}. Available: {', '.join(MODEL_NAMES)}.")
    return name


def load_model(name: str = "shapes"):
    """A trained ``keras.Model``, freshly loaded on every call so edits never leak; views name its classes."""
    model = _load_model_file(_DATA_DIR / f"{_checked(name)}.keras")
    remember_class_names(model, class_names(name))
    return model


@functools.lru_cache(maxsize=None)
def _held_out(name: str):
    with np.load(_DATA_DIR / f"{name}.npz") as data:
        return data["images"], data["labels"]


def load_images(name: str = "shapes"):
    """Held-out ``(images, labels)``: float32 (N, H, W, C) in [0, 1] that the model
    takes as is, and int64 (N,) class indices."""
    images, labels = _held_out(_checked(name))
    return images.astype(np.float32) / 255, labels.astype(np.int64)


def class_names(name: str = "shapes") -> list[str]:
    """Class names of demo model ``name``; index = output index."""
    return list(_CLASS_NAMES[_checked(name)])


def load_history(name: str = "shapes") -> dict:
    """Training curves, one value per epoch under "loss", "accuracy", "val_loss" and
    "val_accuracy" (train vs validation; for shapes also the training-only
    "location_loss" and "val_location_loss", see ``train.py``)."""
    return json.loads((_DATA_DIR / f"{_checked(name)}_history.json").read_text())
