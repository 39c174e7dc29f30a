"""GradCamViewer's trust panel: its curves are cw.faithfulness's of the map shown, its cascade cw.sanity_check's;
each check runs in a background job, is kept per (method, layer, class, evidence) and can be stopped."""

import re

import keras
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import GradCamViewer
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.map_checks import MapSettings
from conftest import EvictedAfterTheCheck


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(11)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="scores")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture
def image():
    return np.random.default_rng(2).uniform(0, 1, (16, 16, 3)).astype("float32")


def test_the_curves_are_faithfulness_of_the_map_shown_next_to_its_baselines(model, image):
    viewer = GradCamViewer(model, image, top_k=2)
    panel = viewer.trust_panel
    assert all(chart.figure.title.endswith("not run yet") for chart in panel.curve_charts.values())
    assert panel.status.value == "" and panel.progress.layout.display == "none"  # no empty bar before a run
    job = panel.run("curves")
    job.wait()
    assert job.outcome == "done" and panel.status.value == "Deletion / insertion: done"
    assert panel.progress.layout.display == "none"
    assert (panel.progress.value, panel.progress.max) == (2, 2)
    for metric, chart in panel.curve_charts.items():
        expected = cw.faithfulness(model, image[None], viewer.class_index, viewer.heatmap[None], metric, 20)
        baselines = cw.faithfulness_baselines(model, image[None], viewer.class_index, metric, 20)
        np.testing.assert_allclose(chart.lines.x, expected.fractions)
        np.testing.assert_allclose(chart.lines.y[0], expected.curves[0], atol=1e-5)
        np.testing.assert_allclose(chart.lines.y[1], baselines["random"].curves[0], atol=1e-5)
        np.testing.assert_allclose(chart.lines.y[2], baselines["centre"].curves[0], atol=1e-5)
        assert f"{metric} ({expected.better} area is better)" == chart.figure.title
        key = f"map {expected.auc[0]:.3f}</span> &nbsp; .*random {baselines['random'].auc[0]:.3f}</span> &nbsp; .*centre {baselines['centre'].auc[0]:.3f}"
        assert re.search(key, chart.key.value), chart.key.value
    viewer.method = "hirescam"  # another map: its checks are not run, and the line no longer says "done"
    assert panel.status.value == "" and panel.progress.layout.display == "none"


def test_the_cascade_shows_each_randomised_map_with_its_rank_correlation(model, image):
    viewer = GradCamViewer(model, image, top_k=2, layer="conv1")
    viewer.trust_panel.run("cascade").wait()
    expected = cw.sanity_check(model, image[None], viewer.class_index, "gradcam", "conv1")
    cells = viewer.trust_panel.cascade_row.children
    assert len(cells) == len(expected.layers) + 1 == 4
    captions = [cell.children[0].value for cell in cells]
    assert captions == ["<small>original</small>", *(f"<small>{layer}</small>" for layer in expected.layers)]
    notes = [cell.children[2].value for cell in cells[1:]]
    assert notes == [f"<small>ρ = {rho:.2f}</small>" for rho in expected.rank_correlation[:, 0]]
    shown = imaging.upscale_to(imaging.colormap(expected.maps[0, 0], "jet"), 96)
    assert cells[0].children[1].value == imaging.to_png(shown)
    assert "stopped" not in viewer.trust_panel.cascade_caption.value


def test_checks_are_kept_per_map_and_shown_again_without_a_job(model, image):
    viewer = GradCamViewer(model, image, top_k=2)
    panel = viewer.trust_panel
    panel.run("curves").wait()
    shown = [list(chart.lines.y[0]) for chart in panel.curve_charts.values()]
    first_class = viewer.class_index
    viewer.class_index = viewer.predictions[1][0]
    assert all(chart.figure.title.endswith("not run yet") for chart in panel.curve_charts.values())
    assert panel.status.value == ""  # no "done" beside the cleared curves
    job = panel.job
    viewer.class_index = first_class
    assert panel.job is job  # nothing ran again
    assert panel.status.value == "Deletion / insertion: done"
    assert [list(chart.lines.y[0]) for chart in panel.curve_charts.values()] == shown
    assert panel._checks.result("curves", MapSettings("gradcam", viewer.layer, first_class, False)) is not None


