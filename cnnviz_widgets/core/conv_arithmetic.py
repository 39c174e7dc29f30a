"""How one number of a Conv2D's output is made (issue 14, part 4): the input patch the
kernel sees, times the kernel, summed per input channel, plus the bias, through the activation.

:class:`LayerArithmetic` runs the model once per (image, layer), keeping the layer's input
and output, and :meth:`LayerArithmetic.at` then builds a :class:`ConvNumber` for any
channel and output position from those arrays alone, so a click costs no model run.
:func:`conv_arithmetic` is the one-call form, ``cw.conv_arithmetic``.

The patch is what the layer receives: the image as the model takes it (after the caller's
own preprocessing) and after every layer of the model before this one. On a first Conv2D
that is the raw image, or the image after the model's own preprocessing layers in front
of it (``Rescaling``, ``Normalization``): ``ConvNumber.source`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from . import checks, imaging
from .errors import InputError, UnsupportedModelError, listed
from .graph import LayerGraph
from .inputs import prepare_inputs

SIGNED_COLORMAP = "RdBu_r"  # red positive, blue negative, white 0
MATCH_TOLERANCE = 1e-4
MODEL_INPUT = "the model's input image"
DARK_CELL = 0.3  # a signed colour this far from white (0.5) gets white text


@dataclass(frozen=True)
class ConvNumber:
    """One output value of a Conv2D, as the sum it is.

    ``patch``, ``kernel`` and ``products`` are (kh, kw, cin) with cin the input channels
    the output channel reads (all of them, or its group's with ``groups > 1``, listed in
    ``input_channels``); ``padded`` (kh, kw) is True where the (dilated) window leaves the
    input and the patch is the zero padding. ``input_rows`` and ``input_columns`` give the
    input row and column under each kernel row and column (outside 0..size-1 where padded).
    Values are float64; ``layer_output`` is what the model itself computed there (float32).
    """

    layer: str
    channel: int
    position: tuple[int, int]
    map_shape: tuple[int, int]
    source: str
    patch: np.ndarray
    padded: np.ndarray
    input_rows: np.ndarray
    input_columns: np.ndarray
    input_channels: np.ndarray
    kernel: np.ndarray
    bias: float | None
    activation: str
    pre_activation: float
    output: float
    layer_output: float

    @property
    def products(self) -> np.ndarray:
        return self.patch * self.kernel

    @property
    def channel_sums(self) -> np.ndarray:
        """(cin,) the products summed over the window, one per input channel."""
        return self.products.sum(axis=(0, 1))

    @property
    def weighted_sum(self) -> float:
        """Every product summed: the pre-activation without the bias."""
        return float(self.channel_sums.sum())

    @property
    def strongest_input(self) -> int:
        """The index into ``input_channels`` of the largest |channel sum|: the input that weighs most here."""
        return int(np.argmax(np.abs(self.channel_sums)))

    @property
    def matches_layer(self) -> bool:
        """Whether ``output`` is the model's own value there, up to float32 rounding."""
        return abs(self.output - self.layer_output) <= MATCH_TOLERANCE * max(1.0, abs(self.layer_output))

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the input area the window spans, bottom and right excluded;
        beyond the input where it reads padding."""
        rows, columns = self.input_rows, self.input_columns
        return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1


class LayerArithmetic:
    """The input and output of Conv2D ``layer`` for one image, to explain any of its numbers.

    ``image`` is what the model takes (one image, with or without a batch axis of one).
    """

    def __init__(self, model, image, layer: str):
        graph = LayerGraph.of(model)
        info = graph.info(layer)
        self.conv = _checked_conv(graph, layer, info.layer)
        inputs = prepare_inputs(graph, image)
        if len(inputs[0]) != 1:
            raise InputError(f"conv arithmetic explains one image, got a batch of {len(inputs[0])}; pass one, e.g. images[0].")
        self.layer = layer
        self.source, self.reads_image = _source(graph, info.inputs[0])
        submodel = graph.cached(
            ("conv_arithmetic", layer),
            lambda: keras.Model(graph.inputs if len(graph.inputs) > 1 else graph.inputs[0], [info.inputs[0], info.output]),
        )
        layer_input, layer_output = submodel(inputs if len(inputs) > 1 else inputs[0], training=False)
        self.input = np.asarray(tf.cast(layer_input, tf.float32))[0]  # (H, W, Cin)
        self.outputs = np.asarray(tf.cast(layer_output, tf.float32))[0]  # (out_h, out_w, Cout)
        self.kernel = np.asarray(self.conv.kernel.value, dtype=np.float64)  # (kh, kw, Cin / groups, Cout)
        bias = getattr(self.conv, "bias", None)
        self.bias = None if bias is None else np.asarray(bias.value, dtype=np.float64)
        self.map_shape = self.outputs.shape[:2]
        self.channels = self.outputs.shape[-1]
        self._offsets = [_window_start(self.conv, axis, self.input.shape[axis], self.map_shape[axis]) for axis in (0, 1)]

    @property
    def settings(self) -> str:
        """The layer's convolution in words, e.g. "3×3 kernel, stride 1, padding 'same', 16 channels"."""
        conv = self.conv
        parts = ["×".join(map(str, conv.kernel_size)) + " kernel", "stride " + _pair(conv.strides), f"padding '{conv.padding}'"]
        if conv.dilation_rate != (1, 1):
            parts.append("dilation " + _pair(conv.dilation_rate))
        if conv.groups > 1:
            parts.append(f"{conv.groups} groups")
        return ", ".join(parts + [f"{self.channels} channels"])

    def check_position(self, position) -> tuple[int, int]:
        """``position`` as (row, column) inside the output map, or one error naming the valid range."""
        height, width = self.map_shape
        valid = (
            isinstance(position, (tuple, list, np.ndarray))
            and len(position) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in position)
            and 0 <= position[0] < height
            and 0 <= position[1] < width
        )
        if not valid:
            raise InputError(
                f"position {position!r} is outside the {height}×{width} map of '{self.layer}': "
                f"pass (row, column) with row in 0..{height - 1} and column in 0..{width - 1}."
            )
        return int(position[0]), int(position[1])

    def check_channel(self, channel) -> int:
        return checks.index("channel", channel, self.channels, f"layer '{self.layer}' has {self.channels} channels")

    def channel_map(self, channel: int) -> np.ndarray:
        """(out_h, out_w) the layer's output for ``channel``, as the model computed it."""
        return self.outputs[..., self.check_channel(channel)]

    def map_picture(self, channel: int, colormap: str = "viridis") -> tuple[np.ndarray, float, float]:
        """The channel's map as uint8 RGB, with the values at the bottom and top of its colour scale."""
        values = self.channel_map(channel)
        return imaging.colormap(imaging.normalize(values), colormap), float(values.min()), float(values.max())

    def input_picture(self, input_channel: int, raw_image=None) -> np.ndarray:
        """What the layer reads, as uint8 RGB. Where it reads a 1- or 3-channel image: ``raw_image``
        (what the user looks at) when it has the same size, else the image as the layer reads it
        (stretched when its values are not pixels). Otherwise input channel ``input_channel`` in viridis."""
        if self._shows_image:
            same_size = raw_image is not None and np.shape(raw_image)[:2] == self.input.shape[:2]
            return imaging.raw_image_picture(raw_image if same_size else self.input)
        values = self.input[..., input_channel]
        if values.min() == values.max():  # no contrast: the bottom colour, not the mid-scale one that reads as a value
            return imaging.colormap(np.zeros(values.shape))
        return imaging.colormap(imaging.normalize(values))

    def input_description(self, input_channel: int) -> str:
        """What :meth:`input_picture` shows, in words: "the image", or "input channel 3: 0 to 1.21"."""
        if self._shows_image:
            return "the image"
        values = self.input[..., input_channel]
        low, high = float(values.min()), float(values.max())
        spread = f"{low:.3g} everywhere" if low == high else f"{low:.3g} to {high:.3g}"
        return f"input channel {input_channel}: {spread}"

    @property
    def _shows_image(self) -> bool:
        return self.reads_image and self.input.shape[-1] in (1, 3)

    def strongest_position(self, channel: int) -> tuple[int, int]:
        """(row, column) where ``channel`` has its largest value: a position worth explaining first."""
        values = self.channel_map(channel)
        row, column = np.unravel_index(int(np.argmax(values)), values.shape)
        return int(row), int(column)

    def same_place(self, position, map_shape) -> tuple[int, int]:
        """The position of this layer's map over the same part of the image as ``position`` of a ``map_shape`` map."""
        return tuple(min(int(p) * size // old, size - 1) for p, size, old in zip(position, self.map_shape, map_shape))

    def at(self, channel: int, position) -> ConvNumber:
        """How the layer's output at (row, column) of ``channel`` is made."""
        channel = self.check_channel(channel)
        row, column = self.check_position(position)
        rows = self._taps(0, row)
        columns = self._taps(1, column)
        inside_rows = (rows >= 0) & (rows < self.input.shape[0])
        inside_columns = (columns >= 0) & (columns < self.input.shape[1])
        inside = inside_rows[:, None] & inside_columns[None, :]
        window = self.input[np.clip(rows, 0, self.input.shape[0] - 1)][:, np.clip(columns, 0, self.input.shape[1] - 1)]
        window = np.where(inside[..., None], window, 0.0).astype(np.float64)  # (kh, kw, Cin)
        pre_activations = self._pre_activations(window)
        per_group = self.kernel.shape[2]
        group = channel // (self.channels // self.conv.groups)
        input_channels = np.arange(group * per_group, (group + 1) * per_group)
        after = np.asarray(self.conv.activation(tf.constant(pre_activations[None], tf.float32)))[0]
        return ConvNumber(
            layer=self.layer,
            channel=channel,
            position=(row, column),
            map_shape=tuple(self.map_shape),
            source=self.source,
            patch=window[..., input_channels],
            padded=~inside,
            input_rows=rows,
            input_columns=columns,
            input_channels=input_channels,
            kernel=self.kernel[..., channel],
            bias=None if self.bias is None else float(self.bias[channel]),
            activation=_activation_name(self.conv.activation),
            pre_activation=float(pre_activations[channel]),
            output=float(after[channel]),
            layer_output=float(self.outputs[row, column, channel]),
        )

    def _taps(self, axis: int, index: int) -> np.ndarray:
        """The input rows (axis 0) or columns (axis 1) under each kernel row or column at output ``index``."""
        stride, dilation = self.conv.strides[axis], self.conv.dilation_rate[axis]
        return index * stride - self._offsets[axis] + np.arange(self.kernel.shape[axis]) * dilation

    def _pre_activations(self, window: np.ndarray) -> np.ndarray:
        """(Cout,) every channel's sum at this window plus its bias: the activation may mix channels (softmax)."""
        groups = self.conv.groups
        kh, kw, per_group, channels = self.kernel.shape
        grouped_window = window.reshape(kh, kw, groups, per_group)
        grouped_kernel = self.kernel.reshape(kh, kw, per_group, groups, channels // groups)
        sums = np.einsum("hwgc,hwcgo->go", grouped_window, grouped_kernel).reshape(channels)
        return sums if self.bias is None else sums + self.bias


def conv_arithmetic(model, image, layer: str, channel: int, position) -> ConvNumber:
    """How the output of Conv2D ``layer`` at ``position`` = (row, column) of ``channel`` is made.

    ``image`` is one image as the model takes it. The result holds the input patch the
    kernel sees (zeros where the window leaves the input: the padding, marked in
    ``padded``), the channel's kernel, their products, the per-input-channel sums, the
    bias and the value before and after the layer's activation; ``layer_output`` is
    what the model computed there, which the sum equals up to float32 rounding. The
    patch is the layer's input: on a first layer the image itself, or the image after
    the model's own preprocessing layers (``source`` says which).
    """
    return LayerArithmetic(model, image, layer).at(channel, position)


def conv_layer_names(model) -> list[str]:
    """The layers whose numbers :func:`conv_arithmetic` explains: every Conv2D, in layer_names order."""
    graph = LayerGraph.of(model)
    return [path for path in graph.paths if _is_plain_conv(graph.layer(path))]


def signed_cells(values, bound: float) -> list[list[tuple[str, str]]]:
    """(background, text) '#rrggbb' colours of each value of a 2-D array, the background on a
    scale symmetric around 0 (``SIGNED_COLORMAP``, ±``bound``), the text white on dark cells."""
    scaled = 0.5 + np.asarray(values, dtype=np.float64) / (2 * bound) if bound > 0 else np.full(np.shape(values), 0.5)
    rgb = imaging.colormap(scaled, SIGNED_COLORMAP)
    dark = np.abs(scaled - 0.5) > DARK_CELL
    return [
        [("#%02x%02x%02x" % tuple(int(c) for c in pixel), "#ffffff" if is_dark else "#000000") for pixel, is_dark in zip(*row)]
        for row in zip(rgb, dark)
    ]


def _is_plain_conv(layer) -> bool:
    return isinstance(layer, keras.layers.Conv2D)


def _checked_conv(graph: LayerGraph, path: str, layer):
    if not _is_plain_conv(layer):
        convs = [p for p in graph.paths if _is_plain_conv(graph.layer(p))]
        raise UnsupportedModelError(
            f"Layer '{path}' is a {type(layer).__name__}, not a Conv2D: conv arithmetic shows how a Conv2D "
            f"makes its numbers. Conv2D layers of this model: {listed(convs) or 'none'}."
        )
    if layer.data_format != "channels_last":
        raise UnsupportedModelError(
            f"Layer '{path}' is channels_first; conv arithmetic reads channels_last Conv2D layers (Keras' default)."
        )
    return layer


def _window_start(conv, axis: int, size: int, out_size: int) -> int:
    """Rows (or columns) of zero padding before the input: TensorFlow's 'same' puts the odd one after."""
    if conv.padding == "valid":
        return 0
    reach = (conv.kernel.shape[axis] - 1) * conv.dilation_rate[axis] + 1
    total = max((out_size - 1) * conv.strides[axis] + reach - size, 0)
    return total // 2


def _source(graph: LayerGraph, tensor) -> tuple[str, bool]:
    """What the layer reads, in words, and whether that is the image: the model's input, maybe
    through the model's own preprocessing layers (Rescaling, Normalization, Resizing, …)."""
    producers = {id(info.output): (path, info) for path, info in graph.layers.items()}
    preprocessing, current = [], tensor
    while id(current) in producers and not isinstance(producers[id(current)][1].layer, keras.layers.InputLayer):
        path, info = producers[id(current)]
        if not (_is_preprocessing(info.layer) and len(info.inputs) == 1):
            path, info = producers[id(tensor)]
            return f"the output of layer '{path}' ({info.kind})", False
        preprocessing.insert(0, f"'{path}' ({info.kind})")
        current = info.inputs[0]
    if not preprocessing:
        return MODEL_INPUT, True
    return f"{MODEL_INPUT} after the model's own preprocessing: {', '.join(preprocessing)}", True


def _is_preprocessing(layer) -> bool:
    return type(layer).__module__.startswith("keras.src.layers.preprocessing")


def _pair(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"({values[0]}, {values[1]})"


def _activation_name(activation) -> str:
    return getattr(activation, "__name__", type(activation).__name__)
