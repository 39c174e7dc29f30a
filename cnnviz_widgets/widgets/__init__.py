"""Thin ipywidgets + bqplot views over cnnviz_widgets.core."""

from .layer_explorer import LayerExplorer

__all__ = ["LayerExplorer"]