def test_stop_ends_the_cascade_which_is_shown_but_not_kept(model, image, monkeypatch):
    viewer = GradCamViewer(model, image, top_k=2)
    panel = viewer.trust_panel
    reports = []

    def stop_after_the_first_step(job):
        reports.append(job.done)
        if job.done == 2:
            job.stop()

    monkeypatch.setattr(panel, "_report", stop_after_the_first_step)
    job = panel.run("cascade")
    job.wait()
    assert job.outcome == "stopped" and not job.result.complete
    assert reports == [1, 2]
    assert len(panel.cascade_row.children) == 2  # the original and one randomised map
    assert "stopped early" in panel.cascade_caption.value
    assert panel._checks.result("cascade", viewer._map_settings()) is None
    assert panel.stop_button.disabled


def test_a_failing_check_says_why_in_the_panel(model, image, monkeypatch):
    viewer = GradCamViewer(model, image, top_k=2)
    viewer.class_index = 3
    monkeypatch.setattr(viewer, "heatmap", np.full((16, 16), np.nan, np.float32))  # no silent NaN: faithfulness refuses it
    job = viewer.trust_panel.run("curves")
    with pytest.raises(cw.core.errors.CnnvizError):
        job.wait()
    assert viewer.trust_panel.status.value.startswith('<span style="color:#b00020">Deletion / insertion failed: ')


def test_map_checks_keep_the_last_ones_used_and_name_the_checks(model, image, monkeypatch):
    from cnnviz_widgets.core import map_checks

    monkeypatch.setattr(map_checks, "MAX_CHECKS", 1)
    checks = map_checks.MapChecks(model, image[None], 0)
    heatmap = cw.attribute(model, image[None], 0)[0]
    first, second = MapSettings("gradcam", "conv2", 0, False), MapSettings("gradcam", "conv2", 1, False)
    checks.job("curves", first, heatmap).start().wait()
    assert checks.result("curves", first) is not None
    checks.job("curves", second, heatmap).start().wait()
    assert checks.result("curves", first) is None and checks.result("curves", second) is not None
    with pytest.raises(cw.core.errors.InputError, match="Unknown check 'ssim'. Use one of: curves, cascade"):
        checks.job("ssim", first, heatmap)


def test_curves_run_while_a_slow_map_computes_are_of_the_map_shown(model, image, monkeypatch):
    """The heatmap shown is still Grad-CAM's while a background method computes: the curves score it, kept under Grad-CAM."""
    import threading

    from cnnviz_widgets.core.attribution import METHODS, GradCam

    gate = threading.Event()

    class SlowGradCam(GradCam):
        name = "slow"

        def _explain_prepared(self, inputs, classes, *, progress=None):
            gate.wait(30)
            return super()._explain_prepared(inputs, classes)

    monkeypatch.setitem(METHODS, SlowGradCam.name, SlowGradCam)
    viewer = GradCamViewer(model, image, top_k=2)
    gradcam_map = viewer.heatmap.copy()
    viewer.method = "slow"  # its map computes in the background; Grad-CAM's stays shown
    try:
        viewer.trust_panel.run("curves").wait()
    finally:
        gate.set()
        viewer.map_job.job.wait()
    gradcam = MapSettings("gradcam", viewer.layer, viewer.class_index, False)
    expected = cw.faithfulness(model, image[None], viewer.class_index, gradcam_map[None], "deletion", 20)
    np.testing.assert_allclose(viewer.trust_panel._checks.result("curves", gradcam)["deletion"].curves["map"], expected.curves[0], atol=1e-5)
    assert viewer.trust_panel._checks.result("curves", viewer._map_settings()) is None  # the slow map was never scored


def test_a_counterfactual_map_is_better_the_more_its_deletion_raises_the_class(model, image):
    """Deleting what speaks against a class should raise its probability: for an 'against' map the areas' order flips."""
    viewer = GradCamViewer(model, image, top_k=2, evidence="against")
    viewer.trust_panel.run("curves").wait()
    charts = viewer.trust_panel.curve_charts
    assert charts["deletion"].figure.title == "deletion (higher area is better)"
    assert charts["insertion"].figure.title == "insertion (lower area is better)"
    assert "against the class" in charts["deletion"].key.value
    expected = cw.faithfulness(model, image[None], viewer.class_index, viewer.heatmap[None], "deletion", 20)
    np.testing.assert_allclose(charts["deletion"].lines.y[0], expected.curves[0], atol=1e-5)


def test_a_result_evicted_between_check_and_read_is_not_a_key_error(model, image):
    from cnnviz_widgets.core.map_checks import MapChecks

    checks = MapChecks(model, image[None], 0)
    settings = MapSettings("gradcam", "conv2", 0, False)
    checks.job("curves", settings, cw.attribute(model, image[None], 0)[0]).start().wait()
    kept = checks.result("curves", settings)
    checks._results = EvictedAfterTheCheck(checks._results)
    assert checks.result("curves", settings) is kept  # read once, under the lock
