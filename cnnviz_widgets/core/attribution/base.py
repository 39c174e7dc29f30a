"""What every class activation map (CAM) method shares: one forward pass, the batched class gradients, the map's rules.

For K classes of N images and a layer with feature maps A (N, *spatial, C), a method
derives one map per image and class from A and the gradients of the class scores
dS/dA (N, K, *spatial, C):
  weights = method.channel_weights(A, dS/dA)                 (N, K, C)
  terms   = method.channel_terms(A, dS/dA, weights)          (N, K, *spatial, C), default w_k A_k
  map     = ReLU(sum over channels of terms), divided by its max
then resized to the input. So a CAM variant is one file with its formula, e.g.
  class HiResCam(GradCam):  # map = ReLU(sum_k dS/dA_k ⊙ A_k), elementwise
      def channel_terms(self, features, gradients, weights): return gradients * features[:, None]
and Grad-CAM++ overrides ``channel_weights`` with its second-order weights. A method
whose map needs no class gradients (Eigen-CAM, Score-CAM) sets ``uses_gradients = False``:
it skips the Jacobian and its formulas get ``gradients=None``; Score-CAM, whose weights
come from more forward passes, computes them itself and reuses the map's rules
(:meth:`ClassActivationMap._map_rules`) and the result (:meth:`ClassActivationMap._result`).

The class score is the class logit from ``core/heads.py`` (the probability with
``probabilities=True``). Several classes cost one forward pass: the feature map and
the scores come from one model over the flat graph, and the per-class gradients
from one batched Jacobian of the selected scores with respect to the feature map,
which only runs back through the layers after the feature map.

A map flat to float32 rounding (a black or constant image, a feature map that does
not vary) carries no information about where: it is returned as zeros and flagged
``flat``, rather than divided by its max into a full-range picture of rounding noise.
A map that varies but whose sums are negative (to rounding) everywhere is zeros by the
ReLU: flagged ``empty``, nothing in the layer speaks for the class.

``counterfactual=True`` gives the counterfactual map of the Grad-CAM paper (section
"Counterfactual Explanations"): the gradients negated before the method's formula, so
the map shows what speaks against the class (for Grad-CAM, weights_k = mean of -dS/dA_k).

The Jacobian's dense-head products run on oneDNN's matmul primitive rather than its
sgemm API, which on some CPUs takes a slow path for a few rows against a large
transposed kernel (see :func:`_matmul_gradient`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..errors import InputError, UnsupportedModelError
from ..graph import LayerGraph, compiled_method
from ..inputs import as_images, image_shape, prepare_inputs
from ..internals import matmul_gradient


@dataclass
class CamResult:
    """A class activation map of K classes for each of N images."""

    heatmaps: np.ndarray  # (N, K, H, W) in [0, 1] at the image's resolution ((N, K, L) for sequences, (N, K, D, H, W) for videos)
    raw: np.ndarray  # (N, K, H, W) the signed channel sum before ReLU and normalising, resized as heatmaps
    maps: np.ndarray  # (N, K, h, w) in [0, 1] at the layer's resolution
    channel_weights: np.ndarray  # (N, K, channels): the method's weight of each channel
    channel_means: np.ndarray  # (N, channels): spatial mean of the feature map
    scores: np.ndarray  # (N, classes): the scores the gradients were taken of
    classes: np.ndarray  # (N, K)
    flat: np.ndarray  # (N, K) bool: the map is flat to float32 rounding, so maps and heatmaps are zeros
    empty: np.ndarray  # (N, K) bool: not flat, but no sum is above rounding of zero, so the ReLU leaves zeros

    @property
    def contributions(self) -> np.ndarray:
        """(N, K, channels): each channel's weight times its mean activation."""
        return self.channel_weights * self.channel_means[:, None, :]


# A map whose range is within this many float32 epsilons of the summed terms' magnitude
# is rounding noise (see "What a near-constant map shows" in docs/DESIGN_NOTES.md).
FLAT_TOLERANCE_EPSILONS = 4096


_MATMUL_GRADIENT = "CnnvizMatMulOnMatmulPrimitive"


