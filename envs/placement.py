"""Fresh object placements and seeded position perturbations for :class:`envs.libero.LiberoEnv` resets.

``LiberoEnv.reset(options=...)`` accepts (parsed by :func:`parse_reset_options`, the real env's subset of
:func:`wvla_gym.starts.parse_start`):

* ``{"init_state_id": k}`` -- one of the benchmark's fixed init states (the evaluation protocol);
* ``{"placement": "sampled"}`` -- a fresh placement drawn by LIBERO's own placement samplers (the BDDL regions
  the fixed init states were drawn from), seeded by the reset ``seed``: same seed -> same placement;
* ``{"sim_state": state}`` -- a flattened MuJoCo state (``info["sim_state"]`` of an earlier reset, or a row of
  a demo's ``states``), e.g. to replay a sampled or perturbed start exactly;
* ``"perturb_radius": r`` (metres, with any of the above) -- every movable object (the target, the goal
  receptacle and the distractors; fixtures stay) is shifted in the table plane by a seeded offset drawn
  uniformly from the disc of radius ``r``, in the spirit of LIBERO-PRO / LIBERO-Plus position perturbations.
  A shift is rejected and redrawn (up to ``MAX_SHIFT_TRIES`` times, else the object stays put) when the object
  would come within ``CLEARANCE`` of another body (objects, fixtures, robot) or would lose its support (a ray
  cast down from its centre and four footprint points must hit the same supporting body at the same height,
  so nothing is pushed off a table edge or into a drawer wall).

Whatever the source, the resulting state is loaded exactly like a fixed init state and followed by the same
settle steps; the state *before* settling is returned as ``info["sim_state"]`` and ``info["placement"]``
describes what was done (mode, seed, per-object shift). Everything here reads the simulator through the
LIBERO env object (``OffScreenRenderEnv``) handed in; it imports no project module but
``wvla_gym.starts`` and ``wvla_gym.utils``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wvla_gym.protocol import MAX_PERTURB_RADIUS as MAX_PERTURB_RADIUS  # the bound of ``perturb_radius``
from wvla_gym.starts import REAL_START_KEYS, StartRequest, parse_start
from wvla_gym.utils.mujoco_tree import body_subtree, raw_model_data

#: Minimum gap (metres) between a shifted object and any other body.
CLEARANCE = 0.004
#: Shift draws per object before it is left in place.
MAX_SHIFT_TRIES = 50
#: A shifted object's support must be found within this height (metres) of the original support.
SUPPORT_TOLERANCE = 0.005
_SAMPLER_TRIES = 100


def parse_reset_options(options: Any, n_init: int, state_dim: int | None = None) -> StartRequest:
    """Validate ``LiberoEnv.reset`` options (the real env's subset of :mod:`wvla_gym.starts`); raises
    ``ValueError`` (also a ``TypeError``) naming the option and the expected form."""
    return parse_start(options, accepted=REAL_START_KEYS, n_init=n_init, state_dim=state_dim)


# ---------------------------------------------------------------------------------------------- sampling
def sample_placement(inner: Any) -> None:
    """Place every movable object with LIBERO's own placement samplers (numpy's global RNG: seed it first).

    ``inner`` is the BDDL domain env (``OffScreenRenderEnv.env``) right after a reset with its fixtures already
    pinned; fixtures keep their (pinned) poses, only movable objects are placed.
    """
    from robosuite.utils.errors import RandomizationError

    inner.sim.forward()  # site and body poses of the pinned fixtures, for samplers conditioned on them
    for attempt in range(_SAMPLER_TRIES):
        try:
            placements = inner.placement_initializer.sample()
            placements = inner.conditional_placement_initializer.sample(inner.sim, placements)
            placements = inner.conditional_placement_on_objects_initializer.sample(placements)
            break
        except RandomizationError:
            if attempt == _SAMPLER_TRIES - 1:
                raise
    for pos, quat, obj in placements.values():
        if obj.name in inner.fixtures_dict:
            continue
        inner.sim.data.set_joint_qpos(obj.joints[-1], np.concatenate([np.asarray(pos), np.asarray(quat)]))
    inner.sim.forward()


def object_xy(inner: Any) -> dict[str, list[float]]:
    """World xy of every movable object's root body."""
    d = inner.sim.data
    return {n: [float(v) for v in d.body_xpos[inner.obj_body_id[n]][:2]] for n in inner.objects_dict}


# ---------------------------------------------------------------------------------------------- perturbation
def _collision_geoms(m: Any, bodies: set[int] | None = None) -> list[int]:
    return [
        g for g in range(m.ngeom)
        if (m.geom_contype[g] or m.geom_conaffinity[g]) and (bodies is None or int(m.geom_bodyid[g]) in bodies)
    ]


