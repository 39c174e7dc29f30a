"""Errors raised by cnnviz_widgets.

Every error subclasses ``ValueError`` or ``TypeError`` so callers can catch the
usual built-ins, and every message says what to do about it.
"""


class CnnvizError(Exception):
    """Base of every error this package raises on purpose."""


class UnknownLayerError(CnnvizError, ValueError):
    """A layer name that the model does not have."""


class ModelNotBuiltError(CnnvizError, ValueError):
    """A model whose layers have no shapes yet (an unbuilt Sequential)."""


class KerasVersionError(CnnvizError, ValueError):
    """The installed Keras cannot do something safely; the message names the upgrade."""


class UnsupportedModelError(CnnvizError, ValueError):
    """A model or layer that a technique cannot work on."""


class InputError(CnnvizError, ValueError):
    """Images or arguments that do not fit the model."""


class InputTypeError(CnnvizError, TypeError):
    """An argument of the wrong type."""


class NoKernelError(UnsupportedModelError):
    """A layer without a kernel (Flatten, pooling, BatchNormalization) asked for one."""


def listed(names, limit: int = 40) -> str:
    """``names`` for an error message: comma-separated, the first ``limit`` and "…" after them."""
    names = list(names)
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


class StoppedError(CnnvizError):
    """Long work stopped on request (a progress callback returned True); nothing is wrong."""
