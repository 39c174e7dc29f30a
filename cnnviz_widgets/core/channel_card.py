"""What ChannelCard shows of one channel, as plain values (issue 14, section 3).

A channel seen whole: its kernel, the dataset images that excite it most with its map
over them, its mean activation over the dataset and, for one image and class, its
Grad-CAM contribution (the channel's Grad-CAM weight times its mean activation, as in
``CamResult.contributions``). Its feature visualisation is a filter pattern, computed in
the background by ``core/pattern_jobs.PatternJob`` (the widget runs it).

:class:`ChannelCards` holds one model over one dataset. What a layer needs (every
channel's spatial mean on every image, in one batched pass, and the top examples of
every channel, streamed by ``cw.top_activating``) is computed once and kept for the last
``LAYERS_KEPT`` layers, so moving between the channels of a layer computes nothing but
the k examples' maps. Two passes over a large dataset take a while: a :class:`LayerJob`
runs them in a thread of its own, with progress and stop, for the widget.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from . import checks, imaging
from .attribution import GradCam, checked_layer, default_layer, explainable_layers
from .class_names import class_names_for
from .errors import CnnvizError, InputError
from .graph import LayerGraph
from .jobs import BackgroundJob
from .inputs import as_images, raw_and_model_inputs
from .top_activating import top_activating
from .weights import display_kernel, kernel_layer_names, kernel_page, signed_weight_bound

LAYERS_KEPT = 4  # per-layer statistics kept: (images × channels) means and top examples
MAX_BATCH = 64
BATCH_BUDGET_MB = 256  # the model's largest layer output for one batch (VGG16 at 224 px: 20 images, not 64)
KERNEL_PX = 160  # about the side of a channel's kernel picture
EXAMPLE_COLORMAP = "jet"
EXAMPLE_ALPHA = 0.5


@dataclass(frozen=True)
class Contribution:
    """A channel's part in the Grad-CAM map of one image and class at its layer."""

    image_index: int
    class_index: int
    value: float  # Grad-CAM weight × mean activation on the image
    weight: float  # the channel's Grad-CAM weight: mean over positions of d score / d activation
    rank: int  # 1 = the largest |contribution| of the layer's channels
    channels: int


@dataclass(frozen=True)
class TopExamples:
    """The images that excite a channel most, best first, with the channel's map over each."""

    indices: np.ndarray  # (k,) into the dataset
    values: np.ndarray  # (k,) the channel's maximum on each image
    positions: np.ndarray  # (k, 2) (row, column) of that maximum in the channel's map
    boxes: np.ndarray  # (k, 4) the input pixels the layer sees there (top, left, bottom, right; exclusive)
    pictures: np.ndarray  # uint8 (k, H, W, 3): the raw image, the map over it in EXAMPLE_COLORMAP from 0 to
    # ``peak``, and a white frame around ``boxes`` (where the raw images have the model's size)
    peak: float  # the best example's maximum (1 where no map is above 0): one scale for the k maps, so they compare


@dataclass(frozen=True)
class ChannelCard:
    """One channel of one layer, seen whole."""

    layer: str
    channel: int
    kernel: np.ndarray | None  # (kh, kw, cin): this channel's filter as display_kernel lays it out; None: no kernel
    kernel_picture: np.ndarray | None  # uint8, the filter's tiles on the signed scale (red +, blue -, white 0)
    kernel_bound: float | None  # the weight at the red end; -bound at the blue end
    image_means: np.ndarray  # (N,) the channel's spatial mean on each image of the dataset
    examples: TopExamples
    contribution: Contribution | None  # None: no image and class chosen, or a layer Grad-CAM does not explain

    @property
    def mean_activation(self) -> float:
        """The channel's mean activation over the dataset (the mean of ``image_means``)."""
        return float(self.image_means.mean())

    def summary(self) -> str:
        """One line: the channel, its mean activation and its strongest example."""
        best = self.examples
        return (
            f"{self.layer}, channel {self.channel}: mean activation {self.mean_activation:.3g} over "
            f"{len(self.image_means)} images; strongest on image {int(best.indices[0])} ({best.values[0]:.3g})"
        )


