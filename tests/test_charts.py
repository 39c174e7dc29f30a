"""The bar chart's axes: as many y ticks as its height holds, x labels that do not run together."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets.widgets._charts import BarChart


def _plot_height_px(chart: BarChart) -> int:
    margin = chart.figure.fig_margin
    return int(chart.figure.layout.height.removesuffix("px")) - margin["top"] - margin["bottom"]


@pytest.mark.parametrize("height_px", [220, 260, 480])
def test_y_ticks_are_at_least_30_px_apart_at_any_height(height_px):
    chart = BarChart(y_label="mean", height_px=height_px)
    for labels in ([0, 1, 2], [f"class {index}" for index in range(5)]):  # level, then slanted x labels
        chart.show(labels, np.linspace(0.0, 0.35, len(labels)))
        ticks = chart.y_axis.num_ticks
        assert ticks is not None, "unset, the front end draws about ten ticks whatever the height"
        assert ticks >= 2
        assert _plot_height_px(chart) / ticks >= 30


def test_a_taller_chart_gets_more_y_ticks_and_slanted_names_leave_fewer():
    small, tall = BarChart(height_px=220), BarChart(height_px=480)
    for chart in (small, tall):
        chart.show(range(4), [0.1, 0.2, 0.3, 0.4])
    assert tall.y_axis.num_ticks > small.y_axis.num_ticks
    level = small.y_axis.num_ticks
    small.show([f"a long class name {index}" for index in range(4)], [0.1, 0.2, 0.3, 0.4])  # slanted: a deeper margin
    assert small.figure.fig_margin["bottom"] > 40
    assert small.y_axis.num_ticks <= level
    assert _plot_height_px(small) / small.y_axis.num_ticks >= 30
