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

``style="lucid"`` ascends instead a Fourier-space image with decorrelated colour under
random transformations (Olah et al. 2017; see ``core/lucid.py``); batching, memory
budget, previews, progress and stop are the same for both styles.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, fields

import keras
import numpy as np
import tensorflow as tf

from . import checks, lucid
from .errors import InputError, InputTypeError, UnsupportedModelError
from .graph import LayerGraph, compiled_method, function_key
from .inputs import required_image_shape
from .internals import run_through_graph

BYTES_PER_ACTIVATION = 4 * 3  # float32 forward value, its gradient, and workspace
# What the arguments of a search are, for the messages of core.checks (the widgets check with them too).
STEPS_MEANING = "the number of gradient ascent steps"
SEED_MEANING = "the seed of the gray-noise start images"
STEP_SIZE_MEANING = (
    "the length of one ascent step in pixel values (None: value range / 255), or for style 'lucid' "
    "Adam's learning rate on the spectrum (None: 0.05)"
)
MEMORY_BUDGET_MEANING = "the memory in MB that one batch of filters may use"
PREPROCESS_MEANING = "differentiable, from pixels to what the model eats"
DIVERSITY_MEANING = "the weight of the penalty on Gram-matrix similarity between images of the same filter"
PREVIEW_EVERY_MEANING = "the number of ascent steps between two previews"
PREVIEW_SHARE_MEANING = "the largest share of a search's time that its previews may take"
PREVIEW_SHARE = 0.1  # previews are for watching the search, not for slowing it down
STYLES = ("tutorial", "lucid")
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
    # Where the images already lie in a pixel range (style "lucid"), shown linearly; else S1's deprocess.
    shown_range: tuple | None = None

    @property
    def patterns(self) -> np.ndarray:
        if self.shown_range is None:
            return deprocess(self.images)
        low, high = self.shown_range
        return (np.clip((self.images - low) / (high - low), 0.0, 1.0) * 255).round().astype(np.uint8)


def _joined(results: list[AscentResult]) -> AscentResult:
    """The batches' results as one, concatenated once: joining after every batch copies quadratically."""
    arrays = [np.concatenate([getattr(r, f.name) for r in results]) for f in fields(AscentResult)[:4]]
    return AscentResult(*arrays, shown_range=results[0].shown_range)


