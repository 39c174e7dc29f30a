"""The cascading model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks
for Saliency Maps", section 3.1): a map that explains the MODEL must change when the
model's weights are destroyed.

On a clone of the model (the user's model is never touched), the layers with weights
are re-initialised from the top (the output) down, one more layer each step, and the
method's map of every image is computed again after each step. Each randomised map is
compared with the original by
- the Spearman rank correlation of their pixels (ties get their average rank), as
  the paper does; a map flat to rounding has no order, so it correlates 0;
- SSIM (Wang et al. 2004, ``tf.image.ssim`` on the maps in [0, 1]).
A method that passes loses its map as the cascade goes down: correlation and SSIM
fall towards 0. One whose maps stay (the paper's Guided Backprop) shows the image, not
the model.

A layer is re-initialised with its own initializers (``kernel_initializer``,
``bias_initializer``, ``gamma_initializer``, … matched to each weight by name), seeded;
a weight with no initializer of its name gets a seeded normal of its own standard
deviation. The clone's weights change in place, so the method's compiled functions
are traced once, not once per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from .. import checks
from ..errors import InputError, UnsupportedModelError
from ..graph import LayerGraph
from ..attribution.attribute import attribute, method_class

FLAT_RANGE = 1e-6  # a map in [0, 1] whose values span less than this has no order to compare


@dataclass(frozen=True)
class SanityCheck:
    """The cascade's maps and how much each still resembles the original."""

    method: str
    layers: list[str]  # randomised in this order: after step i, layers[: i + 1] are random
    maps: np.ndarray  # (steps + 1, N, H, W) in [0, 1]: maps[0] the original model's, maps[i + 1] after step i
    rank_correlation: np.ndarray  # (steps, N) Spearman correlation of maps[i + 1] with maps[0]
    ssim: np.ndarray  # (steps, N) SSIM of maps[i + 1] with maps[0]
    complete: bool  # False when stopped before every layer was randomised


def sanity_check(
    model,
    x,
    class_index,
    method: str = "gradcam",
    layer: str | None = None,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **options,
) -> SanityCheck:
    """Cascading randomisation of ``model``'s weighted layers, top down, and ``method``'s maps after each step.

    ``method``, ``layer`` and ``options`` are passed to :func:`cw.attribute` (so is
    ``output``; not ``normalize``: the maps are always in [0, 1]). ``progress(done, total)``
    is called after each map computed (the original and one per step); ``should_stop()``
    is checked before each step, and a stop returns the steps done so far (``complete=False``).
    """
    method_class(method)
    if "normalize" in options:
        raise InputError(
            "sanity_check compares maps in [0, 1] (SSIM with max_val 1, a flat-map threshold), so it always "
            "computes them with normalize=True; leave normalize out."
        )
    seed = checks.count("seed", seed, "the seed of the re-initialised weights")
    checks.function_or_none("progress", progress, "called as progress(done, total) after each map")
    checks.function_or_none("should_stop", should_stop, "called before each step; True stops the cascade")
    clone = _clone(model)
    graph = LayerGraph.of(clone)
    cascade = [path for path in reversed(graph.paths) if _has_parameters(graph.layer(path))]
    if not cascade:
        raise UnsupportedModelError("The model has no layer with weights, so there is nothing to randomise.")
    total = len(cascade) + 1
    original = attribute(clone, x, class_index, method, layer, **options)
    if np.all(np.ptp(original.reshape(len(original), -1), axis=1) < FLAT_RANGE):
        raise InputError(
            f"Every {method} map of these images is flat, so there is no map to check; pick a class "
            "the images show (e.g. the predicted one) or another layer."
        )
    maps = [original]
    if progress is not None:
        progress(1, total)
    for step, path in enumerate(cascade):
        if should_stop is not None and should_stop():
            cascade = cascade[:step]
            break
        _reinitialise(graph.layer(path), seed + step)
        maps.append(attribute(clone, x, class_index, method, layer, **options))
        if progress is not None:
            progress(step + 2, total)
    maps = np.stack(maps)
    correlations = np.array([[spearman(a, b) for a, b in zip(maps[0], randomised)] for randomised in maps[1:]]).reshape(-1, len(original))
    return SanityCheck(method, cascade, maps, correlations, ssim(maps[0], maps[1:]), complete=len(maps) == total)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels, ties at their average rank; 0 if either map is flat."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if np.ptp(a) < FLAT_RANGE or np.ptp(b) < FLAT_RANGE:
        return 0.0
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``, equal values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(group, ranks) / counts)[group]


def ssim(original: np.ndarray, randomised: np.ndarray) -> np.ndarray:
    """(steps, N) SSIM of each randomised map (steps, N, H, W) with the original (N, H, W), maps in [0, 1]."""
    if len(randomised) == 0:
        return np.zeros((0, len(original)), np.float32)
    window = min(11, *original.shape[1:])  # tf.image.ssim's 11-px window, narrowed for small maps
    pairs = np.broadcast_to(original, randomised.shape)
    values = tf.image.ssim(pairs[..., None], randomised[..., None], max_val=1.0, filter_size=window)
    return values.numpy()


def _clone(model) -> keras.Model:
    LayerGraph.of(model)  # refuses a model without a graph (subclassed) with its own message
    try:
        clone = keras.models.clone_model(model)
    except Exception as error:
        raise UnsupportedModelError(
            f"The sanity check randomises a copy of the model, and Keras could not copy this one "
            f"({type(error).__name__}: {error}). Give its custom layers get_config() and from_config()."
        ) from None
    clone.set_weights(model.get_weights())
    return clone


def _has_parameters(layer) -> bool:
    """Learned weights: trainable ones, or frozen ones with an initializer (a frozen base's
    Conv2D); not a preprocessing layer's statistics (Normalization's mean and variance)."""
    return bool(layer.trainable_weights) or any(_initializer_of(layer, variable) for variable in layer.weights)


def _initializer_of(layer, variable):
    """The layer's initializer of ``variable``: ``kernel`` → ``kernel_initializer``, ``moving_mean`` →
    ``moving_mean_initializer``, SeparableConv2D's ``depthwise_kernel`` → ``depthwise_initializer``,
    DepthwiseConv2D's ``kernel`` → ``depthwise_initializer``; None if it has none."""
    name = variable.name
    for attribute_name in (f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer", "depthwise_initializer"):
        if attribute_name != "depthwise_initializer" or name == "kernel":
            initializer = getattr(layer, attribute_name, None)
            if initializer is not None:
                return initializer
    return None


def _reinitialise(layer, seed: int):
    """``layer``'s weights re-drawn from their initializers (seeded), or a seeded normal of each weight's std."""
    rng = np.random.default_rng(seed)
    for index, variable in enumerate(layer.weights):
        initializer = _initializer_of(layer, variable)
        if initializer is not None:
            config = initializer.get_config()
            if "seed" in config:
                initializer = type(initializer).from_config({**config, "seed": seed * 1000 + index})
            value = keras.ops.convert_to_numpy(initializer(variable.shape, dtype=variable.dtype))
        else:
            value = rng.normal(0, np.std(keras.ops.convert_to_numpy(variable)), variable.shape)
        variable.assign(value.astype(variable.dtype))
