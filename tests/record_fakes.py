"""A tiny stand-in for LiberoEnv's recorder-facing API (no MuJoCo), for recorder tests.

Episode dynamics are a pure function of (task_id, init_state_id, actions), so two recordings can be compared
array by array. Success comes after ``6 + init_state_id % 3`` steps, except that unperturbed attempts on init
state 1 fail (so retries and failure accounting are exercised); episodes are truncated after 12 steps.
``reset(options={"placement": "sampled"})`` plays a fresh placement as "init state" ``10 + seed % 3``.
"""

from __future__ import annotations

import numpy as np


class FakeUnwrapped:
    def __init__(self, task_id: int, resolution: int, wrist: bool):
        self.task_id = task_id
        self.resolution = resolution
        self.wrist = wrist
        self.task_name = f"FAKE_TASK_{task_id}"
        self.task_description = f"do fake task {task_id}"
        self.init_states = np.zeros((4, 5))
        self.t = 0
        self.k = 0
        self.fail = False

    @property
    def raw_observation(self):
        t = float(self.t)
        return {
            "robot0_gripper_qpos": np.array([0.04 - t / 100, -0.04 + t / 100]),
            "robot0_eef_pos": np.array([t, 0.0, 1.0]),
            "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
            "robot0_joint_pos": np.full(7, t),
        }

    def get_sim_state(self):
        return np.array([self.t, self.k, self.task_id, 0.0, 0.0])


class FakeEnv:
    """Enough of gym.Env + LiberoEnv for the recorder."""

    def __init__(self, task_id: int, resolution: int, wrist: bool):
        self.unwrapped = FakeUnwrapped(task_id, resolution, wrist)
        self.closed = False
        self.reset_log: list[dict] = []  # the reset options of every episode

    def _obs(self):
        u = self.unwrapped
        img = np.full((u.resolution, u.resolution, 3), u.t % 256, dtype=np.uint8)
        obs = {"image": img, "state": np.zeros(8, np.float32)}
        if u.wrist:
            obs["wrist_image"] = 255 - img
        return obs

    def reset(self, *, seed=None, options=None):
        u = self.unwrapped
        options = dict(options or {})
        self.reset_log.append(options)
        info = {}
        if options.get("placement") == "sampled":
            # a fresh placement: "init state" 10 + seed % 3 (success after 6 + seed % 3 steps), no fixed id
            u.t, u.k = 0, 10 + int(seed) % 3
            info = {"init_state_id": None, "placement": {"mode": "sampled", "seed": int(seed)},
                    "sim_state": np.array([0.0, u.k, u.task_id, 0.0, 0.0])}
        else:
            u.t, u.k = 0, int(options["init_state_id"])
            info = {"init_state_id": u.k}
        if options.get("perturb_radius"):
            info["placement"] = {**info.get("placement", {"mode": "fixed", "init_state_id": u.k}),
                                 "perturb_radius": options["perturb_radius"]}
        return self._obs(), info

    def step(self, action):
        u = self.unwrapped
        u.t += 1
        success = u.t >= 6 + u.k % 3 and not u.fail
        return self._obs(), float(success), success, u.t >= 12, {"is_success": success}

    def close(self):
        self.closed = True


def make_fake_env(suite, task_id, resolution, wrist):
    return FakeEnv(task_id, resolution, wrist)


class FakePolicy:
    """Action t = [t, 0, ..., 0, grip] / 10 with two exact no-ops (steps 2 and 3) to exercise the filter."""

    calls = 0  # global act() counter, used to inject a crash
    crash_at: int | None = None

    def __init__(self, env, seed, perturbed):
        self.env = env
        self.perturbed = perturbed
        self.t = 0

    def reset(self):
        u = self.env.unwrapped
        u.fail = u.k == 1 and not self.perturbed
        self.t = 0

    def act(self, obs):
        FakePolicy.calls += 1
        if FakePolicy.crash_at is not None and FakePolicy.calls >= FakePolicy.crash_at:
            raise KeyboardInterrupt("injected interruption")
        t = self.t
        self.t += 1
        a = np.zeros(7, np.float32)
        if t not in (2, 3):
            a[0] = (t + 1) / 10
        a[6] = -1.0
        return a
