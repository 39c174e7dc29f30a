"""Check and convert user images into what a model's graph takes.

Documented conversions (everything else is a clear error):
- one image without a batch axis, e.g. (H, W, C), becomes a batch of one;
- a batch of grayscale images without a channel axis, (N, H, W), gets one, and one
  gray image (H, W) gets both; an array with one axis fewer than the model's input
  is one image when its last axis is a channel count (the model's, or 1, 3 or 4:
  gray, RGB, RGBA), else a gray batch;
- any integer or float dtype is cast to float32; values are NOT rescaled (a uint8
  image stays 0..255, so pass what the model was trained on).

What is an image is decided by the layers, not only by the input's rank: see
:func:`image_shape`.
"""

from __future__ import annotations

import keras
import numpy as np

from . import checks
from .errors import CnnvizError, InputError, InputTypeError, UnsupportedModelError


def prepare_inputs(graph, x) -> list[np.ndarray]:
    """``x`` (one array, or a list with one array per model input) as float32 arrays."""
    specs = graph.inputs
    if len(specs) > 1:
        if not isinstance(x, (list, tuple)) or len(x) != len(specs):
            raise InputError(
                f"The model has {len(specs)} inputs, so pass a list of {len(specs)} "
                f"arrays in this order: {', '.join(_shape_text(s.shape) for s in specs)}."
            )
        arrays = [_prepare_one(a, s.shape, f"input {i}") for i, (a, s) in enumerate(zip(x, specs))]
        counts = {len(a) for a in arrays}
        if len(counts) > 1:
            raise InputError(f"All inputs must hold the same number of images; got {sorted(counts)}.")
        return arrays
    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    return [_prepare_one(x, specs[0].shape, "images")]


def raw_and_model_inputs(graph, images, preprocess=None) -> tuple[np.ndarray, np.ndarray]:
    """(the raw images as a batch, what the model takes for them) for a one-input model.

    ``images`` are what the user looks at: a batch (N, ...) or one image without a
    batch axis. ``preprocess``, if given, is called ONCE with a copy of the whole
    batch (keras' ``preprocess_input`` edits float arrays in place, which would alter
    the images shown) and must return one model input per raw image.
    """
    checks.function_or_none("preprocess", preprocess, "from a batch of raw images to what the model takes")
    raw = np.array(images)
    batch_axis_missing, _ = _missing_axes(raw.shape, tuple(graph.inputs[0].shape))
    if preprocess is None:
        return (raw[None] if batch_axis_missing else raw), prepare_inputs(graph, raw)[0]
    if batch_axis_missing:
        raw = raw[None]
    try:
        batch = preprocess(raw.copy())
    except Exception as error:
        raise InputError(
            f"preprocess raised {type(error).__name__}: {error}. It is called once with "
            f"the whole batch of raw images, a numpy array of shape {raw.shape} and dtype "
            f"{raw.dtype}, and must return the batch the model takes."
        ) from error
    try:
        inputs = prepare_inputs(graph, batch)[0]
    except CnnvizError as error:
        raise type(error)(f"The batch returned by preprocess does not fit the model: {error}") from error
    if len(inputs) != len(raw):
        raise InputError(
            f"preprocess returned {len(inputs)} images for {len(raw)} raw images; it must "
            "return one preprocessed image per raw image, in the same order."
        )
    return raw, inputs


def image_shape(graph) -> tuple | None:
    """(H, W, C): the one input of ``graph`` as the images its layers see, or None if it is none.

    A 4-D input is images. Any other input is images where a ``Reshape`` makes it a
    4-D tensor before anything else mixes its values: the keras.io MNIST model
    takes ``Input((28, 28))`` and reshapes it to ``(28, 28, 1)``. Layers that keep
    the shape (``Rescaling``, casts) may come before the ``Reshape``. Such an
    input reshaped row-major to (H, W, C) is the image, so pictures, heatmaps and
    patterns are drawn in that shape.
    """
    return graph.cached(("image_shape",), lambda: _image_shape(graph))


def required_image_shape(graph, needs: str, instead: str) -> tuple:
    """:func:`image_shape`, or an error saying what ``needs`` one image input and what to do ``instead``."""
    shape = image_shape(graph)
    if shape is None:
        shapes = ", ".join(str(tuple(tensor.shape)) for tensor in graph.inputs)
        raise UnsupportedModelError(
            f"{needs} a model with one image input: a (batch, height, width, channels) input, "
            f"or one that a Reshape makes an image; this one takes {shapes}. {instead}"
        )
    return shape


