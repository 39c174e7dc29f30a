"""Class names shipped with the package, so nothing is downloaded at run time."""

from __future__ import annotations

import functools
import json
import weakref
from pathlib import Path

from .errors import InputError, InputTypeError

IMAGENET_CLASSES = Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.json"
_REMEMBERED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its class names


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k names in Keras' ``decode_predictions`` order (0 = tench)."""
    return tuple(json.loads(IMAGENET_CLASSES.read_text()))


def class_names_for(num_classes: int, class_names=None, model=None) -> list[str]:
    """``class_names`` if given, else the names known offline for ``model`` (see
    :func:`known_class_names`), else "class i"."""
    if class_names is not None:
        if isinstance(class_names, str) or not hasattr(class_names, "__iter__"):
            raise InputTypeError(f"class_names must be a list of names, one per model output; got {class_names!r}.")
        names = [str(name) for name in class_names]
        if len(names) != num_classes:
            raise InputError(
                f"class_names has {len(names)} names but the model scores {num_classes} "
                "classes; pass one name per model output."
            )
        return names
    known = known_class_names(model, num_classes)
    return known if known is not None else [f"class {i}" for i in range(num_classes)]


def remember_class_names(model, names) -> None:
    """Name ``model``'s classes for the views that label them by default (the demo loader does)."""
    _REMEMBERED[model] = tuple(str(name) for name in names)


def known_class_names(model, num_classes: int) -> list[str] | None:
    """The names of ``model``'s ``num_classes`` classes known offline: remembered for it, or
    ImageNet's for 1000 classes; None where only their indices are known."""
    try:
        remembered = _REMEMBERED.get(model)
    except TypeError:  # a model not weakly referable: nothing was remembered for it
        remembered = None
    if remembered is not None and len(remembered) == num_classes:
        return list(remembered)
    return [name.replace("_", " ") for name in imagenet_class_names()] if num_classes == 1000 else None
