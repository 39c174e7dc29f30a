"""Attribution: which parts of an input a class score depends on, one method a file.

- ``base.py``: what every class activation map (CAM) method shares: the forward pass,
  the batched class gradients, the map's rules (ReLU, flat maps, normalising), resizing
  to the input, the layers a CAM accepts, and the result, :class:`CamResult`.
- ``attribute.py``: the functions, :func:`attribute` (any method by name, see ``METHODS``)
  and :func:`grad_cam`.
- ``gradcam.py``: Grad-CAM, its channel weights; :class:`GradCam`.
- ``gradcam_plus_plus.py``, ``hirescam.py``, ``layercam.py``, ``eigencam.py``, ``scorecam.py``:
  the CAM family, one method a file (:class:`GradCamPlusPlus`, :class:`HiResCam`,
  :class:`LayerCam`, :class:`EigenCam`, :class:`ScoreCam`).
- ``input_gradients.py``: what every pixel method shares: the class scores' gradients
  with respect to the input, batched over images, classes and variants; :class:`PixelResult`.
- ``saliency.py``, ``smoothgrad.py``, ``integrated_gradients.py``, ``guided_backprop.py``: the pixel methods;
  ``guided_gradcam.py``: Guided Backprop times Grad-CAM.
- ``explanation.py``: what GradCamViewer shows of one image, as plain values.

A new CAM method is one file: a :class:`ClassActivationMap` subclass with its channel
weights or map formula (see ``base.py``).
"""

from .base import CamResult, ClassActivationMap, checked_layer, default_layer, explainable_layers
from .attribute import METHODS, attribute, grad_cam, method_class
from .gradcam import GradCam
from .eigencam import EigenCam
from .gradcam_plus_plus import GradCamPlusPlus
from .hirescam import HiResCam
from .layercam import LayerCam
from .scorecam import ScoreCam
from .guided_backprop import GuidedBackprop
from .guided_gradcam import GuidedGradCam
from .input_gradients import InputGradients, PixelResult
from .integrated_gradients import IntegratedGradients
from .saliency import Saliency
from .smoothgrad import SmoothGrad

__all__ = [
    "METHODS",
    "CamResult",
    "ClassActivationMap",
    "EigenCam",
    "GradCam",
    "GradCamPlusPlus",
    "HiResCam",
    "LayerCam",
    "ScoreCam",
    "GuidedBackprop",
    "GuidedGradCam",
    "InputGradients",
    "IntegratedGradients",
    "PixelResult",
    "Saliency",
    "SmoothGrad",
    "attribute",
    "checked_layer",
    "default_layer",
    "explainable_layers",
    "grad_cam",
    "method_class",
]
