"""The base of every notebook panel: :class:`Panel` (ipywidgets).

A panel is a library object that a notebook shows once and a test drives from code. What every panel
shares is here: its controls are ipywidgets ``ValueWidget`` attributes; :meth:`Panel.watch` wires the
controls whose change should redraw; :meth:`Panel.set` changes several controls by name with one redraw;
:meth:`Panel.redraw` recomputes and shows what the controls describe (:meth:`Panel.render`, provided by
each panel) unless redraws are held (:meth:`Panel.hold`); and a number that is not finite (NaN, ±inf) is
rejected with a ``ValueError`` naming the control, whether it comes through :meth:`Panel.set` or an
assignment ``panel.control.value = ...`` (which is then undone); a ``FloatSlider`` holds only values on
its grid of steps (:func:`on_step`), so that a browser, whose slider can show no other value, never moves
it and sends the moved value back. A panel shows its ``widget`` when it is the last expression of a cell;
:func:`control` builds a control wide enough for its description, its value and its options.

The panels themselves: :mod:`ssvae_lib.widgets` (notebooks 04-06) and :mod:`ssvae_lib.derivation_widgets`
(notebooks 01-03).
"""
from __future__ import annotations

import contextlib
import math
import numbers

import ipywidgets as widgets

__all__ = ["Panel", "control", "on_step"]


def _is_finite(value) -> bool:
    """False for NaN and ±inf numbers; True for every other value (finite numbers, strings, ...)."""
    return not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isfinite(value)


def control(kind, description: str, *, label_width: str = "150px", width: str = "520px", **options):
    """A control ``kind(description=..., **options)`` whose description gets ``label_width`` and the whole
    control ``width``. ipywidgets' default of 300 px in all leaves a slider beside a wide description a
    track of about 50 px, and cuts off the text of a dropdown."""
    return kind(description=description, style={"description_width": label_width},
                layout=widgets.Layout(width=width), **options)


def on_step(slider, value):
    """``value`` as ``slider`` can show it: for a ``FloatSlider`` its nearest grid point min + k·step within
    [min, max] (rounded to 12 decimals, so 0.3 + 6 · 0.05 is 0.6); any other control's value unchanged."""
    if not isinstance(slider, widgets.FloatSlider) or not slider.step or not _is_finite(value):
        return value
    k = round((value - slider.min) / slider.step)
    return min(max(round(slider.min + k * slider.step, 12), slider.min), slider.max)


class Panel:
    """Base of the notebook panels (see the module docstring).

    A subclass builds its controls as attributes, calls :meth:`watch` with them, sets ``self.widget``
    (the box that is shown) and overrides :meth:`render`."""

    widget: widgets.Widget
    _holds: int = 0

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- controls ------------------------------------------------------------------------------------
    def watch(self, *controls: widgets.ValueWidget, redraw: bool = True) -> None:
        """Reject non-finite values of ``controls``, keep float sliders on their steps (:func:`on_step`,
        the value they hold now too) and, with ``redraw``, redraw when one changes."""
        for item in controls:
            item.observe(self._reject_non_finite, names="value")
            if isinstance(item, widgets.FloatSlider):
                item.observe(self._keep_on_step, names="value")
                self._keep_on_step({"owner": item, "new": item.value})
            if redraw:
                item.observe(self._redraw_on_change, names="value")

    def set(self, **values) -> None:
        """Set several controls by attribute name (``panel.set(shift=1.0, scale=0.5)``), redraw once.
        Nothing is changed when a name is not a control or a value is not finite (``ValueError``)."""
        for name, value in values.items():
            if not isinstance(getattr(self, name, None), widgets.ValueWidget):
                raise ValueError(f"{type(self).__name__} has no control named {name!r}")
            if not _is_finite(value):
                raise ValueError(f"{type(self).__name__}.{name} must be a finite number, got {value!r}")
        with self.hold():
            for name, value in values.items():
                getattr(self, name).value = value
        self.redraw()

    @contextlib.contextmanager
    def hold(self):
        """No redraws inside the block (controls may change one by one); call :meth:`redraw` after it."""
        self._holds += 1
        try:
            yield self
        finally:
            self._holds -= 1

    # -- drawing -------------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Recompute and show what the controls describe (:meth:`render`), unless redraws are held."""
        if not self._holds:
            self.render()

    def render(self) -> None:
        """Compute and show; each panel provides it (a panel without a picture leaves it empty)."""

    # -- wiring --------------------------------------------------------------------------------------
    def _redraw_on_change(self, _change) -> None:
        self.redraw()

    def _keep_on_step(self, change) -> None:
        snapped = on_step(change["owner"], change["new"])
        if snapped != change["new"]:
            with self.hold():                    # the redraw of the change that is being handled follows
                change["owner"].value = snapped

    def _reject_non_finite(self, change) -> None:
        if _is_finite(change["new"]):
            return
        control = change["owner"]
        with self.hold():                        # put the previous value back without a redraw
            control.value = change["old"]
        raise ValueError(f"{type(self).__name__}.{self._control_name(control)} must be a finite number, "
                         f"got {change['new']!r}; it keeps {change['old']!r}")

    def _control_name(self, control) -> str:
        """The attribute that holds ``control`` (``z[1]`` for an item of a list), else its description."""
        for name, value in vars(self).items():
            if value is control:
                return name
            if isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if item is control:
                        return f"{name}[{i}]"
        return getattr(control, "description", "") or type(control).__name__
