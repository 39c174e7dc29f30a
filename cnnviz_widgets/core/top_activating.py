"""Dataset examples: the images that excite each channel of a layer most, found in one stream.

:func:`top_activating` runs the model, truncated at the layer, over ``data`` batch by
batch in one compiled function that also keeps a running top-k per channel: the
batch's per-image channel maxima are merged with the running top-k by
``tf.math.top_k`` over their concatenation. Memory holds O(channels × k) values
whatever the length of ``data``; neither the dataset nor its activations are kept.

Order: the higher activation first; equal activations keep the lower image index
first (``tf.math.top_k`` keeps the earlier of equal elements, and the running top-k,
made of earlier images, comes first in the concatenation). Where a map reaches its
maximum at several positions, the first in row-major order is the position.

Where the maximum lies is mapped to input pixels by the receptive field computed from
the layers (:func:`receptive_field`), or, where a layer on the way is not a
convolution, a pooling or a position-wise layer, by the ratio of the input's size to
the map's (``field.exact`` says which).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from . import checks
from .errors import InputError, InputTypeError, UnsupportedModelError
from .graph import LayerGraph, compiled_method
from .jobs import BackgroundJob
from .inputs import prepare_inputs, required_image_shape

K_MEANING = "how many images to keep per channel"
BATCH_SIZE_MEANING = "how many images run at once"
PREPROCESS_MEANING = "from a batch of raw images to what the model takes"


@dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels position (i, j) of a map sees, per axis (rows, columns).

    Map position ``i`` sees input pixels ``start + i * jump`` to ``start + i * jump + size - 1``
    (``start`` may be negative where the layers pad). ``exact`` is True where this is
    computed from the layers' kernels, strides, dilations and padding, False where it is
    only the ratio of the input's size to the map's (one map cell's share of the image).
    """

    start: tuple[float, float]
    jump: tuple[float, float]
    size: tuple[float, float]
    exact: bool

    def box(self, positions: np.ndarray, image_size) -> np.ndarray:
        """(..., 4) pixel boxes (top, left, bottom, right), bottom and right exclusive, clipped
        to ``image_size`` (H, W), for (..., 2) map positions."""
        positions = np.asarray(positions, np.float64)
        start = np.asarray(self.start) + positions * np.asarray(self.jump)
        low = np.clip(np.floor(start), 0, np.asarray(image_size))
        high = np.clip(np.ceil(start + np.asarray(self.size)), 0, np.asarray(image_size))
        return np.concatenate([low, high], axis=-1).astype(np.int64)

    def centre(self, positions: np.ndarray) -> np.ndarray:
        """(..., 2) input-pixel coordinates (row, column) of the centres of the fields, unclipped."""
        positions = np.asarray(positions, np.float64)
        return np.asarray(self.start) + positions * np.asarray(self.jump) + (np.asarray(self.size) - 1) / 2


@dataclass(frozen=True)
class TopActivating:
    """For each of ``channels``, the ``k`` images of ``data`` where it is highest, best first.

    ``indices`` (C, k) index ``data`` (the n-th image it gave, counting from 0), ``values``
    (C, k) are the channel's spatial maxima in those images, ``positions`` (C, k, 2) the
    (row, column) of that maximum in the layer's map of ``map_size``; ``boxes`` and
    ``centres`` place it in the input image of ``image_size``. ``k`` is at most the
    number of images seen; ``stopped`` says whether ``progress`` stopped the run after
    ``images_seen`` images.
    """

    layer: str
    channels: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray
    map_size: tuple[int, int]
    image_size: tuple[int, int]
    field: ReceptiveField
    images_seen: int
    stopped: bool = False

    @property
    def boxes(self) -> np.ndarray:
        """(C, k, 4) input-pixel boxes (top, left, bottom, right; exclusive) of the maxima's fields."""
        return self.field.box(self.positions, self.image_size)

    @property
    def centres(self) -> np.ndarray:
        """(C, k, 2) input-pixel (row, column) centres of the maxima's fields."""
        return self.field.centre(self.positions)

    def row(self, channel: int) -> int:
        """The row of ``channel`` (a channel number of the layer) in this result's arrays."""
        matches = np.flatnonzero(self.channels == channel) if isinstance(channel, (int, np.integer)) else []
        if isinstance(channel, bool) or len(matches) == 0:
            shown = ", ".join(map(str, self.channels[:20].tolist())) + (", …" if len(self.channels) > 20 else "")
            raise InputError(f"Channel {channel!r} is not in this result; it holds channels {shown}.")
        return int(matches[0])

    def patch(self, image, channel: int, rank: int = 0) -> np.ndarray:
        """The part of ``image`` (the raw image ``data`` gave at ``indices[row(channel), rank]``,
        (H, W, ...)) that the layer sees at the ``rank``-th best maximum of ``channel``."""
        row = self.row(channel)
        rank = checks.index("rank", rank, self.indices.shape[1], f"this result keeps {self.indices.shape[1]} images per channel")
        image = np.asarray(image)
        if tuple(image.shape[:2]) != tuple(self.image_size):
            raise InputError(
                f"image has shape {image.shape}, but the layer's maps were computed on images of "
                f"{self.image_size[0]}x{self.image_size[1]} pixels; pass data[{self.indices[row, rank]}] as data gave it."
            )
        top, left, bottom, right = self.boxes[row, rank]
        return image[top:bottom, left:right]