@tf.RegisterGradient(_MATMUL_GRADIENT)
def _matmul_gradient(op, grad):
    """MatMul's gradient, with ``grad @ b^T`` as a BatchMatMulV2 instead of a MatMul.

    With oneDNN, MatMul runs on its sgemm API, whose kernel for a few rows of ``grad``
    against a large transposed ``b`` (a dense head's kernel; the rows are the images ×
    classes of the batched Jacobian) is 10-40× slower than for one row on some CPUs:
    VGG16's fc1 (25088×4096) took 636 ms for 5 rows on one CPU, and 160 ms for 16
    rows on another, against 13-16 ms for one row. BatchMatMulV2 runs on oneDNN's
    matmul primitive: 19-30 ms for 1-16 rows on the second CPU. Same product, so
    results change by rounding only.
    """
    if op.get_attr("transpose_a") or op.get_attr("transpose_b"):
        return matmul_gradient(op, grad)  # not a Dense layer's product: TensorFlow's own gradient
    a, b = op.inputs
    return tf.raw_ops.BatchMatMulV2(x=grad, y=b, adj_y=True), tf.matmul(a, grad, adjoint_a=True)


def _map_ranks(graph: LayerGraph) -> tuple[int, ...]:
    """Output ranks of the layers a CAM can explain, preferred first: the rank of the
    input as the layers see it (see image_shape).

    Images: 4 (batch, h, w, channels), also those that a Reshape makes; sequences: 3.
    Videos: 5 (Conv3D, TimeDistributed(Conv2D)), then 4, a ConvLSTM2D's maps with
    the frames folded in.
    """
    rank = 4 if image_shape(graph) is not None else len(graph.inputs[0].shape)
    if rank < 3:
        raise UnsupportedModelError(
            f"Grad-CAM explains images or sequences, but this model's input has shape "
            f"{tuple(graph.inputs[0].shape)}, with no spatial axis to map; its layers' "
            "outputs can still be shown with activations()."
        )
    return (5, 4) if rank == 5 else (rank,)


_RANK_TEXT = {
    5: "5-D output (batch, frames, height, width, channels)",
    4: "4-D output (batch, height, width, channels)",
    3: "3-D output (batch, steps, channels)",
}


def explainable_layers(graph: LayerGraph, output_index: int = 0) -> list[str]:
    """The layers a CAM accepts for model output ``output_index``: a map-shaped output
    (see :func:`_map_ranks`) that feeds its class scores; preferred rank first, in graph order."""
    return [path for rank in _map_ranks(graph) for path in graph.spatial_paths(rank=rank) if graph.feeds(path, output_index)]


def checked_layer(graph: LayerGraph, layer, output_index: int = 0) -> str:
    """``layer`` if a CAM accepts it (see :func:`explainable_layers`), else an error naming the ones it does."""
    shape = graph.info(layer).output_shape
    ranks = _map_ranks(graph)
    if len(shape) not in ranks:
        problem = f"Layer '{layer}' has output shape {shape}; Grad-CAM needs a {' or '.join(_RANK_TEXT[rank] for rank in ranks)}"
    elif not graph.feeds(layer, output_index):
        problem = (
            f"Layer '{layer}' does not feed model output {output_index}, so the class scores have no "
            "gradient with respect to it; pick a layer before the output"
        )
    else:
        return layer
    options = ", ".join(explainable_layers(graph, output_index)[-8:]) or "none"
    raise UnsupportedModelError(f"{problem}. Try one of: {options}.")


def default_layer(graph: LayerGraph, output_index: int = 0) -> str:
    """The last layer with an input-shaped (4-D, or 3-D for 1-D convs) output feeding the scores.

    Pooling layers are skipped (as in the tutorials), and so are Dropout and noise
    layers, which repeat the layer before them at inference.
    """
    ranks = _map_ranks(graph)
    for rank in ranks:
        for path in reversed(graph.spatial_paths(rank=rank)):
            kind = graph.layers[path].kind
            skipped = any(word in kind for word in ("Pooling", "Dropout", "Noise"))
            if not skipped and graph.feeds(path, output_index):
                return path
    raise UnsupportedModelError(
        f"Grad-CAM needs a layer with a {' or '.join(_RANK_TEXT[rank] for rank in ranks)}, such "
        "as a Conv2D (Conv1D for sequences, Conv3D for videos), before the class scores; this model has "
        "none, so there is no map to explain. Its layers' outputs can still be shown "
        "with activations()."
    )


