"""A fast fake LIBERO-like env for runner tests (same obs/action contract, no simulator).

Importing this module registers ``EvalFake-v0``; pass ``"eval_fakes:EvalFake-v0"`` as env id so worker
processes import it too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import register, registry

from wvla_gym.protocol import SUITE_MAX_STEPS


class EvalFakeEnv(gym.Env):
    """Success after 3 consecutive steps with ``action[0] > 0.5``; raises at init state ``raise_at_init``."""

    metadata = {"render_modes": []}

    def __init__(self, task_suite: str = "libero_object", task_id: int = 0, resolution: int = 16, wrist: bool = False,
                 num_steps_wait: int = 10, max_episode_steps: int | None = None, step_sleep: float = 0.0,
                 raise_at_init: int | None = None, kind: str = "real") -> None:
        self.task_suite, self.task_id, self.kind = task_suite, task_id, kind
        self.limit = max_episode_steps or SUITE_MAX_STEPS[task_suite]
        self.step_sleep, self.raise_at_init, self.res = step_sleep, raise_at_init, resolution
        self.observation_space = spaces.Dict(
            {"image": spaces.Box(0, 255, (resolution, resolution, 3), np.uint8),
             "state": spaces.Box(-np.inf, np.inf, (8,), np.float32)}
        )
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.init_state_id = None
        self.layout = 0

    def _obs(self):
        img = np.full((self.res, self.res, 3), (self.layout * 20 + self.t * 5) % 256, np.uint8)
        img[0, 0, 0] = self.layout  # lets test policies see which trial (or placement) they are in
        return {"image": img, "state": np.full(8, self.t, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        opts = dict(options or {})
        self.t, self.streak = 0, 0
        info = {"task_description": f"fake task {self.task_id}", "is_success": False}
        if opts.get("placement") == "sampled" or opts.get("perturb_radius"):
            # as LiberoEnv: the reset seed draws the start; the "layout" (pixel value) follows from it
            self.init_state_id = None if opts.get("placement") == "sampled" else int(opts["init_state_id"])
            self.layout = int(seed) % 50
            info["placement"] = {"mode": opts.get("placement", "fixed"), "seed": int(seed),
                                 "perturb_radius": float(opts.get("perturb_radius", 0.0))}
            info["sim_state"] = np.array([float(seed), float(self.task_id)])
        else:
            self.init_state_id = self.layout = int(opts["init_state_id"])
        info["init_state_id"] = self.init_state_id
        return self._obs(), info

    def step(self, action):
        if self.raise_at_init is not None and self.init_state_id == self.raise_at_init and self.t == 1:
            raise RuntimeError("simulated simulator crash")
        if self.step_sleep:
            time.sleep(self.step_sleep)
        self.t += 1
        self.streak = self.streak + 1 if float(action[0]) > 0.5 else 0
        success = self.streak >= 3
        trunc = not success and self.t >= self.limit
        return self._obs(), float(success), success, trunc, {"is_success": success, "init_state_id": self.init_state_id}


class PushPolicy:
    """Pushes ``action[0] = 1`` on even init states (succeeds), holds still on odd ones (fails)."""

    def __init__(self, env=None) -> None:
        self.even = True

    def reset(self, *, seed=None) -> None:
        self.t = 0

    def act(self, obs):
        if self.t == 0:
            self.even = int(obs["image"][0, 0, 0]) % 2 == 0  # pixel (0, 0) = init state id
        self.t += 1
        return np.array([1.0 if self.even else 0.0, 0, 0, 0, 0, 0, -1], np.float32)


def push_factory(env) -> PushPolicy:
    return PushPolicy(env)


class CountingPolicy:
    """Stateful on purpose: pushes on steps 3-5 of its own count (success at step 5 on the fake env) and
    folds every frame it has seen into ``action[1]``. A policy object shared between concurrent episodes
    would count their steps together and mix their frames, which changes both."""

    def __init__(self, env=None) -> None:
        self.t, self.acc = 0, 0

    def reset(self, *, seed=None) -> None:
        self.t, self.acc = 0, 0

    def act(self, obs):
        self.acc = (self.acc * 31 + int(np.asarray(obs["image"], np.int64).sum())) % 1_000_003
        self.t += 1
        push = 1.0 if 3 <= self.t <= 5 else 0.0
        return np.array([push, (self.acc % 1000) / 1000 - 0.5, 0, 0, 0, 0, -1], np.float32)


def counting_factory(env) -> CountingPolicy:
    return CountingPolicy(env)


def seed_init_frame_cache(tasks=(0,), n_init=3, resolution=32, suite="libero_object", seed=3) -> None:
    """Rendered-init-state cache entries (what real LIBERO would write) with random frames, for imagined-env
    tests that must not start a simulator. Call it after pointing ``WVLA_GYM_CACHE`` at a temporary folder."""
    from envs.init_frames import init_frame_path

    rng = np.random.default_rng(seed)
    for task in tasks:
        for k in range(n_init):
            img = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
            path = init_frame_path(suite, task, resolution, k)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, image=img, wrist_image=img[::-1], state=np.full(8, k, np.float32))


@contextlib.contextmanager
def init_frame_cache(root, **kw) -> Iterator[Path]:
    """``WVLA_GYM_CACHE`` pointed at ``root`` and seeded (:func:`seed_init_frame_cache` kwargs) while inside."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WVLA_GYM_CACHE", str(root))
        seed_init_frame_cache(**kw)
        yield Path(root)


if "EvalFake-v0" not in registry:
    register(id="EvalFake-v0", entry_point=EvalFakeEnv)
