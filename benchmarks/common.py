"""Settings of a full and a quick run, the benchmark models, and optional peers."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import ipywidgets
import keras
import numpy as np

from .timing import median_seconds


@dataclass(frozen=True)
class Settings:
    mode: str
    image_size: int  # VGG16 input for P1, P2, P3, P5
    forward_rounds: int  # interleaved rounds for the forward-pass figures (P1, P3)
    per_layer_rounds: int  # rounds for the slow per-layer and per-class baselines
    trait_repeats: int  # trait changes timed for P2 and the P3 class change
    explorer_images: int
    pattern_size: int
    pattern_filters: int
    pattern_steps: int
    pattern_rounds: int
    matmul_size: int
    memory_images: int
    memory_pattern_filters: int


FULL = Settings(
    mode="full",
    image_size=224,
    forward_rounds=7,
    per_layer_rounds=5,
    trait_repeats=50,
    explorer_images=4,
    pattern_size=64,
    pattern_filters=64,
    pattern_steps=40,
    pattern_rounds=3,
    matmul_size=4096,
    memory_images=16,
    memory_pattern_filters=64,
)

QUICK = Settings(
    mode="quick",
    image_size=64,
    forward_rounds=3,
    per_layer_rounds=2,
    trait_repeats=10,
    explorer_images=2,
    pattern_size=32,
    pattern_filters=8,
    pattern_steps=5,
    pattern_rounds=3,
    matmul_size=2048,
    memory_images=2,
    memory_pattern_filters=4,
)


def vgg16(size: int, include_top: bool = True) -> keras.Model:
    """VGG16 with seeded random weights (no download) for ``size``×``size`` RGB images."""
    keras.utils.set_random_seed(0)
    return keras.applications.VGG16(weights=None, include_top=include_top, input_shape=(size, size, 3))


def pixels(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 RGB images, what a user would look at."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def peer(module: str):
    """``(module, None)``, or ``(None, why it cannot be used)`` for an optional peer package."""
    try:
        return importlib.import_module(module), None
    except ImportError:
        return None, "not installed (pip install .[bench])"
    except Exception as error:  # a peer that breaks on import is incompatible, not a failed run
        return None, incompatible(error)


def incompatible(error: Exception) -> str:
    return f"incompatible: {type(error).__name__}: {' '.join(str(error).split())[:160]}"


def vgg16_and_image(size: int) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """:func:`vgg16`, one random image of :func:`pixels` as float32 (1, size, size, 3), and its
    classes, the one the model scores highest first."""
    model = vgg16(size)
    x = pixels(1, size).astype(np.float32)
    return model, x, np.argsort(-np.asarray(model(x))[0])


def tf_keras_vis_peer(module: str, visualizer: str, model: keras.Model, call):
    """``(heatmaps, None)``, or ``(None, why tf-keras-vis cannot run)``.

    ``heatmaps()`` is ``call(built, CategoricalScore)``, ``built`` being tf-keras-vis'
    ``module.visualizer`` on a clone of ``model`` whose head is made linear (our maps are
    of the logits too); it runs once here, a probe that is also its warm-up.
    """
    peer_module, problem = peer(f"tf_keras_vis.{module}")
    if peer_module is None:
        return None, problem
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    try:
        built = getattr(peer_module, visualizer)(model, model_modifier=ReplaceToLinear(), clone=True)

        def heatmaps():
            return call(built, CategoricalScore)

        heatmaps()
    except Exception as error:
        return None, incompatible(error)
    return heatmaps, None


def png_views(widget) -> list:
    """Every ``ipywidgets.Image`` a widget shows, those inside bqplot Image marks included."""
    found = []

    def visit(node):
        if isinstance(node, ipywidgets.Image):
            found.append(node)
        for child in getattr(node, "children", ()):
            visit(child)
        for mark in getattr(node, "marks", ()):  # a bqplot Figure
            visit(getattr(mark, "image", None))

    visit(widget)
    return found


def change_seconds(widget, trait: str, values, repeats: int) -> float:
    """Median seconds from setting ``trait`` (cycling through ``values``) to new PNG bytes.

    Widgets redraw synchronously in their trait handlers, so the assignment's
    return is when the new bytes are set; each change is checked to have set some.
    """
    setattr(widget, trait, values[-1])  # so that every timed assignment is a change

    def change(i):
        # Looked up each time: a bqplot picture swaps in another Image widget to redraw.
        before = [view.value for view in png_views(widget)]
        setattr(widget, trait, values[i % len(values)])
        shown = [view.value for view in png_views(widget)]
        if all(any(new is old for old in before) for new in shown):
            raise RuntimeError(f"Setting {trait} = {values[i % len(values)]!r} showed no new image.")

    return median_seconds(change, repeats)
