"""Thin ipywidgets + bqplot views over cnnviz_widgets.core."""

from .channel_card import ChannelCard
from .filter_gallery import FilterGallery
from .gradcam_viewer import GradCamViewer
from .layer_explorer import LayerExplorer

__all__ = ["ChannelCard", "FilterGallery", "GradCamViewer", "LayerExplorer"]
