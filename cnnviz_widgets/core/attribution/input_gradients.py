"""What every pixel (input-gradient) method shares: the class scores' gradients with respect to the input, batched.

A pixel method explains a class score by its gradient with respect to the input image,
dS/dx (N, K, *spatial, channels) for K classes of N images, taken at the image itself
(saliency), averaged over noisy copies (SmoothGrad) or along a path from a baseline
(Integrated Gradients). A method is a subclass that gives its per-channel attribution:
  attributions = method.channel_attributions(images, classes)   (N, K, *spatial, channels)
  raw          = sum over channels of attributions               (signed, see each method)
  heatmap      = method.heat(attributions), divided by its peak  (in [0, 1])
at the input's own size: a pixel method has no layer and nothing to resize.

Each image is one row of a batch and every method is a mean of gradients over M
variants of each image (M = 1 for saliency): :meth:`InputGradients.mean_gradients`
runs the M × N rows in batches of ``batch_size`` (by default what fits a memory budget)
and gives each row the gradients of its K classes from ONE batched Jacobian, the K
backward passes vectorised into one as in the CAM base (``base.py``), not K tapes.

The class score is the class logit from ``core/heads.py`` (the probability with
``probabilities=True``). A map whose gradients are all zero (every ReLU on the way
closed) is returned as zeros and flagged ``flat``, never divided by zero.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .. import checks
from ..errors import InputError, StoppedError, UnsupportedModelError
from ..graph import LayerGraph, compiled_method
from ..inputs import image_shape, prepare_inputs
from .base import _MATMUL_GRADIENT, class_matrix

# A batch's forward and backward activations for one class stay under this (K classes: K backward passes).
MEMORY_BUDGET_MB = 512
BYTES_PER_VALUE = 4


@dataclass
class PixelResult:
    """A pixel attribution of K classes for each of N images, at the input's size."""

    heatmaps: np.ndarray  # (N, K, *spatial) in [0, 1]: the method's heat divided by its peak
    raw: np.ndarray  # (N, K, *spatial) the signed attribution summed over the input's channels
    attributions: np.ndarray  # (N, K, *spatial, channels) the method's per-channel attribution
    classes: np.ndarray  # (N, K)
    flat: np.ndarray  # (N, K) bool: no gradient at all reached the input, so the heatmap is zeros


