"""GradCamViewer: the widget that shows where a CNN looks when it scores a class of one image (S1 part 3).

It only wires: the predictions and each class's Grad-CAM at the image's size come from
``core/attribution/explanation.py`` (each (layer, class) computed once, the top-k
classes of a layer in one Grad-CAM call), the pictures from ``core/imaging.py``.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
from traitlets import CFloat, TraitType, Unicode, observe

from ..core import imaging
from ..core.attribution import checked_layer, default_layer, explainable_layers
from ..core.attribution.explanation import ImageExplanations, predict
from ..core.errors import CnnvizError, InputError
from ..core.graph import LayerGraph
from ..core.inputs import as_images, raw_and_model_inputs, required_image_shape
from ._base import BarChart, VisualizerWidget, checks, image_view, show

HEATMAP_COLORMAP = "jet"
TOP_CHANNELS = 32
DISPLAY_SIZE = 256  # small pictures are enlarged with whole pixels, so the browser does not blur them
FLAT_MAP_NOTE = "flat map: the class score does not depend on where this layer's features are"


class GradCamViewer(VisualizerWidget):
    """Grad-CAM of one image: top-k predictions, heatmap, overlay and channel contributions.

    ``GradCamViewer(model, image, *, preprocess=None, **traits)``. ``image`` is what
    you look at: raw pixels (H, W, C), or (H, W) for a gray model, with or without a
    batch axis of one (values outside 0..255, an image already preprocessed, are
    stretched to show); ``preprocess`` maps a batch of raw images to what the model
    takes, e.g. ``keras.applications.vgg16.preprocess_input``.

    Keyword-only options, fixed for the widget's life: ``class_names``, one per class
    (without them a 1000-class model gets the ImageNet names and any other model
    "class i"); ``top_k``, how many classes to chart (5); ``output``, the model output
    explained, by index, dict key or layer name (0). Probabilities are shown as the
    model's head gives them (``core/heads.py``): its own softmax or sigmoid, or a
    softmax of its logits; a one-unit output has two classes, 0 = negative and 1 = positive.

    Read-only results: ``heatmap`` (H, W) in [0, 1]; ``predictions``, the top-k
    (class_index, name, probability), best first; ``probabilities`` of every
    class; ``class_names``; ``layer_names``, the layers ``layer`` accepts.
    """

    # A plain TraitType: CInt would turn 2.7 into 2 before the check, and Any lets None skip it;
    # the check refuses what cw.grad_cam refuses.
    class_index = TraitType(0, help="The class explained, an int; default: the top-1 class.")
    layer = Unicode(help="The layer with a 4-D output whose feature maps Grad-CAM weights; default: the last conv layer.")
    alpha = CFloat(0.4, help="Opacity of the heatmap over the image: 0 = image only, 1 = heatmap only.")

    def __init__(self, model, image, *, preprocess=None, class_names=None, top_k: int = 5, output: int | str = 0, **traits):
        self._graph = graph = _image_classifier_graph(model)
        raw, model_input = raw_and_model_inputs(graph, image, preprocess)
        if len(raw) != 1:
            raise InputError(f"GradCamViewer explains one image, got a batch of {len(raw)}; pass one, e.g. images[0].")
        self.image = as_images(graph, raw)[0]
        self._picture = imaging.raw_image_picture(self.image)
        self._head = graph.head(output)
        predictions = predict(graph, model_input, self._head.index, class_names, top_k)
        self.probabilities = predictions.probabilities
        self.num_classes = len(self.probabilities)
        self.class_names = predictions.class_names
        self._top_classes = predictions.top_classes
        self.predictions = predictions.best_first
        self.layer_names = explainable_layers(graph, self._head.index)
        self._explanations = ImageExplanations(model, model_input, self.image.shape[:2], self._head.index, self._top_classes)
        self.heatmap: np.ndarray | None = None

        self._image_view, self._heatmap_view, self._overlay_view = image_view(), image_view(), image_view()
        self._class_label = widgets.HTML()
        self.heatmap_note = widgets.HTML()  # says why a heatmap shows no heat
        title = f"Top-{len(self._top_classes)} classes ({self._head.title})"
        self.prediction_chart = BarChart(title=title, y_label=self._head.value_name)
        self.prediction_chart.show(predictions.labels, self.probabilities[self._top_classes])
        self.prediction_chart.on_select(self._select_prediction)
        self.contribution_chart = BarChart(x_label="channel", y_label="weight × mean activation")

        traits.setdefault("layer", default_layer(graph, self._head.index))
        traits.setdefault("class_index", self.predictions[0][0])
        super().__init__(**traits)

        self.class_box = widgets.BoundedIntText(min=0, max=self.num_classes - 1, description="class")
        self.layer_menu = widgets.Dropdown(options=self.layer_names, description="layer")
        self.alpha_slider = widgets.FloatSlider(min=0, max=1, step=0.05, description="alpha")
        # Trait first: a link copies its first end's value into the second.
        widgets.link((self, "class_index"), (self.class_box, "value"))
        widgets.link((self, "layer"), (self.layer_menu, "value"))
        widgets.link((self, "alpha"), (self.alpha_slider, "value"))
        show(self._image_view, imaging.upscale_to(self._picture, DISPLAY_SIZE))
        self.children = [
            widgets.HBox([self.class_box, self._class_label]),
            widgets.HBox([self.layer_menu, self.alpha_slider]),
            widgets.HBox(
                [
                    _captioned("image", self._image_view),
                    widgets.VBox([_captioned("Grad-CAM heatmap", self._heatmap_view), self.heatmap_note]),
                    _captioned("overlay", self._overlay_view),
                ]
            ),
            widgets.HBox([self.prediction_chart.figure, self.contribution_chart.figure]),
            self._error_line,
        ]

    # -- validation --------------------------------------------------------------

    @checks("class_index")
    def _valid_class_index(self, proposal):
        try:
            return self._head.class_index(proposal["value"])
        except CnnvizError as error:
            self.refuse(str(error))

    @checks("layer")
    def _valid_layer(self, proposal):
        try:
            return checked_layer(self._graph, proposal["value"], self._head.index)
        except CnnvizError as error:
            self.refuse(str(error))

    @checks("alpha")
    def _valid_alpha(self, proposal):
        alpha = proposal["value"]
        if not 0 <= alpha <= 1:
            self.refuse(f"alpha is the heatmap's opacity and must be in [0, 1], got {alpha!r}.")
        return alpha

    # -- reactions ---------------------------------------------------------------

    @observe("layer", "class_index")
    def _explain(self, change):
        explanation = self._explanations.of(self.layer, self.class_index)
        self.heatmap = explanation.heatmap
        top = self._top_classes
        self.prediction_chart.bars.selected = [top.index(self.class_index)] if self.class_index in top else None
        name = self.class_names[self.class_index]
        self._class_label.value = (
            f"<b>{html.escape(name)}</b>, {self._head.value_name} {self.probabilities[self.class_index]:.3g}"
        )
        channels = explanation.top_channels(TOP_CHANNELS)
        self.contribution_chart.figure.title = f"Channels of {self.layer} for '{name}'"
        self.contribution_chart.show([str(c) for c in channels], explanation.contributions[channels])
        self.heatmap_note.value = f"<i>{html.escape(FLAT_MAP_NOTE)}</i>" if explanation.flat else ""
        show(self._heatmap_view, imaging.upscale_to(imaging.colormap(self.heatmap, HEATMAP_COLORMAP), DISPLAY_SIZE))
        self._blend()

    @observe("alpha")
    def _blend(self, change=None):
        # Traits given to the constructor are notified in no fixed order; an alpha
        # notified before the layer and class has no heatmap yet: _explain blends then.
        if self.heatmap is None:
            return
        show(self._overlay_view, imaging.upscale_to(self._overlay(), DISPLAY_SIZE))

    def _select_prediction(self, position: int):
        self.class_index = self._top_classes[position]

    def _overlay(self) -> np.ndarray:
        return imaging.overlay(self._picture, self.heatmap, self.alpha, HEATMAP_COLORMAP)

    def panels(self) -> list[np.ndarray]:
        """The raw image, the heatmap alone and the heatmap over the image, uint8 RGB."""
        return [
            self._picture,
            imaging.colormap(self.heatmap, HEATMAP_COLORMAP),
            self._overlay(),
        ]


def _image_classifier_graph(model) -> LayerGraph:
    graph = LayerGraph.of(model)
    required_image_shape(
        graph,
        "GradCamViewer shows Grad-CAM over one image, so it needs",
        "For sequences, videos or several inputs, call cw.grad_cam(model, x, class_index).",
    )
    return graph


def _captioned(caption: str, view: widgets.Widget) -> widgets.VBox:
    return widgets.VBox([widgets.HTML(f"<b>{html.escape(caption)}</b>"), view])
