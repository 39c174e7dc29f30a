"""P1: a new image → the activations of every layer of VGG16.

``cw.activations(model, x)`` (every showable layer, one multi-output pass) is timed
against one plain ``model(x)`` (the floor: the same convolutions, one output), and
against the tutorials' way (S1, S4): one ``keras.Model(model.input, layer.output)``
per layer, built beforehand, and ``predict`` on each, which re-runs every layer
before it. Each call gets a different image, so no result can be reused.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np

import cnnviz_widgets as cw

from .common import pixels, vgg16
from .timing import faster_row, interleaved, over_forward_row

TITLE = "new image → all layer activations"


def run(settings) -> list:
    model = vgg16(settings.image_size)
    images = itertools.cycle(pixels(4, settings.image_size).astype(np.float32)[:, None])
    per_layer_models = [keras.Model(model.inputs, layer.output) for layer in model.layers[1:]]

    def forward():
        return np.asarray(model(next(images), training=False))

    def all_activations():
        return cw.activations(model, next(images))

    def per_layer():
        x = next(images)
        return [m.predict(x, verbose=0) for m in per_layer_models]

    against_forward = interleaved({"forward": forward, "ours": all_activations}, settings.forward_rounds, warmups=2)
    against_tutorial = interleaved({"ours": all_activations, "per_layer": per_layer}, settings.per_layer_rounds)
    size = settings.image_size
    layers = len(cw.layer_names(model))
    return [
        over_forward_row(
            "P1a", f"{TITLE} ({layers} layers), VGG16-{size}, vs one plain `model(x)`", against_forward, at_most=1.2
        ),
        faster_row(
            "P1b",
            f"{TITLE}, VGG16-{size}, vs a `keras.Model` + `predict` per layer (S1, S4)",
            against_tutorial,
            "per_layer",
            at_least=15,
        ),
    ]
