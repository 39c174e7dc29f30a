"""P10: dataset examples, ``cw.top_activating`` on VGG16 (random weights) at ``block3_conv3``.

- P10a: images per second of ``cw.top_activating(model, "block3_conv3", images, k=9,
  batch_size=64)`` over generated float32 images, against ``predict`` (same batch
  size) of the model truncated at that layer, ``keras.Model(model.input,
  layer.output)``, over the same images; medians of interleaved rounds.
- P10b: in a fresh process for each length, the peak resident set (``VmHWM``, reset
  through /proc/self/clear_refs after a one-batch warm-up, as P5 does) while
  ``cw.top_activating`` streams images from a generator that makes each batch as it
  is asked for, over a dataset and one 10× longer. Flat means the longer run's peak
  is within 10% (and at most 64 MB) of the shorter run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .timing import MET, MISSED, Row, checked_row, interleaved, times

LAYER = "block3_conv3"
BATCH = 64
K = 9
# (image side, images for P10a, interleaved rounds, images of the shorter P10b dataset): small,
# as the truncated VGG16 runs about 20 images of 64 px a second on a busy 2-core machine
SIZES = {"full": (64, 256, 3, 128), "quick": (32, 64, 3, 64)}
REPOSITORY = Path(__file__).resolve().parents[1]


def run(settings) -> list:
    size, count, rounds, stream = SIZES[settings.mode]
    return [throughput_row(size, count, rounds), memory_row(size, stream)]


def throughput_row(size: int, count: int, rounds: int):
    import keras

    import cnnviz_widgets as cw

    from .common import pixels, vgg16

    model = vgg16(size, include_top=False)
    truncated = keras.Model(model.input, model.get_layer(LAYER).output)
    images = pixels(count, size).astype(np.float32)
    seconds = interleaved(
        {
            "ours": lambda: cw.top_activating(model, LAYER, images, k=K, batch_size=BATCH),
            "predict": lambda: truncated.predict(images, batch_size=BATCH, verbose=0),
        },
        rounds,
    )
    ratio = seconds["predict"] / seconds["ours"]
    return checked_row(
        "P10a",
        f"top-{K} images of every channel of VGG16-{size} {LAYER}, {count} images, throughput vs predict of the truncated model",
        ratio,
        f"{times(ratio)} ({count / seconds['ours']:.0f} vs {count / seconds['predict']:.0f} images/s)",
        "≥ 0.8×",
        at_least=0.8,
    )


def memory_row(size: int, stream: int):
    peaks = {count: _peak_mb(size, count) for count in (stream, 10 * stream)}
    short, long = peaks[stream], peaks[10 * stream]
    growth = long - short
    flat = growth <= min(0.1 * short, 64)
    return Row(
        "P10b",
        f"peak resident memory of cw.top_activating over a generator, VGG16-{size} {LAYER}, {stream} vs {10 * stream} images",
        f"{short:.0f} MB vs {long:.0f} MB ({long / short:.2f}×, {growth:+.0f} MB)",
        "flat: ≤ +10% and ≤ +64 MB",
        MET if flat else MISSED,
    )


def _peak_mb(size: int, count: int) -> float:
    command = [sys.executable, "-m", "benchmarks.p10_top_activating", f"--size={size}", f"--images={count}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak"]


def streamed_peak(size: int, count: int) -> dict:
    """Peak resident MB while streaming ``count`` generated images, after a one-batch warm-up."""
    import cnnviz_widgets as cw

    from .common import pixels, vgg16
    from .p5_memory import memory_mb, reset_peak

    model = vgg16(size, include_top=False)

    def generated():
        for start in range(0, count, BATCH):
            yield pixels(min(BATCH, count - start), size, seed=start).astype(np.float32)

    cw.top_activating(model, LAYER, pixels(BATCH, size).astype(np.float32), k=K, batch_size=BATCH)
    reset_peak()
    result = cw.top_activating(model, LAYER, generated(), k=K, batch_size=BATCH)
    assert result.images_seen == count
    return {"peak": memory_mb()["VmHWM"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--images", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(streamed_peak(args.size, args.images)))


if __name__ == "__main__":
    main()
