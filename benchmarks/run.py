"""Run the benchmarks, print the results table and write it as Markdown.

    python -m benchmarks.run            # full: VGG16 at 224 px, writes benchmarks/results.md
    python -m benchmarks.run --quick    # small sizes, < 2 minutes, writes benchmarks/results-quick.md

Every figure is a ratio of timings taken side by side in this run (or an absolute
time or memory where there is nothing to compare with), so it means the same on a
faster or a busier machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

from . import p1_activations, p2_layer_explorer, p3_gradcam, p4_patterns, p5_memory, p6_browser
from . import p7_cams, p8_gradients, p9_trust, p10_top_activating
from .common import FULL, QUICK, peer
from .timing import Row

CASES = {
    "P1": (p1_activations, ("P1a", "P1b")),
    "P2": (p2_layer_explorer, ("P2a", "P2b")),
    "P3": (p3_gradcam, ("P3a", "P3b", "P3c", "P3d", "P3e", "P3f")),
    "P4": (p4_patterns, ("P4a", "P4b", "P4c", "P4d", "P4e", "P4f", "P4g")),
    "P5": (p5_memory, ("P5",)),
    "P6": (p6_browser, ("P6a", "P6b", "P6c", "P6d", "P6e", "P6f", "P6g")),
    "P7": (p7_cams, ("P7a", "P7b", "P7c", "P7d", "P7e", "P7f")),
    "P8": (p8_gradients, ("P8a", "P8b", "P8c")),
    "P9": (p9_trust, ("P9a", "P9b")),
    "P10": (p10_top_activating, ("P10a", "P10b")),
}
HERE = Path(__file__).resolve().parent
BUSY_LOAD = 0.5  # a 1-minute load average above this before the run means other work was running


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (< 2 minutes)")
    parser.add_argument("--only", help="comma-separated benchmark ids, e.g. P1,P4")
    parser.add_argument("--output", type=Path, help="Markdown file to write (default: benchmarks/results[-quick].md)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    output = args.output or HERE / ("results-quick.md" if args.quick else "results.md")
    chosen = args.only.split(",") if args.only else list(CASES)

    # tf-keras-vis calls a Keras 3 model with a list for its single input.
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows, failed = [], False
    for name in chosen:
        module, ids = CASES[name]
        print(f"{name}: running …", file=sys.stderr, flush=True)
        try:
            rows += module.run(settings)
        except Exception as error:
            failed = True
            traceback.print_exc()
            message = str(error)[:300]
            rows += [Row(row_id, "", f"{type(error).__name__}: {message}", "", "ERROR") for row_id in ids]
    table = markdown_table(rows)
    print(table)
    output.write_text(report(settings, table, chosen, load_before, time.perf_counter() - started))
    print(f"written to {output}", file=sys.stderr)
    return 1 if failed else 0


def markdown_table(rows) -> str:
    header = "| id | what | measured | target | verdict | note |\n|---|---|---|---|---|---|"
    lines = [
        "| " + " | ".join(_cell(c) for c in (r.id, r.what, r.measured, r.target, r.verdict, r.note)) + " |"
        for r in rows
    ]
    return "\n".join([header, *lines])


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def report(settings, table, chosen, load_before, seconds) -> str:
    import keras
    import tensorflow as tf

    command = "python -m benchmarks.run" + (" --quick" if settings.mode == "quick" else "")
    if chosen != list(CASES):
        command += f" --only {','.join(chosen)}"
    peer_module, peer_problem = peer("tf_keras_vis")
    peer_text = f"tf-keras-vis {peer_module.__version__}" if peer_module else f"tf-keras-vis {peer_problem}"
    cores = os.cpu_count()
    load_after = os.getloadavg()[0]
    lines = [
        "# Benchmark results",
        "",
        f"`{command}`, {datetime.date.today().isoformat()}, {seconds / 60:.1f} minutes.",
        "",
        (
            f"Machine: {_cpu_name()}, {cores} cores, {_memory_gb():.0f} GB RAM, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {peer_text}. "
            f"Load average (1 min): {load_before:.1f} before the run, {load_after:.1f} after it."
        ),
        "",
    ]
    if load_before > BUSY_LOAD:
        lines += [
            (
                f"> **Other processes were using this {cores}-core CPU when the run started** (load "
                f"{load_before:.1f}), so absolute times are slow and noisy. Ratios are taken from "
                "interleaved rounds, which cancels most, not all, of that noise. The authoritative "
                "numbers come from a run on a quiet machine."
            ),
            "",
        ]
    lines += [
        table,
        "",
        (
            "Ratios compare medians of interleaved rounds (each round times every candidate once); "
            "`×` is how many times the baseline's time. Warm-ups (tracing, first calls) are not timed."
        ),
        "",
        "## How each figure is measured",
        "",
    ]
    for name in chosen:
        module, _ = CASES[name]
        lines += [module.__doc__.strip(), ""]
    return "\n".join(lines)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return pages / 2**30


if __name__ == "__main__":
    sys.exit(main())
