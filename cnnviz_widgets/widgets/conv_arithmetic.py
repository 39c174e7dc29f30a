"""ConvArithmetic: how one number of a Conv2D's feature map is made, for the classroom (issue 14, part 4).

Click a position of a channel's map and read, as an equation, the input patch the kernel
sees, the kernel, their products, the sum per input channel, the bias and the value before
and after the activation. It only wires: the numbers come from
:mod:`cnnviz_widgets.core.conv_arithmetic` (one model run per layer, none per click), the
pictures from ``core/imaging.py``; the equation is HTML laid out here.
"""

from __future__ import annotations

import html
from collections import OrderedDict

import bqplot
import ipywidgets as widgets
import numpy as np
from traitlets import Int, TraitType, Unicode, observe

from ..core.conv_arithmetic import LayerArithmetic, conv_layer_names, signed_cells
from ..core.errors import CnnvizError, InputError, UnsupportedModelError
from ..core.graph import LayerGraph
from ..core.inputs import as_images, raw_and_model_inputs, required_image_shape
from ..core.layer_views import most_active_channel
from ._base import VisualizerWidget, checks
from ._charts import BarChart, ColorBar, PictureFigure

MAP_BOX_PX = 224  # the map, its colour bar and the input side by side in a 560-px cell (1000-px Lab)
NUMBERS_UP_TO = 5  # kernels up to 5×5 show their numbers in the grids; larger ones on hover
ALL_INPUT_CHANNELS_UP_TO = 3  # an RGB patch shows every channel; more: the one picked on the sums chart
LAYERS_KEPT = 4  # layers whose input and output stay for instant revisits
OUTLINE_COLOUR = "#ff1f5b"
PADDING_CELL = ("#d9d9d9", "#6f6f6f")


