"""Finding every widget a widget is made of, and dropping their callbacks, so that closing one frees it all."""

from __future__ import annotations

import threading

import ipywidgets as widgets


def owned_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    """``root`` and every widget it is made of, shown or not.

    Widgets are found through synced traits (children, layout, style, a figure's marks,
    axes and scales, a mark's image or tooltip) of ``root``, of the widgets in its
    attributes (a view not shown now, a hidden image buffer) and of the widgets in
    this package's helper objects (BarChart, PictureFigure, TileGrid…).
    """
    found, seen, pending = [], set(), [root]
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, widgets.Widget):
            found.append(value)
            pending.extend(getattr(value, name) for name in value.keys)
            if value is root:
                pending.extend(vars(value).values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif type(value).__module__.startswith(__package__ + "."):
            pending.extend(vars(value).values())
    return found


def drop_callbacks(widget: widgets.Widget):
    """Forget trait observers (links included) and click and message callbacks."""
    widget.unobserve_all()
    # _trait_values holds the traits set so far; trait_values() would create the others.
    for value in [*vars(widget).values(), *widget._trait_values.values()]:
        if isinstance(value, widgets.CallbackDispatcher):
            value.callbacks.clear()


def stop_and_join(*jobs):
    """Stop each BackgroundJob (None is skipped) and wait for its thread to end, unless it is this thread:
    a job's callback may close the widget that runs it."""
    for job in jobs:
        if job is not None:
            job.stop()
    for job in jobs:
        if job is not None and job.thread is not threading.current_thread() and job.thread.ident is not None:
            job.thread.join()
