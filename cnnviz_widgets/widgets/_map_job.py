"""GradCamViewer's busy line: the maps of expensive methods (Score-CAM's masked passes, ...) computed in a
``core/jobs.py`` BackgroundJob, with progress and a Stop button, while the kernel stays free.

It only wires: the work is ``ImageExplanations.compute``; while it runs the viewer keeps
showing the previous map, and this line says what is being computed.
"""

from __future__ import annotations

import html
from typing import Callable

import ipywidgets as widgets

from ..core.jobs import BackgroundJob, Work


class MapJobLine:
    """One background computation of maps at a time; ``box`` is the line to lay out, hidden while idle."""

    def __init__(self):
        self.job: BackgroundJob | None = None
        self.status = widgets.HTML()
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="160px"))
        self.stop_button = widgets.Button(description="Stop", icon="stop")
        self.stop_button.on_click(lambda _: self.job.stop() if self.job is not None else None)
        self.box = widgets.HBox(
            [self.status, self.progress, self.stop_button], layout=widgets.Layout(display="none", align_items="center")
        )

    def start(self, what: str, work: Work, on_done: Callable[[], None]) -> BackgroundJob:
        """Run ``work`` (replacing a job still running), then ``on_done()`` if it finished."""
        self.drop()
        self.status.value = f"computing {html.escape(what)}… (the previous map stays until it is done)"
        self.progress.value, self.progress.max = 0, 1
        self.stop_button.disabled = False
        self.box.layout.display = None

        def report(job: BackgroundJob):
            if job is self.job:
                self.progress.max, self.progress.value = max(job.total, 1), job.done

        def finish(job: BackgroundJob):
            if job is not self.job:
                return
            self.stop_button.disabled = True
            if job.outcome == "done":
                self.box.layout.display = "none"
                on_done()
            elif job.stopping:  # a method stops by raising its own error
                self.status.value = f"stopped: {html.escape(what)} not computed, the map shown is the previous one"
            else:
                self.status.value = f'<span style="color:#b00020">failed: {html.escape(str(job.error))}</span>'

        self.job = BackgroundJob(work, name=f"maps of {what}", on_progress=report, on_finish=finish)
        return self.job.start()

    def drop(self):
        """Stop the job, if any, and hide the line: its maps are no longer asked for."""
        if self.job is not None and not self.job.finished:
            self.job.stop()
        self.job = None
        self.box.layout.display = "none"