def _footprint(m: Any, d: Any, geoms: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """World AABB (lo, hi) of geoms."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    pts = []
    for g in geoms:
        c, h = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
        pts.append((c + signs * h) @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g])
    p = np.concatenate(pts)
    return p.min(0), p.max(0)


def _support(m: Any, d: Any, xy: np.ndarray, z: float, own: set[int]) -> tuple[int, float] | None:
    """(body id, height) of the first collision surface below (xy, z), skipping the object's own geoms."""
    import mujoco

    pnt = np.array([xy[0], xy[1], z], dtype=np.float64)
    down = np.array([0.0, 0.0, -1.0])
    geomid = np.zeros(1, dtype=np.int32)
    for _ in range(64):
        dist = mujoco.mj_ray(m, d, pnt, down, None, 1, -1, geomid)
        if dist < 0:
            return None
        g = int(geomid[0])
        hit = pnt + dist * down
        body = int(m.geom_bodyid[g])
        if body in own or not (m.geom_contype[g] or m.geom_conaffinity[g]):
            pnt = hit + 1e-4 * down  # a visual-only geom or the object itself: keep looking below it
            continue
        return body, float(hit[2])
    return None


def _supports(m: Any, d: Any, own: set[int], geoms: list[int]) -> list[tuple[int, float] | None]:
    lo, hi = _footprint(m, d, geoms)
    c, half = (lo[:2] + hi[:2]) / 2, (hi[:2] - lo[:2]) / 4  # centre + four points halfway to the footprint edge
    z = float(lo[2] + 0.5 * (hi[2] - lo[2]))
    pts = [c] + [c + np.array([sx, sy]) * half for sx in (-1, 1) for sy in (-1, 1)]
    return [_support(m, d, p, z, own) for p in pts]


def _too_close(m: Any, d: Any, own_geoms: list[int], other_geoms: list[int]) -> bool:
    import mujoco

    fromto = np.zeros(6)
    for g1 in own_geoms:
        for g2 in other_geoms:
            gap = np.linalg.norm(d.geom_xpos[g1] - d.geom_xpos[g2]) - m.geom_rbound[g1] - m.geom_rbound[g2]
            if gap > CLEARANCE:
                continue
            if mujoco.mj_geomDistance(m, d, g1, g2, CLEARANCE, fromto) < CLEARANCE:
                return True
    return False


def perturb_objects(inner: Any, rng: np.random.Generator, radius: float) -> dict[str, dict[str, Any]]:
    """Shift every movable object of the current state in the table plane by <= ``radius`` (see module doc).

    Objects are processed in the scene's order, each against the already-shifted others. Returns
    ``{name: {"shift": [dx, dy], "distance": d, "tries": n}}`` (``distance`` 0 when no valid shift was found).
    """
    import mujoco

    sim = inner.sim
    m, d = raw_model_data(sim)
    mujoco.mj_forward(m, d)
    report: dict[str, dict[str, Any]] = {}
    for name, obj in inner.objects_dict.items():
        root = int(inner.obj_body_id[name])
        own = body_subtree(m, root)
        own_geoms = _collision_geoms(m, own)
        jid = m.joint(obj.joints[-1]).id
        if not own_geoms or int(m.jnt_type[jid]) != int(mujoco.mjtJoint.mjJNT_FREE):
            report[name] = {"shift": [0.0, 0.0], "distance": 0.0, "tries": 0, "skipped": "no free joint"}
            continue
        qadr, vadr = int(m.jnt_qposadr[jid]), int(m.jnt_dofadr[jid])
        base = np.array(d.qpos[qadr:qadr + 2])
        ref = _supports(m, d, own, own_geoms)
        support_bodies = {s[0] for s in ref if s is not None}
        others = [g for g in _collision_geoms(m) if int(m.geom_bodyid[g]) not in own | support_bodies]
        accepted = np.zeros(2)
        tries = 0
        for _ in range(MAX_SHIFT_TRIES):
            tries += 1
            rho, theta = radius * np.sqrt(rng.uniform()), rng.uniform(0.0, 2 * np.pi)
            shift = np.array([rho * np.cos(theta), rho * np.sin(theta)])
            d.qpos[qadr:qadr + 2] = base + shift
            d.qvel[vadr:vadr + 6] = 0.0
            mujoco.mj_forward(m, d)
            new = _supports(m, d, own, own_geoms)
            supported = all(
                (a is None and b is None)
                or (a is not None and b is not None and a[0] == b[0] and abs(a[1] - b[1]) < SUPPORT_TOLERANCE)
                for a, b in zip(ref, new, strict=True)
            )
            if supported and not _too_close(m, d, own_geoms, others):
                accepted = shift
                break
        else:
            d.qpos[qadr:qadr + 2] = base
            mujoco.mj_forward(m, d)
        report[name] = {"shift": [float(accepted[0]), float(accepted[1])], "distance": float(np.linalg.norm(accepted)),
                        "tries": tries}
    return report
