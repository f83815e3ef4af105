"""Rollout behaviours for world-model data: the policy as is, noisy, cut short, with random bursts, or pure
random / zero segments.

Slot ``i`` of a recording uses ``behaviours[i % len(behaviours)]`` (after ``noise`` is expanded into one
behaviour per noise level):

* ``expert``: the policy as is. Retries (``attempt > 0``) ask the factory for a perturbed (noisy) policy.
* ``noise``: the policy plus Gaussian noise of std ``level`` on the 6 pose dims, clipped to [-1, 1].
* ``cut``: the policy for ``cut_step = round(f * NOMINAL_LENGTH)`` steps, ``f ~ U(CUT_FRACTION)``, then a
  tail of ``U(TAIL_STEPS)`` steps, chosen 50/50 between ``zero`` (no pose motion, gripper held) and
  ``random`` actions, then the episode ends.
* ``burst``: the policy throughout, except ``U(BURST_STEPS)`` random actions from a step drawn in
  ``U(BURST_START_FRACTION) * NOMINAL_LENGTH`` (the policy keeps observing and must recover).
* ``random``: ``U(SEGMENT_STEPS)`` random actions, then the episode ends.
* ``zero``: ``U(SEGMENT_STEPS)`` zero actions (gripper open), then the episode ends.
* ``hold``: the policy for ``cut_step`` steps (drawn as for ``cut``), then ``U(TAIL_STEPS)`` steps of
  piecewise-constant actions: segments of ``U(HOLD_STEPS)`` steps, each holding one draw (1-3 pose axes of the
  first three at ``±U(HOLD_MAGNITUDE)``, the rest 0; the gripper flips with probability ``HOLD_GRIPPER_FLIP``
  per segment), then the episode ends. Held commands move the arm far and fast in one direction, which the
  wandering ``random`` actions (mean-reverting) rarely do; a world model needs them to learn action control.

"Random actions" are temporally correlated so the arm wanders instead of jittering: pose dims follow
``a_t = RANDOM_RHO * a_{t-1} + N(0, RANDOM_SIGMA)`` clipped to [-1, 1]; the gripper starts from the last
commanded value and flips with probability ``RANDOM_GRIPPER_FLIP`` per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wvla_gym.evaluation.policies import reset_policy
from wvla_gym.policy import Policy

BEHAVIOURS = ("expert", "noise", "cut", "burst", "random", "zero", "hold")
#: Typical length (steps) of an expert episode on libero_object; scales cut and burst times.
NOMINAL_LENGTH = 120
CUT_FRACTION = (0.1, 0.9)
TAIL_STEPS = (20, 60)
BURST_STEPS = (5, 20)
BURST_START_FRACTION = (0.05, 0.8)
SEGMENT_STEPS = (30, 90)
RANDOM_RHO = 0.8
RANDOM_SIGMA = 0.35
RANDOM_GRIPPER_FLIP = 0.05
HOLD_STEPS = (6, 16)
HOLD_MAGNITUDE = (0.4, 1.0)
HOLD_GRIPPER_FLIP = 0.3


@dataclass(frozen=True)
class Behaviour:
    """One rollout behaviour (see the module docstring); ``noise`` only for ``name == "noise"``."""

    name: str
    noise: float = 0.0

    @property
    def key(self) -> str:
        return f"noise{self.noise:g}" if self.name == "noise" else self.name


def expand_behaviours(names: Sequence[str], noise_levels: Sequence[float] = ()) -> list[Behaviour]:
    """Behaviour names + noise levels -> the slot cycle (``noise`` becomes one behaviour per level).

    Noise levels without ``noise`` among the names add it; ``noise`` without levels is an error.
    """
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    bad = [n for n in names if n not in BEHAVIOURS]
    if bad or not names:
        raise ValueError(f"behaviours={list(names)!r}; expected a non-empty list of {list(BEHAVIOURS)}")
    levels = []
    for x in noise_levels:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) or not 0 < float(x) <= 2.0:
            raise ValueError(f"noise_levels contains {x!r}; expected floats in (0, 2] (action-noise std)")
        levels.append(float(x))
    if levels and "noise" not in names:
        names.append("noise")
    if "noise" in names and not levels:
        raise ValueError("behaviour 'noise' needs noise_levels, e.g. --noise-levels 0.1,0.3,0.6")
    out: list[Behaviour] = []
    for n in dict.fromkeys(names):
        out.extend([Behaviour("noise", lv) for lv in dict.fromkeys(levels)] if n == "noise" else [Behaviour(n)])
    return out


class BehaviourPolicy:
    """Wraps a policy with a :class:`Behaviour` (itself a :class:`wvla_gym.policy.Policy`); ``finished`` asks the
    recorder to end the episode.

    ``source`` is what produced the last action: ``"policy"``, ``"noise"``, ``"random"``, ``"zero"`` or ``"hold"``.
    ``plan`` holds the behaviour's random draws (recorded with the episode).
    """

    def __init__(self, base: Policy | None, behaviour: Behaviour, seed: int) -> None:
        self.base = base
        self.behaviour = behaviour
        self.rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xBE4A])
        b, r = behaviour.name, self.rng
        self.plan: dict[str, Any] = {}
        if b in ("cut", "hold"):
            self.plan = {
                "cut_step": int(round(r.uniform(*CUT_FRACTION) * NOMINAL_LENGTH)),
                "tail": "zero" if r.uniform() < 0.5 else "random",
                "tail_steps": int(r.integers(TAIL_STEPS[0], TAIL_STEPS[1] + 1)),
            }
            if b == "hold":
                self.plan["tail"] = "hold"
                self.plan["segments"] = self._hold_segments(self.plan["tail_steps"])
        elif b == "burst":
            self.plan = {
                "burst_start": int(round(r.uniform(*BURST_START_FRACTION) * NOMINAL_LENGTH)),
                "burst_steps": int(r.integers(BURST_STEPS[0], BURST_STEPS[1] + 1)),
            }
        elif b in ("random", "zero"):
            self.plan = {"segment_steps": int(r.integers(SEGMENT_STEPS[0], SEGMENT_STEPS[1] + 1))}
        if b == "noise":
            self.plan = {"noise_level": behaviour.noise}
        self.t = 0
        self.source = "policy"
        self._prev = np.zeros(7)
        self._prev[6] = -1.0
        self._grip_at_cut = -1.0

    @property
    def finished(self) -> bool:
        p, b = self.plan, self.behaviour.name
        if b in ("cut", "hold"):
            return self.t >= p["cut_step"] + p["tail_steps"]
        if b in ("random", "zero"):
            return self.t >= p["segment_steps"]
        return False

    def reset(self, *, seed: int | None = None) -> None:
        # ``seed`` goes to the base policy only: the behaviour's own draws are fixed by the slot's seed.
        if self.base is not None and self.behaviour.name not in ("random", "zero"):
            reset_policy(self.base, seed)
        self.t = 0
        self._prev = np.zeros(7)
        self._prev[6] = -1.0
        self._grip_at_cut = -1.0

    def _hold_segments(self, steps: int) -> list[dict[str, Any]]:
        # drawn up front (the plan is recorded with the episode): [{"steps": n, "action": [7 floats]}, ...];
        # the gripper of the first segment is decided at the cut (it continues the policy's last command)
        r, out, left, flip = self.rng, [], steps, False
        while left > 0:
            n = min(left, int(r.integers(HOLD_STEPS[0], HOLD_STEPS[1] + 1)))
            a = np.zeros(7)
            axes = r.choice(3, size=int(r.integers(1, 4)), replace=False)
            a[axes] = r.choice([-1.0, 1.0], size=len(axes)) * r.uniform(*HOLD_MAGNITUDE, size=len(axes))
            flip = flip != bool(r.uniform() < HOLD_GRIPPER_FLIP)
            out.append({"steps": n, "action": [round(float(x), 4) for x in a[:6]], "gripper_flipped": flip})
            left -= n
        return out

    def _held(self, k: int) -> np.ndarray:
        # step k of the tail -> its segment's action; the gripper is the policy's last command, flipped per plan
        for seg in self.plan["segments"]:
            if k < seg["steps"]:
                break
            k -= seg["steps"]
        a = np.zeros(7)
        a[:6] = seg["action"]
        g = self._grip_at_cut
        a[6] = -g if seg["gripper_flipped"] else g
        return a

    def _random(self) -> np.ndarray:
        a = self._prev.copy() if self.source == "random" else np.zeros(7)
        a[:6] = np.clip(RANDOM_RHO * a[:6] + self.rng.normal(0.0, RANDOM_SIGMA, 6), -1.0, 1.0)
        a[6] = self._prev[6] if self.rng.uniform() >= RANDOM_GRIPPER_FLIP else -self._prev[6]
        return a

    def act(self, obs: Any) -> np.ndarray:
        b, p, t = self.behaviour.name, self.plan, self.t
        if b == "zero" or (b == "cut" and t >= p["cut_step"] and p["tail"] == "zero"):
            a, src = np.zeros(7), "zero"
            a[6] = self._prev[6] if b == "cut" else -1.0
        elif b == "random" or (b == "cut" and t >= p["cut_step"]):
            a, src = self._random(), "random"
        elif b == "hold" and t >= p["cut_step"]:
            if t == p["cut_step"]:
                self._grip_at_cut = 1.0 if self._prev[6] > 0 else -1.0
            a, src = self._held(t - p["cut_step"]), "hold"
        else:
            a = np.asarray(self.base.act(obs), dtype=np.float64).copy()  # type: ignore[union-attr]
            src = "policy"
            if b == "noise":
                a[:6] = np.clip(a[:6] + self.rng.normal(0.0, self.behaviour.noise, 6), -1.0, 1.0)
                src = "noise"
            elif b == "burst" and p["burst_start"] <= t < p["burst_start"] + p["burst_steps"]:
                a, src = self._random(), "random"
        self.source = src
        self._prev = a
        self.t += 1
        return np.clip(a, -1.0, 1.0).astype(np.float32)