def top_activating(
    model,
    layer: str,
    data,
    k: int = 9,
    channels=None,
    batch_size: int = 64,
    *,
    preprocess=None,
    progress: Callable[[int, int | None], object] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> TopActivating:
    """The ``k`` images of ``data`` that activate each channel of ``layer`` most (see :class:`TopActivating`).

    ``data``: an array of images (N, H, W, C), a ``tf.data.Dataset`` of images or of batches
    (elements ``(image, label)`` or ``(batch, labels)`` give their first part), or any
    iterable of batches (a list, a generator, a ``keras.utils.PyDataset``), of any length; batches
    larger than ``batch_size`` are cut. ``channels``: channel numbers (default: all).
    ``preprocess`` is called on a copy of each batch of raw images and returns what the
    model takes. ``progress(images_done, total)`` is called after each batch (``total`` is
    None where ``data`` has no known length); returning True stops the run, and the result
    covers the images seen. ``strategy``: a ``tf.distribute`` strategy (e.g.
    ``MirroredStrategy``) whose replicas share each batch. Fewer than ``k`` images give
    a result with as many columns as images.
    """
    k = checks.count("k", k, K_MEANING, minimum=1)
    batch_size = checks.count("batch_size", batch_size, BATCH_SIZE_MEANING, minimum=1)
    checks.function_or_none("preprocess", preprocess, PREPROCESS_MEANING)
    checks.function_or_none("progress", progress, "called with (images done, total or None); True stops")
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise InputTypeError(f"strategy must be None or a tf.distribute.Strategy, e.g. tf.distribute.MirroredStrategy(); got {strategy!r}.")
    graph = LayerGraph.of(model)
    info = graph.info(layer)
    if len(info.output_shape) != 4:
        raise UnsupportedModelError(
            f"Layer '{layer}' gives {len(info.output_shape)}-D outputs {info.output_shape}; dataset examples need "
            "a layer with (height, width, channels) maps: pick one of " + ", ".join(graph.spatial_paths()) + "."
        )
    selected = _checked_channels(channels, int(info.output_shape[-1]), layer)
    image_shape = required_image_shape(graph, "Dataset examples need", "Pass a model that takes images.")
    step = _step(graph, layer, strategy)
    total = _total(data, len(graph.inputs[0].shape))
    state = _running_state(len(selected), k if total is None else min(k, total))  # k=10**9 on 100 images holds 100
    seen, stopped, image_size, map_size = 0, False, None, None
    for raw in _batches(data, batch_size, graph):
        batch = _model_input(graph, raw, preprocess)
        image_size = image_size or (tuple(image_shape[:2]) if None not in image_shape[:2] else tuple(batch.shape[1:3]))
        values, indices, positions, map_shape, finite = step(
            _distributed(batch, strategy), tf.constant(seen, tf.int32), tf.constant(selected, tf.int32), *state
        )
        if not bool(finite):
            raise UnsupportedModelError(
                f"Layer '{layer}' computes NaN or infinity for image(s) {seen}..{seen + len(batch) - 1} of data. "
                "Check these images and preprocess (e.g. np.isfinite(x).all()), and the weights of the layers up to this one."
            )
        state, map_size = (values, indices, positions), tuple(int(d) for d in map_shape)
        seen += len(batch)
        if progress is not None and progress(seen, total):
            stopped = True
            break
    if seen == 0:
        raise InputError("data gave no images; pass an array (N, H, W, C), a tf.data.Dataset or an iterable of batches.")
    kept = min(k, seen)
    values, indices, positions = (np.asarray(part)[:, :kept] for part in state)
    indices, positions = indices.astype(np.int64), positions.astype(np.int64)
    rows, columns = np.divmod(positions, map_size[1])
    return TopActivating(
        layer=layer,
        channels=selected,
        indices=indices,
        values=values,
        positions=np.stack([rows, columns], axis=-1),
        map_size=map_size,
        image_size=image_size,
        field=graph.cached(
            ("receptive_field", layer, image_size, map_size), lambda: receptive_field(graph, layer, image_size, map_size)
        ),
        images_seen=seen,
        stopped=stopped,
    )



class TopActivatingJob(BackgroundJob):
    """:func:`top_activating` in a :class:`~cnnviz_widgets.core.jobs.BackgroundJob`, for a viewer.

    ``on_progress(job)`` runs in the job's thread after each batch (``job.done`` images of
    ``job.total``, None where unknown); ``on_finish(job)`` at the end, whether it finished,
    was stopped (:meth:`stop`, after the current batch; ``job.result`` covers the images
    seen) or failed (``job.error``). ``options`` are :func:`top_activating`'s.
    """

    def __init__(self, model, layer: str, data, *, on_progress=None, on_finish=None, **options):
        def work(progress, should_stop) -> TopActivating:
            return top_activating(model, layer, data, progress=progress, **options)

        super().__init__(work, name=f"top activating of {layer}", total=None, on_progress=on_progress, on_finish=on_finish)


def _checked_channels(channels, count: int, layer: str) -> np.ndarray:
    if channels is None:
        return np.arange(count)
    try:
        selected = np.asarray([channels] if np.isscalar(channels) else list(channels))
    except TypeError:
        raise InputTypeError(f"channels must be None (all) or channel numbers, e.g. range(8) or [0, 3]; got {channels!r}.") from None
    if selected.ndim != 1 or selected.size == 0:
        raise InputError(f"channels must be a non-empty flat list of channel numbers, e.g. [0, 3]; got {channels!r}.")
    why = f"layer '{layer}' has {count} channels"
    return np.asarray([checks.index("channel", c, count, why) for c in selected.tolist()], np.int64)


def _running_state(channels: int, k: int):
    """The empty running top-k: -inf values (any finite activation beats them), index -1."""
    return (
        tf.fill((channels, k), tf.constant(-np.inf, tf.float32)),
        tf.fill((channels, k), tf.constant(-1, tf.int32)),
        tf.fill((channels, k), tf.constant(-1, tf.int32)),
    )


def _step(graph: LayerGraph, layer: str, strategy):
    """The compiled batch step of ``layer``: maps → per-image channel maxima → merged top-k (cached)."""

    def build():
        truncated = graph.model_for([layer])

        def maxima(images, channels):
            maps = tf.gather(tf.cast(truncated(images, training=False), tf.float32), channels, axis=-1)
            flat = tf.reshape(maps, (tf.shape(maps)[0], -1, tf.shape(maps)[-1]))  # (n, h*w, C)
            highest = tf.reduce_max(flat, axis=1)
            # The first position of the maximum in row-major order; tf.argmax leaves ties undefined.
            where = tf.range(tf.shape(flat, out_type=tf.int32)[1], dtype=tf.int32)[None, :, None]
            first = tf.reduce_min(tf.where(flat == highest[:, None, :], where, tf.int32.max), axis=1)
            finite = tf.reduce_all(tf.math.is_finite(maps))
            return highest, first, tf.shape(maps)[1:3], finite

        def run(images, seen, channels, values, indices, positions):
            if strategy is None:
                highest, first, map_shape, finite = maxima(images, channels)
            else:
                parts = strategy.run(maxima, args=(images, channels))
                highest, first = (strategy.gather(part, axis=0) for part in parts[:2])
                map_shape = strategy.experimental_local_results(parts[2])[0]
                finite = tf.reduce_all(tf.stack(strategy.experimental_local_results(parts[3])))
            count = tf.shape(highest, out_type=tf.int32)[0]
            batch_indices = tf.broadcast_to(seen + tf.range(count, dtype=tf.int32), tf.shape(tf.transpose(highest), out_type=tf.int32))
            # Running top-k first: on equal values top_k keeps the earlier, so lower image indices win.
            all_values = tf.concat([values, tf.transpose(highest)], axis=1)
            all_indices = tf.concat([indices, batch_indices], axis=1)
            # Transposed as float32 (exact below 2**24): oneDNN's int32 transpose logs an error on CPUs without AVX-512.
            batch_positions = tf.cast(tf.transpose(tf.cast(first, tf.float32)), tf.int32)
            all_positions = tf.concat([positions, batch_positions], axis=1)
            best = tf.math.top_k(all_values, k=tf.shape(values)[1], sorted=True).indices
            return (
                tf.gather(all_values, best, batch_dims=1),
                tf.gather(all_indices, best, batch_dims=1),
                tf.gather(all_positions, best, batch_dims=1),
                map_shape,
                finite,
            )

        return compiled_method(run, reduce_retracing=True, autograph=False)

    return graph.cached(("top_activating", layer, strategy), build)


def _distributed(batch: np.ndarray, strategy):
    """``batch`` as is, or cut in contiguous parts, one per replica, in replica order."""
    if strategy is None:
        return tf.convert_to_tensor(batch)
    parts = np.array_split(batch, strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_values_from_function(lambda context: tf.constant(parts[context.replica_id_in_sync_group]))


def _model_input(graph: LayerGraph, raw, preprocess) -> np.ndarray:
    if preprocess is None:
        return prepare_inputs(graph, raw)[0]
    raw = np.array(raw)  # a copy: keras' preprocess_input edits float arrays in place
    try:
        batch = preprocess(raw)
    except Exception as error:
        raise InputError(
            f"preprocess raised {type(error).__name__}: {error}. It is called with each batch of raw images, "
            f"a numpy array of shape {raw.shape} and dtype {raw.dtype}, and must return the batch the model takes."
        ) from error
    batch = prepare_inputs(graph, batch)[0]
    if len(batch) != len(raw):
        raise InputError(f"preprocess returned {len(batch)} images for {len(raw)}; it must return one per raw image.")
    return batch


def _first_part(element):
    """The images of an ``(images, labels)`` element, or the element itself."""
    return element[0] if isinstance(element, (tuple, list)) else element


def _batches(data, batch_size: int, graph: LayerGraph):
    """Batches of raw images from ``data``, none larger than ``batch_size``."""
    image_rank = len(graph.inputs[0].shape)
    if isinstance(data, tf.data.Dataset):
        images = data.map(lambda *element: element[0]) if isinstance(data.element_spec, tuple) else data
        if len(images.element_spec.shape) == image_rank - 1:
            images = images.batch(batch_size)
        data = images.as_numpy_iterator()
    elif isinstance(data, (np.ndarray, tf.Tensor, str, bytes)) or not isinstance(data, Iterable):
        data = [data]
    for element in data:
        batch = np.asarray(_first_part(element))
        if batch.ndim < image_rank - 1:
            raise InputTypeError(
                f"data gave {type(element).__name__} {str(element)[:60]!r}, not images: pass an array of images "
                "(N, H, W, C), a tf.data.Dataset of images or (images, labels), or an iterable of such batches."
            )
        if batch.ndim == image_rank - 1:  # one image
            batch = batch[None]
        for start in range(0, len(batch), batch_size):
            yield batch[start : start + batch_size]


def _total(data, image_rank: int) -> int | None:
    """How many images ``data`` holds, where that is known before running through it."""
    if isinstance(data, (np.ndarray, tf.Tensor)):
        return int(data.shape[0])
    if isinstance(data, tf.data.Dataset) and len(keras.tree.flatten(data.element_spec)[0].shape) == image_rank - 1:
        count = int(data.cardinality())
        return count if count >= 0 else None
    return None


def receptive_field(graph: LayerGraph, layer: str, image_size, map_size) -> ReceptiveField:
    """The input pixels that each position of ``layer``'s map (of ``map_size``) sees, for images of ``image_size`` (H, W).

    Walks the graph from the input: a convolution or pooling of kernel ``k``, stride ``s``,
    dilation ``d`` and left padding ``p`` makes ``size += (d(k-1)) * jump``,
    ``start -= p * jump``, ``jump *= s``; layers that keep the map's size and have no kernel
    (activations, normalisation, dropout) keep it; a merge takes the union of its inputs'
    fields. Any other layer (upsampling, transposed convolution, resizing, reshaping) makes
    it the ratio of sizes (``exact=False``).
    """
    fields: dict[int, tuple] = {id(graph.inputs[0]): ((0.0, 0.0), (1.0, 1.0), (1.0, 1.0), tuple(image_size))}
    producers = {id(tensor): info for info in graph.layers.values() for tensor in keras.tree.flatten(info.output)}

    target = graph.info(layer).output
    pending = [target]
    while pending:  # depth-first, without recursion: a ResNet152 is deeper than Python's stack
        tensor = pending[-1]
        if id(tensor) in fields:
            pending.pop()
            continue
        info = producers.get(id(tensor))
        inputs = [t for t in info.inputs if isinstance(t, keras.KerasTensor)] if info else []
        missing = [t for t in inputs if id(t) not in fields]
        if missing:
            pending.extend(missing)
        else:
            fields[id(tensor)] = _through(info.layer, [fields[id(t)] for t in inputs], tensor) if inputs else None
            pending.pop()
    found = fields[id(target)]
    if found is None or found[3] != map_size:
        jump = tuple(i / m for i, m in zip(image_size, map_size))
        return ReceptiveField(start=(0.0, 0.0), jump=jump, size=jump, exact=False)
    start, jump, size, _ = found
    return ReceptiveField(start=start, jump=jump, size=size, exact=True)


def _through(layer, inputs, output):
    """The field after ``layer`` from its inputs' fields, or None where it cannot be followed."""
    if any(field is None for field in inputs) or len(output.shape) != 4:
        return None
    if isinstance(layer, (keras.layers.UpSampling2D, keras.layers.Resizing, keras.layers.Cropping2D)):
        return None
    if hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"):
        if len(inputs) != 1 or isinstance(layer, keras.layers.Conv2DTranspose) or getattr(layer, "data_format", "channels_last") != "channels_last":
            return None
        start, jump, size, length = inputs[0]
        kernel = _pair(getattr(layer, "kernel_size", None) or layer.pool_size)
        strides = _pair(layer.strides or kernel)
        dilation = _pair(getattr(layer, "dilation_rate", 1))
        axes = []
        for axis in range(2):
            reach = dilation[axis] * (kernel[axis] - 1) + 1
            if layer.padding == "same":
                out = math.ceil(length[axis] / strides[axis])
                pad = max((out - 1) * strides[axis] + reach - length[axis], 0) // 2
            else:
                out, pad = (length[axis] - reach) // strides[axis] + 1, 0
            axes.append((start[axis] - pad * jump[axis], jump[axis] * strides[axis], size[axis] + (reach - 1) * jump[axis], out))
        return tuple(tuple(values) for values in zip(*axes))
    if isinstance(layer, keras.layers.ZeroPadding2D) and len(inputs) == 1:
        (top, bottom), (left, right) = layer.padding
        start, jump, size, length = inputs[0]
        return (
            (start[0] - top * jump[0], start[1] - left * jump[1]),
            jump,
            size,
            (length[0] + top + bottom, length[1] + left + right),
        )
    lengths = {field[3] for field in inputs} | ({tuple(output.shape[1:3])} if None not in output.shape[1:3] else set())
    jumps = {field[1] for field in inputs}
    if len(lengths) != 1 or len(jumps) != 1:
        return None
    # Same map size, no kernel: position-wise (or a merge of position-wise inputs).
    starts = [field[0] for field in inputs]
    ends = [tuple(s + z for s, z in zip(field[0], field[2])) for field in inputs]
    low = tuple(min(values) for values in zip(*starts))
    high = tuple(max(values) for values in zip(*ends))
    return low, inputs[0][1], tuple(h - l for h, l in zip(high, low)), inputs[0][3]


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)

