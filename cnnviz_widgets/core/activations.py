"""Feature maps: every requested layer's output from ONE forward pass."""

from __future__ import annotations

import numpy as np

from .graph import LayerGraph
from .inputs import prepare_inputs


def resolve_layers(graph: LayerGraph, layers) -> list[str]:
    """Layer paths for ``layers`` (None: all, one name, or a list); unknown ones raise."""
    if layers is None:
        return graph.paths
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    for path in layers:
        graph.info(path)
    return layers


def activations(model, x, layers=None, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` (default: every showable layer) for images ``x``.

    All layers come from one inference-mode pass (Dropout off, BatchNormalization
    with its moving statistics) of one cached multi-output graph, run over ``x`` in
    batches of ``batch_size``. Arrays keep the batch axis first.
    """
    graph = LayerGraph.of(model)
    paths = resolve_layers(graph, layers)
    inputs = prepare_inputs(graph, x)
    return dict(zip(paths, graph.run(paths, inputs, batch_size)))
