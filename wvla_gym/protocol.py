"""LIBERO evaluation protocol constants (the numbers WorldVLA, OpenVLA, openpi and openvla-oft report on).

Kept free of heavy imports so that envs, evaluation and the CLI share one source of truth.
See ``../shared/reference/worldvla-protocol.md`` §10.
"""

from __future__ import annotations

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


def validate_suite_task(task_suite: str, task_id: int) -> None:
    """Raise ``ValueError`` naming the valid choices for a bad suite or task id."""
    if task_suite not in SUITE_NUM_TASKS:
        raise ValueError(f"task_suite={task_suite!r} is not a LIBERO suite; expected one of {sorted(SUITE_NUM_TASKS)}")
    n = SUITE_NUM_TASKS[task_suite]
    if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or not 0 <= int(task_id) < n:
        raise ValueError(f"task_id={task_id!r} is out of range for {task_suite}; expected an int in [0, {n - 1}]")


def check_action(action: object) -> np.ndarray:
    """Validate one LIBERO action: shape (7,), finite, inside [-1, 1]; never clipped. Returns float32."""
    try:
        a = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action must be a numeric array of shape (7,); got {type(action).__name__}") from e
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape (7,) [dx, dy, dz, drx, dry, drz, gripper]; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {a.tolist()}")
    if np.any(np.abs(a) > 1.0):
        raise ValueError(f"action must lie in [-1, 1] (LIBERO OSC_POSE delta convention, no clipping); got {a.tolist()}")
    return a
