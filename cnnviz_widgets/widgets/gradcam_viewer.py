"""GradCamViewer: where a CNN looks when it scores a class, for one image (S1 part 3).

The model's top-k classes are chosen by one forward pass, then explained by ONE
Grad-CAM call per layer (one more forward pass, one batched Jacobian); each
(layer, class) result is cached, so moving between the top-k classes or changing
the opacity never runs the model again. A class outside the top-k costs one
Grad-CAM call of its own.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
from traitlets import CFloat, TraitType, Unicode, observe

from ..core import checks as core_checks
from ..core import imaging
from ..core.class_names import class_names_for
from ..core.errors import CnnvizError, InputError
from ..core.gradcam import GradCam, default_layer
from ..core.graph import LayerGraph
from ..core.inputs import as_images, raw_and_model_inputs, required_image_shape
from ._base import BarChart, VisualizerWidget, checks, image_view, show

HEATMAP_COLORMAP = "jet"
TOP_CHANNELS = 32
DISPLAY_SIZE = 256  # small pictures are enlarged with whole pixels, so the browser does not blur them
FLAT_MAP_NOTE = "flat map: the class score does not depend on where this layer's features are"


@dataclass(frozen=True)
class ClassExplanation:
    """Grad-CAM of one class at one layer."""

    heatmap: np.ndarray  # (H, W) in [0, 1] at the image's resolution
    contributions: np.ndarray  # (channels,): Grad-CAM weight × mean activation
    flat: bool  # the map is flat to float32 rounding, shown as no heat


class GradCamViewer(VisualizerWidget):
    """Grad-CAM of one image: top-k predictions, heatmap, overlay and channel contributions.

    ``image`` is what you look at: raw pixels (H, W, C), or (H, W) for a gray
    model, with or without a batch axis of one (values outside 0..255, an image
    already preprocessed, are stretched to show); ``preprocess`` maps a batch of raw images to what the model takes, e.g.
    ``keras.applications.vgg16.preprocess_input``. Without ``class_names``, a
    1000-class model gets the ImageNet names and any other model "class i".

    ``output`` picks the model output explained, by index, dict key or layer name.
    Probabilities are shown as the model's head gives them (``core/heads.py``):
    its own softmax or sigmoid, or a softmax of its logits; a one-unit output has
    two classes, 0 = negative and 1 = positive.

    Read-only results: ``heatmap`` (H, W) in [0, 1]; ``predictions``, the top-k
    (class_index, name, probability), best first; ``probabilities`` of every
    class; ``class_names``; ``layer_names``, the layers ``layer`` accepts.
    """

    # A plain TraitType: CInt would turn 2.7 into 2 before the check, and Any lets None skip it;
    # the check refuses what cw.grad_cam refuses.
    class_index = TraitType(0, help="The class explained, an int; default: the top-1 class.")
    layer = Unicode(help="The layer with a 4-D output whose feature maps Grad-CAM weights.")
    alpha = CFloat(0.4, help="Opacity of the heatmap over the image: 0 = image only, 1 = heatmap only.")

    def __init__(self, model, image, preprocess=None, class_names=None, top_k: int = 5, output: int | str = 0, **kwargs):
        self._model = model
        self._graph = graph = _image_classifier_graph(model)
        raw, self._model_input = raw_and_model_inputs(graph, image, preprocess)
        if len(raw) != 1:
            raise InputError(f"GradCamViewer explains one image, got a batch of {len(raw)}; pass one, e.g. images[0].")
        self.image = as_images(graph, raw)[0]
        self._picture = imaging.raw_image_picture(self.image)
        self._head = graph.head(output)
        self.probabilities = graph.probabilities([self._model_input], self._head.index)[0].astype(np.float64)
        self.num_classes = len(self.probabilities)
        self.class_names = class_names_for(self.num_classes, class_names)
        top_k = core_checks.count("top_k", top_k, "how many classes to chart", minimum=1)
        top_classes = np.argsort(-self.probabilities, kind="stable")[:top_k]
        self._top_classes = top_classes.tolist()
        self.predictions = [(c, self.class_names[c], float(self.probabilities[c])) for c in self._top_classes]
        self.layer_names = [path for path in graph.spatial_paths(rank=4) if graph.feeds(path, self._head.index)]
        self._explanations: dict[tuple[str, int], ClassExplanation] = {}
        self.heatmap: np.ndarray | None = None

        self._image_view, self._heatmap_view, self._overlay_view = image_view(), image_view(), image_view()
        self._class_label = widgets.HTML()
        self.heatmap_note = widgets.HTML()  # says why a heatmap shows no heat
        title = f"Top-{len(top_classes)} classes ({self._head.title})"
        self.prediction_chart = BarChart(title=title, y_label="probability")
        self.prediction_chart.show(_unique_labels(top_classes, self.class_names), self.probabilities[top_classes])
        self.prediction_chart.on_select(self._select_prediction)
        self.contribution_chart = BarChart(x_label="channel", y_label="weight × mean activation")

        kwargs.setdefault("layer", default_layer(graph, self._head.index))
        kwargs.setdefault("class_index", self.predictions[0][0])
        super().__init__(**kwargs)

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
        layer = proposal["value"]
        if layer not in self.layer_names:
            if layer in self._graph.paths:
                shape = self._graph.layers[layer].output_shape
                problem = f"Layer '{layer}' has output shape {shape}."
            else:
                problem = f"Unknown layer '{layer}'."
            self.refuse(
                f"{problem} Grad-CAM needs a layer with a 4-D output that feeds the class "
                f"scores: {', '.join(self.layer_names)}."
            )
        return layer

    @checks("alpha")
    def _valid_alpha(self, proposal):
        alpha = proposal["value"]
        if not 0 <= alpha <= 1:
            self.refuse(f"alpha is the heatmap's opacity and must be in [0, 1], got {alpha!r}.")
        return alpha

    # -- reactions ---------------------------------------------------------------

    @observe("layer", "class_index")
    def _explain(self, change):
        explanation = self._explanation(self.layer, self.class_index)
        self.heatmap = explanation.heatmap
        top = self._top_classes
        self.prediction_chart.bars.selected = [top.index(self.class_index)] if self.class_index in top else None
        name = self.class_names[self.class_index]
        self._class_label.value = (
            f"<b>{html.escape(name)}</b>, probability {self.probabilities[self.class_index]:.3g}"
        )
        self._show_contributions(explanation.contributions, name)
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

    def _show_contributions(self, contributions, class_name):
        channels = np.argsort(-np.abs(contributions), kind="stable")[:TOP_CHANNELS]
        self.contribution_chart.figure.title = f"Channels of {self.layer} for '{class_name}'"
        self.contribution_chart.show([str(c) for c in channels], contributions[channels])

    # -- computation and cache ---------------------------------------------------

    def _explanation(self, layer: str, class_index: int) -> ClassExplanation:
        if (layer, class_index) not in self._explanations:
            # One Grad-CAM call (one forward pass) for all top-k classes, or for
            # one other class alone: never a mix that depends on what was asked
            # before, so a class's result, to the last bit, does not either.
            wanted = self._top_classes if class_index in self._top_classes else [class_index]
            result = GradCam.shared(self._model, layer, output=self._head.index).explain(self._model_input, wanted)
            for column, c in enumerate(wanted):
                self._explanations[layer, c] = ClassExplanation(
                    self._at_image_size(result.heatmaps[0, column]),
                    result.contributions[0, column],
                    bool(result.flat[0, column]),
                )
        return self._explanations[layer, class_index]

    def _at_image_size(self, heatmap: np.ndarray) -> np.ndarray:
        """The heatmap at the raw image's size, which a resizing ``preprocess`` changes."""
        size = self.image.shape[:2]
        if heatmap.shape == size:
            return heatmap
        return np.clip(imaging.resize(heatmap, size), 0, 1)

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


def _unique_labels(classes, names) -> list[str]:
    """Bar labels; ImageNet repeats some names ('crane', 'maillot'), which a chart would merge."""
    labels = [names[c] for c in classes]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({c})" for label, c in zip(labels, classes)]
    return labels


def _captioned(caption: str, view: widgets.Widget) -> widgets.VBox:
    return widgets.VBox([widgets.HTML(f"<b>{html.escape(caption)}</b>"), view])
