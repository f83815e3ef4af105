"""One recorded episode: the episode loop of ``wvla_gym.evaluation.episode`` with an observer that captures
LIBERO's demo arrays (observations taken before each action, simulator and robot states, actions).

Never imports ``agents`` or ``envs``: envs come from ``gym.make(ENV_ID)`` (registered by ``wvla_gym``) or a
caller's ``make_env``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wvla_gym.data.hdf5 import Episode
from wvla_gym.evaluation.episode import EpisodeObserver, play_episode
from wvla_gym.policy import Policy

ENV_ID = "WorldVLA-LIBERO-v0"


def gym_make_env(suite: str, task_id: int, resolution: int, wrist: bool) -> Any:
    """The real LIBERO env through Gymnasium (the recorder's and the replayer's default ``make_env``)."""
    import gymnasium as gym

    import wvla_gym  # noqa: F401  (registers the env id)

    return gym.make(ENV_ID, task_suite=suite, task_id=task_id, resolution=resolution, wrist=wrist)


def _quat_xyzw_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64).copy()
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if den < 1e-12:
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / den


@dataclass
class EpisodeResult:
    success: bool
    steps: int
    episode: Episode
    sources: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class DemoCapture(EpisodeObserver):
    """Collects one demo's arrays from :func:`play_episode`'s hooks.

    Each row is taken when the policy has chosen its action and before the env steps, so observation, states and
    action of row ``t`` belong together (LIBERO's layout). A policy with a true ``finished`` attribute ends the
    episode early; its ``source`` attribute (what produced the action) is kept per row.
    """

    def __init__(self, env: Any, policy: Any) -> None:
        self.u = env.unwrapped
        self.policy = policy
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in ("a", "s", "rs", "img", "wrist", "ee", "grip", "joint")}
        self.sources: list[str] = []

    def on_action(self, obs: Any, action: Any) -> None:
        u, rec = self.u, self.rows
        raw = u.raw_observation
        rec["s"].append(np.asarray(u.get_sim_state(), dtype=np.float64))
        rec["rs"].append(np.concatenate([raw["robot0_gripper_qpos"], raw["robot0_eef_pos"], raw["robot0_eef_quat"]]))
        rec["ee"].append(np.concatenate([raw["robot0_eef_pos"], _quat_xyzw_to_axis_angle(raw["robot0_eef_quat"])]))
        rec["grip"].append(np.asarray(raw["robot0_gripper_qpos"], dtype=np.float64))
        rec["joint"].append(np.asarray(raw["robot0_joint_pos"], dtype=np.float64))
        rec["img"].append(obs["image"])
        if "wrist_image" in obs:
            rec["wrist"].append(obs["wrist_image"])
        self.sources.append(str(getattr(self.policy, "source", "policy")))
        rec["a"].append(np.asarray(action, dtype=np.float32).astype(np.float64))

    def wants_stop(self) -> bool:
        return bool(getattr(self.policy, "finished", False))

    def episode(self, attrs: dict[str, Any]) -> Episode:
        rec = self.rows
        return Episode(
            actions=np.stack(rec["a"]),
            states=np.stack(rec["s"]),
            robot_states=np.stack(rec["rs"]),
            agentview_rgb=np.stack(rec["img"]),
            eye_in_hand_rgb=np.stack(rec["wrist"]) if rec["wrist"] else None,
            ee_states=np.stack(rec["ee"]),
            gripper_states=np.stack(rec["grip"]),
            joint_states=np.stack(rec["joint"]),
            attrs=attrs,
        )


def rollout(
    env: Any, policy: Policy, *, seed: int, init_state_id: int | None = None, options: dict[str, Any] | None = None
) -> EpisodeResult:
    """Run one episode and record observations (taken before each action), states and actions.

    ``options`` are the env's reset options (default ``{"init_state_id": init_state_id}``). A policy with a true
    ``finished`` attribute ends the episode early (not a success unless the env said so).
    """
    if options is None:
        options = {"init_state_id": init_state_id}
    capture = DemoCapture(env, policy)
    end = play_episode(env, policy, seed=seed, options=options, observers=[capture])
    init_id = end.reset_info.get("init_state_id", options.get("init_state_id"))
    ep = capture.episode({"init_state_id": -1 if init_id is None else int(init_id), "seed": int(seed)})
    return EpisodeResult(end.success, len(ep), ep, capture.sources, end.reset_info)
