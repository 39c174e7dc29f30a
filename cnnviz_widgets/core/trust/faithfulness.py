"""Deletion and insertion (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for
Explanation of Black-box Models", section 4.1): does the model's probability of the
class depend on the pixels a map points at?

For a map, rank the pixels from most to least attributed. Then, in ``steps`` steps,
- deletion: replace the top ``k / steps`` of the pixels by a baseline image; the
  probability should fall fast, so a LOW area under the curve is good;
- insertion: start from the baseline and put back the top ``k / steps`` of the
  original pixels; the probability should rise fast, so a HIGH area is good.
The curve has ``steps + 1`` points, fractions 0, 1/steps, …, 1 (area by trapezoids).

Baseline (what a removed pixel becomes): a Gaussian-blurred copy of the image (σ a
sixteenth of its larger side), for both metrics. RISE starts insertion from such a
blurred canvas and deletes to zeros; deleting to the blurred copy too means the two
curves join the same two images (the original and its blur), and that a removed pixel
adds no hard edge against a flat colour, itself evidence to a CNN, which made random
maps look good at deletion on the demo (their scattered holes broke every shape).
``baseline="mean"`` (each image's mean colour) or ``"zero"`` (RISE's deletion) pick
another.

Pixels a map ties (a ReLU'd map is zero over much of the image) are taken in a
seeded random order, never row by row, which would sweep the image top to bottom.

A random map (seeded) and a centre-prior map (a Gaussian bump in the middle, since
datasets tend to put the object there) are the baselines a method's map must beat:
:func:`faithfulness_baselines`.

All images × steps go through the model in batches of ``batch_size``, each batch
built inside one compiled function from the images, their baselines and their pixel
ranks, so only one batch of perturbed images is ever in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .. import checks
from ..errors import InputError, UnsupportedModelError
from ..graph import LayerGraph, compiled_method
from ..inputs import as_images, prepare_inputs, required_image_shape

METRICS = ("deletion", "insertion")
BASELINES = ("blur", "mean", "zero")
BLUR_SIGMA_FRACTION = 1 / 16  # of the image's larger side; the demo's 64 px shapes need more than RISE's 5 px at 224
CENTRE_PRIOR_SIGMA_FRACTION = 1 / 4  # of each side


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Deletion or insertion curves of N images' maps."""

    metric: str  # "deletion" (lower auc is better) or "insertion" (higher is better)
    baseline: str  # what removed pixels became: "blur", "mean" or "zero"
    fractions: np.ndarray  # (steps + 1,) fraction of the pixels removed (deletion) or inserted (insertion)
    curves: np.ndarray  # (N, steps + 1) the model's probability of the class at each fraction
    auc: np.ndarray  # (N,) area under each curve, by trapezoids over the fractions

    @property
    def better(self) -> str:
        return "lower" if self.metric == "deletion" else "higher"


def faithfulness(
    model,
    x,
    class_index,
    maps,
    metric: str = "deletion",
    steps: int = 20,
    *,
    baseline: str = "blur",
    output: int | str = 0,
    batch_size: int = 32,
    seed: int = 0,
) -> FaithfulnessCurves:
    """Deletion or insertion curves and their areas for ``maps`` (N, H, W) of images ``x``.

    ``x`` are the images as the model takes them; ``class_index`` one class for all or
    one per image; ``maps`` one map per image at the input's height and width (any
    scale: only the order of the pixels counts). ``baseline`` is what removed pixels
    become: "blur" (see the module docstring), "mean" or "zero". ``seed`` orders the
    pixels a map ties.
    """
    graph = LayerGraph.of(model)
    required_image_shape(graph, "faithfulness needs", "Explain an image model instead.")
    model_inputs = prepare_inputs(graph, x)[0]
    inputs = as_images(graph, model_inputs)  # (N, H, W, C) even where a Reshape makes the image
    count, height, width, _ = inputs.shape
    metric = _choice("metric", metric, METRICS)
    baseline = _choice("baseline", baseline, BASELINES)
    steps = checks.count("steps", steps, "how many steps the curve takes from 0 to all pixels", minimum=1)
    batch_size = checks.count("batch_size", batch_size, "how many perturbed images go through the model at once", minimum=1)
    seed = checks.count("seed", seed, "the seed that orders the pixels a map ties")
    maps = _checked_maps(maps, count, (height, width))
    classes = _classes_per_image(graph, class_index, count, output)

    ranks = pixel_ranks(maps, seed)
    fill = _baseline_images(inputs, baseline)
    pixels = height * width
    removed = np.round(np.arange(steps + 1) * pixels / steps).astype(np.int32)
    # deletion: pixels ranked below `removed` show the baseline; insertion: they show the image
    start, end = (inputs, fill) if metric == "deletion" else (fill, inputs)
    probabilities = _perturbed_probabilities(graph, output, model_inputs.shape[1:])
    image_of, step_of = np.divmod(np.arange(count * (steps + 1)), steps + 1)
    curves = np.empty(count * (steps + 1), np.float32)
    for first in range(0, len(curves), batch_size):
        rows = slice(first, first + batch_size)
        images = image_of[rows]
        curves[rows] = probabilities(
            tf.constant(start[images]),
            tf.constant(end[images]),
            tf.constant(ranks[images]),
            tf.constant(removed[step_of[rows]]),
            tf.constant(classes[images]),
        ).numpy()
    curves = curves.reshape(count, steps + 1)
    if not np.isfinite(curves).all():
        raise UnsupportedModelError(
            "The model's probabilities are NaN or infinite for some perturbed images; check the images "
            "(what the model takes, after any preprocessing) and the model's weights for NaN."
        )
    fractions = np.arange(steps + 1) / steps
    return FaithfulnessCurves(metric, baseline, fractions, curves, area_under(fractions, curves))


