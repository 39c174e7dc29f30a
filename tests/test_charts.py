"""The charts' axes: round ticks, as many as the chart's size has room for; no toolbar over a picture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnviz_widgets.widgets._charts import BarChart, ColorBar, PictureFigure

MIN_TICK_SPACING_PX = 25


def _plot_height_px(chart: BarChart) -> int:
    margin = chart.figure.fig_margin
    return int(chart.figure.layout.height.removesuffix("px")) - margin["top"] - margin["bottom"]


def _is_round(step: float) -> bool:
    mantissa = step / 10.0 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, round_one, rel_tol=1e-6) for round_one in (1, 2, 2.5, 5))


@pytest.mark.parametrize("height_px", [220, 260, 480])
@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [f"class {index}" for index in range(5)]], ids=["level", "slanted"])
@pytest.mark.parametrize("values", [(0.0, 0.516), (-0.0132, 0.516), (-3.0, 40.0), (0.0, 0.007)])
def test_y_ticks_are_round_inside_the_bars_range_and_at_least_25_px_apart(height_px, labels, values):
    chart = BarChart(y_label="mean", height_px=height_px)
    shown = np.linspace(*values, len(labels))
    chart.show(labels, shown)
    ticks = np.asarray(chart.y_axis.tick_values, dtype=float)
    low, high = min(shown.min(), 0.0), max(shown.max(), 0.0)  # bars stand on 0
    assert len(ticks) >= 2
    assert low - 1e-12 <= ticks.min() and ticks.max() <= high + 1e-12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0]) and _is_round(steps[0])
    assert np.allclose(ticks / steps[0], np.round(ticks / steps[0]), atol=1e-6)  # multiples of the step: 0 is a tick
    assert _plot_height_px(chart) * steps[0] / (high - low) >= MIN_TICK_SPACING_PX


def test_a_taller_chart_has_more_y_ticks_and_slanted_names_no_more():
    small, tall = BarChart(height_px=220), BarChart(height_px=480)
    for chart in (small, tall):
        chart.show(range(4), [0.1, 0.2, 0.3, 0.45])
    assert len(tall.y_axis.tick_values) > len(small.y_axis.tick_values)
    level = len(small.y_axis.tick_values)
    small.show([f"a long class name {index}" for index in range(4)], [0.1, 0.2, 0.3, 0.45])  # a deeper bottom margin
    assert small.figure.fig_margin["bottom"] > 40
    assert 2 <= len(small.y_axis.tick_values) <= level


def test_deletion_curve_axes_have_round_ticks_at_least_25_px_apart():
    from cnnviz_widgets.widgets._trust_panel import CurveChart

    chart = CurveChart("deletion")
    margin = chart.figure.fig_margin
    width, height = (int(getattr(chart.figure.layout, side).removesuffix("px")) for side in ("width", "height"))
    lengths = {"horizontal": width - margin["left"] - margin["right"], "vertical": height - margin["top"] - margin["bottom"]}
    for axis in chart.figure.axes:
        ticks = np.asarray(axis.tick_values, dtype=float)
        assert ticks[0] == pytest.approx(0.0) and ticks[-1] == pytest.approx(1.0)  # the whole 0..1 range is labelled
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0]) and _is_round(steps[0])
        assert lengths[axis.orientation] * steps[0] >= MIN_TICK_SPACING_PX


def test_slanted_x_labels_end_at_their_ticks():
    chart = BarChart()
    chart.show(["cross", "star", "square"], [0.9, 0.05, 0.05])
    assert chart.x_axis.tick_rotate != 0 and chart.x_axis.tick_style.get("text-anchor") == "end"
    chart.show([0, 1, 2], [0.9, 0.05, 0.05])
    assert chart.x_axis.tick_rotate == 0 and chart.x_axis.tick_style.get("text-anchor", "middle") == "middle"


@pytest.mark.parametrize("height_px", [160, 320])
@pytest.mark.parametrize("low, high", [(0.0, 1.35), (-0.42, 0.42), (0.0, 0.0005)])
def test_colour_bar_ticks_are_round_inside_its_bounds_and_at_least_25_px_apart(height_px, low, high):
    bar = ColorBar(height_px=height_px)
    bar.show(low, high)
    ticks = np.asarray(bar.axis.tick_values, dtype=float)
    assert len(ticks) >= 2
    assert low - 1e-12 <= ticks.min() and ticks.max() <= high + 1e-12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0]) and _is_round(steps[0])
    margin = bar.figure.fig_margin
    assert (height_px - margin["top"] - margin["bottom"]) * steps[0] / (high - low) >= MIN_TICK_SPACING_PX


def test_a_colour_bar_given_a_shorter_layout_by_its_widget_has_fewer_ticks():
    bar = ColorBar(height_px=320)  # LayerExplorer's, then sized to a 160-px grid
    bar.show(-2.0, 2.0)
    tall = len(bar.axis.tick_values)
    bar.figure.layout.height = "160px"
    bar.show(-2.0, 2.0)
    ticks = np.asarray(bar.axis.tick_values, dtype=float)
    assert len(ticks) < tall
    assert (160 - 2 * ColorBar.MARGIN_PX) * (ticks[1] - ticks[0]) / 4.0 >= MIN_TICK_SPACING_PX


def test_no_toolbar_covers_a_picture_a_colour_bar_or_the_bars():
    figures = (PictureFigure(64).figure, ColorBar().figure, BarChart().figure)
    assert not any(figure.display_toolbar for figure in figures)
