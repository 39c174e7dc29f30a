"""P2: a layer or channel change in LayerExplorer → new PNG bytes on its image view.

The widget redraws synchronously inside the trait handler, so the time from
``explorer.layer = …`` (or ``.channel``) to the return of the assignment is the
time to new PNG bytes; each timed change is checked to have replaced a PNG.
Activations are cached per image, so no change here runs the model.
"""

from __future__ import annotations

from cnnviz_widgets import LayerExplorer
from cnnviz_widgets.core import imaging

from .common import change_seconds, pixels, png_views, vgg16
from .timing import change_row

GRID_LAYERS = ("block1_conv1", "block1_conv2")  # VGG16's two 64-channel full-resolution layers


def run(settings) -> list:
    size = settings.image_size
    explorer = LayerExplorer(vgg16(size), pixels(settings.explorer_images, size))
    explorer.view = "grid"
    layer_change = change_seconds(explorer, "layer", GRID_LAYERS, settings.trait_repeats)
    grid = max((imaging.from_png(view.value) for view in png_views(explorer)), key=lambda picture: picture.size)
    explorer.view = "channel"
    explorer.layer = GRID_LAYERS[0]
    channel_change = change_seconds(explorer, "channel", (1, 2), settings.trait_repeats)
    return [
        change_row(
            "P2a",
            f"LayerExplorer layer change, 64-channel grid ({' ↔ '.join(GRID_LAYERS)}), VGG16-{size}",
            layer_change,
            settings.trait_repeats,
            note=f"the grid picture is {grid.shape[1]}×{grid.shape[0]} px (tiles shrunk to fit), an indexed PNG",
        ),
        change_row(
            "P2b",
            f"LayerExplorer channel change, one map ({GRID_LAYERS[0]}, {size}×{size}), VGG16-{size}",
            channel_change,
            settings.trait_repeats,
        ),
    ]