def checked_style(style) -> str:
    if style not in STYLES:
        raise InputError(
            f"style must be 'tutorial' (S1's gradient ascent on pixels) or 'lucid' (Fourier-space "
            f"image, decorrelated colour, random transformations); got {style!r}."
        )
    return style


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
        self._step = compiled_method(self._ascent_step, reduce_retracing=True, autograph=False)
        self._lucid_step = compiled_method(self._lucid_ascent_step, reduce_retracing=True, autograph=False)
        self._fourier = lucid.FourierImage(*self.image_shape)

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

    def _filter_loss(self, images, filters):
        """Each image's mean activation of its own filter, and the layer's activations."""
        model_input = self._model_input(tf.reshape(images, (-1, *self._input_shape)))
        activation = tf.cast(self._truncated(model_input, training=False), tf.float32)
        flat = tf.reshape(activation, (tf.shape(activation)[0], -1, self.num_filters))
        return tf.reduce_mean(tf.gather(flat, filters, axis=2, batch_dims=1), axis=1), activation

    def _ascent_step(self, images, filters, step_size):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss, _ = self._filter_loss(images, filters)
            # Images are independent in inference mode: one backward pass gives each
            # image the gradient of its own filter's loss.
            total = tf.reduce_sum(loss)
        gradients = tape.gradient(total, images)
        rms = tf.sqrt(tf.reduce_mean(tf.square(gradients), axis=(1, 2, 3), keepdims=True))
        return images + step_size * gradients / (rms + 1e-5), loss

    def _lucid_ascent_step(self, state, filters, transforms, same_filter, pixel_range, learning_rate, diversity):
        """One Adam step of the spectra in ``state`` (spectra, Adam's two moments, step count)."""
        spectra, first, second, count = state
        low, span = pixel_range
        with tf.GradientTape() as tape:
            tape.watch(spectra)
            pixels = low + span * self._fourier.decode(spectra)
            loss, activation = self._filter_loss(lucid.warp(pixels, transforms), filters)
            total = tf.reduce_sum(loss)
            if diversity is not None:  # a Python value: the step is traced without the Gram matrices
                total -= diversity * tf.reduce_sum(lucid.gram_similarity(activation, same_filter))
        gradients = tape.gradient(total, spectra)
        spectra, first, second = lucid.adam_ascent(spectra, gradients, first, second, count + 1, learning_rate)
        return (spectra, first, second, count + 1), loss

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
        style: str = "tutorial",
        diversity: float = 0.0,
        on_batch=None,
        on_preview=None,
        preview_every: int = 5,
        preview_share: float = PREVIEW_SHARE,
        should_stop=None,
    ) -> AscentResult:
        """Ascend every filter in ``filters``; see :func:`filter_patterns`.

        ``on_batch(done, total, batch_result)`` is called after each batch with that
        batch's filters only;
        ``on_preview(step, batch_result)`` every ``preview_every`` steps within a batch
        (not after its last, which on_batch reports) with the batch's images so far,
        unless the previews so far (their images and the call) took more than
        ``preview_share`` of the run's time: a due preview is then skipped (1: never);
        ``should_stop()`` is checked before each step, and a stop keeps the filters
        of the batches already finished. Previews do not change the result.
        """
        filters = self._checked_filters(filters)
        steps = checks.count("steps", steps, STEPS_MEANING)
        low, high = checks.value_range("value_range", value_range)
        seed = checks.count("seed", seed, SEED_MEANING)
        style = checked_style(style)
        # 0 is "off", which positive_number would refuse.
        diversity = 0.0 if diversity == 0 else checks.positive_number("diversity", diversity, DIVERSITY_MEANING)
        preview_every = checks.count("preview_every", preview_every, PREVIEW_EVERY_MEANING, minimum=1)
        throttle = PreviewThrottle(checks.positive_number("preview_share", preview_share, PREVIEW_SHARE_MEANING))
        if throttle.share > 1:
            raise InputError(f"preview_share is {PREVIEW_SHARE_MEANING} and must be at most 1, got {preview_share!r}.")
        span = high - low
        if step_size is not None:
            step_size = checks.positive_number("step_size", step_size, STEP_SIZE_MEANING)
        batch = self.batch_size(checks.positive_number("memory_budget_mb", memory_budget_mb, MEMORY_BUDGET_MEANING))
        shown_range = (low, high) if style == "lucid" else None
        empty = np.zeros((0, *self.image_shape), np.float32)
        batches = [AscentResult(filters[:0], empty, np.zeros(0), np.zeros(0), shown_range)]
        # The k-th time a filter is asked for gets its own start and transforms (for diversity).
        occurrences, asked = [], Counter()
        for filter_index in filters.tolist():
            occurrences.append(asked[filter_index])
            asked[filter_index] += 1
        for start in range(0, len(filters), batch):
            chunk = filters[start : start + batch]
            chunk_ids = tf.constant(chunk, tf.int32)
            if style == "lucid":
                seeds = [(seed, int(f), k) for f, k in zip(chunk, occurrences[start : start + batch])]
                ascent = _LucidAscent(self, chunk, seeds, steps, (low, span), step_size, diversity)
            else:
                ascent = _TutorialAscent(self, chunk, seed, (low, span), step_size)
            start_loss = ascent.start_loss
            for step in range(steps):
                if should_stop is not None and should_stop():
                    return _joined(batches)
                loss = ascent.step(step, chunk_ids)
                start_loss = loss.numpy() if start_loss is None else start_loss
                due = on_preview is not None and (step + 1) % preview_every == 0 and step + 1 < steps
                if due and throttle.allowed():
                    with throttle.timed():
                        so_far = AscentResult(chunk, ascent.pixels().numpy(), start_loss, loss.numpy(), shown_range)
                        on_preview(step + 1, so_far)
            pixels = ascent.pixels()
            final_loss = self._loss(pixels, chunk_ids)
            start_loss = final_loss if start_loss is None else start_loss
            images = pixels.numpy()
            self._check_finite(chunk, images, final_loss)
            batches.append(AscentResult(chunk, images, start_loss, final_loss, shown_range))
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
        # A zero step of the traced function: a forward-only one would be traced once per call.
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


