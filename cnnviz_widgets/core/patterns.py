"""Filter patterns by gradient ascent in input space ("Deep Learning with Python" 5.4).

For filter k of a layer, start from gray noise and repeatedly step the image along
the gradient of the filter's mean activation, the gradient divided by its RMS:

    image = gray noise                       # S1: random * 20 + 128
    for step in range(steps):
        loss = mean(activation(image)[..., k])
        grad = d loss / d image
        image += step_size * grad / (sqrt(mean(grad ** 2)) + 1e-5)
    pattern = deprocess(image)               # centre, / std, * 0.1 + 0.5, clip, * 255

Many filters are optimised as ONE batch (image i ascends filter i) through a
compiled step on the model truncated after the layer; batches are sized to stay
within a memory budget. Everything scales with ``value_range``: the tutorial's
numbers are for pixels in 0..255.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import keras
import numpy as np
import tensorflow as tf

from . import checks
from .errors import InputError, InputTypeError, UnsupportedModelError
from .graph import LayerGraph, function_key
from .inputs import required_image_shape
from .internals import run_through_graph

BYTES_PER_ACTIVATION = 4 * 3  # float32 forward value, its gradient, and workspace
# What the arguments of a search are, for the messages of core.checks (the widgets check with them too).
STEPS_MEANING = "the number of gradient ascent steps"
SEED_MEANING = "the seed of the gray-noise start images"
STEP_SIZE_MEANING = "the length of one ascent step in pixel values (None: value range / 255)"
MEMORY_BUDGET_MEANING = "the memory in MB that one batch of filters may use"
PREPROCESS_MEANING = "differentiable, from pixels to what the model eats"
DEFAULT_SIZE = 64
MAX_SIZE = 4096  # the search for the smallest size that a layer takes stops here


def _checked_size(size) -> tuple | None:
    """``size`` (None, a side, or (height, width)) as None or a (height, width) tuple of ints >= 1."""
    if size is None:
        return None
    sides = (size, size) if np.ndim(size) == 0 else tuple(np.asarray(size, dtype=object).tolist())
    pixels = [isinstance(side, (int, np.integer)) and not isinstance(side, bool) and side >= 1 for side in sides]
    if len(sides) != 2 or not all(pixels):
        raise InputError(
            f"size must be a number of pixels >= 1, a (height, width) pair of them, or None for "
            f"the model's own size; got {size!r}."
        )
    return (int(sides[0]), int(sides[1]))


@dataclass
class AscentResult:
    """Gradient ascent for ``filters`` (possibly cut short by ``should_stop``)."""

    filters: np.ndarray  # (F,) filter indices
    images: np.ndarray  # (F, H, W, C) float32, the optimised images
    start_loss: np.ndarray  # (F,) the target filter's mean activation at the start
    final_loss: np.ndarray  # (F,) ... after the last step

    @property
    def patterns(self) -> np.ndarray:
        return deprocess(self.images)


def _joined(results: list[AscentResult]) -> AscentResult:
    """The batches' results as one, concatenated once: joining after every batch copies quadratically."""
    return AscentResult(*(np.concatenate([getattr(r, f.name) for r in results]) for f in fields(AscentResult)))


def deprocess(images: np.ndarray) -> np.ndarray:
    """S1's display transform, per image: centre, unit std, * 0.1 + 0.5, clip, uint8."""
    axes = tuple(range(1, images.ndim))
    centred = images - images.mean(axis=axes, keepdims=True)
    scaled = centred / (centred.std(axis=axes, keepdims=True) + 1e-5) * 0.1 + 0.5
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


