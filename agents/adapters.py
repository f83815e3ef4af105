"""Adapters that turn other things into a :class:`wvla_gym.policy.Policy` (``reset(*, seed=None)``, ``act(obs)``).

* :class:`SB3ModelPolicy`: a Stable-Baselines3 model (``model.predict(obs, deterministic=True)``);
  :func:`load_sb3_model` loads a saved ``.zip`` (needs the ``sb3`` extra).
* :class:`CallablePolicy`: a plain function ``fn(obs) -> action`` (stateless baselines, quick experiments).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from wvla_gym.utils.validation import check_bool, check_choice, check_int, fail

__all__ = ["SB3_ALGOS", "CallablePolicy", "SB3ModelPolicy", "import_sb3", "load_sb3_model"]

#: Algorithms tried, in order, when a saved SB3 model's class is not named.
SB3_ALGOS = ("PPO", "SAC", "TD3", "A2C", "DDPG", "DQN")


def import_sb3() -> Any:
    """``stable_baselines3``, or an ``ImportError`` that names the extra to install."""
    try:
        import stable_baselines3
    except ImportError as e:
        raise ImportError(
            "Stable-Baselines3 is not installed; it is an optional dependency: pip install 'wvla-gym[sb3]'"
        ) from e
    return stable_baselines3


class SB3ModelPolicy:
    """A Stable-Baselines3 model as a stateless policy: ``act(obs)`` is ``model.predict(obs, deterministic=...)``."""

    def __init__(self, model: Any, *, deterministic: bool = True) -> None:
        if not callable(getattr(model, "predict", None)):
            raise fail("model", model, "a Stable-Baselines3 model with predict(obs, deterministic=...)")
        self.model = model
        self.deterministic = check_bool("deterministic", deterministic)

    def reset(self, *, seed: int | None = None) -> None:
        check_int("seed", seed, optional=True)

    def act(self, obs: Any) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _load_sb3_cached(algo: str | None, path: str) -> Any:
    sb3 = import_sb3()
    algos = [algo] if algo else list(SB3_ALGOS)
    errors = []
    for name in algos:
        cls = getattr(sb3, name)
        try:
            return cls.load(path, device="cpu")
        except Exception as e:  # try the next algorithm class
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise ValueError(f"could not load {path!r} as any of {algos}: " + "; ".join(errors))


def load_sb3_model(path: str | os.PathLike, algo: str | None = None) -> Any:
    """Load a saved SB3 model (``algo`` one of :data:`SB3_ALGOS`, else each is tried); cached per process."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise fail("path", path, "the path of a saved Stable-Baselines3 model (.zip)")
    algo = check_choice("algo", algo, SB3_ALGOS, optional=True)
    return _load_sb3_cached(algo, os.fspath(path))


class CallablePolicy:
    """``fn(obs) -> action`` as a stateless policy (``reset`` does nothing)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        if not callable(fn):
            raise fail("fn", fn, "a callable fn(obs) -> action of shape (7,)")
        self.fn = fn

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def act(self, obs: Any) -> np.ndarray:
        return np.asarray(self.fn(obs), dtype=np.float32)
