"""Thin ipywidgets + bqplot views over cnnviz_widgets.core."""

from .channel_card import ChannelCard
from .conv_arithmetic import ConvArithmetic
from .filter_gallery import FilterGallery
from .gradcam_viewer import GradCamViewer
from .layer_explorer import LayerExplorer

__all__ = ["ChannelCard", "ConvArithmetic", "FilterGallery", "GradCamViewer", "LayerExplorer"]
