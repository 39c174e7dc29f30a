"""Timing and the rows of the results table.

Every figure is measured side by side in one process: :func:`interleaved` times
each candidate once per round, round after round, so a change in machine load
during the run hits all candidates alike and their ratio stays meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

MET, MISSED, INFO = "met", "MISSED", "—"


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, warmups: int = 1) -> dict[str, float]:
    """Median seconds of each candidate over ``rounds`` rounds, after ``warmups`` untimed calls each.

    Candidates must block until their result exists (return numpy arrays, not
    pending tensors).
    """
    for candidate in candidates.values():
        for _ in range(warmups):
            candidate()
    seconds = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, candidate in candidates.items():
            start = time.perf_counter()
            candidate()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def median_seconds(action: Callable[[int], object], repeats: int, warmups: int = 2) -> float:
    """Median seconds of ``action(i)`` for i = 0, 1, …; warm-ups use the first indices too."""
    for i in range(warmups):
        action(i)
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        action(i)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


@dataclass
class Row:
    """One line of the results table."""

    id: str
    what: str
    measured: str
    target: str
    verdict: str
    note: str = ""


def checked_row(id: str, what: str, value: float, measured: str, target: str, *, at_most=None, at_least=None, note=""):
    """A row whose verdict compares ``value`` with ``at_most`` or ``at_least``."""
    met = value <= at_most if at_most is not None else value >= at_least
    return Row(id, what, measured, target, MET if met else MISSED, note)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def duration(seconds: float) -> str:
    return ms(seconds) if seconds < 1 else f"{seconds:.2f} s"


def times(ratio: float) -> str:
    return f"{ratio:.2f}×"


def faster_row(
    id: str,
    what: str,
    seconds: dict,
    baseline: str,
    at_least: float | None,
    *,
    problem: str | None = None,
    shown: Callable[[float], str] = ms,
    note: str = "",
) -> Row:
    """How many times faster ``seconds["ours"]`` is than ``seconds[baseline]``, checked
    against ``at_least`` (None: reported only); a row saying ``problem`` where the
    baseline could not run."""
    target = "—" if at_least is None else f"≥ {at_least:g}×"
    if problem is not None:
        return Row(id, what, problem, target, INFO)
    speedup = seconds[baseline] / seconds["ours"]
    measured = f"{times(speedup)} faster ({shown(seconds['ours'])} vs {shown(seconds[baseline])})"
    if at_least is None:
        return Row(id, what, measured, target, INFO, note)
    return checked_row(id, what, speedup, measured, target, at_least=at_least, note=note)


def over_forward_row(id: str, what: str, seconds: dict, at_most: float | None = None) -> Row:
    """``seconds["ours"]`` as a multiple of one plain forward pass, ``seconds["forward"]``,
    checked against ``at_most`` (None: reported only)."""
    ratio = seconds["ours"] / seconds["forward"]
    measured = f"{times(ratio)} one forward ({ms(seconds['ours'])} vs {ms(seconds['forward'])})"
    if at_most is None:
        return Row(id, what, measured, "—", INFO)
    return checked_row(id, what, ratio, measured, f"≤ {at_most:g}×", at_most=at_most)


def change_row(id: str, what: str, seconds: float, repeats: int, note: str = "") -> Row:
    """A widget's time from a trait change to new pictures, against the 30 ms a slider allows."""
    return checked_row(id, what, seconds, f"{ms(seconds)} (median of {repeats})", "≤ 30 ms", at_most=0.030, note=note)
