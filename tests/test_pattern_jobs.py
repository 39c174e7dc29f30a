"""Pattern jobs and their cache, without widgets: progress, stop, failure, bounded cache.

Expected patterns come from ``cw.filter_patterns``; a job's callbacks record what a
viewer would see, in the job's thread.
"""

import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core import imaging
from cnnviz_widgets.core.pattern_jobs import ComputedPattern, PatternCache, PatternJob, PatternSettings
from cnnviz_widgets.core.patterns import PatternSearch
from conftest import small_cnn

ONE_FILTER_PER_BATCH = 1e-6  # a memory budget so small that every batch holds one filter


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=16)


def job_for(model, filters, cache, steps=3, **callbacks):
    search = PatternSearch.shared(model, "conv1")
    settings = PatternSettings("conv1", search.image_shape[:2], steps, 0, (0.0, 255.0))
    return PatternJob(search, settings, filters, cache, memory_budget_mb=ONE_FILTER_PER_BATCH, **callbacks)


def test_a_job_reports_every_step_and_batch_and_fills_the_cache(model):
    cache, seen = PatternCache(), []
    job = job_for(
        model,
        [0, 1, 2],
        cache,
        on_step=lambda job: seen.append(("step", job.steps_done)),
        on_batch=lambda job: seen.append(("batch", job.steps_done, job.computed)),
        on_finish=lambda job: seen.append(("finish", job.outcome)),
    )
    assert job.total_steps == 3 * 3 and job.outcome == "running"
    job.start().wait()
    assert seen == [
        *[("step", n) for n in (0, 1, 2)], ("batch", 3, 1),
        *[("step", n) for n in (3, 4, 5)], ("batch", 6, 2),
        *[("step", n) for n in (6, 7, 8)], ("batch", 9, 3),
        ("finish", "done"),
    ]  # fmt: skip
    computed = cache.patterns(job.settings)
    expected = cw.filter_patterns(model, "conv1", [0, 1, 2], size=None, steps=3)
    np.testing.assert_array_equal(np.stack([p.image for p in computed.values()]), expected)
    assert not job.running and job.outcome == "done"


def test_a_stopped_job_keeps_its_finished_batches(model):
    cache = PatternCache()

    def stop_after_first_batch(job):
        job.stop()

    job = job_for(model, [0, 1, 2, 3], cache, on_batch=stop_after_first_batch)
    job.start().wait()
    assert job.outcome == "stopped" and job.computed == 1
    assert list(cache.patterns(job.settings)) == [0]
    assert cache.missing(job.settings, range(4)) == [1, 2, 3]
    assert not job.covers([1])


def test_a_failed_job_says_why_and_wait_raises_it(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(PatternSearch, "run", broken)
    outcomes = []
    job = job_for(model, [0], PatternCache(), on_finish=lambda job: outcomes.append(job.outcome))
    with pytest.raises(RuntimeError, match="out of memory"):
        job.start().wait()
    assert outcomes == ["failed"] and job.outcome == "failed"


def test_a_running_job_covers_its_filters_until_stopped(model):
    job = job_for(model, [0, 1], PatternCache(), steps=100_000)
    job.start()
    assert job.covers([1]) and not job.covers([2])
    job.stop()
    job.wait()
    assert not job.running and not job.covers([1])


def settings_of(layer):
    return PatternSettings(layer, (4, 4), 1, 0, (0.0, 1.0))


def pattern(value=0):
    return ComputedPattern(np.full((4, 4, 3), value, np.uint8), 0.0, 1.0)


def test_the_cache_drops_the_settings_used_least_recently_beyond_its_budget():
    one_pattern_mb = pattern().image.nbytes / 2**20
    cache = PatternCache(budget_mb=3 * one_pattern_mb)
    cache.add(settings_of("a"), 0, pattern())
    cache.add(settings_of("b"), 0, pattern())
    cache.patterns(settings_of("a"))  # "a" used last: "b" goes first
    cache.add(settings_of("c"), 0, pattern())
    cache.add(settings_of("c"), 1, pattern())
    assert cache.patterns(settings_of("b")) == {}
    assert list(cache.patterns(settings_of("a"))) == [0] and list(cache.patterns(settings_of("c"))) == [0, 1]
    for index in range(2, 6):  # the settings used last are kept, even over the budget
        cache.add(settings_of("c"), index, pattern())
    assert cache.patterns(settings_of("a")) == {} and len(cache.patterns(settings_of("c"))) == 6


def test_a_page_picture_is_the_grid_of_its_patterns_blank_where_missing():
    cache = PatternCache()
    cache.add(settings_of("a"), 5, pattern(200))
    picture, layout = cache.page_picture(settings_of("a"), range(4, 8), (4, 4, 3), gap=5)
    blank = np.zeros((4, 4, 3), np.uint8)
    expected = imaging.grid([blank, pattern(200).image, blank, blank], columns=2, gap=5)
    np.testing.assert_array_equal(picture, expected)
    assert layout == imaging.GridLayout.for_tiles(4, (4, 4), 2, 5)
    # A preview fills a tile not computed yet; a computed pattern wins over its preview.
    previews = {4: pattern(90).image, 5: pattern(10).image}
    picture, _ = cache.page_picture(settings_of("a"), range(4, 8), (4, 4, 3), gap=5, previews=previews)
    expected = imaging.grid([pattern(90).image, pattern(200).image, blank, blank], columns=2, gap=5)
    np.testing.assert_array_equal(picture, expected)


def test_page_of_holds_the_index_and_the_last_page_is_short():
    assert imaging.page_of(9, 4, 12) == range(8, 12)
    assert imaging.page_of(10, 4, 10) == range(8, 10)  # past the end: the last page
    assert imaging.page_of(3, 64, 10) == range(0, 10)
