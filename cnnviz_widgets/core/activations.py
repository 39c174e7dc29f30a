"""Feature maps: every requested layer's output from ONE forward pass."""

from __future__ import annotations

import numpy as np

from . import checks
from .errors import InputError, InputTypeError, listed
from .graph import LayerGraph
from .inputs import prepare_inputs


def resolve_layers(graph: LayerGraph, layers) -> list[str]:
    """Layer paths for ``layers`` (None: all, one name, or a list); unknown, repeated or no layers raise."""
    if layers is None:
        return graph.paths
    if isinstance(layers, str):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise InputTypeError(f"layers must be None (every layer), a layer name or a list of names; got {layers!r}.") from None
    if not layers:
        raise InputError("layers is empty; pass layer names (cw.layer_names(model) lists them), or None for every layer.")
    for path in layers:
        graph.info(path)
    repeated = sorted({path for path in layers if layers.count(path) > 1})
    if repeated:
        raise InputError(
            f"layers names {listed(repeated)} more than once; each layer's output is returned once, so list it once."
        )
    return layers


def activations(model, x, layers=None, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` (default: every showable layer) for images ``x``.

    All layers come from one inference-mode pass (Dropout off, BatchNormalization
    with its moving statistics) of one cached multi-output graph, run over ``x`` in
    batches of ``batch_size``. Arrays keep the batch axis first.
    """
    checks.count("batch_size", batch_size, "how many images run at once", minimum=1)
    graph = LayerGraph.of(model)
    paths = resolve_layers(graph, layers)
    inputs = prepare_inputs(graph, x)
    return dict(zip(paths, graph.run(paths, inputs, batch_size)))