class PreviewThrottle:
    """Whether a due preview is taken: only while the previews so far took at most ``share``
    of the time since the throttle was made (the first is always taken)."""

    def __init__(self, share: float, clock=time.perf_counter):
        self.share, self._clock = share, clock
        self._start, self._spent = clock(), 0.0

    def allowed(self) -> bool:
        return self._spent <= self.share * (self._clock() - self._start)

    @contextmanager
    def timed(self):
        """Count the time spent in the block as previewing."""
        start = self._clock()
        try:
            yield
        finally:
            self._spent += self._clock() - start


class _TutorialAscent:
    """S1's state: the pixels themselves, from gray noise, RMS-normalised gradient steps."""

    start_loss = None  # the first step's loss is the start's

    def __init__(self, search: PatternSearch, filters, seed: int, pixel_range, step_size):
        low, span = pixel_range
        self._search = search
        self._images = tf.constant(search.gray_noise(filters, seed, low, span))
        self._step_size = tf.constant(span / 255.0 if step_size is None else step_size)

    def step(self, _, filters):
        self._images, loss = self._search._step(self._images, filters, self._step_size)
        return loss

    def pixels(self):
        return self._images


class _LucidAscent:
    """Olah et al.'s state: spectra and Adam's moments, with this batch's random transforms."""

    def __init__(self, search: PatternSearch, filters, seeds, steps: int, pixel_range, step_size, diversity):
        self._search, self._pixel_range = search, tuple(tf.constant(float(v)) for v in pixel_range)
        spectra = tf.constant(search._fourier.start(seeds))
        zeros = tf.zeros_like(spectra)
        self._state = (spectra, zeros, zeros, tf.constant(0.0))
        self._transforms = lucid.random_transforms([(*s, 1) for s in seeds], steps, search.image_shape)
        same = np.equal.outer(filters, filters) & ~np.eye(len(filters), dtype=bool)
        self._same_filter = tf.constant(same, tf.float32)
        self._learning_rate = tf.constant(lucid.LEARNING_RATE if step_size is None else step_size)
        self._diversity = tf.constant(diversity) if diversity and same.any() else None
        self.start_loss = search._loss(self.pixels(), tf.constant(filters, tf.int32))

    def step(self, step: int, filters):
        self._state, loss = self._search._lucid_step(
            self._state,
            filters,
            tf.constant(self._transforms[:, step]),
            self._same_filter,
            self._pixel_range,
            self._learning_rate,
            self._diversity,
        )
        return loss

    def pixels(self):
        low, span = self._pixel_range
        return low + span * self._search._fourier.decode(self._state[0])


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
    style: str = "tutorial",
    diversity: float = 0.0,
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

    ``style="tutorial"`` is S1's ascent on pixels from gray noise (``step_size`` in
    pixel values, None: value range / 255); ``style="lucid"`` is Olah et al.'s feature
    visualisation (Fourier-space image, decorrelated colour, random jitter, scale and
    rotation at every step; ``step_size`` is Adam's learning rate, None: 0.05), and
    ``diversity`` > 0 pushes apart the images of a filter asked for more than once
    (``filters=[5] * 4``). Both are deterministic for a ``seed``.
    """
    checks.function_or_none("preprocess", preprocess, PREPROCESS_MEANING)
    checked_style(style)
    LayerGraph.of(model).info(layer)  # refuses an unknown layer before it is a cache key (a list is unhashable)
    search = PatternSearch.shared(model, layer, size=size, preprocess=preprocess)
    result = search.run(
        filters,
        steps=steps,
        step_size=step_size,
        value_range=value_range,
        seed=seed,
        memory_budget_mb=memory_budget_mb,
        style=style,
        diversity=diversity,
    )
    return result.patterns
