"""P5: peak resident memory of the quickstart notebook's work on VGG16.

``notebooks/01_quickstart.ipynb`` with VGG16 (ImageNet preprocessing) in place of
the demo model, in a fresh Python process:

1. ``LayerExplorer(model, images[:16])``: every layer in the channel and grid views
   for the first image, every layer in the images view, then every image;
2. ``FilterGallery(model)``: the kernels of every conv layer, then the patterns
   view of its first layer, computed (S1's 64 filters at the model's input size);
3. ``GradCamViewer(model, images[0])``: top-5 Grad-CAM, then every top-5 class;
4. the notebook's last cell: ``cw.activations`` of two layers and ``cw.grad_cam``
   for four images.

For each part the process reports its resident set before and its peak during
it, as the OS counts them (``VmRSS`` and ``VmHWM`` in /proc/self/status, the peak
reset before each part through /proc/self/clear_refs; ``ru_maxrss`` would include
the parent's resident set at the fork). Importing TensorFlow and building VGG16
come first: TensorFlow's CPU allocator keeps the memory it frees, so building the
model leaves the resident set at its construction peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .timing import checked_row

TARGET_MB = 1536
SETUP = ("imports", "VGG16 built")
REPOSITORY = Path(__file__).resolve().parents[1]


def run(settings) -> list:
    command = [
        sys.executable,
        "-m",
        "benchmarks.p5_memory",
        f"--size={settings.image_size}",
        f"--images={settings.memory_images}",
        f"--filters={settings.memory_pattern_filters}",
        f"--steps={settings.pattern_steps}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, check=False)
    what = (
        f"peak resident memory of the quickstart's work, VGG16-{settings.image_size}, {settings.memory_images} images"
    )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1]}")
    parts = json.loads(done.stdout.strip().splitlines()[-1])
    peak = max(part["peak"] for part in parts.values())
    model_built = parts["VGG16 built"]["peak"]
    work_peak = max(part["peak"] for name, part in parts.items() if name not in SETUP)
    steps = "; ".join(f"{name} {part['before']:.0f} → {part['peak']:.0f}" for name, part in parts.items())
    if model_built > TARGET_MB:
        steps += (
            f". Importing TensorFlow and building VGG16 alone reach {model_built:.0f} MB, over the target "
            "before any of the work: Keras initialises fc1's 411 MB kernel through temporaries of its size, "
            "and TensorFlow's oneDNN allocator keeps the memory it frees"
        )
    return [
        checked_row(
            "P5",
            what,
            peak,
            f"{peak:.0f} MB; the work adds {max(0.0, work_peak - model_built):.0f} MB to building VGG16",
            "≤ 1.5 GB",
            at_most=TARGET_MB,
            note=f"MB before → peak during: {steps}",
        )
    ]


def memory_mb() -> dict:
    """The process's resident set now and its peak since the last reset, in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def reset_peak():
    """Restart the peak (VmHWM) from the current resident set (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


class Phases:
    """Resident set before, and peak during, each named part of the work."""

    def __init__(self):
        self.parts = {}
        self._start = memory_mb()["VmRSS"]

    def end(self, name: str):
        now = memory_mb()
        self.parts[name] = {"before": self._start, "peak": now["VmHWM"]}
        reset_peak()
        self._start = memory_mb()["VmRSS"]


def quickstart(size: int, image_count: int, pattern_filters: int, pattern_steps: int) -> dict:
    phases = Phases()
    import keras

    import cnnviz_widgets as cw
    from cnnviz_widgets import FilterGallery, GradCamViewer, LayerExplorer

    from .common import pixels, vgg16

    phases.end("imports")
    model = vgg16(size)
    images = pixels(image_count, size)
    preprocess = keras.applications.vgg16.preprocess_input
    phases.end("VGG16 built")

    explorer = LayerExplorer(model, images, preprocess=preprocess)
    for view in ("channel", "grid", "images"):
        explorer.view = view
        for layer in explorer.layer_names:
            explorer.layer = layer
    explorer.view = "channel"
    for image_index in range(image_count):
        explorer.image_index = image_index
    phases.end("LayerExplorer")

    gallery = FilterGallery(model, preprocess=preprocess, steps=pattern_steps, patterns_per_page=pattern_filters)
    for layer in gallery.layer_names:
        gallery.layer = layer
    gallery.layer = gallery.layer_names[0]
    gallery.view = "patterns"
    gallery.compute_patterns(wait=True)
    phases.end("FilterGallery")

    viewer = GradCamViewer(model, images[0], preprocess=preprocess, top_k=5)
    for class_index, _, _ in viewer.predictions:
        viewer.class_index = class_index
    phases.end("GradCamViewer")

    x = preprocess(images[:4].astype("float32"))
    cw.activations(model, x, layers=["block1_conv1", "block5_conv3"])
    cw.grad_cam(model, x, class_index=viewer.predictions[0][0])
    phases.end("API cell")
    return phases.parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--filters", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(quickstart(args.size, args.images, args.filters, args.steps)))


if __name__ == "__main__":
    main()
