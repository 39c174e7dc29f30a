"""Feature maps: every requested layer's output from ONE forward pass."""

from __future__ import annotations

import numpy as np

from .errors import InputError, InputTypeError
from .graph import LayerGraph
from .inputs import prepare_inputs


def resolve_layers(graph: LayerGraph, layers) -> list[str]:
    """Layer paths for ``layers`` (None: all, one name, or a list); unknown ones raise."""
    if layers is None:
        return graph.paths
    if isinstance(layers, str):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise InputTypeError(f"layers must be None (every layer), a layer name or a list of names; got {layers!r}.") from None
    for path in layers:
        graph.info(path)
    return layers


def activations(model, x, layers=None, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` (default: every showable layer) for images ``x``.

    All layers come from one inference-mode pass (Dropout off, BatchNormalization
    with its moving statistics) of one cached multi-output graph, run over ``x`` in
    batches of ``batch_size``. Arrays keep the batch axis first.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size is how many images run at once and must be an int >= 1, got {batch_size!r}.")
    graph = LayerGraph.of(model)
    paths = resolve_layers(graph, layers)
    inputs = prepare_inputs(graph, x)
    return dict(zip(paths, graph.run(paths, inputs, batch_size)))
