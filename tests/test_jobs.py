"""BackgroundJob: work in its own thread with progress, stop, result and failure, without widgets."""

import threading

import pytest

from cnnviz_widgets.core.errors import InputError
from cnnviz_widgets.core.jobs import BackgroundJob


def counting(steps, gate=None):
    """Work that reports each of ``steps`` steps, waiting at ``gate`` (if any) before each, and returns the steps done."""

    def work(progress, should_stop):
        done = 0
        for step in range(steps):
            if gate is not None:
                gate.wait()
                gate.clear()
            if should_stop():
                break
            done += 1
            progress(done, steps)
        return done

    return work


def test_a_job_reports_progress_in_its_thread_and_returns_its_result():
    seen = []
    job = BackgroundJob(
        counting(3),
        on_progress=lambda job: seen.append((job.done, job.total, threading.current_thread() is job.thread)),
        on_finish=lambda job: seen.append((job.outcome, job.finished)),
    )
    assert job.outcome == "running" and (job.done, job.total) == (0, 1)
    assert job.start().wait() == 3
    assert seen == [(1, 3, True), (2, 3, True), (3, 3, True), ("done", True)]
    assert job.result == 3 and job.outcome == "done" and not job.thread.is_alive()


def test_stop_ends_the_work_at_its_next_check():
    gate = threading.Event()
    job = BackgroundJob(counting(5, gate)).start()
    gate.set()
    while job.done < 1:  # the first step is through
        job.thread.join(0.01)
    job.stop()
    gate.set()
    assert job.wait() == 1
    assert job.outcome == "stopped" and job.stopping


def test_a_failure_is_kept_and_raised_by_wait():
    def failing(progress, should_stop):
        progress(1, 2)
        raise InputError("bad input: fix it")

    outcomes = []
    job = BackgroundJob(failing, on_finish=lambda job: outcomes.append(job.outcome)).start()
    with pytest.raises(InputError, match="fix it"):
        job.wait()
    assert outcomes == ["failed"] and isinstance(job.error, InputError) and job.result is None


def test_progress_answers_whether_to_stop_and_keeps_an_unknown_total():
    reports = []

    def until_told(progress, should_stop):  # work that, like top_activating, stops on True from progress
        for done in range(1, 10):
            if progress(done, None):
                return done
        return None

    def stop_at_three(job):
        reports.append((job.done, job.total, job.running))
        if job.done == 3:
            job.stop()

    job = BackgroundJob(until_told, total=None, on_progress=stop_at_three)
    assert job.total is None and not job.running
    assert job.start().wait() == 3
    assert reports == [(1, None, True), (2, None, True), (3, None, True)]
    assert job.outcome == "stopped" and not job.running
