"""P8: the pixel methods, SmoothGrad (20 samples) and Integrated Gradients (64 steps), of one class on VGG16.

Each is timed against the same number of forward and backward passes written by hand:
a compiled ``GradientTape`` over the same batches of noisy copies or path points (the
floor: the methods add only the noise, the path and the sums), and SmoothGrad against
tf-keras-vis ``Saliency(smooth_samples=20)``, which runs one eager pass per sample.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cnnviz_widgets.core.attribution import IntegratedGradients, SmoothGrad

from .common import tf_keras_vis_peer, vgg16_and_image
from .timing import checked_row, faster_row, interleaved, ms, times

SAMPLES = 20
STEPS = 64


def run(settings) -> list:
    size = settings.image_size
    model, x, ranked = vgg16_and_image(size)
    class_index = int(ranked[0])
    smoothgrad = SmoothGrad(model, samples=SAMPLES)
    integrated = IntegratedGradients(model, steps=STEPS)
    by_hand = _batched_passes(model, class_index, smoothgrad.batch_size)
    noisy = x + np.random.default_rng(0).normal(0, 0.2 * 255, (SAMPLES, *x.shape[1:])).astype(np.float32)
    path = (np.arange(STEPS, dtype=np.float32)[:, None, None, None] + 0.5) / STEPS * x

    smooth_seconds = {
        "ours": lambda: smoothgrad.explain(x, class_index).heatmaps,
        "hand": lambda: by_hand(noisy),
    }
    peer_smoothgrad, peer_problem = tf_keras_vis_peer(
        "saliency", "Saliency", model, lambda saliency, score: saliency(score([class_index]), x, smooth_samples=SAMPLES)
    )
    if peer_smoothgrad is not None:
        smooth_seconds["tf-keras-vis"] = peer_smoothgrad
    rounds = max(1, settings.per_layer_rounds - 2)
    smooth_seconds = interleaved(smooth_seconds, rounds)
    integrated_seconds = interleaved(
        {"ours": lambda: integrated.explain(x, class_index).heatmaps, "hand": lambda: by_hand(path)}, rounds
    )
    batches = f"batches of {smoothgrad.batch_size}"
    return [
        _over_hand_row("P8a", f"SmoothGrad, {SAMPLES} samples, one class, VGG16-{size}, vs {SAMPLES} hand-written passes in {batches}", smooth_seconds),
        faster_row(
            "P8b",
            f"SmoothGrad, {SAMPLES} samples, one class, VGG16-{size}, vs tf-keras-vis `Saliency(smooth_samples={SAMPLES})`",
            smooth_seconds,
            "tf-keras-vis",
            at_least=None,
            problem=peer_problem,
        ),
        _over_hand_row("P8c", f"Integrated Gradients, {STEPS} steps, one class, VGG16-{size}, vs {STEPS} hand-written passes in {batches}", integrated_seconds),
    ]


def _over_hand_row(id: str, what: str, seconds: dict, at_most: float = 1.2):
    ratio = seconds["ours"] / seconds["hand"]
    measured = f"{times(ratio)} the hand-written passes ({ms(seconds['ours'])} vs {ms(seconds['hand'])})"
    return checked_row(id, what, ratio, measured, f"≤ {at_most:g}×", at_most=at_most)


def _batched_passes(model, class_index: int, batch_size: int):
    """The gradient of one class's logit for every row, a compiled tape per batch, summed: the floor."""
    head = model.layers[-1]
    logits_model = keras.Model(model.inputs, head.input @ head.kernel + head.bias)

    @tf.function(reduce_retracing=True)
    def gradients(batch):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            score = tf.reduce_sum(logits_model(batch, training=False)[:, class_index])
        return tf.reduce_sum(tape.gradient(score, batch), axis=0)

    def passes(rows):
        return sum(gradients(tf.constant(rows[start : start + batch_size])).numpy() for start in range(0, len(rows), batch_size))

    return passes
