"""GradCamViewer: the widget that shows where a CNN looks when it scores a class of one image (S1 part 3).

It only wires: the predictions and each class's map, by any method of ``METHODS``, at the
image's size come from ``core/attribution/explanation.py`` (each (method, layer, class)
computed once, the top-k classes of a layer in one call), the pictures from
``core/imaging.py``; the compare row is ``_method_compare.py``.
"""

from __future__ import annotations

import functools
import html

import ipywidgets as widgets
import numpy as np
from traitlets import CFloat, Int, List, TraitType, Unicode, observe

from ..core import imaging
from ..core.attribution import METHODS, checked_layer, default_layer, explainable_layers
from ..core.attribution.explanation import MAX_COMPARED, ImageExplanations, method_has_counterfactual, method_title
from ..core.attribution.explanation import method_uses_layer, predict, refused_methods
from ..core.errors import InputError
from ..core.graph import LayerGraph
from ..core.inputs import as_images, raw_and_model_inputs, required_image_shape
from ..core.map_checks import MapChecks, MapSettings
from ._base import Choice, VisualizerWidget, checks, enlarged_twice, image_view, pixelated_style, show
from ._charts import BarChart, ColorBar
from ._closing import stop_and_join
from ._map_job import MapJobLine
from ._method_compare import MethodComparison, method_ids, method_tags, method_titles
from ._trust_panel import TrustPanel

HEATMAP_COLORMAP = "jet"
TOP_CHANNELS = 32
DISPLAY_SIZE = 256  # the pictures' widest: sent at the image's size, the browser enlarges them with whole pixels
MIN_PANEL_PX = 140  # three pictures and the colour bar side by side in a 560-px output (1000-px Lab with its side bar)
COLOR_BAR_ROOM_PX = 90
EVIDENCE_LABELS = {"for": "for the class", "against": "against the class"}