class ChannelCards:
    """The channel cards of ``model`` over a dataset ``images`` (raw pixels, as shown).

    ``preprocess`` maps the raw images to what the model takes, as for the widgets;
    ``k`` is the number of top examples per channel; ``class_names`` as GradCamViewer takes them;
    ``batch_size`` images go through the model at once (None: as many as keep its largest layer
    output within BATCH_BUDGET_MB, at most MAX_BATCH). Contributions are to the classes of the
    model's first output.
    """

    def __init__(self, model, images, *, preprocess=None, k: int = 9, batch_size: int | None = None, class_names=None):
        self.model = model
        self.graph = graph = LayerGraph.of(model)
        raw, self.inputs = raw_and_model_inputs(graph, images, preprocess)
        self.images = as_images(graph, raw)
        self.k = min(checks.count("k", k, "how many top examples to show per channel", minimum=1), len(self.images))
        if batch_size is None:
            batch_size = min(graph.images_per_batch(BATCH_BUDGET_MB * 2**20), MAX_BATCH)
        self.batch_size = checks.count("batch_size", batch_size, "images per forward pass", minimum=1)
        self.layer_names = graph.spatial_paths(rank=4)
        if not self.layer_names:
            raise InputError(f"Model '{model.name}' has no layer with (height, width, channels) maps to show a channel of.")
        self._kernel_layers = set(kernel_layer_names(model))
        self._explainable = set(explainable_layers(graph))
        self._layers: OrderedDict[str, tuple[np.ndarray, object]] = OrderedDict()
        self._layers_lock = threading.Lock()  # a LayerJob adds from its thread
        self._head = graph.head(0)
        self.class_names = class_names_for(self._head.num_classes, class_names, model)
        self._contributions: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @property
    def default_layer(self) -> str:
        """The layer Grad-CAM explains by default (the last convolution), else the last with maps."""
        try:
            return default_layer(self.graph)
        except CnnvizError:
            return self.layer_names[-1]

    @property
    def value_range(self) -> tuple[float, float]:
        """The pixel range of the raw images as a feature visualisation takes it: (0, 1) or (0, 255)."""
        return (0.0, 1.0) if float(self.images.max()) <= 1.0 else (0.0, 255.0)

    def most_active_channel(self, layer: str) -> int:
        """The channel of ``layer`` with the largest mean activation over the dataset: a dead one shows nothing."""
        means, _ = self._layer(self.checked_layer(layer))
        return int(np.argmax(means.mean(axis=0)))

    def checked_class(self, class_index) -> int:
        return self._head.class_index(class_index)

    def top_class(self, image_index: int) -> int:
        """The class the model scores highest for image ``image_index``."""
        return int(np.argmax(self.graph.probabilities([self.inputs[image_index : image_index + 1]], 0)[0]))

    def channel_count(self, layer: str) -> int:
        return int(self.graph.info(self.checked_layer(layer)).output_shape[-1])

    def checked_layer(self, layer) -> str:
        if layer not in self.layer_names:
            raise InputError(f"Layer {layer!r} has no channel maps to show. Use one of: {', '.join(self.layer_names)}.")
        return layer

    def card(self, layer: str, channel: int, image_index: int | None = None, class_index: int | None = None) -> ChannelCard:
        """The card of ``channel`` of ``layer``; with ``image_index``, its Grad-CAM contribution to
        ``class_index`` (None: the image's top class) where Grad-CAM explains the layer."""
        count = self.channel_count(layer)
        checks.index("channel", channel, count, f"layer '{layer}' has {count} channels")
        means, top = self._layer(layer)
        kernel, picture, bound = self._kernel(layer, channel)
        contribution = None
        if image_index is not None and layer in self._explainable:
            class_index = self.top_class(image_index) if class_index is None else class_index
            contribution = self._contribution(layer, channel, image_index, class_index)
        return ChannelCard(layer, channel, kernel, picture, bound, means[:, channel], self._examples(layer, channel, top), contribution)

    def has_layer(self, layer: str) -> bool:
        """Whether what a card of ``layer`` needs is computed: its cards then cost only their k examples' maps."""
        with self._layers_lock:
            return layer in self._layers

    def _layer(self, layer: str):
        """(every image's spatial mean per channel (N, C), the top examples of every channel), computed once."""
        with self._layers_lock:
            if layer in self._layers:
                self._layers.move_to_end(layer)
                return self._layers[layer]
        self.compute_layer(layer)
        with self._layers_lock:
            return self._layers[layer]

    def compute_layer(self, layer: str, advance: Callable[[int], bool] = lambda done: False):
        """Compute and keep what the cards of ``layer`` need: two passes over the data, batch by batch.

        ``advance(images_done)`` is called after each batch, counting both passes (up to
        2 N); True stops, and nothing is kept.
        """
        parts, done = [], 0
        for (maps,) in self.graph.batches([layer], [self.inputs], self.batch_size):
            parts.append(maps.mean(axis=(1, 2)))
            done += len(maps)
            if advance(done):
                return
        images = len(self.images)
        top = top_activating(
            self.model, layer, self.inputs, k=self.k, batch_size=self.batch_size, progress=lambda seen, _: advance(images + seen)
        )
        if top.stopped:
            return
        with self._layers_lock:
            self._layers[layer] = np.concatenate(parts), top
            while len(self._layers) > LAYERS_KEPT:
                self._layers.popitem(last=False)

    def _kernel(self, layer: str, channel: int):
        if layer not in self._kernel_layers:
            return None, None, None
        kernel, rgb = display_kernel(self.model, layer)
        if channel >= kernel.shape[-1]:  # a separable convolution has fewer output channels than depthwise filters
            return None, None, None
        bound = signed_weight_bound(kernel[..., channel])
        page = kernel_page(kernel, range(channel, channel + 1), rgb=rgb, scale="signed", signed_bound=bound)
        return kernel[..., channel], page.filter_picture(channel, KERNEL_PX), bound

    def _examples(self, layer: str, channel: int, top) -> TopExamples:
        indices, values, positions, boxes = top.indices[channel], top.values[channel], top.positions[channel], top.boxes[channel]
        # A plain call: k images, once per channel, need no compiled function of their batch size.
        maps = np.asarray(tf.cast(self.graph.model_for([layer])(self.inputs[indices], training=False), tf.float32))
        peak = float(values[0]) if values[0] > 0 else 1.0
        heat = np.clip(maps[..., channel] / peak, 0, 1)
        pictures = [
            imaging.overlay(imaging.raw_image_picture(self.images[i]), h, EXAMPLE_ALPHA, EXAMPLE_COLORMAP) for i, h in zip(indices, heat)
        ]
        if tuple(self.images.shape[1:3]) == tuple(top.image_size):  # else a resizing preprocess: no frame
            pictures = [imaging.outline(picture, box) for picture, box in zip(pictures, boxes)]
        return TopExamples(indices, values, positions, boxes, np.stack(pictures), peak)

    def _contribution(self, layer: str, channel: int, image_index: int, class_index: int) -> Contribution:
        image_index = checks.index("image_index", image_index, len(self.images), f"the dataset has {len(self.images)} images")
        key = (layer, image_index, class_index)
        if key not in self._contributions:
            checked_layer(self.graph, layer)
            result = GradCam.shared(self.model, layer).explain(self.inputs[image_index : image_index + 1], [class_index])
            self._contributions[key] = result.contributions[0, 0], result.channel_weights[0, 0]
            while len(self._contributions) > 64:
                self._contributions.popitem(last=False)
        contributions, weights = self._contributions[key]
        rank = 1 + int(np.sum(np.abs(contributions) > abs(contributions[channel])))
        return Contribution(image_index, int(class_index), float(contributions[channel]), float(weights[channel]), rank, len(contributions))


class LayerJob(BackgroundJob):
    """:meth:`ChannelCards.compute_layer` in a :class:`~cnnviz_widgets.core.jobs.BackgroundJob`, for a viewer.

    Progress is counted in images over both passes (``done`` of ``total`` = 2 N);
    :meth:`stop` ends it after the current batch, keeping nothing; a failure is kept in
    ``error``. ``on_progress(job)`` runs in the job's thread after each batch and
    ``on_finish(job)`` at the end, whatever the outcome.
    """

    def __init__(self, cards: ChannelCards, layer: str, *, on_progress=None, on_finish=None):
        self.cards, self.layer = cards, cards.checked_layer(layer)
        images = 2 * len(cards.images)

        def work(progress, should_stop):
            cards.compute_layer(self.layer, lambda done: progress(done, images))

        super().__init__(work, name=f"channel cards of {layer}", total=images, on_progress=on_progress, on_finish=on_finish)
