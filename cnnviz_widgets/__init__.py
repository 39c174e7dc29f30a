"""Interactive Jupyter widgets that show what a Keras convolutional network computes."""

from .core.graph import layer_names

__all__ = ["layer_names"]
__version__ = "0.1.0"
