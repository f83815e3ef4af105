"""A scripted pick-and-place expert for LIBERO, driven by the simulator's privileged state.

It reads object geometry and poses only through ``env.unwrapped``'s privileged API (``sim``, ``raw_env``,
``goal_state``, ``get_object_pose``, ``get_site_pos``, ``get_eef_pose``, ``raw_observation``) and never
imports ``envs``: any env exposing that API works (duck typing).

Waypoints: approach above the object, descend, grasp, lift, carry above the target, descend, release, retreat.
A grasp that closes on nothing is retried from the approach. Actions are LIBERO OSC_POSE deltas in [-1, 1]:
robosuite 1.4's default OSC_POSE config maps |a| = 1 to 0.05 m (position) and 0.5 rad (rotation) of goal
offset per control step, so a clipped proportional controller on the pose error is enough.

Measured (real MuJoCo, unperturbed, one attempt per fixed init state; benchmarks/results/expert_libero_object.json):
libero_object 100/100 (10 init states x 10 tasks). Probe, 2 init states per task: libero_spatial 17/20 (task 4,
bowl inside a drawer, 0/2; task 6 1/2); libero_goal tasks 1, 4, 6, 9 2/2, task 8 1/2, task 2 (wine bottle on the
cabinet) 0/2; goal tasks 0, 3, 5, 7 (open / push / turn on) are outside the waypoint scheme and raise ValueError.
Bowls are grasped by the rim (they are wider than the gripper opens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wvla_gym.utils.mujoco_tree import body_subtree, raw_model_data

#: Goal predicates the waypoint scheme can solve: move ``obj`` into a region / onto an object.
SUPPORTED_PREDICATES = ("in", "on")

# Controller constants (metres / radians). Tuned on libero_object; why each one is what it is:
_POS_GAIN = 12.0  # a = 12 * err: saturates beyond ~8 cm, so the arm runs at full speed when far away
_ROT_GAIN = 2.0  # a = 2 * angle (rad): a 0.5 rad error commands the controller's 0.5 rad/step maximum
_REACHED = 0.008  # waypoint tolerance
_COARSE = 0.02  # tolerance for free-space waypoints (no contact expected), saves steps
_APPROACH_CLEARANCE = 0.08  # height above the object's top before descending
_PAD_ABOVE_SITE = 0.004  # the Panda finger pads are centred ~4 mm above robosuite's grip site
_FINGER_BELOW_SITE = 0.014  # the finger meshes reach ~13 mm below the grip site: keep them off the floor
_CLOSE_STEPS = 12  # the Panda gripper needs ~11 steps to close fully
_OPEN_STEPS = 8
_MIN_CLOSE_STEPS = 3  # closing commanded at least this long before a stall counts
_STALLED = 3e-4  # finger opening change (m) per step below which the fingers have stopped
_GRIPPER_EMPTY = 0.005  # finger opening (m) below this after closing means nothing is between the fingers
_MAX_GRASP_TRIES = 3
_RIM_INSET = 0.012  # bowl rim grasp: fingers centred this far inside the outer radius (straddling the wall)
_RIM_DEPTH = 0.015  # ... with the pads this far below the rim


def _is_bowl(name: str) -> bool:
    return "bowl" in name.lower()


def _quat_xyzw_to_mat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _mat_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Rotation vector of a rotation matrix (robust near 0 and pi)."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    if angle < 1e-6:
        return np.zeros(3)
    if np.pi - angle < 1e-3:
        # Near pi the antisymmetric part vanishes; R + I has the axis (times a scale) in every column.
        cols = r + np.eye(3)
        axis = cols[:, int(np.argmax(np.linalg.norm(cols, axis=0)))]
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2.0 * np.sin(angle))
    return axis * angle


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# Gripper pointing straight down (LIBERO's home orientation): eef x = world x, eef y/z = -world y/z.
# The Panda fingers close along the eef's local y axis.
_DOWN = np.diag([1.0, -1.0, -1.0])


@dataclass
class _Box:
    """World-frame extent of an object's collision geoms."""

    lo: np.ndarray
    hi: np.ndarray
    short_axis_yaw: float | None  # yaw of the footprint's short side, None for a round footprint

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2.0


