"""Small MuJoCo helpers shared by the env's placement code and the scripted expert (which may not import
each other): raw model/data behind robosuite's wrappers, and a body's subtree."""

from __future__ import annotations

from typing import Any


def raw_model_data(sim: Any) -> tuple[Any, Any]:
    """The raw ``mujoco.MjModel`` / ``MjData`` behind robosuite's ``MjSim`` wrappers (or the objects themselves)."""
    return getattr(sim.model, "_model", sim.model), getattr(sim.data, "_data", sim.data)


def body_subtree(model: Any, root: int) -> set[int]:
    """Ids of ``root`` and every body below it in the kinematic tree."""
    out = {root}
    for b in range(model.nbody):
        p = b
        while p > 0:
            if p == root:
                out.add(b)
                break
            p = int(model.body_parentid[p])
    return out
