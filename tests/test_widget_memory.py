"""Re-running a widget cell must not leak: close() frees the widget, its parts and its model."""

import gc
import threading
import time
import weakref

import keras
import psutil
import pytest
from ipywidgets.widgets import widget as ipywidget

import cnnviz_widgets as cw
from cnnviz_widgets import ChannelCard, FilterGallery, GradCamViewer, LayerExplorer
from cnnviz_widgets.core.attribution import METHODS, GradCam
from cnnviz_widgets.core.errors import InputError
from cnnviz_widgets.core.map_checks import MapChecks
from conftest import small_cnn

WIDGETS = {
    "LayerExplorer": lambda model, images: LayerExplorer(model, images),
    "FilterGallery": lambda model, images: FilterGallery(model),
    "GradCamViewer": lambda model, images: GradCamViewer(model, images[0]),
    "ChannelCard": lambda model, images: ChannelCard(model, images, k=2),
}


@pytest.fixture(scope="module")
def demo():
    images, _ = cw.demo.load_images()
    return cw.demo.load_model(), images[:4]


def live_widgets() -> int:
    """ipywidgets keeps every widget until it is closed."""
    gc.collect()
    return len(ipywidget._instances)


@pytest.mark.parametrize("kind", WIDGETS)
def test_rerunning_a_widget_cell_leaves_no_widget_behind(demo, kind):
    start = live_widgets()
    gone = []
    for _ in range(10):
        shown = WIDGETS[kind](*demo)
        assert live_widgets() > start + 10  # the widget and its parts are registered
        gone.append(weakref.ref(shown))
        shown.close()
        del shown
    assert live_widgets() == start
    assert all(ref() is None for ref in gone)


@pytest.mark.parametrize("kind", WIDGETS)
def test_a_closed_widget_frees_its_model(kind, images):
    model = small_cnn()
    shown = WIDGETS[kind](model, images)
    model_ref = weakref.ref(model)
    shown.close()
    del shown, model
    gc.collect()
    assert model_ref() is None


@pytest.mark.parametrize("kind", WIDGETS)
def test_a_part_kept_after_close_does_not_keep_the_widget(demo, kind):
    shown = WIDGETS[kind](*demo)
    controls = [part for part in shown.children]  # e.g. a user kept a slider or a chart
    shown_ref = weakref.ref(shown)
    shown.close()
    del shown
    gc.collect()
    assert shown_ref() is None
    assert all(part.comm is None for part in controls)


def test_hidden_parts_are_closed_too(demo):
    gallery = FilterGallery(demo[0])  # the patterns view is built but not shown
    hidden = [gallery._views["patterns"], *gallery._patterns_grid.view._buffers]
    assert all(part.comm is not None for part in hidden)
    gallery.close()
    assert all(part.comm is None for part in hidden)


def test_closing_stops_a_pattern_run(demo):
    gallery = FilterGallery(demo[0], steps=100_000)  # would run for minutes
    thread = gallery.compute_patterns()
    assert thread.is_alive()
    gallery_ref = weakref.ref(gallery)
    gallery.close()
    assert not thread.is_alive()
    del gallery, thread
    gc.collect()
    assert gallery_ref() is None


def test_closing_waits_for_the_pattern_runs_it_replaced_and_starts_none(demo):
    gallery = FilterGallery(demo[0], steps=100_000)
    release = threading.Event()
    gallery._report = lambda job: release.wait(10)  # the first run stays in its first step until released
    replaced = gallery.compute_patterns()
    del gallery._report
    gallery.seed = 1  # new settings stop that run; it still ends its step, holding the gallery
    current = gallery.compute_patterns()
    assert replaced.is_alive() and current.is_alive() and replaced is not current
    threading.Timer(0.3, release.set).start()
    gallery_ref = weakref.ref(gallery)
    gallery.close()
    assert not replaced.is_alive() and not current.is_alive()
    assert gallery.compute_patterns() is None  # a closed gallery starts no run
    del gallery, replaced, current
    gc.collect()
    assert gallery_ref() is None


class EndlessCam(GradCam):
    """Stands in for Score-CAM: reports progress until it is told to stop, then stops by raising, as it does."""

    name = "endless"

    def _explain_prepared(self, inputs, classes, *, progress=None):
        while not progress(0, 1):
            time.sleep(0.01)
        raise InputError("stopped")


def test_closing_a_viewer_stops_its_map_and_trust_jobs(images, monkeypatch):
    monkeypatch.setitem(METHODS, EndlessCam.name, EndlessCam)
    model = small_cnn()
    viewer = GradCamViewer(model, images[0])

    def endless_cascade(checks, settings, heatmap, progress, should_stop):
        while not should_stop():
            time.sleep(0.01)

    monkeypatch.setattr(MapChecks, "_cascade", endless_cascade)
    trust_thread = viewer.trust_panel.run("cascade").thread
    viewer.method = "endless"
    map_thread = viewer.map_job.job.thread
    assert trust_thread.is_alive() and map_thread.is_alive()
    refs = weakref.ref(viewer), weakref.ref(model)
    viewer.close()
    assert not trust_thread.is_alive() and not map_thread.is_alive()
    del viewer, model, trust_thread, map_thread
    gc.collect()
    assert all(ref() is None for ref in refs)


REFUSED = {
    "a layer without a kernel": lambda model, images: FilterGallery(model, layer="nope"),
    "a model without a kernel": lambda model, images: FilterGallery(
        keras.Sequential([keras.Input((4, 4, 3)), keras.layers.MaxPooling2D()])
    ),
    "a class the model lacks": lambda model, images: GradCamViewer(model, images[0], class_index=99),
    "a failing preprocess": lambda model, images: LayerExplorer(model, images, preprocess=lambda batch: batch.nope),
    "a layer without maps": lambda model, images: ChannelCard(model, images, layer="gap"),
}


@pytest.mark.parametrize("refused", REFUSED)
def test_a_refused_widget_is_not_left_registered(demo, refused):
    start = live_widgets()
    with pytest.raises(cw.core.errors.CnnvizError):
        REFUSED[refused](*demo)
    assert live_widgets() == start


@pytest.mark.slow
def test_100_reruns_keep_memory_flat(demo):
    def rerun(times):
        for _ in range(times):
            for make in WIDGETS.values():
                make(*demo).close()
        gc.collect()
        return psutil.Process().memory_info().rss

    baseline = rerun(10)  # TensorFlow's allocator and the compiled functions settle first
    grown = rerun(100) - baseline
    # Leaking, 10 LayerExplorers alone grew by 247 MB; allocator noise stays well below this.
    assert grown < 100 * 2**20, f"{grown / 2**20:.0f} MB more after 100 re-runs"