class ScriptedLiberoExpert:
    """Waypoint pick-and-place expert for LIBERO tasks whose goal is one ``in``/``on`` predicate.

    Build it per env (``policy_factory(env)`` shape)::

        expert = ScriptedLiberoExpert(env, noise_std=0.05, seed=0)
        obs, info = env.reset(options={"init_state_id": 0})
        expert.reset()
        while True:
            obs, r, term, trunc, info = env.step(expert.act(obs))
            if term or trunc:
                break

    Args:
        env: a Gymnasium env whose ``unwrapped`` offers LiberoEnv's privileged API.
        noise_std: std of Gaussian noise added to the 6 pose dims of every action (diversity for demos);
            the result is clipped to [-1, 1].
        seed: seed of the noise generator.
    """

    def __init__(self, env: Any, *, noise_std: float = 0.0, seed: int | None = None) -> None:
        if not isinstance(noise_std, (int, float)) or isinstance(noise_std, bool) or not np.isfinite(noise_std) or noise_std < 0:
            raise ValueError(f"noise_std={noise_std!r}; expected a finite float >= 0")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed={seed!r}; expected None or an int")
        base = getattr(env, "unwrapped", env)
        missing = [a for a in ("sim", "raw_env", "goal_state", "get_object_pose", "get_site_pos", "get_eef_pose") if not hasattr(base, a)]
        if missing:
            raise ValueError(f"env must expose LiberoEnv's privileged API on env.unwrapped; missing {missing}")
        self.env = env
        self._u = base
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self._plan: dict[str, Any] | None = None
        self.phase = "idle"

    # ------------------------------------------------------------------ public API
    def reset(self, *, seed: int | None = None) -> None:
        """Forget the current plan; the next ``act`` re-reads the scene (call after ``env.reset``).

        ``seed`` restarts the noise generator (as ``ScriptedLiberoExpert(..., seed=seed)`` would), so an
        evaluation's per-episode seed makes noisy episodes reproduce under resume and parallel backends."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed={seed!r}; expected None or an int")
            self._rng = np.random.default_rng(seed)
        self._plan = None
        self.phase = "idle"

    def act(self, obs: Any = None) -> np.ndarray:
        """The next action (7,) float32 in [-1, 1]. ``obs`` is unused: the expert reads privileged state."""
        if self._plan is None:
            self._start()
        a = self._step_machine()
        if self.noise_std > 0:
            a[:6] += self._rng.normal(0.0, self.noise_std, 6)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ scene geometry
    def _body_id(self, name: str) -> int:
        return int(self._u.raw_env.env.obj_body_id[name])

    def _object_box(self, name: str) -> _Box:
        """World AABB of the object's collision geoms (all descendant bodies) and its footprint's short axis."""
        sim = self._u.sim
        m, d = raw_model_data(sim)
        bodies = body_subtree(m, self._body_id(name))
        corners = []
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        for g in range(m.ngeom):
            if int(m.geom_bodyid[g]) not in bodies:
                continue
            if m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0:
                continue  # visual-only mesh
            c, h = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
            local = c + signs * h
            corners.append(local @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g])
        if not corners:
            pos, _ = self._u.get_object_pose(name)
            return _Box(pos - 0.02, pos + 0.02, None)
        pts = np.concatenate(corners)
        lo, hi = pts.min(0), pts.max(0)
        # Footprint principal axes: the fingers should close across the short side.
        xy = pts[:, :2] - pts[:, :2].mean(0)
        evals, evecs = np.linalg.eigh(xy.T @ xy / len(xy))
        short = evecs[:, 0]
        round_ = evals[0] > 0.8 * evals[1]
        return _Box(lo, hi, None if round_ else float(np.arctan2(short[1], short[0])))

    def _target_surface(self, region: str) -> tuple[np.ndarray, float, float]:
        """(xy centre, z to rest the object's bottom at, z the carried object must clear) for a goal region."""
        u = self._u
        names = sorted(u.raw_env.env.obj_body_id, key=len, reverse=True)
        owner = next((n for n in names if region == n or region.startswith(n + "_")), None)
        if owner is not None and region != owner:
            # A named region of an object (e.g. basket_1_contain_region) is a site.
            site = u.get_site_pos(region)
            box = self._object_box(owner)
            return site[:2].copy(), float(max(site[2], box.lo[2] + 0.02)), float(box.hi[2])
        if owner is None:
            site = u.get_site_pos(region)
            return site[:2].copy(), float(site[2]), float(site[2])
        box = self._object_box(owner)
        return box.center[:2].copy(), float(box.hi[2]), float(box.hi[2])

    # ------------------------------------------------------------------ plan
    def _start(self) -> None:
        goals = [g for g in self._u.goal_state if g and g[0].lower() in SUPPORTED_PREDICATES]
        if len(goals) != 1 or len(self._u.goal_state) != 1:
            raise ValueError(
                f"ScriptedLiberoExpert solves goals made of one {SUPPORTED_PREDICATES} predicate; "
                f"this task's goal is {self._u.goal_state}"
            )
        _, obj, region = goals[0][:3]
        _, quat = self._u.get_eef_pose()
        r = _quat_xyzw_to_mat(quat)
        self._plan = {"obj": obj, "region": region, "tries": 0, "home_yaw": float(np.arctan2(r[1, 0], r[0, 0]))}
        self._enter("approach")

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._plan["t"] = 0
        p = self._plan
        if phase == "approach":
            box = self._object_box(p["obj"])
            height = box.hi[2] - box.lo[2]
            # Pads at the object's mid-height (at most 2.5 cm below its top), fingers clear of the support.
            pad_z = box.hi[2] - min(0.025, 0.5 * height)
            grip_z = max(pad_z - _PAD_ABOVE_SITE, box.lo[2] + _FINGER_BELOW_SITE)
            xy = box.center[:2].copy()
            p["yaw"] = self._grasp_yaw(box)
            if _is_bowl(p["obj"]):
                # Bowls are wider than the gripper opens: pinch the rim wall on the side nearest the gripper,
                # fingers closing radially (along world y at the home yaw).
                p["yaw"] = p["home_yaw"]
                radius = 0.5 * (box.hi[1] - box.lo[1])
                eef = self._u.get_eef_pose()[0]
                side = 1.0 if eef[1] >= xy[1] else -1.0
                xy[1] += side * max(radius - _RIM_INSET, 0.0)
                grip_z = max(box.hi[2] - _RIM_DEPTH - _PAD_ABOVE_SITE, box.lo[2] + _FINGER_BELOW_SITE)
            p["grasp"] = np.array([xy[0], xy[1], grip_z])
            p["above"] = np.array([xy[0], xy[1], box.hi[2] + _APPROACH_CLEARANCE])
        elif phase == "lift":
            p["lift_from"] = self._u.get_eef_pose()[0]
        elif phase == "carry":
            box = self._object_box(p["obj"])
            eef = self._u.get_eef_pose()[0]
            below = eef[2] - box.lo[2]  # how far the held object hangs below the grip site
            xy, rest_z, clear_z = self._target_surface(p["region"])
            # Aim the object's centre (not the grip point) over the target.
            offset = box.center[:2] - eef[:2]
            p["over"] = np.array([*(xy - offset), max(clear_z + 0.04 + below, eef[2])])
            p["place"] = np.array([*(xy - offset), rest_z + 0.01 + below])

    def _grasp_yaw(self, box: _Box) -> float:
        home = self._plan["home_yaw"]
        if box.short_axis_yaw is None:
            return home
        # Fingers close along the eef's local y, i.e. world direction yaw + pi/2 (rotated -y axis);
        # pick the equivalent yaw (mod pi) closest to the current one to avoid wrist wind-up.
        yaw = box.short_axis_yaw - np.pi / 2
        return float(home + (yaw - home + np.pi / 2) % np.pi - np.pi / 2)

    # ------------------------------------------------------------------ control
    def _servo(self, target: np.ndarray, gripper: float, yaw: float | None = None) -> tuple[np.ndarray, float]:
        pos, quat = self._u.get_eef_pose()
        err = target - pos
        a = np.zeros(7)
        a[:3] = np.clip(_POS_GAIN * err, -1.0, 1.0)
        r_target = _rot_z(self._plan["home_yaw"] if yaw is None else yaw) @ _DOWN
        rot_err = _mat_to_axis_angle(r_target @ _quat_xyzw_to_mat(quat).T)
        a[3:6] = np.clip(_ROT_GAIN * rot_err, -1.0, 1.0)
        a[6] = gripper
        return a, float(np.linalg.norm(err))

    def _gripper_width(self) -> float:
        q = np.asarray(self._u.raw_observation["robot0_gripper_qpos"], dtype=np.float64)
        return float(abs(q[0]) + abs(q[1]))

    def _step_machine(self) -> np.ndarray:
        p = self._plan
        p["t"] += 1
        t = p["t"]
        ph = self.phase
        if ph == "approach":
            a, e = self._servo(p["above"], -1.0, p["yaw"])
            if (e < _COARSE and t > 3) or t > 80:
                self._enter("descend")
            return a
        if ph == "descend":
            a, e = self._servo(p["grasp"], -1.0, p["yaw"])
            if e < _REACHED or t > 60:
                self._enter("grasp")
            return a
        if ph == "grasp":
            a, _ = self._servo(p["grasp"], 1.0, p["yaw"])
            width = self._gripper_width()
            # Lift as soon as the fingers stop closing (they stall on the object after ~4 steps): a policy
            # learning from images cannot tell how long a stationary closed gripper has been waiting, so the
            # demonstrations must not contain an image-invisible hold.
            stalled = t >= _MIN_CLOSE_STEPS and abs(p.get("width", width) - width) < _STALLED
            p["width"] = width
            if stalled or t >= _CLOSE_STEPS:
                if width < _GRIPPER_EMPTY and p["tries"] + 1 < _MAX_GRASP_TRIES:
                    p["tries"] += 1
                    self._enter("regrasp")
                else:
                    self._enter("lift")
            return a
        if ph == "regrasp":
            # Open and back off upwards, then plan a fresh approach from the object's current pose.
            a, e = self._servo(p["grasp"] + np.array([0, 0, 0.06]), -1.0, p["yaw"])
            if t > _OPEN_STEPS and (e < _COARSE or t > 40):
                self._enter("approach")
            return a
        if ph == "lift":
            target = p["lift_from"] + np.array([0, 0, 0.12])
            a, e = self._servo(target, 1.0, p["yaw"])
            # An object slipping out while the fingers finish closing shows up as a fully closed gripper.
            if t == 8 and self._gripper_width() < _GRIPPER_EMPTY and p["tries"] + 1 < _MAX_GRASP_TRIES:
                p["tries"] += 1
                self._enter("regrasp")
                return a
            if e < _COARSE or t > 40:
                self._enter("carry")
            return a
        if ph == "carry":
            a, e = self._servo(p["over"], 1.0, p["yaw"])
            if e < _COARSE * 0.75 or t > 120:
                self._enter("lower")
            return a
        if ph == "lower":
            a, e = self._servo(p["place"], 1.0, p["yaw"])
            if e < _REACHED * 1.5 or t > 60:
                self._enter("release")
            return a
        if ph == "release":
            a, _ = self._servo(p["place"], -1.0, p["yaw"])
            if t >= _OPEN_STEPS:
                self._enter("retreat")
            return a
        # retreat (and any later step): straight up, gripper open
        a, _ = self._servo(p["place"] + np.array([0, 0, 0.12]), -1.0, p["yaw"])
        return a
