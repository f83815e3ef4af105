"""WorldVLA's no-op filter for recorded actions (the recorder applies it; ``wvla_gym.data`` exports it)."""

from __future__ import annotations

import numpy as np

#: An action whose pose part has an L2 norm below this is a candidate no-op.
NOOP_THRESHOLD = 1e-4


def noop_mask(actions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> np.ndarray:
    """WorldVLA's no-op filter: True for actions to keep.

    An action is a no-op when ‖a[:6]‖₂ < ``threshold`` and its gripper equals the gripper of the previous
    *kept* action; the very first action is judged by the norm test alone.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 7:
        raise ValueError(f"actions must have shape (T, 7); got {a.shape}")
    keep = np.zeros(len(a), dtype=bool)
    prev_gripper: float | None = None
    for i, act in enumerate(a):
        small = float(np.linalg.norm(act[:6])) < threshold
        noop = small if prev_gripper is None else (small and act[6] == prev_gripper)
        if not noop:
            keep[i] = True
            prev_gripper = float(act[6])
    return keep