def resize_maps(maps, size, *, clip: bool = True) -> tf.Tensor:
    """(N, K, *spatial) maps resized (bilinear) to the input's spatial ``size``, in [0, 1] (unless not ``clip``).

    Maps with fewer spatial axes than the input (a ConvLSTM2D's, which folds a video's
    frames) take the last ones: the frame. Volumes are resized frame by frame, then
    along the frames: linear interpolation is separable, so that is trilinear.
    """
    _, k, *spatial = maps.shape
    size = tuple(size)[len(size) - len(spatial) :]
    if len(spatial) == 1:  # a sequence: a one-pixel-wide image
        resized = tf.image.resize(tf.reshape(maps, (-1, spatial[0], 1, 1)), (size[0], 1))
    else:
        resized = tf.image.resize(tf.reshape(maps, (-1, *spatial[-2:], 1)), size[-2:])
        if len(spatial) == 3:
            frames = tf.reshape(resized, (-1, spatial[0], size[1] * size[2], 1))
            resized = tf.image.resize(frames, (size[0], size[1] * size[2]))
    resized = tf.reshape(resized, (-1, k, *size))  # -1: a batch unknown when traced
    return tf.clip_by_value(resized, 0.0, 1.0) if clip else resized


def class_matrix(head, classes, count: int) -> np.ndarray:
    """(count, K) class indices from an int, a list of K ints, or an (N, K) array."""
    matrix = head.class_indices(classes)
    if matrix.ndim == 0:
        matrix = np.full((count, 1), int(matrix))
    elif matrix.ndim == 1:
        matrix = np.broadcast_to(matrix[None], (count, len(matrix)))
    if matrix.ndim != 2 or matrix.shape[0] != count or matrix.shape[1] == 0:
        raise InputError(
            f"class_index must be an int, a list of classes, or one row of classes per "
            f"image ({count} rows); got shape {np.shape(classes)}."
        )
    return matrix