def faithfulness_baselines(model, x, class_index, metric: str = "deletion", steps: int = 20, **options) -> dict:
    """The curves of the maps to beat, ``{"random": ..., "centre": ...}`` (:class:`FaithfulnessCurves`):
    a seeded uniform-noise map and a centre-prior map, run as :func:`faithfulness` runs ``maps``."""
    graph = LayerGraph.of(model)
    required_image_shape(graph, "faithfulness needs", "Explain an image model instead.")
    count, height, width, _ = as_images(graph, prepare_inputs(graph, x)[0]).shape
    baselines = baseline_maps(count, (height, width), options.get("seed", 0))
    return {name: faithfulness(model, x, class_index, maps, metric, steps, **options) for name, maps in baselines.items()}


def baseline_maps(count: int, size, seed: int = 0) -> dict:
    """The maps a method must beat, ``{"random": ..., "centre": ...}``, each (count, H, W): see
    :func:`random_maps` and :func:`centre_prior_maps`."""
    return {"random": random_maps(count, size, seed), "centre": centre_prior_maps(count, size)}


def random_maps(count: int, size, seed: int = 0) -> np.ndarray:
    """(count, H, W) uniform noise, the same for the same seed: a map that knows nothing."""
    return np.random.default_rng(seed).random((count, *size), dtype=np.float32)


def centre_prior_maps(count: int, size) -> np.ndarray:
    """(count, H, W) a Gaussian bump in the image's centre (σ a quarter of each side): "the object is in the middle"."""
    rows, columns = [(np.arange(n) + 0.5 - n / 2) / (n * CENTRE_PRIOR_SIGMA_FRACTION) for n in size]
    bump = np.exp(-0.5 * (rows[:, None] ** 2 + columns[None, :] ** 2)).astype(np.float32)
    return np.broadcast_to(bump, (count, *size)).copy()


def pixel_ranks(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, H, W) int32: each pixel's place when the map's pixels are sorted most attributed first, ties in a seeded random order."""
    count, height, width = maps.shape
    flat = maps.reshape(count, -1)
    tie_order = np.random.default_rng(seed).permutation(height * width)
    ranks = np.empty(flat.shape, np.int32)
    for row, values in zip(ranks, flat):
        row[np.lexsort((tie_order, -values.astype(np.float64)))] = np.arange(height * width)
    return ranks.reshape(maps.shape)


def area_under(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """(N,) trapezoid areas of ``curves`` (N, points) over ``fractions`` (points,)."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def _checked_maps(maps, count: int, size) -> np.ndarray:
    try:
        maps = np.asarray(maps, np.float32)
    except (TypeError, ValueError):
        raise InputError(f"maps must be an array (N, H, W) of numbers, one map per image; got {type(maps).__name__}.") from None
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape != (count, *size):
        raise InputError(
            f"maps has shape {maps.shape}; it needs one map per image at the input's size, {(count, *size)}, "
            "e.g. what cw.attribute(model, x, class_index) returns for the same x."
        )
    if not np.isfinite(maps).all():
        raise InputError("maps hold NaN or infinity, which rank nowhere; compute the maps again or replace them (np.nan_to_num).")
    return maps


def _classes_per_image(graph: LayerGraph, class_index, count: int, output) -> np.ndarray:
    classes = graph.head(output).class_indices(class_index)
    if classes.ndim == 0:
        return np.full(count, classes, np.int32)
    if classes.shape != (count,):
        raise InputError(f"class_index has {classes.size} entries for {count} image(s); give one class for all images or one per image.")
    return classes.astype(np.int32)


def _baseline_images(inputs: np.ndarray, baseline: str) -> np.ndarray:
    if baseline == "zero":
        return np.zeros_like(inputs)
    if baseline == "mean":
        return np.broadcast_to(inputs.mean(axis=(1, 2), keepdims=True), inputs.shape).astype(np.float32)
    return gaussian_blur(inputs, BLUR_SIGMA_FRACTION * max(inputs.shape[1:3]))


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """(N, H, W, C) images blurred by a Gaussian of ``sigma`` pixels, edges reflected."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = images.shape[-1]
    # numpy reflects again and again where the radius exceeds a side (a 4 × 64 image); tf.pad cannot
    padded = np.pad(np.asarray(images, np.float32), [(0, 0), (radius, radius), (radius, radius), (0, 0)], mode="reflect")
    blurred = tf.constant(padded)
    for kernel_shape in ((2 * radius + 1, 1, 1, 1), (1, 2 * radius + 1, 1, 1)):
        kernel = tf.tile(tf.reshape(taps, kernel_shape), [1, 1, channels, 1])
        blurred = tf.nn.depthwise_conv2d(blurred, kernel, [1, 1, 1, 1], "VALID")
    return blurred.numpy()


def _perturbed_probabilities(graph: LayerGraph, output, input_shape: tuple):
    """A compiled function: each row's image with its pixels ranked below ``removed`` taken
    from ``end`` instead of ``start``, through the model (reshaped to ``input_shape``), its probability of ``classes``."""
    index = graph.head(output).index

    def build():
        model = graph.probability_model(index)

        def probabilities(start, end, ranks, removed, classes):
            swapped = (ranks < removed[:, None, None])[..., None]
            images = tf.reshape(tf.where(swapped, end, start), (-1, *input_shape))
            scores = tf.cast(model(images, training=False), tf.float32)
            return tf.gather(scores, classes, axis=1, batch_dims=1)

        return compiled_method(probabilities, reduce_retracing=True, autograph=False)  # no Python control flow to convert

    return graph.cached(("faithfulness", index, tuple(input_shape)), build)