class GradCamViewer(VisualizerWidget):
    """Grad-CAM of one image: top-k predictions, heatmap, overlay and channel contributions.

    ``GradCamViewer(model, image, *, preprocess=None, **traits)``. ``image`` is what
    you look at: raw pixels (H, W, C), or (H, W) for a gray model, with or without a
    batch axis of one (values outside 0..255, an image already preprocessed, are
    stretched to show); ``preprocess`` maps a batch of raw images to what the model
    takes, e.g. ``keras.applications.vgg16.preprocess_input``.

    Keyword-only options, fixed for the widget's life: ``class_names``, one per class
    (without them a demo model gets its own, a 1000-class model the ImageNet names and
    any other model "class i"); ``top_k``, how many classes to chart (5); ``output``, the model output
    explained, by index, dict key or layer name (0). Probabilities are shown as the
    model's head gives them (``core/heads.py``): its own softmax or sigmoid, or a
    softmax of its logits; a one-unit output has two classes, 0 = negative and 1 = positive.

    ``evidence`` picks the map: 'for' the class (Grad-CAM) or 'against' it (the
    counterfactual map of the Grad-CAM paper, from the negated gradients). Where a
    map is empty, because every position's weighted sum has the sign the ReLU zeroes,
    the note under it says so and offers the other one.

    ``method`` picks the attribution method, one of ``cw.attribute``'s (see
    ``METHODS``); the layer menu is off for a method that maps the input pixels, not a
    layer. ``compare`` lists up to four methods whose maps of the same class, layer and
    evidence show side by side under one colour bar (empty: no compare row).

    Read-only results: ``heatmap`` (H, W) in [0, 1]; ``predictions``, the top-k
    (class_index, name, probability), best first; ``probabilities`` of every
    class; ``class_names``; ``layer_names``, the layers ``layer`` accepts.
    """

    # A plain TraitType: CInt would turn 2.7 into 2 before the check, and Any lets None skip it;
    # the check refuses what cw.grad_cam refuses.
    class_index = TraitType(0, help="The class explained, an int; default: the top-1 class.")
    layer = Unicode(help="The layer with a 4-D output whose feature maps Grad-CAM weights; default: the last conv layer.")
    alpha = CFloat(0.4, help="Opacity of the heatmap over the image: 0 = image only, 1 = heatmap only.")
    evidence = Choice(
        tuple(EVIDENCE_LABELS),
        "for",
        help="'for': Grad-CAM, where the layer speaks for the class; 'against': the counterfactual map, where it speaks against it.",
    )
    channel = Int(0, help="The selected channel of `layer`: a click on a contribution bar selects it (cw.link follows it).")
    method = Choice(METHODS, "gradcam", help="The attribution method, one of cw.attribute's (METHODS).")
    compare = List(Unicode(), help=f"Up to {MAX_COMPARED} methods shown side by side for the same class, layer and evidence.")

    def __init__(self, model, image, *, preprocess=None, class_names=None, top_k: int = 5, output: int | str = 0, **traits):
        self._graph = graph = _image_classifier_graph(model)
        raw, model_input = raw_and_model_inputs(graph, image, preprocess)
        if len(raw) != 1:
            raise InputError(f"GradCamViewer explains one image, got a batch of {len(raw)}; pass one, e.g. images[0].")
        self.image = as_images(graph, raw)[0]
        self._picture = imaging.raw_image_picture(self.image)
        self._head = graph.head(output)
        predictions = predict(graph, model_input, self._head.index, class_names, top_k, model=model)
        self.probabilities = predictions.probabilities
        self.num_classes = len(self.probabilities)
        self.class_names = predictions.class_names
        self._top_classes = predictions.top_classes
        self.predictions = predictions.best_first
        self.layer_names = explainable_layers(graph, self._head.index)
        self._explanations = ImageExplanations(model, model_input, self.image.shape[:2], self._head.index, self._top_classes)
        self.heatmap: np.ndarray | None = None
        self._heatmap_settings: MapSettings | None = None  # what heatmap is of: a background map job keeps the old one shown
        self._comparison = MethodComparison(HEATMAP_COLORMAP)
        self.map_job = MapJobLine()  # expensive methods' maps are computed in the background
        checks_of_maps = MapChecks(model, model_input, self._head.index)
        self.trust_panel = TrustPanel(checks_of_maps, lambda: (self._heatmap_settings, self.heatmap), HEATMAP_COLORMAP)

        # Each picture fills its panel, which shrinks to MIN_PANEL_PX before the row wraps.
        crisp = enlarged_twice(max(self.image.shape[:2]), MIN_PANEL_PX)
        self._image_view, self._overlay_view = image_view("100%", pixelated=crisp), image_view("100%", pixelated=crisp)
        self._heatmap_view = image_view("auto", pixelated=crisp)  # beside the colour bar, it takes what the bar leaves
        self._heatmap_view.layout.flex, self._heatmap_view.layout.min_width = "1 1 0", "0"
        self._heatmap_view.layout.align_self = "flex-start"  # square, not stretched to the bar's height
        self._class_label = widgets.HTML()
        self._heatmap_caption = widgets.HTML()
        self.heat_scale = ColorBar(HEATMAP_COLORMAP, label="heat (1 = peak)", height_px=DISPLAY_SIZE)
        self.heat_scale.show(0.0, 1.0)
        # As tall as the heatmap beside it, which shrinks with the cell's width.
        self.heat_scale.figure.layout.height, self.heat_scale.figure.layout.align_self = "auto", "stretch"
        # Says why a heatmap shows no heat, and offers the other map where that one is empty.
        self.heatmap_note = widgets.HTML()
        self.evidence_offer = widgets.Button(layout=widgets.Layout(width="auto", display="none"))
        self.evidence_offer.on_click(lambda _: setattr(self, "evidence", self._other_evidence()))
        title = f"Top-{len(self._top_classes)} classes ({self._head.title})"
        self.prediction_chart = BarChart(title=title, y_label=self._head.value_name)
        self.prediction_chart.show(predictions.labels, self.probabilities[self._top_classes])
        self.prediction_chart.on_select(self._select_prediction)
        self.contribution_chart = BarChart(
            x_label="channel (contribution = Grad-CAM weight × mean activation)", y_label="contribution"
        )
        self._charted_channels: list[int] = []  # the channel of each contribution bar
        self.contribution_chart.on_select(lambda position: setattr(self, "channel", self._charted_channels[position]))

        traits.setdefault("layer", default_layer(graph, self._head.index))
        traits.setdefault("class_index", self.predictions[0][0])
        super().__init__(**traits)

        # Not a BoundedIntText: it clamps 99 to the last class where the trait should refuse it and say why.
        tooltip, width = f"0 to {self.num_classes - 1}", widgets.Layout(width="170px")
        self.class_box = widgets.IntText(value=self.class_index, description="class", tooltip=tooltip, layout=width)
        self.layer_menu = widgets.Dropdown(options=self.layer_names, value=self.layer, description="layer")
        self.alpha_slider = widgets.FloatSlider(value=self.alpha, min=0, max=1, step=0.05, description="alpha")
        self.method_menu = widgets.Dropdown(options=[(method_title(m), m) for m in METHODS], value=self.method, description="method")
        self.compare_box = method_tags(self.compare)
        self.evidence_buttons = widgets.ToggleButtons(
            options=[(label, value) for value, label in EVIDENCE_LABELS.items()],
            value=self.evidence,
            style={"button_width": "auto"},
        )
        for control, name in (
            (self.class_box, "class_index"),
            (self.layer_menu, "layer"),
            (self.alpha_slider, "alpha"),
            (self.evidence_buttons, "evidence"),
            (self.method_menu, "method"),
        ):
            self._bind(control, name)
        self._bind(self.compare_box, "compare", shown=method_titles, taken=method_ids)
        widgets.dlink((self, "method"), (self.layer_menu, "disabled"), lambda method: not method_uses_layer(method))
        widgets.dlink((self, "method"), (self.evidence_buttons, "disabled"), lambda method: not method_has_counterfactual(method))
        show(self._image_view, self._picture)
        heatmap_panel = widgets.VBox(
            [self._heatmap_caption, widgets.HBox([self._heatmap_view, self.heat_scale.figure]), self.heatmap_note, self.evidence_offer],
            layout=_panel_layout(COLOR_BAR_ROOM_PX),
        )
        self.children = [
            widgets.HBox([self.class_box, self._class_label], layout=_row_layout()),
            widgets.HBox([self.method_menu, self.layer_menu, self.alpha_slider, self.evidence_buttons], layout=_row_layout()),
            self.map_job.box,
            widgets.HBox(
                [_captioned("image", self._image_view), heatmap_panel, _captioned("overlay", self._overlay_view)],
                layout=_row_layout(),
            ),
            widgets.HBox([widgets.HTML("<b>compare</b>"), self.compare_box], layout=_row_layout()),
            self._comparison.box,
            widgets.HBox([self.prediction_chart.figure, self.contribution_chart.figure], layout=_row_layout()),
            self.trust_panel.box,
            self._error_line,
            pixelated_style(),
        ]

    # -- validation --------------------------------------------------------------

    @checks("class_index")
    def _valid_class_index(self, proposal):
        return self._head.class_index(proposal["value"])

    @checks("layer")
    def _valid_layer(self, proposal):
        return checked_layer(self._graph, proposal["value"], self._head.index)

    @checks("channel")
    def _valid_channel(self, proposal):
        count = self._graph.info(self.layer).output_shape[-1]
        return self.refuse_outside("channel", proposal["value"], count, f"layer '{self.layer}' has {count} channels")

    @checks("method", "compare", "evidence")
    def _valid_methods(self, proposal):
        """Known methods, up to MAX_COMPARED different ones to compare, each with an 'against' map where that is asked."""
        value = list(proposal["value"]) if proposal["trait"].name == "compare" else proposal["value"]
        settings = {"method": self.method, "compare": self.compare, "evidence": self.evidence, proposal["trait"].name: value}
        refusal = refused_methods(**settings)
        if refusal:
            self.refuse(refusal)
        return value

    @checks("alpha")
    def _valid_alpha(self, proposal):
        alpha = proposal["value"]
        if not 0 <= alpha <= 1:
            self.refuse(f"alpha is the heatmap's opacity and must be in [0, 1], got {alpha!r}.")
        return alpha

    # -- reactions ---------------------------------------------------------------

    @observe("layer", "class_index", "evidence", "method")
    def _explain(self, change):
        if self._maps_in_background():
            return
        explanation = self._explain_by(self.method)
        self.heatmap, self._heatmap_settings = explanation.heatmap, self._map_settings()
        # The pictures first: the page applies the messages in turn, each chart redraw before the next.
        show(self._heatmap_view, imaging.colormap(self.heatmap, HEATMAP_COLORMAP))
        self._blend()
        top = self._top_classes
        self.prediction_chart.bars.selected = [top.index(self.class_index)] if self.class_index in top else None
        name = self.class_names[self.class_index]
        self._class_label.value = (
            f"<b>{html.escape(name)}</b>, {self._head.value_name} {self.probabilities[self.class_index]:.3g}"
        )
        if explanation.contributions is not None:
            channels = explanation.top_channels(TOP_CHANNELS)
            self._charted_channels = channels.tolist()
            self.contribution_chart.figure.title = f"Channels of {self.layer} {self.evidence} '{name}'"
            self.contribution_chart.show([str(c) for c in channels], explanation.contributions[channels])
            self.channel = min(self.channel, len(explanation.contributions) - 1)  # a layer with fewer channels
            self._show_channel()
        self.contribution_chart.figure.layout.display = None if explanation.contributions is not None else "none"
        method = method_title(self.method) if self.evidence == "for" else f"Counterfactual {method_title(self.method)}"
        self._heatmap_caption.value = (
            f"<b>{method}: {self.evidence} '{html.escape(name)}'</b><br><small>normalised to its peak (1)</small>"
        )
        self._explain_no_heat(explanation, name)
        self._show_comparison()
        self.trust_panel.show_for(self._heatmap_settings)

    @observe("compare")
    def _show_comparison(self, change=None):
        # Constructor traits come in no fixed order: _explain shows the comparison once there is a heatmap.
        if self.heatmap is None or self._maps_in_background():
            return
        titles = [method_title(m) + (f" at {self.layer}" if method_uses_layer(m) else "") for m in self.compare]
        maps = [self._explain_by(m).heatmap for m in self.compare]
        self._comparison.show(list(zip(titles, maps)), "add a method to compare" if len(self.compare) == 1 else "")

    def _maps_in_background(self) -> bool:
        """Start computing the maps of expensive methods not kept yet, then show them; whether it started."""
        settings = (self.layer, self.class_index, self.evidence == "against")
        waiting = self._explanations.waiting([self.method, *self.compare], *settings)
        if not waiting:
            self.map_job.drop()
            return False
        work = functools.partial(self._explanations.compute, waiting, *settings)
        self.map_job.start(", ".join(map(method_title, waiting)), work, lambda: self._explain(None))
        return True

    def _map_settings(self) -> MapSettings:
        layer = self.layer if method_uses_layer(self.method) else None
        return MapSettings(self.method, layer, self.class_index, self.evidence == "against")

    def _explain_by(self, method: str):
        return self._explanations.of(self.layer, self.class_index, counterfactual=self.evidence == "against", method=method)

    @observe("channel")
    def _show_channel(self, change=None):
        charted = self._charted_channels
        self.contribution_chart.bars.selected = [charted.index(self.channel)] if self.channel in charted else None

    def _explain_no_heat(self, explanation, name: str):
        """The note under an empty or flat heatmap, and the offer of the other map where this one is empty."""
        note = explanation.no_heat_note(self.evidence, name)
        self.heatmap_note.value = f"<i>{html.escape(note)}</i>" if note else ""
        self.evidence_offer.description = f"Show what speaks {self._other_evidence()} it"
        self.evidence_offer.layout.display = None if explanation.empty else "none"

    def _other_evidence(self) -> str:
        return "against" if self.evidence == "for" else "for"

    @observe("alpha")
    def _blend(self, change=None):
        # Traits given to the constructor are notified in no fixed order; an alpha
        # notified before the layer and class has no heatmap yet: _explain blends then.
        if self.heatmap is None:
            return
        show(self._overlay_view, self._overlay())

    def _select_prediction(self, position: int):
        self.class_index = self._top_classes[position]

    def _overlay(self) -> np.ndarray:
        return imaging.overlay(self._picture, self.heatmap, self.alpha, HEATMAP_COLORMAP)

    def close(self):
        """Stop the map and trust jobs first: their threads hold this widget and draw on it (a refused constructor made none)."""
        if hasattr(self, "trust_panel"):
            stop_and_join(self.map_job.job, self.trust_panel.job)
        super().close()

    def panels(self) -> list[np.ndarray]:
        """The raw image, the heatmap alone and the heatmap over the image, uint8 RGB."""
        return [
            self._picture,
            imaging.colormap(self.heatmap, HEATMAP_COLORMAP),
            self._overlay(),
            *self._comparison.pictures(),
        ]


def _image_classifier_graph(model) -> LayerGraph:
    graph = LayerGraph.of(model)
    required_image_shape(
        graph,
        "GradCamViewer shows Grad-CAM over one image, so it needs",
        "For sequences, videos or several inputs, call cw.grad_cam(model, x, class_index).",
    )
    return graph


def _row_layout() -> widgets.Layout:
    # Wraps what does not fit the cell's width instead of squeezing it into a scrolling box.
    return widgets.Layout(flex_flow="row wrap", align_items="flex-start", overflow="visible")


def _panel_layout(extra_px: int = 0) -> widgets.Layout:
    return widgets.Layout(
        flex=f"1 1 {MIN_PANEL_PX + extra_px}px",
        min_width=f"{MIN_PANEL_PX + extra_px}px",
        max_width=f"{DISPLAY_SIZE + extra_px}px",
        overflow="visible",
        margin="0 8px 8px 0",
    )


def _captioned(caption: str, view: widgets.Widget) -> widgets.VBox:
    return widgets.VBox([widgets.HTML(f"<b>{html.escape(caption)}</b>"), view], layout=_panel_layout())
