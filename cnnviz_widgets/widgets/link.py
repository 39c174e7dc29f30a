"""cw.link: widgets that follow each other's layer and channel.

Only wiring: a change of ``layer`` or ``channel`` in one linked widget is set on the
others, each checking it as if the user had set it. A widget that does not have the
layer (GradCamViewer takes CAM layers only, FilterGallery layers with a kernel only)
keeps its own layer and channel and shows no error.
"""

from __future__ import annotations

import threading
import weakref

from ..core.errors import InputTypeError
from ._base import VisualizerWidget, WidgetValueError

FOLLOWED = ("layer", "channel")


class Link:
    """Keeps ``layer`` and ``channel`` in step across widgets; :meth:`unlink` ends it.

    It holds the widgets weakly and each widget's observer holds it, so a closed widget
    (``close()`` drops its observers) leaves the link and is freed.
    """

    def __init__(self, views):
        self._views = [weakref.ref(view) for view in views]
        self._following = False  # set while the link itself moves the widgets
        # GradCamViewer redraws a background map on the job's thread (ipywidgets has no public way to hand
        # work to the kernel's thread), and may correct its channel there: one follow at a time, and
        # _following is only read by the thread that holds the lock, where it means "moved by the link".
        self._lock = threading.RLock()
        for view in self.views:
            view.observe(self._follow, names=list(FOLLOWED))

    @property
    def views(self) -> list[VisualizerWidget]:
        """The linked widgets not yet closed."""
        return [view for view in (ref() for ref in self._views) if view is not None and not view._closed]

    def unlink(self):
        for view in self.views:
            view.unobserve(self._follow, names=list(FOLLOWED))
        self._views = []

    def _follow(self, change):
        with self._lock:
            if self._following:
                return  # a widget moved by the link, or correcting its own channel for a new layer
            source = change["owner"]
            self._following = True
            try:
                for view in self.views:
                    if view is not source and source.layer in view.layer_names:
                        _set_quietly(view, "layer", source.layer)
                        _set_quietly(view, "channel", source.channel)
            finally:
                self._following = False


def _set_quietly(view: VisualizerWidget, name: str, value):
    """Set a trait unless the widget refuses it; a refusal keeps the widget as it was, error line included."""
    shown_error = view.error
    try:
        setattr(view, name, value)
    except WidgetValueError:
        view.error = shown_error


def link(*views: VisualizerWidget) -> Link:
    """Keep ``layer`` and ``channel`` in step across ``views`` (LayerExplorer, FilterGallery,
    GradCamViewer, ChannelCard: any of them, two or more).

    A widget follows a layer it has (``layer_names``) and then the channel; one that
    does not have that layer, or refuses that channel, keeps its own without an error.
    Returns a :class:`Link`; ``link.unlink()`` ends it, and closing a widget drops it from the link.
    """
    if len(views) < 2 or not all(isinstance(view, VisualizerWidget) for view in views):
        raise InputTypeError(
            "cw.link takes two or more cnnviz_widgets widgets, e.g. cw.link(explorer, gallery, viewer); "
            f"got {', '.join(type(view).__name__ for view in views) or 'none'}."
        )
    return Link(views)
