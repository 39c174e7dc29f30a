"""P7: the CAM family on VGG16: the cheap CAMs against Grad-CAM, Score-CAM against its floor and tf-keras-vis.

P7a-d: each of Grad-CAM++, HiResCAM, Layer-CAM and Eigen-CAM for the top-5 classes at
``block5_conv3`` (one call, as Grad-CAM), as a multiple of Grad-CAM's time for the same
classes, from the same interleaved rounds.

P7e: Score-CAM of the top class at ``block5_conv3``, all 512 channels, against its floor:
one plain ``model(x)`` for the feature map plus the batched forward passes of as many
masked images as it has distinct masks (in the same batches of 32, compiled). The Score-CAM timed
weighs channels as tf-keras-vis does (``probabilities=True, channel_softmax=False``; the
paper's softmax over channels costs the same), so its map can be compared with
tf-keras-vis ``Scorecam`` (``max_N=None``, batch 32, one call timed too): the mean absolute
difference of the two maps at the layer's resolution, each divided by its peak.

P7f: ``top_channels=64`` (the 64 channels whose maps vary most, as tf-keras-vis'
``max_N=64``) against all channels: its speed-up, and how much its map differs (mean
absolute difference at the layer's resolution, and 1 − Spearman's rank correlation).
Score-CAM is slow, so P7e-f time one call each, after warm-ups that trace their compiled passes
(all channels' stops after two batches), as the floor's forward is traced before it is timed.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr

from cnnviz_widgets.core.attribution import EigenCam, GradCam, GradCamPlusPlus, HiResCam, LayerCam, ScoreCam
from cnnviz_widgets.core.errors import StoppedError

from .common import incompatible, peer, vgg16_and_image
from .timing import INFO, Row, checked_row, duration, interleaved, ms, times

TOP_K = 5
LAYER = "block5_conv3"
TOP_CHANNELS = 64
BATCH = 32


def run(settings) -> list:
    model, x, ranked = vgg16_and_image(settings.image_size)
    classes = ranked[:TOP_K]
    return [*_cheap_cams(model, x, classes, settings), *_score_cam(model, x, classes[:1], settings)]


def _cheap_cams(model, x, classes, settings) -> list:
    cams = {method.name: method(model, LAYER) for method in (GradCam, GradCamPlusPlus, HiResCam, LayerCam, EigenCam)}
    seconds = interleaved({name: (lambda cam=cam: cam.explain(x, classes).heatmaps) for name, cam in cams.items()}, settings.forward_rounds, warmups=2)
    rows = []
    for row_id, name in zip(("P7a", "P7b", "P7c", "P7d"), ("gradcam++", "hirescam", "layercam", "eigencam")):
        ratio = seconds[name] / seconds["gradcam"]
        rows.append(
            checked_row(
                row_id,
                f"`{name}` of the top-{TOP_K} classes, VGG16-{settings.image_size}, `{LAYER}`, vs Grad-CAM of the same classes",
                ratio,
                f"{times(ratio)} Grad-CAM ({ms(seconds[name])} vs {ms(seconds['gradcam'])})",
                "≤ 1.3×",
                at_most=1.3,
            )
        )
    return rows


def _score_cam(model, x, top_class, settings) -> list:
    all_channels = ScoreCam(model, LAYER, probabilities=True, channel_softmax=False, batch_size=BATCH)
    top = ScoreCam(model, LAYER, probabilities=True, channel_softmax=False, batch_size=BATCH, top_channels=TOP_CHANNELS)
    passes = {}
    for name, cam in (("all", all_channels), ("top", top)):  # how many passes each needs, without making them
        with contextlib.suppress(StoppedError):
            cam.explain(x, top_class, progress=lambda done, total, name=name: passes.update({name: total}) or True)
    top.explain(x, top_class)  # warm-ups: all channels' traces its batches' shapes on two batches, then stops
    with contextlib.suppress(StoppedError):
        all_channels.explain(x, top_class, progress=lambda done, total: done >= 2 * BATCH)
    masked = np.repeat(x, passes["all"], axis=0)
    forward = tf.function(lambda images: model(images, training=False))  # compiled, as Score-CAM's passes are
    for shape_of_a_batch in (x, masked[:BATCH], masked[: len(masked) % BATCH or BATCH]):
        forward(shape_of_a_batch)

    def floor():
        np.asarray(forward(x))
        for start in range(0, len(masked), BATCH):
            np.asarray(forward(masked[start : start + BATCH]))

    results = []
    candidates = {"ours": lambda: results.append(all_channels.explain(x, top_class)), "floor": floor, "top": lambda: top.explain(x, top_class).maps}
    seconds = interleaved(candidates, rounds=1, warmups=0)
    ours = results[0]
    peer_map, seconds["tf-keras-vis"], problem = _tf_keras_vis_scorecam(model, x, int(top_class[0]))
    size, channels = settings.image_size, model.get_layer(LAYER).output.shape[-1]
    what = f"Score-CAM of the top class, VGG16-{size}, `{LAYER}`, all {channels} channels"
    ratio = seconds["ours"] / seconds["floor"]
    floor_row = checked_row(
        "P7e",
        f"{what}, vs its floor: one `model(x)` + the batched forward passes of its distinct masks",
        ratio,
        f"{times(ratio)} the floor ({duration(seconds['ours'])} vs {duration(seconds['floor'])}; "
        f"{passes['all']} distinct masks of {channels} channels)",
        "≤ 1.1×",
        at_most=1.1,
        note=_peer_note(seconds, ours.maps[0, 0], peer_map, problem),
    )
    top_map = top.explain(x, top_class).maps[0, 0]
    difference = np.abs(top_map - ours.maps[0, 0]).mean()
    rank = spearmanr(top_map.ravel(), ours.maps[0, 0].ravel())[0]
    speedup = seconds["ours"] / seconds["top"]
    top_row = Row(
        "P7f",
        f"{what}, vs `top_channels={TOP_CHANNELS}`",
        f"{times(speedup)} faster ({duration(seconds['top'])} vs {duration(seconds['ours'])}; {passes['top']} passes); "
        f"map: mean |diff| {difference:.3f}, 1 − Spearman {1 - rank:.3f}",
        "—",
        INFO,
    )
    return [floor_row, top_row]


def _tf_keras_vis_scorecam(model, x, class_index):
    """``(its map at the layer's resolution over its peak, seconds of that one call, None)`` or ``(None, None, why not)``."""
    scorecam_module, problem = peer("tf_keras_vis.scorecam")
    if scorecam_module is None:
        return None, None, problem
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    try:
        scorecam = scorecam_module.Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)
        start = time.perf_counter()
        cam = np.asarray(
            scorecam(CategoricalScore([class_index]), x, penultimate_layer=LAYER, batch_size=BATCH, expand_cam=False, normalize_cam=False)
        )
        seconds = time.perf_counter() - start
    except Exception as error:
        return None, None, incompatible(error)
    return cam[0] / cam[0].max(), seconds, None


def _peer_note(seconds, ours, peer_map, problem) -> str:
    if problem is not None:
        return f"tf-keras-vis `Scorecam`: {problem}"
    return (
        f"tf-keras-vis `Scorecam` (one call per class): {duration(seconds['tf-keras-vis'])}, "
        f"{times(seconds['tf-keras-vis'] / seconds['ours'])} ours; map mean |diff| {np.abs(ours - peer_map).mean():.3f}"
    )
