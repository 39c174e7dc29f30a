"""P3: Grad-CAM of an image's top-5 classes, then a class change in GradCamViewer.

``GradCam(model).explain(x, top5)`` (one forward pass and one batched Jacobian) is
timed against one plain ``model(x)`` (the floor), against keras-io's hand-written
Grad-CAM (a ``GradientTape`` per class, eager) and against tf-keras-vis's
``Gradcam`` (one call per class), all on the same image, layer and classes. The
class change is the time from ``viewer.class_index = c`` to new PNG bytes, moving
between the top-5 classes that the viewer has explained already.

Per class, as multiples of one plain ``model(x)`` from the same interleaved rounds:
Grad-CAM of the top-1 class alone (a fresh ``GradCam``, so one row in the head's
backward pass), and the top-5 time divided by 5. Where a backward kernel is slow
for a few rows, the second rises towards or above the first.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cnnviz_widgets import GradCamViewer
from cnnviz_widgets.core.attribution import GradCam

from .common import change_seconds, tf_keras_vis_peer, vgg16_and_image
from .timing import Row, change_row, faster_row, interleaved, over_forward_row

TOP_K = 5


def run(settings) -> list:
    size = settings.image_size
    model, x, ranked = vgg16_and_image(size)
    image = x.astype(np.uint8)
    cam, cam_of_one = GradCam(model), GradCam(model)
    classes = ranked[:TOP_K]

    def forward():
        return np.asarray(model(x, training=False))

    def ours():
        return cam.explain(x, classes).heatmaps

    def one_class():
        return cam_of_one.explain(x, classes[:1]).heatmaps

    hand_written = _per_class_tape(model, cam.layer, x, classes)
    against_forward = interleaved({"forward": forward, "ours": ours, "one": one_class}, settings.forward_rounds, warmups=2)
    one_against_forward = {"forward": against_forward["forward"], "ours": against_forward["one"]}
    each_of_top_against_forward = {"forward": against_forward["forward"], "ours": against_forward["ours"] / TOP_K}
    baselines = {"ours": ours, "tape": hand_written}
    peer_gradcam, peer_problem = tf_keras_vis_peer(
        "gradcam", "Gradcam", model, lambda gradcam, score: [gradcam(score([int(c)]), x, penultimate_layer=cam.layer) for c in classes]
    )
    if peer_gradcam is not None:
        baselines["tf-keras-vis"] = peer_gradcam
    against_peers = interleaved(baselines, settings.per_layer_rounds)

    what = f"Grad-CAM of the top-{TOP_K} classes, VGG16-{size}, `{cam.layer}`"
    return [
        over_forward_row("P3a", f"{what}, vs one plain `model(x)`", against_forward, at_most=1.3),
        faster_row(
            "P3b",
            f"{what}, vs tf-keras-vis `Gradcam`, one call per class",
            against_peers,
            "tf-keras-vis",
            at_least=15,
            problem=peer_problem,
        ),
        faster_row(
            "P3c", f"{what}, vs a hand-written `GradientTape` per class (keras-io)", against_peers, "tape", at_least=None
        ),
        _class_change(model, image, settings),
        over_forward_row(
            "P3e", f"Grad-CAM of the top-1 class alone, VGG16-{size}, `{cam.layer}`, vs one plain `model(x)`", one_against_forward
        ),
        over_forward_row("P3f", f"{what}, per class (time ÷ {TOP_K}), vs one plain `model(x)`", each_of_top_against_forward),
    ]


def _per_class_tape(model, layer, x, classes):
    """keras-io's ``make_gradcam_heatmap``, once per class."""
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])

    def heatmaps():
        maps = []
        for class_index in classes:
            with tf.GradientTape() as tape:
                features, predictions = grad_model(x)
                score = predictions[:, class_index]
            gradients = tape.gradient(score, features)
            weights = tf.reduce_mean(gradients, axis=(0, 1, 2))
            heatmap = tf.nn.relu(features[0] @ weights[..., None])[..., 0]
            maps.append((heatmap / tf.reduce_max(heatmap)).numpy())
        return maps

    return heatmaps


def _class_change(model, image, settings) -> Row:
    viewer = GradCamViewer(model, image[0], top_k=TOP_K)
    seconds = change_seconds(viewer, "class_index", [c for c, _, _ in viewer.predictions], settings.trait_repeats)
    return change_row(
        "P3d",
        f"GradCamViewer class change among the top-{TOP_K}, VGG16-{settings.image_size}",
        seconds,
        settings.trait_repeats,
    )
