"""A piece of long work in a background thread, with progress and stop: the kernel stays free while it runs.

:class:`BackgroundJob` is :class:`~cnnviz_widgets.core.pattern_jobs.PatternJob`'s thread,
progress and stop without its pattern cache, for any function written as
``work(progress, should_stop)``: the trust panel's deletion/insertion curves and sanity
cascade run in one. (PatternJob keeps its own: it counts ascent steps and fills its cache per batch.)
"""

from __future__ import annotations

import threading
from typing import Any, Callable

Work = Callable[[Callable[[int, int], None], Callable[[], bool]], Any]


class BackgroundJob:
    """``work(progress, should_stop)`` in its own thread; its return value is ``result``.

    ``work`` calls ``progress(done, total)`` as it goes and returns early when
    ``should_stop()`` is True (after :meth:`stop`). The callbacks run in the job's thread:
    ``on_progress(job)`` after each progress report, ``on_finish(job)`` at the end, whether
    it finished, was stopped or failed (``error``, an exception ``work`` raised).
    """

    def __init__(
        self,
        work: Work,
        *,
        name: str = "background job",
        on_progress: Callable[["BackgroundJob"], None] | None = None,
        on_finish: Callable[["BackgroundJob"], None] | None = None,
    ):
        self._work, self._on_progress, self._on_finish = work, on_progress, on_finish
        self.done, self.total = 0, 1
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
    def outcome(self) -> str:
        """"running", "failed", "stopped" (stop asked before the end) or "done"."""
        if not self.finished:
            return "running"
        if self.error is not None:
            return "failed"
        return "stopped" if self._stop.is_set() else "done"

    def wait(self) -> Any:
        """Join the thread and return ``result``; re-raise what went wrong in it."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def _progress(self, done: int, total: int):
        self.done, self.total = int(done), int(total)
        if self._on_progress is not None:
            self._on_progress(self)

    def _run(self):
        try:
            self.result = self._work(self._progress, self._stop.is_set)
        except Exception as error:  # kept for the widget and for wait(), which re-raises it
            self.error = error
        self.finished = True
        if self._on_finish is not None:
            self._on_finish(self)
