"""Thin ipywidgets + bqplot views over cnnviz_widgets.core."""

from .gradcam_viewer import GradCamViewer
from .layer_explorer import LayerExplorer

__all__ = ["GradCamViewer", "LayerExplorer"]
