"""P4: filter patterns of VGG16 ``block3_conv1`` by gradient ascent (S1).

``PatternSearch.run`` (filters batched under its default 512 MB budget, one
compiled step per batch) is timed against

- the S1 loop ported to TF 2: one filter at a time, a compiled function standing
  for S1's ``K.function([model.input], [loss, grads])``, the step in numpy;
- tf-keras-vis ``ActivationMaximization`` set up as the same algorithm (plain SGD
  of step 1 on the RMS-normalised gradient, no jitter or regularisers) with the
  same batches, size and steps;
- a large compiled ``tf.matmul`` after each of them, for the FLOP/s this CPU
  reaches now.

All start from the same gray noise. FLOPs are counted from the conv layers'
shapes: 2·kh·kw·cin·cout·H·W per conv forward, and as much again for the
gradient with respect to the conv's input; the kernels' gradients are not asked
for, and the compiled step never computes them. So a step costs 2× the forward
pass (training would cost 3×), and ReLU and pooling are not counted. oneDNN's
convolutions need not compute them that way, so the share of the matmul's FLOP/s
can pass 100%.

Compute-bound work cannot beat the FLOP ceiling; the last figure is the mean
activation of the target filters reached per second, relative to the S1 loop,
with the same steps and with a 4× larger step in a quarter of the steps.

P4e and P4f compare ``style="lucid"`` (core/lucid.py) with the tutorial style on
the same layer, filters, size, steps and batches: the time per step, and the
target filter's mean activation on the final images moved by random whole-pixel
shifts of up to ±8 px (a pattern that holds only at one offset is noise the
convolutions happen to like; a feature survives a shift). Each style's images
are those it shows: the tutorial's pixels as ascended, lucid's in the value range.

P4g times the quickstart's FilterGallery computing its page of patterns, previews
of the running batch drawn as it goes, against the bare ``PatternSearch.run`` of
the same filters and settings: what the widget adds, previews included (each run
with its own seed, so nothing is cached).
"""

from __future__ import annotations

import itertools
import statistics

import keras
import numpy as np
import tensorflow as tf

from cnnviz_widgets import FilterGallery, demo
from cnnviz_widgets.core.patterns import PatternSearch
from cnnviz_widgets.core.lucid import JITTER_PX

from .common import incompatible, peer, vgg16
from .timing import INFO, Row, checked_row, duration, faster_row, interleaved, times

LAYER = "block3_conv1"
BUDGET_MB = 512  # PatternSearch.run's default memory budget
STEP_FACTOR = 4  # the larger step of the last figure, with 1/STEP_FACTOR of the steps
JITTER_SHIFTS = 8  # random shifts of the final images for P4f


