"""LIBERO evaluation protocol constants (the numbers WorldVLA, OpenVLA, openpi and openvla-oft report on).

Kept free of heavy imports so that envs, evaluation and the CLI share one source of truth.
See ``docs/protocol.md`` §10.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Tasks per suite (LIBERO's benchmark registry; validated without importing LIBERO).
SUITE_NUM_TASKS: dict[str, int] = {
    "libero_spatial": 10,
    "libero_object": 10,
    "libero_goal": 10,
    "libero_10": 10,
    "libero_90": 90,
}

#: Per-suite step limits (truncation). The settle steps do not count against them.
SUITE_MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}

#: Fixed init states per task; trial k of an evaluation uses init state k.
NUM_INIT_STATES = 50

#: No-op steps run after setting the init state so that objects settle.
NUM_STEPS_WAIT = 10

#: The settle action: zero delta pose, gripper open (-1).
DUMMY_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)

#: LIBERO's control rate (robosuite ``control_freq``), used as ``render_fps``.
CONTROL_FPS = 20

ACTION_DIM = 7
STATE_DIM = 8

#: Camera side limits (pixels) of the real env. WorldVLA checkpoints use 256 or 512; a frame costs 3·R² bytes and
#: rendering time grows with R², so a mistyped 10**6 must fail at construction, not allocate terabytes.
MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024


def validate_suite_task(task_suite: str, task_id: int) -> None:
    """Raise ``ValueError`` naming the valid choices for a bad suite or task id."""
    if task_suite not in SUITE_NUM_TASKS:
        raise ValueError(f"task_suite={task_suite!r} is not a LIBERO suite; expected one of {sorted(SUITE_NUM_TASKS)}")
    n = SUITE_NUM_TASKS[task_suite]
    if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or not 0 <= int(task_id) < n:
        raise ValueError(f"task_id={task_id!r} is out of range for {task_suite}; expected an int in [0, {n - 1}]")


def parse_tasks(spec: str | Iterable[int], suite: str, *, arg: str = "tasks") -> list[int]:
    """Task ids of ``suite`` from ``spec``: ``'all'``, ``'3'``, ``'0,3,5'``, ``'0-4'`` or mixtures like ``'0-2,5'``.

    A list of ints is accepted too. Returns sorted, de-duplicated ids. ``arg`` names the argument in errors
    (e.g. ``"--tasks"``). Raises ``ValueError`` for a malformed spec or an id outside the suite.
    """
    if suite not in SUITE_NUM_TASKS:
        raise ValueError(f"suite={suite!r} is not a LIBERO suite; expected one of {sorted(SUITE_NUM_TASKS)}")
    n = SUITE_NUM_TASKS[suite]
    form = "'all', an id like '3', a comma list like '0,3,5', a range like '0-4' or a mixture like '0-2,5'"
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return list(range(n))
        ids: list[int] = []
        parts = [p.strip() for p in text.split(",")]
        if not text or any(not p for p in parts):
            raise ValueError(f"{arg}={spec!r} is malformed; expected {form}")
        for part in parts:
            lo, sep, hi = part.partition("-")
            if not lo.strip().isdecimal() or (sep and not hi.strip().isdecimal()):
                raise ValueError(f"{arg}={spec!r}: {part!r} is not a task id or range; expected {form}")
            a, b = int(lo), int(hi) if sep else int(lo)
            if b < a:
                raise ValueError(f"{arg}={spec!r}: range {part!r} is empty (end before start); expected {form}")
            ids.extend(range(a, b + 1))
    else:
        try:
            ids = [int(t) for t in spec]
        except (TypeError, ValueError) as e:
            raise ValueError(f"{arg}={spec!r}; expected {form} or a list of ints") from e
        if not ids:
            raise ValueError(f"{arg}={spec!r} is empty; expected {form} or a list of ints")
    bad = sorted({t for t in ids if not 0 <= t < n})
    if bad:
        raise ValueError(f"{arg}={spec!r}: task_id {bad[0]} is out of range for {suite}; expected ids in [0, {n - 1}]")
    return sorted(set(ids))


#: numpy dtype kinds accepted as actions: signed/unsigned ints and real floats (no bool, complex, str, bytes, object).
ACTION_DTYPE_KINDS = "iuf"

#: Expected form of an action, quoted by every action error.
ACTION_FORM = "a real numeric (int or float) array or list of shape (7,) [dx, dy, dz, drx, dry, drz, gripper] in [-1, 1]"


def check_action(action: object) -> np.ndarray:
    """Validate one LIBERO action: real numbers (ints or floats; no strings, bytes, bools, complex, object or
    masked arrays), shape (7,), finite, inside [-1, 1]; never clipped. Returns float32. Raises ``ValueError``."""
    if isinstance(action, np.ma.MaskedArray):
        raise ValueError(f"action must be {ACTION_FORM}; got a numpy masked array (its masked entries would be used as is)")
    if isinstance(action, (str, bytes, bytearray)):
        raise ValueError(f"action must be {ACTION_FORM}; got {type(action).__name__} {action!r:.40}")
    try:
        raw = np.asarray(action)
    except (TypeError, ValueError) as e:  # ragged lists and the like
        raise ValueError(f"action must be {ACTION_FORM}; got {type(action).__name__} ({e})") from e
    if raw.dtype.kind not in ACTION_DTYPE_KINDS:
        what = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers", "b": "booleans"}.get(
            raw.dtype.kind, f"dtype {raw.dtype}"
        )
        raise ValueError(f"action must be {ACTION_FORM}; got an array of {what} (dtype {raw.dtype})")
    if raw.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape (7,) [dx, dy, dz, drx, dry, drz, gripper]; got shape {raw.shape}")
    a = raw.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {raw.tolist()}")
    if np.any(np.abs(a) > 1.0):
        raise ValueError(f"action must lie in [-1, 1] (LIBERO OSC_POSE delta convention, no clipping); got {raw.tolist()}")
    return a.astype(np.float32)

#: Largest accepted ``perturb_radius`` (metres) of a perturbed start (``envs.placement``, evaluation): LIBERO's
#: object regions are ~5 cm wide, the tables ~1 m.
MAX_PERTURB_RADIUS = 0.25