class ClassActivationMap:
    """A CAM method for one model, layer and output, reusable across images and classes.

    Subclasses give :meth:`channel_weights`, and :meth:`channel_terms` if their map is
    not the weighted sum of the feature maps (see the module docstring).
    """

    uses_gradients = True  # False: the formulas get gradients=None and no Jacobian is taken
    uses_layer = True  # a CAM maps a layer's features; a pixel method (saliency, ...) says False and ignores ``layer``

    def __init__(
        self, model, layer: str | None = None, *, probabilities: bool = False, output: int | str = 0, counterfactual: bool = False
    ):
        self.counterfactual = bool(counterfactual)
        self.graph = LayerGraph.of(model)
        self.head = self.graph.head(output)
        output_index = self.head.index
        self.layer = default_layer(self.graph, output_index) if layer is None else checked_layer(self.graph, layer, output_index)
        self._model = self.graph.score_model(self.layer, output_index, probabilities)
        self._maps = compiled_method(self._compute_maps, reduce_retracing=True)

    @classmethod
    def shared(cls, model, layer: str | None = None, *, output: int | str = 0, **options):
        """The model's one instance for these settings, compiled once; ``layer=None`` is the default layer.

        ``options`` are the constructor's keywords (``probabilities``, ``counterfactual``, a
        method's own); they are part of the cache key, so they must be hashable.
        """
        graph = LayerGraph.of(model)
        output_index = graph.output_index(output)
        layer = default_layer(graph, output_index) if layer is None else layer
        graph.info(layer)  # refuses an unknown layer before it is a cache key (a list is unhashable)
        settings = inspect.signature(cls).bind(model, layer, output=output_index, **options)
        settings.apply_defaults()  # an option left out and one given as its default are one instance
        return graph.cached(
            ("attribution", cls, layer, output_index, tuple(sorted(settings.kwargs.items()))),
            lambda: cls(model, layer, output=output_index, **options),
        )

    def channel_weights(self, features: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        """(N, K, C) weights from features (N, *spatial, C) and class gradients (N, K, *spatial, C);
        (N, C), the same for every class, where ``uses_gradients`` is False."""
        raise NotImplementedError

    def channel_terms(self, features: tf.Tensor, gradients: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """(N, K, *spatial, C): what the map sums over channels; each feature map times its weight."""
        spatial_ones = [1] * (len(features.shape) - 2)
        return features[:, None] * tf.reshape(weights, [tf.shape(weights)[0], tf.shape(weights)[1], *spatial_ones, -1])

    def _compute_maps(self, inputs, classes):
        # One row (one image, one class, when traced for that shape) is sgemm's fast case, faster than BatchMatMulV2.
        # A GradientTape ignores gradient overrides; tf.gradients, in this traced function, honours them.
        override = {} if classes.shape.num_elements() == 1 else {"MatMul": _MATMUL_GRADIENT}
        with tf.compat.v1.get_default_graph().gradient_override_map(override):
            features, scores = self._model(inputs, training=False)
        scores = tf.cast(scores, tf.float32)
        if not self.uses_gradients:  # one map for every class: the (N, C) weights repeated K times
            features = tf.cast(features, tf.float32)
            weights = tf.repeat(self.channel_weights(features, None)[:, None], tf.shape(classes)[1], axis=1)
            return self._map_rules(features, None, weights, scores)
        selected = tf.gather(scores, classes, axis=1, batch_dims=1)  # (N, K)

        def class_gradients(one_hot):  # of one column of ``selected``: each image's own, as images are independent
            return tf.gradients(selected, features, grad_ys=tf.broadcast_to(one_hot, tf.shape(selected)))[0]

        # The batched Jacobian: the K backward passes vectorised into one. It is taken with
        # respect to the layer's own output: a float32 copy of a mixed-precision (float16)
        # map is not on the path to the scores, so its gradient would be None.
        gradients = tf.vectorized_map(class_gradients, tf.eye(tf.shape(selected)[1]))  # (K, N, *spatial, channels)
        rank = len(features.shape)
        gradients = tf.transpose(tf.cast(gradients, tf.float32), [1, 0, *range(2, rank + 1)])  # (N, K, *spatial, channels)
        if self.counterfactual:
            gradients = -gradients
        features = tf.cast(features, tf.float32)
        return self._map_rules(features, gradients, self.channel_weights(features, gradients), scores)

    def _map_rules(self, features, gradients, weights, scores):
        """The map of each image and class from the method's terms: summed over channels, ReLU, flat and empty flags, peak 1."""
        rank = len(features.shape)
        terms = self.channel_terms(features, gradients, weights)
        spatial = list(range(1, rank - 1))
        map_axes = [axis + 1 for axis in spatial]
        sums = tf.reduce_sum(terms, axis=-1)  # (N, K, *spatial), before the ReLU
        tolerance = FLAT_TOLERANCE_EPSILONS * np.finfo(np.float32).eps * tf.reduce_max(
            tf.reduce_sum(tf.abs(terms), axis=-1), axis=map_axes, keepdims=True
        )
        spread = tf.reduce_max(sums, axis=map_axes, keepdims=True) - tf.reduce_min(sums, axis=map_axes, keepdims=True)
        # One position (a 32-px image at ResNet50's last block) has no range to judge: it shows as before.
        flat = (spread <= tolerance) & (tf.reduce_prod(tf.shape(sums)[2:]) > 1)
        maps = tf.nn.relu(sums)
        peaks = tf.reduce_max(maps, axis=map_axes, keepdims=True)
        # A peak within rounding of zero (flat, or negative everywhere) would blow noise up to full range.
        no_heat = flat | (peaks <= tolerance)
        maps = tf.where(no_heat, 0.0, tf.math.divide_no_nan(maps, peaks))
        empty = tf.reshape(no_heat & ~flat, tf.shape(flat)[:2])
        flat = tf.reshape(flat, tf.shape(flat)[:2])
        return maps, sums, weights, tf.reduce_mean(features, axis=spatial), scores, flat, empty

    def class_matrix(self, classes, count: int) -> np.ndarray:
        """(count, K) class indices from an int, a list of K ints, or an (N, K) array."""
        return class_matrix(self.head, classes, count)

    def explain(self, x, classes) -> CamResult:
        """The maps of ``classes`` (see :meth:`class_matrix`) for images ``x``."""
        return self._explain_prepared(prepare_inputs(self.graph, x), classes)

    def _explain_prepared(self, inputs, classes) -> CamResult:
        matrix = self.class_matrix(classes, len(inputs[0]))
        return self._result(inputs, matrix, self._maps(self._model_inputs(inputs), tf.constant(matrix)))

    @staticmethod
    def _model_inputs(inputs):
        """Prepared inputs as the score model takes them: one tensor, or a list of one per input."""
        tensors = [tf.convert_to_tensor(a) for a in inputs]
        return tensors if len(tensors) > 1 else tensors[0]

    def _result(self, inputs, matrix, computed) -> CamResult:
        """The :class:`CamResult` of :meth:`_map_rules`' tensors, checked and resized to the input."""
        maps, sums, weights, means, scores, flat, empty = computed
        if not np.all(np.isfinite(scores)):
            raise UnsupportedModelError(
                "The model's class scores contain NaN or infinity for these images, so "
                "Grad-CAM is undefined; check the images' scale and the preprocessing."
            )
        size = as_images(self.graph, inputs[0]).shape[1:-1]
        return CamResult(
            heatmaps=resize_maps(maps, size).numpy(),
            raw=resize_maps(sums, size, clip=False).numpy(),
            maps=maps.numpy(),
            channel_weights=weights.numpy(),
            channel_means=means.numpy(),
            scores=scores.numpy(),
            classes=matrix,
            flat=flat.numpy(),
            empty=empty.numpy(),
        )
