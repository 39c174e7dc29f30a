"""Interactive Jupyter widgets that show what a Keras convolutional network computes."""

from . import demo
from .core.activations import activations
from .core.attribution import grad_cam
from .core.graph import layer_names
from .core.loading import load_model
from .core.patterns import filter_patterns
from .core.weights import filter_weights
from .widgets.filter_gallery import FilterGallery
from .widgets.gradcam_viewer import GradCamViewer
from .widgets.layer_explorer import LayerExplorer

__all__ = ["FilterGallery", "GradCamViewer", "LayerExplorer", "activations", "demo", "filter_patterns", "filter_weights", "grad_cam", "layer_names", "load_model"]
__version__ = "0.1.0"