class ConvArithmetic(VisualizerWidget):
    """How one output number of a Conv2D layer is made, for one image.

    ``ConvArithmetic(model, image, *, preprocess=None, **traits)``: ``image`` is one raw
    image (what you look at); ``preprocess`` maps a batch of raw images to what the model
    takes. Traits, set from code or by clicking:

    - ``layer``: one of ``layer_names`` (every Conv2D); the first by default. A new layer
      keeps the channel when it has it (else the last) and the position over the same
      part of the image.
    - ``channel``: the output channel; by default the layer's most active one on the image.
    - ``position``: (row, column) in the channel's map; a click on the map sets it. By
      default the channel's strongest position.
    - ``input_channel``: which input channel's patch, kernel and products are drawn when
      the layer reads more than 3 (a click on the per-channel sums chart sets it); a new
      layer starts on the one whose sum weighs most.

    ``image`` is the raw image; ``number`` is the shown :class:`~cnnviz_widgets.core.conv_arithmetic.ConvNumber`. The
    patch is the layer's input: on the first layer the image itself (after ``preprocess``
    and the model's own preprocessing layers, if any; the caption says which).
    """

    layer = Unicode(help="The Conv2D layer shown, one of layer_names.")
    channel = Int(0, help="The output channel whose number is explained.")
    position = TraitType((0, 0), help="(row, column) of the explained number in the channel's map.")
    input_channel = Int(0, help="The input channel drawn as grids when the layer reads more than 3.")

    def __init__(self, model, image, *, preprocess=None, **traits):
        graph = LayerGraph.of(model)
        required_image_shape(
            graph, "ConvArithmetic explains a Conv2D of", "Call cw.conv_arithmetic(model, x, layer, channel, position) instead."
        )
        raw, self._model_input = raw_and_model_inputs(graph, image, preprocess)
        if len(raw) != 1:
            raise InputError(f"ConvArithmetic explains one image, got a batch of {len(raw)}; pass one, e.g. images[0].")
        self.image = as_images(graph, raw)[0]
        self._model = model
        self.layer_names = conv_layer_names(model)
        if not self.layer_names:
            raise UnsupportedModelError("ConvArithmetic explains a Conv2D layer, and this model has none.")
        self._layers: OrderedDict[str, LayerArithmetic] = OrderedDict()
        self.number = None
        self._shown_map = self._shown_input = None

        self.layer_menu = widgets.Dropdown(options=self.layer_names, description="layer")
        self.channel_box = widgets.IntText(description="channel", layout=widgets.Layout(width="170px"))
        self.settings_line = widgets.HTML()
        self.map_figure = PictureFigure(MAP_BOX_PX)
        self.map_figure.on_click(lambda row, column: setattr(self, "position", (row, column)))
        self.map_scale = ColorBar(label="output value", height_px=MAP_BOX_PX)
        self.input_figure = PictureFigure(MAP_BOX_PX)
        self._map_outline = _outline(self.map_figure)
        self._input_outline = _outline(self.input_figure)
        # As wide as the pictures: a longer caption wraps instead of pushing the input under the map.
        self.map_caption = widgets.HTML(layout=widgets.Layout(width=f"{MAP_BOX_PX}px"))
        self.input_caption = widgets.HTML(layout=widgets.Layout(width=f"{MAP_BOX_PX}px"))
        self.equation = widgets.HTML()
        self.sums_chart = BarChart(
            title="Sum per input channel (click a bar for its grids)",
            x_label="input channel",
            y_label="sum of its products",
            height_px=260,
        )
        self.sums_chart.on_select(lambda index: setattr(self, "input_channel", index))
        self._sums_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        super().__init__()
        for control, name in ((self.layer_menu, "layer"), (self.channel_box, "channel")):
            self._bind(control, name)
        row = widgets.Layout(flex_flow="row wrap", align_items="flex-start", overflow="visible")
        self.children = [
            widgets.HBox([self.layer_menu, self.channel_box], layout=row),
            self.settings_line,
            widgets.HBox(
                [
                    widgets.VBox([self.map_caption, widgets.HBox([self.map_figure.figure, self.map_scale.figure])]),
                    widgets.VBox([self.input_caption, self.input_figure.figure]),
                ],
                layout=row,
            ),
            self.equation,
            self._sums_box,
            self._error_line,
        ]
        self.set_traits_in_order({"layer": self.layer_names[0], **traits})
        if "channel" not in traits:
            self.channel = most_active_channel(self._values.outputs)
        if "position" not in traits:
            self.position = self._values.strongest_position(self.channel)

    @property
    def _values(self) -> LayerArithmetic:
        return self._layers[self.layer]

    # -- validation ----------------------------------------------------------------

    @checks("layer")
    def _valid_layer(self, proposal):
        name = proposal["value"]
        values, shown = self._layers.get(name), self.settings_line.value
        if values is None:
            # A model run: comm messages leave at once, so the page says why it waits.
            self.settings_line.value = f"⏳ computing {html.escape(str(name))} …"
            try:
                values = LayerArithmetic(self._model, self._model_input, name)
            except CnnvizError as error:
                self.settings_line.value = shown
                self.refuse(str(error))
        self._layers[name] = values
        self._layers.move_to_end(name)
        while len(self._layers) > LAYERS_KEPT:
            self._layers.popitem(last=False)
        return name

    @checks("channel")
    def _valid_channel(self, proposal):
        return self._values.check_channel(proposal["value"])

    @checks("position")
    def _valid_position(self, proposal):
        return self._values.check_position(proposal["value"])

    @checks("input_channel")
    def _valid_input_channel(self, proposal):
        count = len(self.number.input_channels) if self.number else 1
        why = f"channel {self.channel} reads {count} input channels"
        return self.refuse_outside("input_channel", proposal["value"], count, why)

    # -- reactions -----------------------------------------------------------------

    @observe("layer")
    def _new_layer(self, change):
        values = self._values
        self.settings_line.value = (
            f"<b>{html.escape(self.layer)}</b>: {html.escape(values.settings)}; it reads {html.escape(values.source)}."
        )
        old = self._layers.get(change["old"])
        with self.hold_trait_notifications():
            self.channel = min(self.channel, values.channels - 1)
            self.position = values.same_place(self.position, old.map_shape) if old else values.check_position((0, 0))
        self.number = values.at(self.channel, self.position)  # the input channels that input_channel counts
        self.input_channel = self.number.strongest_input
        self._show()

    @observe("channel", "position", "input_channel")
    def _show(self, change=None):
        if not self.layer:
            return  # the constructor has not set the layer yet
        values = self._values
        self.number = number = values.at(self.channel, self.position)
        if self.input_channel >= len(number.input_channels):
            self.input_channel = 0  # shows again
            return
        if self._shown_map != (self.layer, self.channel):
            self._shown_map = (self.layer, self.channel)
            picture, low, high = values.map_picture(self.channel)
            self.map_figure.show(picture)
            self.map_scale.show(low, high)
        if self._shown_input != (self.layer, self._drawn_input_channel(number)):
            self._shown_input = (self.layer, self._drawn_input_channel(number))
            self.input_figure.show(values.input_picture(self._drawn_input_channel(number), self.image))
        _place(self._map_outline, self.map_figure, (*number.position, number.position[0] + 1, number.position[1] + 1))
        _place(self._input_outline, self.input_figure, number.window)
        row, column = number.position
        self.map_caption.value = (
            f"<b>{html.escape(self.layer)}, channel {self.channel}</b> after {html.escape(number.activation)}"
            f"<br><small>row {row}, column {column} (click to pick another)</small>"
        )
        reads = html.escape(values.input_description(self._drawn_input_channel(number)))
        self.input_caption.value = (
            f"<b>what {html.escape(self.layer)} reads</b><br><small>{reads}; framed: the kernel's window</small>"
        )
        self.equation.value = _equation_html(number, self._grid_channels(number))
        many = len(number.input_channels) > ALL_INPUT_CHANNELS_UP_TO
        if many:
            self.sums_chart.show(number.input_channels, number.channel_sums, selected=self.input_channel)
        self._sums_box.children = [self.sums_chart.figure] if many else []

    def _grid_channels(self, number) -> list[int]:
        """Indices into ``number.input_channels`` drawn as grids."""
        count = len(number.input_channels)
        return list(range(count)) if count <= ALL_INPUT_CHANNELS_UP_TO else [self.input_channel]

    def _drawn_input_channel(self, number) -> int:
        """The channel of the layer's input that the input picture shows (the image shows them all)."""
        return int(number.input_channels[self.input_channel])

    def panels(self) -> list[np.ndarray]:
        """The channel's map and what the layer reads, uint8 RGB."""
        values = self._values
        return [values.map_picture(self.channel)[0], values.input_picture(self._drawn_input_channel(self.number), self.image)]