def _image_shape(graph) -> tuple | None:
    if len(graph.inputs) != 1:
        return None
    tensor = graph.inputs[0]
    while len(tensor.shape) != 4:
        consumers = [info for info in graph.layers.values() if any(t is tensor for t in info.inputs)]
        if len(consumers) != 1 or not isinstance(consumers[0].output, keras.KerasTensor):
            return None
        layer, output = consumers[0].layer, consumers[0].output
        if not (isinstance(layer, (keras.layers.Reshape, keras.layers.Flatten)) or output.shape == tensor.shape):
            return None
        tensor = output
    return tuple(tensor.shape[1:])


def as_images(graph, raw: np.ndarray) -> np.ndarray:
    """A batch of raw inputs in the shape of the images the model sees (unchanged when it has none)."""
    shape = image_shape(graph)
    if shape is None or None in shape or raw.shape[1:] == shape or raw[0].size != np.prod(shape):
        return raw
    return raw.reshape(len(raw), *shape)


def _prepare_one(x, expected, what) -> np.ndarray:
    try:
        array = np.asarray(x)
    except Exception as error:  # tf tensors, lists of arrays, PIL images all convert
        raise InputTypeError(f"Could not read {what} as an array: {error}") from error
    if array.dtype == bool or array.dtype.kind not in "iuf":
        raise InputTypeError(
            f"{what} have dtype {array.dtype}; pass numbers (uint8 or float pixels)."
        )
    expected = tuple(expected)
    rank = len(expected)
    given = array.shape
    batch_axis_missing, channel_axis_missing = _missing_axes(given, expected)
    if batch_axis_missing:
        array = array[None]
    if channel_axis_missing:
        array = array[..., None]
    if array.ndim != rank:
        raise InputError(
            f"{what} have shape {array.shape}, but the model takes a batch shaped "
            f"{_shape_text(expected)}. Give a batch (N, ...) of images; add a batch "
            "axis to one image with x[None]."
        )
    if array.size == 0:
        raise InputError(f"{what} are empty (shape {given}); pass at least one image.")
    if expected[-1] is not None and array.shape[-1] != expected[-1]:
        raise InputError(
            f"{what} have {array.shape[-1]} channel(s), but the model takes "
            f"{expected[-1]}. {_channel_fix(array.shape[-1], expected[-1], channel_axis_missing)}"
        )
    if not _fits(array.shape[1:], expected[1:]):
        size = tuple(expected[1:-1])
        raise InputError(
            f"{what} have shape {given}, but the model takes "
            f"{_shape_text(expected)}. Resize them first, e.g. "
            f"tf.image.resize(x, {size})."
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = ~np.isfinite(array)
        raise InputError(
            f"{what} contain {int(bad.sum())} NaN or infinite value(s) (first in image "
            f"{int(np.argwhere(bad)[0][0])}); replace them, e.g. np.nan_to_num(x)."
        )
    return array


def _missing_axes(shape, expected) -> tuple[bool, bool]:
    """Whether an array of ``shape`` lacks (the batch axis, the channel axis) of model input ``expected``."""
    rank = len(expected)
    if len(shape) == rank - 1:
        one_image = _fits(shape, expected[1:]) or shape[-1] in (1, 3, 4, expected[-1])
        return one_image, not one_image
    if len(shape) == rank - 2 and rank >= 3:  # one gray image (H, W), or one signal (steps,)
        return True, True
    return False, False


def _fits(shape, expected) -> bool:
    return len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))


def _shape_text(shape) -> str:
    return "(" + ", ".join("N" if i == 0 else ("any" if d is None else str(d)) for i, d in enumerate(shape)) + ")"


def _channel_fix(have, want, channel_axis_missing=False) -> str:
    if have == 1 and want == 3:
        gray = "x[..., None]" if channel_axis_missing else "x"
        return f"Repeat the gray channel: np.repeat({gray}, 3, axis=-1)."
    if have == 3 and want == 1:
        return "Convert to gray first: x.mean(axis=-1, keepdims=True)."
    if have == 4 and want == 3:
        return "Drop the alpha channel: x[..., :3]."
    return "Convert the images to the model's channel count."
