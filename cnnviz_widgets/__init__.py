"""Interactive Jupyter widgets that show what a Keras convolutional network computes."""

import os
import re
import sys
import tempfile


def _import_tensorflow_quietly():
    """Import TensorFlow without its start-up lines in every notebook's first cell.

    TF_CPP_MIN_LOG_LEVEL quiets TensorFlow's C++ log once absl logging is set up, but the
    lines written before that (oneDNN, "Could not find cuda drivers", written twice) and
    cuInit's error on a machine without a GPU ignore it. They go to file descriptor 2, which
    a Jupyter kernel forwards into the cell: capture it while TensorFlow loads and finds its
    devices, and pass on every line that is not one of those.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start_up_line = re.compile(
        r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} |To enable the following instructions"
        r"|E\d{4} .*failed call to cuInit)"
    )
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True) if not start_up_line.match(line)]
            sys.stderr.write("".join(kept))


if "tensorflow" not in sys.modules:  # imported already: its lines are out, and its log level set
    _import_tensorflow_quietly()

from . import demo
from .core.activations import activations
from .core.attribution import attribute, grad_cam
from .core.conv_arithmetic import conv_arithmetic
from .core.graph import layer_names
from .core.loading import load_model
from .core.patterns import filter_patterns
from .core.top_activating import top_activating
from .core.trust import baseline_maps, faithfulness, faithfulness_baselines, peak_pixels, pointing_game, sanity_check
from .core.weights import filter_weights
from .widgets.channel_card import ChannelCard
from .widgets.conv_arithmetic import ConvArithmetic
from .widgets.filter_gallery import FilterGallery
from .widgets.gradcam_viewer import GradCamViewer
from .widgets.layer_explorer import LayerExplorer
from .widgets.link import link

__all__ = [
    "ChannelCard",
    "ConvArithmetic",
    "FilterGallery",
    "GradCamViewer",
    "LayerExplorer",
    "activations",
    "attribute",
    "baseline_maps",
    "conv_arithmetic",
    "demo",
    "faithfulness",
    "faithfulness_baselines",
    "filter_patterns",
    "filter_weights",
    "grad_cam",
    "layer_names",
    "link",
    "load_model",
    "peak_pixels",
    "pointing_game",
    "sanity_check",
    "top_activating",
]
__version__ = "0.1.0"
