"""What the widgets share: refusing bad values, choice traits, setting traits from the constructor, closing, PNG export.

The bqplot pieces they compose (bar charts, colour bars, clickable pictures) are in ``_charts.py``.

No maths here: widgets call ``cnnviz_widgets.core`` and only lay out and draw.
"""

from __future__ import annotations

import base64
import functools
import html
import ipywidgets as widgets
import numpy as np
from traitlets import Enum, TraitError, TraitType, Unicode, observe, validate

from ..core import checks as core_checks
from ..core import imaging
from ..core.errors import CnnvizError, InputTypeError
from ._closing import drop_callbacks, owned_widgets


class WidgetValueError(CnnvizError, TraitError, ValueError):
    """A trait value the widget refused; the widget keeps its previous state."""


def checks(*names):
    """traitlets' ``@validate`` for a VisualizerWidget: the check calls ``refuse`` for a bad
    value, or lets a core check's CnnvizError out, which is refused with its message; it returns
    a good value, which also clears an error still shown."""

    def decorate(check):
        @functools.wraps(check)
        def accepting(self, proposal):
            try:
                value = check(self, proposal)
            except WidgetValueError:
                raise
            except CnnvizError as error:  # a core check's words are the refusal's
                self.refuse(str(error))
            self.error = ""
            return value

        return validate(*names)(accepting)

    return decorate


class Choice(Enum):
    """An Enum trait of a VisualizerWidget: a value not among its choices is refused like a @checks one
    (shown in ``error``, naming the values to use), and a good one clears the error shown."""

    def validate(self, obj, value):
        try:
            value = super().validate(obj, value)
        except TypeError:  # an unhashable value looked up in choices kept as a dict (METHODS)
            self.error(obj, value)
        if obj.error:
            obj.error = ""
        return value

    def error(self, obj, value, error=None, info=None):
        obj.refuse(f"Unknown {self.name} {value!r}. Use one of: {', '.join(map(str, self.values))}.")


class VisualizerWidget(widgets.VBox):
    """A VBox with an error line and a static PNG of what it shows.

    Subclasses validate traits with :func:`checks` and call :meth:`refuse` for a bad
    value: the message shows in the widget and raises from code, and traitlets
    leaves the old value in place. They implement :meth:`panels`.
    """

    error = Unicode("", help="Why the last value was refused; empty after a good one.")
    _closed = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _closing_when_refused(cls.__init__)

    def __init__(self, **kwargs):
        self._error_line = widgets.HTML(layout=widgets.Layout(min_height="0"))
        super().__init__(**kwargs)

    def __setattr__(self, name, value):
        # traitlets checks a value's type (and a Choice its values) before any @validate
        # runs: show that refusal too.
        try:
            super().__setattr__(name, value)
        except TraitError as error:
            if self.has_trait(name):
                self.error = str(error)
            raise

    def close(self):
        """Close this widget and every widget it is made of, and drop their callbacks.

        ipywidgets keeps every widget until it is closed, and the controls' callbacks
        lead back here, so an unclosed part keeps this widget, its model and its
        caches alive for the rest of the session.
        """
        if self._closed:
            return  # Widget.__del__ closes again
        self._closed = True
        for part in owned_widgets(self):
            if part is not self:
                part.close()
            drop_callbacks(part)
        super().close()

    def refuse(self, message: str):
        self.error = message
        raise WidgetValueError(message)

    def _bind(self, control, name: str, shown=lambda value: value, taken=lambda value: value):
        """Link a control to trait ``name``; a refused value is taken back out of the control.
        The control shows ``shown(trait value)``; its own value sets the trait to ``taken(value)``."""

        def to_trait(change):
            if change["new"] == shown(getattr(self, name)):
                return  # the control only caught up with the trait
            try:
                setattr(self, name, taken(change["new"]))
            except WidgetValueError:  # refuse() has shown why
                control.value = shown(getattr(self, name))

        control.observe(to_trait, "value")
        self.observe(lambda change: setattr(control, "value", shown(change["new"])), name)

    def refuse_outside(self, name: str, value, count: int, why: str, problem: str = "is out of range") -> int:
        """``value`` if it is an index 0..count-1, else refused as :func:`core.checks.index` words it."""
        return core_checks.index(name, value, count, why, problem)  # in a @checks validator: its error is the refusal

    def set_traits_in_order(self, traits: dict):
        """Set the constructor's ``**traits`` one by one in the class's order, each checked as if set later.

        The order of the class's declarations matters: a channel is checked against the
        layer given with it.
        """
        names = [name for name, trait in vars(type(self)).items() if isinstance(trait, TraitType)]
        unknown = sorted(set(traits) - set(names))
        if unknown:
            raise InputTypeError(
                f"{type(self).__name__} has no trait {', '.join(unknown)}; its traits are: {', '.join(names)}."
            )
        for name in names:
            if name in traits:
                setattr(self, name, traits[name])

    @observe("error")
    def _show_error(self, change):
        text = html.escape(change["new"])
        self._error_line.value = f'<span style="color:#b00020">{text}</span>' if text else ""

    def panels(self) -> list[np.ndarray]:
        """The pictures this widget shows now, uint8 (H, W, 3), left to right."""
        raise NotImplementedError

    def to_png(self) -> bytes:
        """A PNG of what the widget shows, for export and where widgets do not render."""
        return imaging.to_png(imaging.side_by_side(self.panels(), STATIC_PANEL_PX))

    def _repr_mimebundle_(self, **kwargs):
        # nbconvert and GitHub cannot draw widgets; they fall back to this PNG.
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.to_png()).decode("ascii")
        return bundle


STATIC_PANEL_PX = 256


def _closing_when_refused(init):
    """A widget constructor that closes what it built when it raises: nobody gets the widget to close it."""

    @functools.wraps(init)
    def initialise(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except BaseException:
            self.close()
            raise

    return initialise


def image_view(width: str = "256px", pixelated: bool = False) -> widgets.Image:
    """A PNG image widget; upscale small maps with imaging.upscale to keep pixels crisp, or,
    ``pixelated``, send them at their own size and let the browser enlarge them with whole
    pixels (the widget's children then need a :func:`pixelated_style`; see :func:`enlarged_twice`)."""
    view = widgets.Image(format="png", layout=widgets.Layout(width=width))
    if pixelated:
        view.add_class(PIXELATED)
    return view


PIXELATED = "cnnviz-pixelated"


def enlarged_twice(picture_px: int, smallest_view_px: int) -> bool:
    """Whether a view at least ``smallest_view_px`` wide enlarges a picture ``picture_px`` wide
    2× or more: only then are whole pixels crisp. Shrunk, or enlarged by less (a 224-px photo in
    a 256-px panel), pixelated rows and columns of uneven widths look jagged: smooth is better."""
    return 2 * picture_px <= smallest_view_px


def pixelated_style() -> widgets.HTML:
    """The page's rule for ``image_view(pixelated=True)``: a 64-px picture shown at 256 px
    is a 16th of the bytes and of the PNG encoding of a 4× upscaled one, and looks the same."""
    rule = f"<style>.{PIXELATED} {{ image-rendering: pixelated; }}</style>"
    return widgets.HTML(rule, layout=widgets.Layout(display="none"))


def show(view: widgets.Image, picture: np.ndarray):
    view.value = imaging.to_png(imaging.to_uint8_image(picture))
