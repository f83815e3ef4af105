"""The one argument validator for public entry points (env constructors, reset options, agents, runtimes).

Every helper takes the argument's ``name`` and ``value``, returns the value normalised to a plain Python type
(``np.int64(3)`` -> ``3``, ``np.bool_(True)`` -> ``True``) and otherwise raises :class:`ArgumentError` with a
message of one shape, ``name=value; expected <form>``::

    wrist = check_bool("wrist", wrist)
    resolution = check_int("resolution", resolution, lo=16, hi=1024)
    render_mode = check_choice("render_mode", render_mode, ["rgb_array"], optional=True)
    if not callable(getattr(runtime, "imagine", None)):  # a check of its own: same error, same shape
        raise fail("runtime", runtime, "a loaded WorldVLARuntime")

:class:`ArgumentError` subclasses both ``TypeError`` and ``ValueError``: a wrong type and a wrong value are the
same mistake to a caller ("this argument is not of the expected form"), and code that already catches either
one keeps working whichever check fires first.

The checks are strict on purpose: ``bool`` is never accepted as an int or a float (``True`` as a resolution is a
bug, not 1), strings are never parsed (``"no"`` is not ``False``), and floats must be finite unless allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

__all__ = [
    "ArgumentError",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_mapping",
    "check_str",
    "describe",
    "fail",
]

_REPR_LIMIT = 80


class ArgumentError(TypeError, ValueError):
    """An argument not of the expected form; ``name``, ``value`` and ``expected`` are kept for callers.

    Built like any exception from its message alone (``type(e)(message)`` and pickling work, which Gymnasium's
    ``make`` and process pools rely on); :func:`fail` builds one from the argument's name, value and form.
    """

    def __init__(
        self, message: str, *, name: str | None = None, value: Any = None, expected: str | None = None
    ) -> None:
        super().__init__(message)
        self.name = name
        self.value = value
        self.expected = expected


def describe(value: Any, limit: int = _REPR_LIMIT) -> str:
    """A short repr that also says the type when the repr alone hides it (``'5'`` vs ``5``, ``np.float32``)."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    plain = (type(None), bool, int, float, str)
    kind = type(value).__name__
    return text if type(value) in plain or kind in text else f"{text} ({kind})"


def fail(
    name: str, value: Any, expected: str, hint: str = "", *, message: str | None = None
) -> ArgumentError:
    """The error for a custom check, ``name=value; expected <form> (<hint>)`` unless ``message`` is given::

    raise fail("runtime", runtime, "None or a loaded WorldVLARuntime")
    """
    text = message or f"{name}={describe(value)}; expected {expected}"
    return ArgumentError(f"{text} ({hint})" if hint else text, name=name, value=value, expected=expected)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    # numbers.Integral covers int and numpy integers; bool is an int subclass but never a count.
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _range_text(kind: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def _maybe(form: str, optional: bool) -> str:
    return f"None or {form}" if optional else form


def check_bool(name: str, value: Any, *, optional: bool = False, hint: str = "") -> bool | None:
    """``True`` or ``False`` (numpy bools too); never a truthy stand-in such as ``"no"``, ``1`` or ``[]``."""
    if value is None and optional:
        return None
    if not _is_bool(value):
        raise fail(name, value, _maybe("a bool (True or False)", optional), hint)
    return bool(value)


def check_int(
    name: str,
    value: Any,
    *,
    lo: int | None = None,
    hi: int | None = None,
    optional: bool = False,
    hint: str = "",
) -> int | None:
    """An integer (Python or numpy, not bool, not a float such as ``3.0``) in ``[lo, hi]`` (bounds inclusive)."""
    if value is None and optional:
        return None
    form = _maybe(_range_text("an int", lo, hi), optional)
    if not _is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise fail(name, value, form, hint)
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    gt: float | None = None,
    finite: bool = True,
    optional: bool = False,
    hint: str = "",
) -> float | None:
    """A real number (int or float, Python or numpy, not bool, not a string) in ``[lo, hi]`` and ``> gt``
    (``gt=0`` for a temperature); finite by default, never NaN."""
    if value is None and optional:
        return None
    # "a float" reads naturally for ints too (Python's numeric tower); a range already implies finite.
    kind = "a finite float" if finite and not (lo is not None and hi is not None) else "a float"
    form = _range_text(kind, lo, hi) + (f" > {gt}" if gt is not None else "")
    form = _maybe(form, optional)
    if not isinstance(value, numbers.Real) or _is_bool(value):
        raise fail(name, value, form, hint)
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError) as e:  # an exotic Real that cannot become a float
        raise fail(name, value, form, hint) from e
    if (finite and not math.isfinite(out)) or math.isnan(out):
        raise fail(name, value, form, hint)
    if (lo is not None and out < lo) or (hi is not None and out > hi) or (gt is not None and out <= gt):
        raise fail(name, value, form, hint)
    return out


def check_str(
    name: str, value: Any, *, nonempty: bool = False, optional: bool = False, hint: str = ""
) -> str | None:
    """A ``str`` (not bytes, not a path object); ``nonempty`` also refuses ``""`` and whitespace only."""
    if value is None and optional:
        return None
    form = _maybe("a non-empty str" if nonempty else "a str", optional)
    if not isinstance(value, str) or (nonempty and not value.strip()):
        raise fail(name, value, form, hint)
    return str(value)


def check_choice(
    name: str, value: Any, choices: Collection[Any], *, optional: bool = False, hint: str = ""
) -> Any:
    """One of ``choices`` (compared with ``==`` after a type check, so ``1`` never matches ``True`` or ``"1"``)."""
    if value is None and optional:
        return None
    listed = ", ".join(repr(c) for c in choices)
    form = _maybe(f"one of {listed}", optional)
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return choice
    raise fail(name, value, form, hint)


def check_mapping(
    name: str, value: Any, *, optional: bool = False, example: str = "", hint: str = ""
) -> dict:
    """A ``Mapping`` with ``str`` keys, returned as a new ``dict``; ``None`` -> ``{}`` when ``optional``.

    ``example`` completes the expected form, e.g. ``"{'init_state_id': 3}"``.
    """
    if value is None and optional:
        return {}
    form = _maybe("a dict" + (f" such as {example}" if example else "") + " with str keys", optional)
    if not isinstance(value, Mapping):
        # the type is named even for plain values: `options=5` alone would not say why 5 is wrong
        message = f"{name} must be {form}, got {type(value).__name__} {describe(value)}"
        raise fail(name, value, form, hint, message=message)
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        keys = ", ".join(describe(k, 30) for k in bad[:5])
        message = f"{name} keys must be str option names, got {keys}"
        raise fail(f"{name} keys", bad, "str option names", hint, message=message)
    return dict(value)