class PatternSearch:
    """Batched, compiled gradient ascent for the filters of one layer."""

    def __init__(self, model, layer: str, *, size=None, preprocess=None):
        self.graph = LayerGraph.of(model)
        info = self.graph.info(layer)
        if len(info.output_shape) < 2:
            raise UnsupportedModelError(f"Layer '{layer}' has no channels to maximise.")
        self.layer = layer
        self.num_filters = int(info.output_shape[-1])
        self._truncated = self.graph.model_for([layer])
        self.image_shape = self._image_shape(_checked_size(size))
        # What the model takes: the image itself, or what a Reshape makes an image (image_shape).
        model_input = self.graph.inputs[0]
        self._input_shape = self.image_shape if len(model_input.shape) == 4 else tuple(model_input.shape[1:])
        self._activations_per_image = self._activation_count()
        self._preprocess = preprocess
        # No autograph: the step has no tensor-dependent Python control flow, and autograph
        # would wrap an error raised by preprocess in a StagingError.
        self._step = tf.function(self._ascent_step, reduce_retracing=True, autograph=False)

    @classmethod
    def shared(cls, model, layer: str, *, size=None, preprocess=None) -> "PatternSearch":
        """The model's one PatternSearch for this layer, image shape and preprocess, compiled
        once: ``size=None`` on a fixed-size model finds the search of that size."""
        graph = LayerGraph.of(model)
        size = _checked_size(size)
        preprocess_key = function_key(preprocess)

        def by_image_shape():
            fresh = cls(model, layer, size=size, preprocess=preprocess)
            return graph.cached(("patterns", layer, fresh.image_shape, preprocess_key), lambda: fresh)

        return graph.cached(("patterns", layer, size, preprocess_key), by_image_shape)

    def _image_shape(self, size) -> tuple:
        """(H, W, C) of the patterns: the model's own image size where it has one, else ``size``
        ((height, width); None: 64 square), checked to be large enough for the layer."""
        *fixed, channels = required_image_shape(
            self.graph,
            "Filter patterns need",
            "The kernels can still be shown: cw.filter_weights(model, layer), or FilterGallery's weights view.",
        )
        if size is not None and any(own is not None and own != want for own, want in zip(fixed, size)):
            own_size = "x".join("any" if own is None else str(own) for own in fixed)
            raise InputError(
                f"The model takes {own_size} images, so patterns must be that size; got "
                f"{size[0]}x{size[1]}. Pass size=None to use the model's size."
            )
        wanted = size or (DEFAULT_SIZE, DEFAULT_SIZE)
        height, width = (want if own is None else own for own, want in zip(fixed, wanted))
        # A model of fixed size was built, so only a free size can be too small.
        if None in fixed and not self._computes((height, width, channels)):
            smallest = self._smallest_side(channels)
            raise InputError(
                f"Patterns of {height}x{width} pixels are too small for layer '{self.layer}': its "
                f"convolutions and pools leave no output. The smallest size that works is "
                f"{smallest}; pass size={smallest} or more."
            )
        return (int(height), int(width), int(channels))

    def _output_sizes(self, shape) -> list[int]:
        """Values in each output the truncated model computes for one input of ``shape``
        (shape inference only, no run)."""
        counts = []

        def count(operation, *args, **kwargs):
            output = operation.compute_output_spec(*args, **kwargs)
            counts.extend(int(np.prod(t.shape)) for t in tf.nest.flatten(output))
            return output

        run_through_graph(self._truncated, keras.KerasTensor((1, *shape)), operation_fn=lambda op: op, call_fn=count)
        return counts

    def _computes(self, image_shape) -> bool:
        """Whether every layer up to this one has an output for images of ``image_shape``."""
        try:
            return min(self._output_sizes(image_shape)) > 0
        except ValueError:  # Keras' shape inference refuses a negative output size
            return False

    def _smallest_side(self, channels) -> int:
        """The smallest square image side this layer has an output for (sizes that work are
        all those above it: a larger image never shrinks a layer's output)."""
        high = 1
        while not self._computes((high, high, channels)):
            high *= 2
            if high > MAX_SIZE:
                raise UnsupportedModelError(
                    f"Layer '{self.layer}' has no output for any image up to {MAX_SIZE} pixels, so it has no patterns."
                )
        low = high // 2  # fails (or is 0)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self._computes((middle, middle, channels)) else (middle, high)
        return high

    def _ascent_step(self, images, filters, step_size):
        with tf.GradientTape() as tape:
            tape.watch(images)
            model_input = self._model_input(tf.reshape(images, (-1, *self._input_shape)))
            activation = tf.cast(self._truncated(model_input, training=False), tf.float32)
            flat = tf.reshape(activation, (tf.shape(activation)[0], -1, self.num_filters))
            loss = tf.reduce_mean(tf.gather(flat, filters, axis=2, batch_dims=1), axis=1)
            # Images are independent in inference mode: one backward pass gives each
            # image the gradient of its own filter's loss.
            total = tf.reduce_sum(loss)
        gradients = tape.gradient(total, images)
        rms = tf.sqrt(tf.reduce_mean(tf.square(gradients), axis=(1, 2, 3), keepdims=True))
        return images + step_size * gradients / (rms + 1e-5), loss

    def _model_input(self, images):
        if self._preprocess is None:
            return images
        try:
            return self._preprocess(images)
        except Exception as error:
            raise InputError(
                f"preprocess raised {type(error).__name__}: {error}. Filter patterns call it "
                f"inside the compiled ascent step on a float32 tf.Tensor batch of shape "
                f"{tuple(images.shape)}, so it must use differentiable TensorFlow or Keras ops "
                "(such as keras.applications.vgg16.preprocess_input), not numpy."
            ) from error

    def batch_size(self, memory_budget_mb: float) -> int:
        """Images per batch so that forward and backward activations fit the budget."""
        per_image = self._activations_per_image * BYTES_PER_ACTIVATION
        return max(1, int(memory_budget_mb * 2**20 // max(per_image, 1)))

    def _activation_count(self) -> int:
        """Values that the truncated model computes for one image (shape inference only)."""
        return sum(self._output_sizes(self._input_shape)) + int(np.prod(self._input_shape))

    def run(
        self,
        filters,
        *,
        steps: int = 40,
        step_size: float | None = None,
        value_range=(0.0, 255.0),
        seed: int = 0,
        memory_budget_mb: float = 512,
        on_batch=None,
        should_stop=None,
    ) -> AscentResult:
        """Ascend every filter in ``filters``; see :func:`filter_patterns`.

        ``on_batch(done, total, batch_result)`` is called after each batch with that
        batch's filters only;
        ``should_stop()`` is checked before each step, and a stop keeps the filters
        of the batches already finished.
        """
        filters = self._checked_filters(filters)
        steps = checks.count("steps", steps, STEPS_MEANING)
        low, high = checks.value_range("value_range", value_range)
        seed = checks.count("seed", seed, SEED_MEANING)
        span = high - low
        step_size = span / 255.0 if step_size is None else checks.positive_number("step_size", step_size, STEP_SIZE_MEANING)
        batch = self.batch_size(checks.positive_number("memory_budget_mb", memory_budget_mb, MEMORY_BUDGET_MEANING))
        batches = [AscentResult(filters[:0], np.zeros((0, *self.image_shape), np.float32), np.zeros(0), np.zeros(0))]
        for start in range(0, len(filters), batch):
            chunk = filters[start : start + batch]
            images = tf.constant(self.gray_noise(chunk, seed, low, span))
            chunk_ids = tf.constant(chunk, tf.int32)
            start_loss = None
            for _ in range(steps):
                if should_stop is not None and should_stop():
                    return _joined(batches)
                images, loss = self._step(images, chunk_ids, tf.constant(step_size))
                start_loss = loss.numpy() if start_loss is None else start_loss
            final_loss = self._loss(images, chunk_ids)
            start_loss = final_loss if start_loss is None else start_loss
            images = images.numpy()
            self._check_finite(chunk, images, final_loss)
            batches.append(AscentResult(chunk, images, start_loss, final_loss))
            if on_batch is not None:
                on_batch(start + len(chunk), len(filters), batches[-1])
        return _joined(batches)

    def _check_finite(self, filters, images, loss):
        """A NaN pattern would be drawn black as if it were one; say where the NaN comes from instead."""
        bad = ~np.isfinite(images).all(axis=(1, 2, 3)) | ~np.isfinite(loss)
        if bad.any():
            raise UnsupportedModelError(
                f"Gradient ascent on filter(s) {', '.join(map(str, filters[bad][:10]))} of layer "
                f"'{self.layer}' reached NaN or infinity: the model's output at this layer, or "
                "its gradient, is not finite for these images. Check value_range and preprocess, "
                "and the weights of this layer and the layers before it."
            )

    def _loss(self, images, filters) -> np.ndarray:
        _, loss = self._step(images, filters, tf.constant(0.0))
        return loss.numpy()

    def _checked_filters(self, filters) -> np.ndarray:
        try:
            filters = np.asarray([filters] if np.isscalar(filters) else list(filters))
        except TypeError:
            raise InputTypeError(f"filters must be filter indices, e.g. range(16) or [0, 3]; got {filters!r}.") from None
        if filters.ndim != 1:
            raise InputError(f"filters must be a flat list of filter indices, e.g. [0, 3]; got shape {filters.shape}.")
        if filters.size == 0:
            raise InputError("filters is empty; pass filter indices, e.g. range(16).")
        if filters.dtype.kind not in "iu":
            raise InputError(f"filters must be integer indices; got {filters.dtype}.")
        why = f"layer '{self.layer}' has {self.num_filters} filters"
        for filter_index in filters.tolist():
            checks.index("Filter", filter_index, self.num_filters, why, problem="does not exist")
        return filters.astype(np.int64)

    def gray_noise(self, filters, seed: int = 0, low: float = 0.0, span: float = 255.0) -> np.ndarray:
        """S1's start images, ``random * 20 + 128`` on 0..255 (scaled to ``low``, ``low + span``),
        the same per (seed, filter) whatever the batch."""
        noise = [np.random.default_rng([seed, int(f)]).random(self.image_shape) for f in filters]
        return (low + span * (np.stack(noise) * 20 + 128) / 255).astype(np.float32)


def filter_patterns(
    model,
    layer: str,
    filters,
    size=DEFAULT_SIZE,
    steps: int = 40,
    *,
    step_size: float | None = None,
    value_range=(0.0, 255.0),
    preprocess=None,
    seed: int = 0,
    memory_budget_mb: float = 512,
) -> np.ndarray:
    """Input patterns that maximise each filter, uint8 (len(filters), H, W, C) images.

    ``value_range`` is the pixel range the model's inputs live in (0..255 as in the
    tutorial, 0..1 for models trained on scaled images); ``preprocess`` (a
    differentiable TF function such as ``keras.applications.vgg16.preprocess_input``)
    maps those pixels to what the model eats. ``size`` is a side in pixels or
    (height, width). Models with a fixed input size use it when ``size=None``
    (``size`` must otherwise agree with it); a model whose input a ``Reshape`` makes
    an image (``Input((28, 28))`` then ``Reshape((28, 28, 1))``) gets patterns in
    that image shape.
    """
    checks.function_or_none("preprocess", preprocess, PREPROCESS_MEANING)
    LayerGraph.of(model).info(layer)  # refuses an unknown layer before it is a cache key (a list is unhashable)
    search = PatternSearch.shared(model, layer, size=size, preprocess=preprocess)
    result = search.run(
        filters, steps=steps, step_size=step_size, value_range=value_range, seed=seed, memory_budget_mb=memory_budget_mb
    )
    return result.patterns
