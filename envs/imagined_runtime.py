"""Loading the imagined env's world model and judge: runtimes are shared by checkpoint, never state.

``gym.make("WorldVLA-Imagined-v0")`` in a loop (or ``SyncVectorEnv``) loads the weights once: runtimes are
cached weakly by ``(checkpoint, device)``; every env keeps its own episode state.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from wvla_gym.judge import SuccessJudge

# Loaded runtimes are shared by checkpoint, so gym.make in a loop (or SyncVectorEnv) loads the weights once.
_RUNTIMES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def checkpoint_judge(runtime: Any) -> SuccessJudge | None:
    """The success judge a checkpoint ships in ``judge/`` (the embedded default does), else ``None``."""
    ckpt = getattr(runtime, "checkpoint_dir", None)
    if ckpt is None or not (Path(ckpt) / "judge" / "judge_config.json").exists():
        return None
    from wvla_gym.judge import ClassifierJudge

    return ClassifierJudge.from_pretrained(Path(ckpt) / "judge")


def load_runtime(checkpoint: str | os.PathLike | None, device: str = "cpu") -> Any:
    """Load (or reuse) a :class:`wvla_gym.runtime.WorldVLARuntime`; ``None`` means the embedded default."""
    key = (None if checkpoint is None else os.fspath(checkpoint), str(device))
    rt = _RUNTIMES.get(key)
    if rt is not None:
        return rt
    from wvla_gym.runtime import WorldVLARuntime

    try:
        rt = WorldVLARuntime.from_pretrained(key[0], device=device)
    except FileNotFoundError as e:
        if checkpoint is not None:
            raise
        raise FileNotFoundError(
            "WorldVLA-Imagined-v0 has no embedded default world model in this install yet. Pass "
            "checkpoint=<local dir or Hub id of a WorldVLA world-model checkpoint> or runtime=<a loaded "
            "wvla_gym.runtime.WorldVLARuntime>; for tests, build a tiny random model with "
            "wvla_gym.model.tiny.make_tiny_checkpoint(out_dir) and pass checkpoint=out_dir."
        ) from e
    _RUNTIMES[key] = rt
    return rt