def _outline(figure: PictureFigure) -> bqplot.Lines:
    """A frame drawn over ``figure``'s picture, in its pixel coordinates."""
    lines = bqplot.Lines(x=[0], y=[0], scales={"x": figure.x_scale, "y": figure.y_scale}, colors=[OUTLINE_COLOUR], stroke_width=3)
    figure.figure.marks = [*figure.figure.marks, lines]
    return lines


def _place(lines: bqplot.Lines, figure: PictureFigure, box):
    """Frame pixels top..bottom-1, left..right-1 of the picture (rows count down from the top)."""
    top, left, bottom, right = box
    height = figure.shape[0]
    with lines.hold_sync():
        lines.x = [left, right, right, left, left]
        lines.y = [height - top, height - top, height - bottom, height - bottom, height - top]


def _equation_html(number, grid_channels: list[int]) -> str:
    """The sum as a reader checks it by hand: grids per input channel, then the channel sums, bias and activation.

    Each input channel is a row that wraps (patch × kernel = products → sum), so a narrow cell
    puts the products under the patch instead of cutting them off; "= products → sum" wraps as
    one piece (in a 1000-px window the sum alone went under the grids).
    """
    shown = np.asarray(grid_channels)
    grids = {
        "patch (input)": number.patch[..., shown],
        "kernel": number.kernel[..., shown],
        "products": number.products[..., shown],
    }
    bounds = {name: float(np.abs(values).max()) for name, values in grids.items()}
    numbers = max(number.kernel.shape[:2]) <= NUMBERS_UP_TO
    rows = []
    for column, index in enumerate(grid_channels):
        patch, kernel, products = (
            _captioned_grid(name if column == 0 else "", _grid_html(values[..., column], bounds[name], padded, numbers))
            for (name, values), padded in zip(grids.items(), (number.padded, None, number.padded))
        )
        rows.append(
            f"<div style='{_LABEL}'>input channel {number.input_channels[index]}</div>"
            f"<div style='{_ROW}'>{patch}<span style='{_SIGN}'>×</span>{kernel}"
            f"<div style='{_ROW};flex-wrap:nowrap'><span style='{_SIGN}'>=</span>{products}"
            f"<span style='{_SUM}'>→ sum <b>{_text(number.channel_sums[index])}</b></span></div></div>"
        )
    sums = number.channel_sums
    if len(sums) <= ALL_INPUT_CHANNELS_UP_TO:
        total = " + ".join(_text(value, signed=True) for value in sums)
    else:
        total = f"sum of the {len(sums)} channel sums ({_text(number.weighted_sum)})"
    bias = "no bias" if number.bias is None else f"bias {_text(number.bias, signed=True)}"
    if number.activation == "linear":
        after = f"no activation, so the output is <b>{_text(number.output)}</b>"
    else:
        after = f"{number.activation}({_text(number.pre_activation)}) = <b>{_text(number.output)}</b>"
    check = "✓ the same" if number.matches_layer else "✗ differs"
    legend = (
        "red positive, blue negative, white 0 (each grid on its own scale)"
        + ("" if numbers else "; hover a cell for its number")
        + ("; gray: zero padding outside the input" if number.padded.any() else "")
    )
    return (
        "".join(rows)
        + f"<div style='font-size:15px;margin:8px 0 4px'>{total} + {bias} = <b>{_text(number.pre_activation)}</b>"
        f" &nbsp;→&nbsp; {after}</div>"
        f"<div style='line-height:1.3'><small>The layer itself computed {_text(number.layer_output, digits=4)} there: {check}. "
        f"Numbers rounded to 3 decimals; cell colours: {legend}.</small></div>"
    )


