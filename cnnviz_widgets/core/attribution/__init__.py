"""Attribution: which parts of an input a class score depends on, one method a file.

- ``base.py``: what every class activation map (CAM) method shares: the forward pass,
  the batched class gradients, the map's rules (ReLU, flat maps, normalising), resizing
  to the input, the layers a CAM accepts, and the result, :class:`CamResult`.
- ``gradcam.py``: Grad-CAM, its channel weights; :class:`GradCam` and :func:`grad_cam`.
- ``explanation.py``: what GradCamViewer shows of one image, as plain values.

A new CAM method is one file: a :class:`ClassActivationMap` subclass with its channel
weights or map formula (see ``base.py``).
"""

from .base import CamResult, ClassActivationMap, checked_layer, default_layer, explainable_layers
from .gradcam import GradCam, grad_cam

__all__ = ["CamResult", "ClassActivationMap", "GradCam", "checked_layer", "default_layer", "explainable_layers", "grad_cam"]
