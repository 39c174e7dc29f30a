"""A piece of long work in a background thread, with progress and stop: the kernel stays free while it runs.

:class:`BackgroundJob` is the one home of a job's thread, progress, stop, error, outcome
and wait, for any function written as ``work(progress, should_stop)``. The trust panel's
deletion/insertion curves and sanity cascade and the viewer's maps run in one directly;
:class:`~cnnviz_widgets.core.pattern_jobs.PatternJob` (ascent steps, pattern cache,
previews), :class:`~cnnviz_widgets.core.top_activating.TopActivatingJob` (the top-k
stream) and :class:`~cnnviz_widgets.core.channel_card.LayerJob` (a layer's statistics)
are subclasses that add only their work and what they report.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

Progress = Callable[[int, int | None], bool]
Work = Callable[[Progress, Callable[[], bool]], Any]


class BackgroundJob:
    """``work(progress, should_stop)`` in its own thread; its return value is ``result``.

    ``work`` calls ``progress(done, total)`` as it goes (``total`` None where unknown;
    it returns ``should_stop()``, for work that stops on a True from its progress
    callback) and returns early when ``should_stop()`` is True (after :meth:`stop`).
    The callbacks run in the job's thread: ``on_progress(job)`` after each progress
    report, ``on_finish(job)`` at the end, whether it finished, was stopped or failed
    (``error``, an exception ``work`` raised). ``total`` is what ``total`` is before the
    first report.
    """

    def __init__(
        self,
        work: Work,
        *,
        name: str = "background job",
        total: int | None = 1,
        on_progress: Callable[["BackgroundJob"], None] | None = None,
        on_finish: Callable[["BackgroundJob"], None] | None = None,
    ):
        self._work, self._on_progress, self._on_finish = work, on_progress, on_finish
        self.done, self.total = 0, total
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # set before on_finish runs, while the thread is still alive
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "BackgroundJob":
        self.thread.start()
        return self

    def stop(self):
        """Ask ``work`` to return at its next ``should_stop()``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    @property
    def outcome(self) -> str:
        """"running", "failed", "stopped" (stop asked before the end) or "done"."""
        if not self.finished:
            return "running"
        if self.error is not None:
            return "failed"
        return "stopped" if self._stopped() else "done"

    def wait(self) -> Any:
        """Join the thread and return ``result``; re-raise what went wrong in it."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def _stopped(self) -> bool:
        """Whether a finished, not failed, job ended before all its work was done."""
        return self.stopping

    def _progress(self, done: int, total: int | None) -> bool:
        self.done, self.total = int(done), None if total is None else int(total)
        self._notify(self._on_progress)
        return self.stopping

    def _notify(self, callback):
        if callback is not None:
            callback(self)

    def _run(self):
        try:
            self.result = self._work(self._progress, self._stop.is_set)
        except Exception as error:  # kept for the widget and for wait(), which re-raises it
            self.error = error
        self.finished = True
        self._notify(self._on_finish)