_LABEL = "font-size:13px;margin-top:6px"
_ROW = "display:flex;flex-flow:row wrap;align-items:flex-end;gap:4px 6px"
_SIGN = "font-size:20px;align-self:center"
_SUM = "font-size:13px;white-space:nowrap;align-self:center"


def _captioned_grid(caption: str, grid: str) -> str:
    heading = f"<div style='font-weight:bold;font-size:13px;text-align:center'>{caption}</div>" if caption else ""
    return f"<div>{heading}{grid}</div>"


def _grid_html(values, bound: float, padded, numbers: bool) -> str:
    side = 44 if numbers else 14  # three 3×3 grids of numbers, the signs and the sum in one row of a 560-px cell
    cells = signed_cells(values, bound)
    rows = []
    for i, row in enumerate(values):
        tds = []
        for j, value in enumerate(row):
            is_padding = padded is not None and padded[i, j]
            background, text = PADDING_CELL if is_padding else cells[i][j]
            tip = "zero padding (outside the input)" if is_padding else _text(value, digits=6)
            tds.append(
                f"<td title='{tip}' style='background:{background};color:{text};width:{side}px;min-width:{side}px;"
                f"height:{22 if numbers else side}px;text-align:center;font:11px monospace;padding:0'>"
                f"{_text(value) if numbers else ''}</td>"
            )
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return f"<table style='border-collapse:collapse;border:1px solid #999;table-layout:fixed'>{''.join(rows)}</table>"


def _text(value: float, signed: bool = False, digits: int = 3) -> str:
    text = f"{value:.{digits}f}"
    return f"({text})" if signed and value < 0 else text
