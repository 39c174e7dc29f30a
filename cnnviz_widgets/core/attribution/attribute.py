"""The functions of the attribution API: :func:`attribute` runs any method by name, :func:`grad_cam` is Grad-CAM's.

Every method is a class with a ``name`` (its ``method=`` string), a ``shared(model, layer,
*, output, **options)`` constructor that caches one compiled instance per setting, and
``_explain_prepared(inputs, classes)`` returning a result with ``heatmaps`` (N, K, *input
spatial) in [0, 1] and ``raw`` (the signed attribution at the same size). A new method
is one file, and one entry in :data:`METHODS`.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import InputError
from ..inputs import prepare_inputs
from .eigencam import EigenCam
from .gradcam import GradCam
from .gradcam_plus_plus import GradCamPlusPlus
from .guided_backprop import GuidedBackprop
from .guided_gradcam import GuidedGradCam
from .hirescam import HiResCam
from .integrated_gradients import IntegratedGradients
from .layercam import LayerCam
from .saliency import Saliency
from .scorecam import ScoreCam
from .smoothgrad import SmoothGrad

METHODS = {
    method.name: method
    for method in (
        GradCam,
        GradCamPlusPlus,
        HiResCam,
        LayerCam,
        EigenCam,
        ScoreCam,
        Saliency,
        SmoothGrad,
        IntegratedGradients,
        GuidedBackprop,
        GuidedGradCam,
    )
}


NOT_OPTIONS = ["self", "model", "layer", "output"]  # attribute()'s own arguments


def method_class(method: str):
    """The class of attribution method ``method``, or an error naming the methods there are."""
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}. Use one of: {', '.join(METHODS)}.")
    return METHODS[method]


def method_options(method: str) -> list[str]:
    """The names of the options ``method`` takes (its ``shared`` and constructor keywords), in order."""
    cls = method_class(method)
    names = []
    # shared(**options) hands them to the constructor, which may hand **settings on to its base class's
    for function in (cls.shared, *(base.__init__ for base in cls.__mro__ if "__init__" in vars(base))):
        parameters = inspect.signature(function).parameters.values()
        names += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in NOT_OPTIONS + names]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def attribute(
    model, x, class_index, method: str = "gradcam", layer: str | None = None, normalize: bool = True, *, output: int | str = 0, **options
) -> np.ndarray:
    """Attribution maps (N, H, W) float32 at the input's resolution, by ``method`` (see :data:`METHODS`).

    ``class_index`` is one class for every image or a sequence of one class per image.
    ``normalize=True`` gives maps in [0, 1]; ``normalize=False`` the raw, signed
    attribution (for a CAM, the weighted channel sum before its ReLU; for a pixel method,
    "saliency", "smoothgrad", "integrated_gradients" or "guided_backprop", its
    attribution summed over the input's channels). ``layer`` is the layer a CAM (and
    "guided_gradcam") explains (default: the last convolutional one; a pixel method has
    none); ``output`` picks the
    model output by index, dict key or layer name. ``options`` are the method's own
    (``probabilities=True`` scores the probability instead of the logit,
    ``counterfactual=True`` maps what speaks against the class).
    """
    known = method_options(method)
    unknown = [name for name in options if name not in known]
    if unknown:
        raise InputError(f"{method} has no option {', '.join(unknown)}; its options are {', '.join(known)}.")
    explainer = method_class(method).shared(model, layer, output=output, **options)
    inputs = prepare_inputs(explainer.graph, x)
    count = len(inputs[0])
    classes = explainer.head.class_indices(class_index)
    if classes.ndim == 1:
        if len(classes) != count:
            raise InputError(
                f"class_index has {len(classes)} entries for {count} image(s); give one "
                "class for all images or exactly one per image."
            )
        classes = classes[:, None]
    result = explainer._explain_prepared(inputs, classes)
    return (result.heatmaps if normalize else result.raw)[:, 0].astype(np.float32)


def grad_cam(
    model, x, class_index, layer: str | None = None, *, probabilities: bool = False, output: int | str = 0, counterfactual: bool = False
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] at the input's resolution: ``attribute(..., method="gradcam")``.

    ``class_index`` is one class for every image or a sequence of one class per
    image; ``layer`` defaults to the last non-pooling layer with a 4-D output.
    ``output`` picks the model output by index, dict key or layer name.

    The class score is the class logit (see ``core/heads.py``): the input of a
    softmax or sigmoid however the model writes it, or the probability with
    ``probabilities=True``. A one-unit (binary) output has two classes, 0 =
    negative (-logit) and 1 = positive (logit). A segmentation output
    (N, H, W, classes) scores a class by its logit averaged over all pixels, as
    pytorch-grad-cam's SemanticSegmentationTarget with a full mask.

    ``counterfactual=True`` maps what speaks against the class instead: the
    gradients negated (the Grad-CAM paper's counterfactual explanation).
    """
    return attribute(
        model, x, class_index, "gradcam", layer, output=output, probabilities=probabilities, counterfactual=counterfactual
    )
