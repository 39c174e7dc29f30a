"""Activations of a fixed set of images, kept for interactive browsing.

A view that shows one layer of one image at a time has to answer layer and channel
changes without running the model. :class:`ActivationCache` therefore runs EVERY
layer of an image in one forward pass the first time that image is asked for, and
keeps the results of recently used images. Comparing images needs one layer over all
of them: that is one pass of that layer over the images, in batches small enough that
a batch's largest layer output stays under ``BATCH_BYTES``, kept per layer, or only a
summary of each batch (maps shrunk to the tiles a picture shows) where the whole layer
of thousands of images would not fit. Both kinds of entry share one memory budget.

``forward_passes`` counts the runs, so callers and tests can check what an
interaction cost.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import checks
from .errors import UnsupportedModelError
from .graph import LayerGraph
from .inputs import raw_and_model_inputs

DEFAULT_MAX_BYTES = 256 * 2**20
# 16 VGG16-224 images in one batch hold 205 MB per block1 map while TensorFlow runs
# them; 5 at a time stay near 64 MB, and the convolutions run as fast.
BATCH_BYTES = 64 * 2**20
UNKNOWN_SHAPE_BATCH = 32


class ActivationCache:
    """Layer outputs of ``images`` for one model, computed on demand and kept.

    ``images`` are what the user looks at: a batch (N, ...) or one image without a
    batch axis. ``preprocess``, if given, is called ONCE with a copy of the whole
    batch (so an in-place function such as ``keras.applications.vgg16.preprocess_input``
    cannot alter the caller's images) and must return what the model takes.

    Entries (all layers of an image, one layer of all images) are kept, most
    recently used first, while they fit in ``max_bytes`` together; the newest entry
    of each kind always stays, whatever its size, so a view that shows one of each
    never runs the model again to get back the one the other pushed out.
    """

    def __init__(self, model, images, preprocess=None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.graph = LayerGraph.of(model)
        if len(self.graph.inputs) != 1:
            raise UnsupportedModelError(
                f"The model takes {len(self.graph.inputs)} inputs; browsing activations "
                "needs a model with one image input. Use cw.activations(model, [x1, x2, …]) "
                "for several inputs."
            )
        self.images, self.inputs = map(_read_only, raw_and_model_inputs(self.graph, images, preprocess))
        self.forward_passes = 0
        self._store = _LruStore(max_bytes)
        self._batch_size = self.graph.images_per_batch(BATCH_BYTES, UNKNOWN_SHAPE_BATCH)

    def __len__(self) -> int:
        return len(self.inputs)

    def for_image(self, index: int) -> dict[str, np.ndarray]:
        """Every showable layer's output for image ``index``, batch axis dropped."""
        index = checks.index("Image index", index, len(self), f"there are {len(self)} images")

        def run():
            outputs = self._run(self.graph.paths, self.inputs[index : index + 1])
            return {path: _read_only(array[0]) for path, array in outputs.items()}

        return self._store.get(("image", index), run)

    def for_layer(self, path: str) -> np.ndarray:
        """Layer ``path``'s output for every image, batch first."""
        return self.summarised(path, "output", lambda batch: batch)

    def summarised(self, path: str, name: str, summarise) -> np.ndarray:
        """``summarise(batch)`` of layer ``path``'s output for every image, batch first, kept as ``name``.

        One pass over the images keeps only each batch's summary, e.g. maps shrunk to
        the tiles a picture shows: the layer for every image is never held at once.
        """
        self.graph.info(path)

        def run():
            self.forward_passes += 1
            batches = self.graph.batches([path], [self.inputs], batch_size=self._batch_size)
            parts = [summarise(outputs) for (outputs,) in batches]
            return _read_only(parts[0] if len(parts) == 1 else np.concatenate(parts))

        return self._store.get(("layer", path, name), run)

    def _run(self, paths, inputs) -> dict[str, np.ndarray]:
        self.forward_passes += 1
        return dict(zip(paths, self.graph.run(paths, [inputs], batch_size=self._batch_size)))


def _read_only(array: np.ndarray) -> np.ndarray:
    """Cached arrays are shared with every caller; a write would corrupt the cache."""
    array.flags.writeable = False
    return array


class _LruStore:
    """Values by key; least recently used ones go first once the store is over budget,
    except the newest of each kind (``key[0]``)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()  # key -> (value, bytes)
        self._total = 0

    def get(self, key, compute):
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = compute()
        size = sum(a.nbytes for a in value.values()) if isinstance(value, dict) else value.nbytes
        self._entries[key] = (value, size)
        self._total += size
        while self._total > self.max_bytes:
            newest = {entry[0]: entry for entry in self._entries}  # of each kind, key[0]
            oldest = next((entry for entry in self._entries if newest[entry[0]] != entry), None)
            if oldest is None:
                break
            self._total -= self._entries.pop(oldest)[1]
        return value