class InputGradients:
    """A pixel method for one model and output, reusable across images and classes.

    Subclasses give ``name``, :meth:`channel_attributions` and, if their heat is not
    the largest |attribution| over a pixel's channels, :meth:`heat`; ``gradient_overrides``
    changes how ops pass gradients back.
    """

    name: str
    uses_layer = False  # it maps the input pixels: a viewer's layer menu is off for it
    gradient_overrides: dict[str, str] = {}  # op type -> registered gradient, for the forward pass (Guided Backprop)
    progress = None  # set on a bound copy for one call: progress(done, total) per batch of passes; True stops

    def __init__(self, model, layer: str | None = None, *, probabilities: bool = False, output: int | str = 0, batch_size: int | None = None):
        _check_no_layer(self.name, layer)
        self.graph = LayerGraph.of(model)
        self.head = self.graph.head(output)
        if len(self.graph.inputs) != 1:
            raise UnsupportedModelError(
                f"'{self.name}' maps the gradient of a class score over one input image, but this model "
                f"has {len(self.graph.inputs)} inputs; use a CAM method such as method='gradcam', which maps a layer."
            )
        shape = image_shape(self.graph) or tuple(self.graph.inputs[0].shape[1:])
        if len(shape) < 2:
            raise UnsupportedModelError(
                f"'{self.name}' maps an image or a sequence, but this model's input has shape "
                f"{tuple(self.graph.inputs[0].shape)}, with no spatial axis to map; its layers' outputs "
                "can still be shown with activations()."
            )
        self.head_scores = self.head.probabilities if probabilities else self.head.logits
        self._model = self.graph.cached(
            ("pixel_scores", self.head.index, probabilities), lambda: self.graph._model(self.head_scores)
        )
        self.batch_size = self._rows_per_batch() if batch_size is None else checks.count(
            "batch_size", batch_size, "how many images (and noisy or path copies) go through the model at once", minimum=1
        )
        # Saliency, SmoothGrad and Integrated Gradients of one model and output run the same function: compiled once.
        self._gradients = self.graph.cached(
            ("pixel_gradients", self.head.index, probabilities, tuple(sorted(self.gradient_overrides.items()))),
            lambda: compiled_method(self._class_gradients, reduce_retracing=True),
        )

    @classmethod
    def shared(cls, model, layer: str | None = None, *, output: int | str = 0, **options):
        """The model's one instance for these settings, compiled once.

        ``options`` are the constructor's keywords, part of the cache key, so hashable.
        """
        _check_no_layer(cls.name, layer)
        graph = LayerGraph.of(model)
        output_index = graph.output_index(output)
        settings = inspect.signature(cls).bind(model, output=output_index, **options)
        settings.apply_defaults()  # an option left out and one given as its default are one instance
        return graph.cached(
            ("attribution", cls, output_index, tuple(sorted(settings.kwargs.items()))),
            lambda: cls(model, output=output_index, **options),
        )

    def bound(self, **values):
        """A copy that shares the compiled functions, with per-call values (arrays) set as attributes."""
        instance = copy.copy(self)
        instance.__dict__.update(values)
        return instance

    def _rows_per_batch(self) -> int:
        values = sum(int(np.prod(info.output.shape[1:])) for info in self.graph.layers.values() if _static(info.output))
        return max(1, int(MEMORY_BUDGET_MB * 2**20 // (2 * BYTES_PER_VALUE * max(values, 1))))

    # -- the gradients ----------------------------------------------------------------

    def _class_gradients(self, images, classes):
        """(B, K, *input) gradients of each row's K selected scores, and the (B, classes) scores."""
        override = dict(self.gradient_overrides)
        if classes.shape.num_elements() != 1:
            override["MatMul"] = _MATMUL_GRADIENT
        with tf.compat.v1.get_default_graph().gradient_override_map(override):
            scores = tf.cast(self._model(images, training=False), tf.float32)
        selected = tf.gather(scores, classes, axis=1, batch_dims=1)  # (B, K)
        if classes.shape[1] == 1:  # one class: a plain backward pass, which compiles much faster than its pfor
            return tf.gradients(selected, images)[0][:, None], scores

        def class_gradients(one_hot):  # each row's own, as rows are independent at inference
            return tf.gradients(selected, images, grad_ys=tf.broadcast_to(one_hot, tf.shape(selected)))[0]

        gradients = tf.vectorized_map(class_gradients, tf.eye(tf.shape(selected)[1]))  # (K, B, *input)
        rank = len(images.shape)
        return tf.transpose(gradients, [1, 0, *range(2, rank + 1)]), scores

    def mean_gradients(self, variant, count: int, classes: np.ndarray) -> np.ndarray:
        """(N, K, *input) class gradients averaged over ``count`` variants of each of N images.

        ``variant(m)`` gives the m-th variant of all N images, (N, *input); it is called once
        for each m, in order. ``classes`` is (N, K). The count × N rows go through the
        model ``batch_size`` at a time, whatever image or variant they come from.
        """
        total = None
        rows = ((row, image) for m in range(count) for image, row in enumerate(variant(m)))
        batches = math.ceil(count * len(classes) / self.batch_size)
        for done in range(batches):
            if self.progress is not None and self.progress(done, batches):
                raise StoppedError(f"'{self.name}' stopped after {done} of {batches} batches of passes.")
            batch = list(itertools.islice(rows, self.batch_size))
            owners = np.array([image for _, image in batch])
            inputs = np.stack([row for row, _ in batch]).astype(np.float32)
            gradients, scores = self._gradients(tf.constant(inputs), tf.constant(classes[owners]))
            if not np.all(np.isfinite(scores.numpy())):
                raise UnsupportedModelError(
                    f"The model's class scores contain NaN or infinity for these images, so '{self.name}' "
                    "is undefined; check the images' scale and the preprocessing."
                )
            gradients = gradients.numpy()
            if total is None:
                total = np.zeros((len(classes), *gradients.shape[1:]), np.float64)
            for image in np.unique(owners):  # a batch may hold several variants of one image
                total[image] += gradients[owners == image].sum(axis=0)
        if self.progress is not None:
            self.progress(batches, batches)
        return total / count

    # -- what a method gives ------------------------------------------------------------

    def channel_attributions(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N, K, *input) the method's signed attribution of every input value, before summing channels."""
        raise NotImplementedError

    def heat(self, attributions: np.ndarray) -> np.ndarray:
        """(N, K, *spatial) how much each position matters, either way: the largest |attribution| over its channels."""
        return np.abs(attributions).max(axis=-1)

    # -- the result -----------------------------------------------------------------------

    def explain(self, x, classes) -> PixelResult:
        """The attributions of ``classes`` (an int, a list of K, or (N, K)) for images ``x``."""
        return self._explain_prepared(prepare_inputs(self.graph, x), classes)

    def _explain_prepared(self, inputs, classes) -> PixelResult:
        images = inputs[0]
        classes = class_matrix(self.head, classes, len(images))
        attributions = self.channel_attributions(images, classes)
        # A Reshape's flat input as the image it makes, channels last.
        attributions = attributions.reshape(*attributions.shape[:2], *self._image_shape(images))
        return pixel_result(attributions, classes, self.heat)

    def _image_shape(self, images) -> tuple:
        shape = image_shape(self.graph)
        return shape if shape is not None and None not in shape else images.shape[1:]


class ManyPassGradients(InputGradients):
    """A pixel method of many passes an image (SmoothGrad's samples, Integrated Gradients' steps): it
    reports ``progress(done, total)`` per batch and stops with StoppedError when that returns True,
    so a viewer runs it in the background with a Stop, as Score-CAM."""

    def _explain_prepared(self, inputs, classes, *, progress=None) -> PixelResult:
        return InputGradients._explain_prepared(self.bound(progress=progress), inputs, classes)


def pixel_result(attributions: np.ndarray, classes: np.ndarray, heat) -> PixelResult:
    """The :class:`PixelResult` of (N, K, *spatial, channels) ``attributions``; ``heat`` makes their (N, K, *spatial) heat."""
    attributions = attributions.astype(np.float32)
    heat = heat(attributions)
    peaks = heat.max(axis=tuple(range(2, heat.ndim)), keepdims=True)
    flat = peaks <= np.finfo(np.float32).tiny
    return PixelResult(
        heatmaps=np.where(flat, 0.0, heat / np.where(flat, 1.0, peaks)).astype(np.float32),
        raw=attributions.sum(axis=-1),
        attributions=attributions,
        classes=classes,
        flat=flat.reshape(flat.shape[:2]),
    )


def _static(tensor) -> bool:
    shape = getattr(tensor, "shape", None)
    return shape is not None and len(shape) >= 1 and all(d is not None for d in shape[1:])


def _check_no_layer(name: str, layer) -> None:
    if layer is not None:
        raise InputError(
            f"'{name}' is a pixel method: it maps the gradient with respect to the input image, not a layer, "
            f"so it takes no layer; pass layer=None (got {layer!r}), or use a CAM method such as "
            "method='gradcam' to explain a layer."
        )

