"""P9: can I trust this map? The checks' cost, and each method's pointing game.

P9a: ``cw.faithfulness`` deletion then insertion, 20 steps each (21 points a curve),
for a few VGG16 images and random maps, against the floor: the same images × 40
through the model's compiled probabilities in batches of 32, as many images as the
two curves need less their shared ends. Timed in interleaved rounds.

P9b: the pointing game (Zhang et al. 2018) of every method in ``METHODS`` on 64
two-shape demo images (``shapes.generate(64, seed=13, shapes_per_image=2)``): each
image's map of each of its two classes scores a hit when its peak lies on that
class's shape. Grad-CAM's target is 90 %; the others are reported as they are, with
how many maps peak on the image's *other* shape (a method that does not tell the two
classes apart lands there about as often as on the right one) and the seconds its
128 maps took, first call (tracing) included.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

import cnnviz_widgets as cw
from cnnviz_widgets.core.attribution import METHODS
from cnnviz_widgets.core.graph import LayerGraph
from cnnviz_widgets.core.trust import random_maps
from cnnviz_widgets.demo import shapes

from .common import pixels, vgg16
from .timing import INFO, Row, checked_row, duration, interleaved, times

STEPS = 20
BATCH = 32
TWO_SHAPE_IMAGES, TWO_SHAPE_SEED = 64, 13


def run(settings) -> list:
    return [_deletion_and_insertion(settings), *_pointing_game()]


def _deletion_and_insertion(settings) -> Row:
    size, count = settings.image_size, settings.explorer_images
    model = vgg16(size)
    x = pixels(count, size).astype(np.float32)
    classes = np.argmax(np.asarray(model(x)), axis=1)
    maps = random_maps(count, (size, size), seed=1)
    probabilities = tf.function(LayerGraph.of(model).probability_model(), reduce_retracing=True)
    floor_batch = np.repeat(x, 2 * STEPS, axis=0)

    def ours():
        return [cw.faithfulness(model, x, classes, maps, metric, STEPS, batch_size=BATCH).auc for metric in ("deletion", "insertion")]

    def forward():
        return [probabilities(floor_batch[start : start + BATCH]).numpy() for start in range(0, len(floor_batch), BATCH)]

    seconds = interleaved({"forward": forward, "ours": ours}, settings.per_layer_rounds)
    ratio = seconds["ours"] / seconds["forward"]
    return checked_row(
        "P9a",
        f"Deletion + insertion, {STEPS} steps each, {count} images, VGG16-{size}, vs {2 * STEPS} forward passes per image batched",
        ratio,
        f"{times(ratio)} ({duration(seconds['ours'])} vs {duration(seconds['forward'])})",
        "≤ 1.5×",
        at_most=1.5,
    )


def _pointing_game() -> list:
    model = cw.demo.load_model()
    images, labels, masks = shapes.generate(TWO_SHAPE_IMAGES, seed=TWO_SHAPE_SEED, shapes_per_image=2)
    regions = np.concatenate([masks[:, 0], masks[:, 1]])
    other_shapes = np.concatenate([masks[:, 1], masks[:, 0]])
    rows = []
    for method in METHODS:
        started = time.perf_counter()
        maps = np.concatenate([cw.attribute(model, images, labels[:, j], method) for j in range(2)])
        seconds = time.perf_counter() - started
        result = cw.pointing_game(maps, regions)
        on_other = int(cw.pointing_game(maps, other_shapes).hits.sum())
        what = f"Pointing game of `{method}` on {TWO_SHAPE_IMAGES} two-shape demo images (both classes each)"
        measured = (
            f"{result.score:.1%} ({int(result.hits.sum())}/{len(maps)} maps; {on_other} on the other shape; "
            f"{int(result.flat.sum())} flat; {duration(seconds)})"
        )
        if method == "gradcam":
            rows.append(checked_row(f"P9b {method}", what, result.score, measured, "≥ 90 %", at_least=0.9))
        else:
            rows.append(Row(f"P9b {method}", what, measured, "—", INFO))
    return rows
