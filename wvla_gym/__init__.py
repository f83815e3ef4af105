"""wvla-gym: WorldVLA as an agent, real LIBERO as Gymnasium envs, and the world model as an imagined env.

Importing this package is cheap: it registers the environment ids and re-exports the public classes lazily,
so MuJoCo, LIBERO and the model code load only when used.

    import gymnasium as gym
    import wvla_gym  # noqa: F401  (registers the ids)

    env = gym.make("WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=0)
    agent = wvla_gym.WorldVLAAgent.from_pretrained()
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

if "WorldVLA-LIBERO-v0" not in registry:
    register(id="WorldVLA-LIBERO-v0", entry_point="envs.libero:LiberoEnv")
if "WorldVLA-Imagined-v0" not in registry:
    register(
        id="WorldVLA-Imagined-v0",
        entry_point="envs.imagined:ImaginedEnv",
        vector_entry_point="envs.imagined_vector:ImaginedVectorEnv",
    )

# name -> module; resolved on first attribute access (LeRobot-style lazy optional imports).
_LAZY: dict[str, str] = {
    "LiberoEnv": "envs.libero",
    "ImaginedEnv": "envs.imagined",
    "ImaginedVectorEnv": "envs.imagined_vector",
    "WorldVLAAgent": "agents.worldvla",
    "ScriptedLiberoExpert": "agents.scripted",
    "WorldVLARuntime": "wvla_gym.runtime",
    "RynnVLARuntime": "wvla_gym.runtime_rynnvla",
    "SuccessJudge": "wvla_gym.judge",
    "CallableJudge": "wvla_gym.judge",
    "ClassifierJudge": "wvla_gym.judge",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wvla_gym' has no attribute {name!r}")