def run(settings) -> list:
    size, steps = settings.pattern_size, settings.pattern_steps
    base = vgg16(size, include_top=False)
    truncated = keras.Model(base.inputs, base.get_layer(LAYER).output)
    filters = np.arange(settings.pattern_filters)
    search = PatternSearch(base, LAYER, size=size)
    batch = search.batch_size(BUDGET_MB)
    starts = search.gray_noise(filters)  # the starts of search.run(filters, seed=0)

    # Each method maps a step count to the final images of every filter.
    methods = {
        "ours": lambda count: search.run(filters, steps=count, memory_budget_mb=BUDGET_MB).images,
        "S1 loop": _s1_loop(truncated, starts),
        "larger step": lambda count: (
            search.run(
                filters, steps=max(1, count // STEP_FACTOR), step_size=STEP_FACTOR, memory_budget_mb=BUDGET_MB
            ).images
        ),
    }
    for ascend in methods.values():
        ascend(1)  # traces its compiled functions; one step is enough
    peer_ascent, peer_problem = _tf_keras_vis(truncated, starts, batch)  # its probe is its warm-up
    if peer_ascent is not None:
        methods["tf-keras-vis"] = peer_ascent
    multiply, matmul_flops = _matmul(settings.matmul_size)
    multiply()
    finals = {}

    def keeping(name, ascend):
        def candidate():
            finals[name] = ascend(steps)

        return candidate

    # The ascents take minutes each while the load from other processes changes, so
    # the machine's FLOP/s is sampled after every ascent, not once a round.
    candidates = {}
    for name, ascend in methods.items():
        candidates[name] = keeping(name, ascend)
        candidates[f"matmul after {name}"] = multiply
    seconds = interleaved(candidates, settings.pattern_rounds, warmups=0)

    step_flops = 2 * forward_flops(truncated)
    rate = {name: len(filters) * steps * step_flops / seconds[name] for name in ("ours", "S1 loop")}
    rate["matmul"] = matmul_flops / statistics.median(seconds[f"matmul after {name}"] for name in methods)
    level = {name: _mean_activation(truncated, images, filters) for name, images in finals.items()}
    what = f"{len(filters)} filter patterns, VGG16 `{LAYER}`, {size} px, {steps} steps (batches of {batch})"
    share = rate["S1 loop"] / rate["matmul"]
    return [
        faster_row(
            "P4a",
            f"{what}, vs the S1 loop (one filter at a time, compiled)",
            seconds,
            "S1 loop",
            at_least=3,
            shown=duration,
            note=f"the S1 loop already runs at {share:.0%} of the matmul's FLOP/s; 3× would need {3 * share:.0%} of it",
        ),
        faster_row(
            "P4b",
            f"{what}, vs tf-keras-vis `ActivationMaximization`, same batches",
            seconds,
            "tf-keras-vis",
            at_least=1.5,
            problem=peer_problem,
            shown=duration,
        ),
        _flop_rate(what, rate, step_flops, settings.matmul_size),
        _activation_per_second(steps, seconds, level),
        *_lucid_rows(search, truncated, filters, steps, batch, settings.pattern_rounds, what),
        _gallery_row(steps, settings.pattern_rounds),
    ]


def _gallery_row(steps: int, rounds: int) -> Row:
    """P4g: FilterGallery's Compute on the quickstart's gallery vs the bare search it runs."""
    model = demo.load_model()
    gallery = FilterGallery(model, value_range=(0, 1), view="patterns", steps=steps)
    search = PatternSearch.shared(model, gallery.layer)
    filters = range(min(gallery.patterns_per_page, search.num_filters))
    seeds = itertools.count(1)

    def compute():
        gallery.seed = next(seeds)
        gallery.compute_patterns(wait=True)

    def bare():
        search.run(filters, steps=steps, value_range=(0, 1), seed=next(seeds))

    seconds = interleaved({"ours": compute, "search": bare}, rounds)
    gallery.close()
    ratio = seconds["ours"] / seconds["search"]
    return checked_row(
        "P4g",
        f"FilterGallery Compute, quickstart gallery (demo `{gallery.layer}`, {len(filters)} patterns, {steps} steps), "
        "previews drawn as it goes, vs the bare `PatternSearch.run`",
        ratio,
        f"{ratio:.2f}× ({duration(seconds['ours'])} vs {duration(seconds['search'])})",
        "≤ 1.1×",
        at_most=1.1,
        note="previews take at most a tenth of the run's time (PreviewThrottle); "
        "the widget also draws each finished batch",
    )


def _lucid_rows(search, truncated, filters, steps, batch, rounds, what) -> list:
    """P4e: lucid's time per step vs the tutorial style's; P4f: their activations under jitter."""
    finals = {}

    def ascent(style):
        def candidate():
            finals[style] = search.run(filters, steps=steps, memory_budget_mb=BUDGET_MB, style=style).images

        return candidate

    search.run(filters, steps=1, memory_budget_mb=BUDGET_MB, style="lucid")  # traces its step; one is enough
    seconds = interleaved({style: ascent(style) for style in ("tutorial", "lucid")}, rounds, warmups=0)
    step_count = steps * -(-len(filters) // batch)
    per_step = {style: seconds[style] / step_count for style in seconds}
    ratio = per_step["lucid"] / per_step["tutorial"]
    level = {style: _jittered_activation(truncated, images, filters) for style, images in finals.items()}
    still = {style: _mean_activation(truncated, images, filters) for style, images in finals.items()}
    return [
        checked_row(
            "P4e",
            f"{what}, time per batch step, style='lucid' vs 'tutorial'",
            ratio,
            f"{ratio:.2f}× ({duration(per_step['lucid'])} vs {duration(per_step['tutorial'])})",
            "≤ 1.3×",
            at_most=1.3,
            note="lucid's step adds an inverse FFT, a colour matrix and an affine warp per image to the same model",
        ),
        checked_row(
            "P4f",
            f"{what}, target activation under {JITTER_SHIFTS} random shifts of ±{JITTER_PX} px, lucid vs tutorial",
            level["lucid"] / level["tutorial"],
            f"{level['lucid'] / level['tutorial']:.2f}× ({level['lucid']:.3g} vs {level['tutorial']:.3g})",
            "≥ 1×",
            at_least=1.0,
            note=f"unshifted: {still['lucid']:.3g} vs {still['tutorial']:.3g}",
        ),
    ]


def _jittered_activation(truncated, images, filters) -> float:
    """Mean over random shifts (circular, whole pixels, seeded) of :func:`_mean_activation`."""
    shifts = np.random.default_rng(0).integers(-JITTER_PX, JITTER_PX + 1, (JITTER_SHIFTS, 2))
    return float(
        np.mean([_mean_activation(truncated, np.roll(images, tuple(shift), axis=(1, 2)), filters) for shift in shifts])
    )


def _flop_rate(what, rate, step_flops, matmul_size) -> Row:
    efficiency = rate["ours"] / rate["matmul"]
    return checked_row(
        "P4c",
        f"{what}, FLOP/s vs a {matmul_size}² `tf.matmul`",
        efficiency,
        f"{efficiency:.0%} ({rate['ours'] / 1e9:.1f} vs {rate['matmul'] / 1e9:.1f} GFLOP/s)",
        "≥ 70 %",
        at_least=0.70,
        note=f"{step_flops / 1e9:.2f} GFLOP per image and step, counted as direct convolutions (see below)",
    )


def _activation_per_second(steps, seconds, level) -> Row:
    """Mean target activation reached per second, relative to the S1 loop's."""
    reached = {name: level[name] / level["S1 loop"] for name in ("ours", "larger step")}
    per_second = {name: reached[name] * seconds["S1 loop"] / seconds[name] for name in reached}
    return Row(
        "P4d",
        f"target activation reached per second, vs the S1 loop ({steps} steps of 1)",
        f"same steps: {times(per_second['ours'])}; step ×{STEP_FACTOR}, {max(1, steps // STEP_FACTOR)} steps: "
        f"{times(per_second['larger step'])}",
        "—",
        INFO,
        note=(
            f"levels reached, as a share of the S1 loop's: {reached['ours']:.0%} with the same steps, "
            f"{reached['larger step']:.0%} with the ×{STEP_FACTOR} step"
        ),
    )


def forward_flops(model) -> int:
    """FLOPs of one image's forward pass through the conv layers of ``model`` (static shapes)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_height, kernel_width, channels_in, channels_out = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += 2 * kernel_height * kernel_width * channels_in * channels_out * height * width
    return total


def _s1_loop(truncated, starts):
    """The S1 loop: one filter at a time, the step in numpy; maps a step count to final images."""

    @tf.function
    def iterate(image, filter_index):  # S1's K.function([model.input], [loss, grads])
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(truncated(image)[..., filter_index])
        grads = tape.gradient(loss, image)
        grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5
        return loss, grads

    def one_filter_at_a_time(steps):
        images = []
        for filter_index, start in enumerate(starts):
            image = start[None].copy()
            for _ in range(steps):
                _, grads = iterate(image, tf.constant(filter_index))
                image += grads.numpy()
            images.append(image[0])
        return np.stack(images)

    return one_filter_at_a_time


def _tf_keras_vis(truncated, starts, batch):
    """``(step count → final images, None)``: tf-keras-vis set up as S1's ascent, or ``(None, why not)``."""
    module, problem = peer("tf_keras_vis.activation_maximization")
    if module is None:
        return None, problem
    from tf_keras_vis.utils.scores import CategoricalScore

    maximization = module.ActivationMaximization(truncated, clone=False)

    def rms_normalised(gradients):
        return gradients / (tf.sqrt(tf.reduce_mean(tf.square(gradients), axis=(1, 2, 3), keepdims=True)) + 1e-5)

    def batched(steps):
        images = []
        for first in range(0, len(starts), batch):
            chunk = list(range(first, min(first + batch, len(starts))))
            images.append(
                maximization(
                    CategoricalScore(chunk),
                    seed_input=starts[chunk],
                    steps=steps,
                    input_range=(None, None),
                    input_modifiers=[],
                    regularizers=[],
                    optimizer=keras.optimizers.SGD(learning_rate=1.0),
                    gradient_modifier=rms_normalised,
                )
            )
        return np.concatenate(images)

    try:
        batched(1)
    except Exception as error:
        return None, incompatible(error)
    return batched, None


def _matmul(n: int):
    """A compiled n×n matrix product, and its FLOPs."""
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    product = tf.function(tf.matmul)

    def multiply():
        return product(a, b).numpy()

    return multiply, 2 * n**3


def _mean_activation(truncated, images, filters) -> float:
    """Mean over filters of filter f's mean activation on its own image."""
    activations = np.asarray(truncated(images, training=False))
    return float(np.mean([activations[i, ..., f].mean() for i, f in enumerate(filters)]))
