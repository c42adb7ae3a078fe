"""The base of every notebook panel: :class:`Panel` (ipywidgets).

A panel is a library object that a notebook shows once and a test drives from code. What every panel
shares is here: its controls are ipywidgets ``ValueWidget`` attributes; :meth:`Panel.watch` wires the
controls whose change should redraw; :meth:`Panel.set` changes several controls by name with one redraw;
:meth:`Panel.redraw` recomputes and shows what the controls describe (:meth:`Panel.render`, provided by
each panel) unless redraws are held (:meth:`Panel.hold`); and a number that is not finite (NaN, ±inf) is
rejected with a ``ValueError`` naming the control, whether it comes through :meth:`Panel.set` or an
assignment ``panel.control.value = ...`` (which is then undone). A panel shows its ``widget`` when it is
the last expression of a cell.

The panels themselves: :mod:`ssvae_lib.widgets` (notebooks 04-06) and :mod:`ssvae_lib.derivation_widgets`
(notebooks 01-03).
"""
from __future__ import annotations

import contextlib
import math
import numbers

import ipywidgets as widgets

__all__ = ["Panel"]


def _is_finite(value) -> bool:
    """False for NaN and ±inf numbers; True for every other value (finite numbers, strings, ...)."""
    return not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isfinite(value)


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
        """Reject non-finite values of ``controls`` and, with ``redraw``, redraw when one changes."""
        for control in controls:
            control.observe(self._reject_non_finite, names="value")
            if redraw:
                control.observe(self._redraw_on_change, names="value")

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
        if self._holds:
            return
        self.render()

    def render(self) -> None:
        """Compute and show; each panel provides it (a panel without a picture leaves it empty)."""

    # -- wiring --------------------------------------------------------------------------------------
    def _redraw_on_change(self, _change) -> None:
        self.redraw()

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
