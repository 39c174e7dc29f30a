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

from .errors import InputError, UnsupportedModelError
from .graph import LayerGraph, function_key

BYTES_PER_ACTIVATION = 4 * 3  # float32 forward value, its gradient, and workspace


@dataclass
class AscentResult:
    """Gradient ascent for ``filters`` (possibly cut short by ``should_stop``)."""

    filters: np.ndarray  # (F,) filter indices
    images: np.ndarray  # (F, size, size, C) float32, the optimised inputs
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

    def __init__(self, model, layer: str, *, size: int | None = None, preprocess=None):
        self.graph = LayerGraph.of(model)
        info = self.graph.info(layer)
        if len(info.output_shape) < 2:
            raise UnsupportedModelError(f"Layer '{layer}' has no channels to maximise.")
        self.layer = layer
        self.num_filters = int(info.output_shape[-1])
        self.image_shape = self._image_shape(size)
        self._truncated = self.graph.model_for([layer])
        self._activations_per_image = self._activation_count()
        self._preprocess = preprocess
        # No autograph: the step has no tensor-dependent Python control flow, and autograph
        # would wrap an error raised by preprocess in a StagingError.
        self._step = tf.function(self._ascent_step, reduce_retracing=True, autograph=False)

    @classmethod
    def shared(cls, model, layer: str, *, size: int | None = None, preprocess=None) -> "PatternSearch":
        """The model's one PatternSearch for this layer, image shape and preprocess, compiled
        once: ``size=None`` on a fixed-size model finds the search of that size."""
        graph = LayerGraph.of(model)
        preprocess_key = function_key(preprocess)

        def by_image_shape():
            fresh = cls(model, layer, size=size, preprocess=preprocess)
            return graph.cached(("patterns", layer, fresh.image_shape, preprocess_key), lambda: fresh)

        return graph.cached(("patterns", layer, size, preprocess_key), by_image_shape)

    def _image_shape(self, size):
        if len(self.graph.inputs) != 1 or len(self.graph.inputs[0].shape) != 4:
            shapes = ", ".join(str(tuple(tensor.shape)) for tensor in self.graph.inputs)
            raise UnsupportedModelError(
                "Filter patterns need a model with one image input (batch, height, "
                f"width, channels); this one takes {shapes}. The kernels can still be "
                "shown: cw.filter_weights(model, layer), or FilterGallery's weights view."
            )
        _, height, width, channels = self.graph.inputs[0].shape
        fixed = (height, width) if height is not None and width is not None else None
        if size is None:
            size = fixed[0] if fixed and fixed[0] == fixed[1] else 64
        if fixed and (height, width) != (size, size):
            raise InputError(
                f"The model takes {height}x{width} images, so patterns must be that size; "
                f"got size={size}. Pass size=None to use the model's size."
            )
        return (int(size), int(size), int(channels))

    def _ascent_step(self, images, filters, step_size):
        with tf.GradientTape() as tape:
            tape.watch(images)
            activation = tf.cast(self._truncated(self._model_input(images), training=False), tf.float32)
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
        shape = (1, *self.image_shape)
        counts = []

        def count(operation, *args, **kwargs):
            output = operation.compute_output_spec(*args, **kwargs)
            counts.extend(int(np.prod(t.shape)) for t in tf.nest.flatten(output))
            return output

        self._truncated._run_through_graph(keras.KerasTensor(shape), operation_fn=lambda op: op, call_fn=count)
        return sum(counts) + int(np.prod(shape))

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
        if steps < 0:
            raise InputError(f"steps is the number of gradient ascent steps and must be >= 0, got {steps}.")
        low, high = (float(v) for v in value_range)
        span = high - low
        step_size = span / 255.0 if step_size is None else float(step_size)
        batch = self.batch_size(memory_budget_mb)
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
        filters = np.atleast_1d(np.asarray(list(filters) if not np.isscalar(filters) else [filters]))
        if filters.size == 0:
            raise InputError("filters is empty; pass filter indices, e.g. range(16).")
        if filters.dtype.kind not in "iu":
            raise InputError(f"filters must be integer indices; got {filters.dtype}.")
        bad = filters[(filters < 0) | (filters >= self.num_filters)]
        if bad.size:
            raise InputError(
                f"Filter {int(bad[0])} does not exist: layer '{self.layer}' has "
                f"{self.num_filters} filters, so use 0..{self.num_filters - 1}."
            )
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
    size: int | None = 64,
    steps: int = 40,
    *,
    step_size: float | None = None,
    value_range=(0.0, 255.0),
    preprocess=None,
    seed: int = 0,
    memory_budget_mb: float = 512,
) -> np.ndarray:
    """Input patterns that maximise each filter, uint8 (len(filters), size, size, C).

    ``value_range`` is the pixel range the model's inputs live in (0..255 as in the
    tutorial, 0..1 for models trained on scaled images); ``preprocess`` (a
    differentiable TF function such as ``keras.applications.vgg16.preprocess_input``)
    maps those pixels to what the model eats. Models with a fixed input size use it
    whatever ``size`` says only when ``size=None``; otherwise the sizes must agree.
    """
    search = PatternSearch.shared(model, layer, size=size, preprocess=preprocess)
    result = search.run(
        filters, steps=steps, step_size=step_size, value_range=value_range, seed=seed, memory_budget_mb=memory_budget_mb
    )
    return result.patterns
