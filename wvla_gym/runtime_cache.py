"""THE runtime cache and THE judge lookup: one loaded model per checkpoint and loading options, per process.

Every place that turns a checkpoint name into a :class:`~wvla_gym.runtime.WorldVLARuntime` goes through
:func:`load_runtime`: the policy registry (``--policy worldvla``), ``WorldVLAAgent.from_pretrained``, the
imagined envs (``checkpoint=``) and the benchmarks. So an evaluation that uses one checkpoint as the policy
and as the world model holds its weights once, and ``gym.make("WorldVLA-Imagined-v0", checkpoint=...)`` in
a loop loads them once.

A runtime holds weights, never episode state (agents and envs keep their own), so sharing it is safe. The
cache holds runtimes weakly: a model lives while an agent, an env or a policy factory uses it, and its
memory is freed when the last of them goes (a 7B checkpoint is 14 GB). Whoever must keep a runtime alive
between uses (a policy factory between its slots) keeps a reference to it.

:func:`checkpoint_judge` is the one place that finds the success judge a checkpoint ships in ``judge/``.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wvla_gym.utils.validation import fail

if TYPE_CHECKING:
    from wvla_gym.judge import SuccessJudge
    from wvla_gym.runtime import WorldVLARuntime

__all__ = ["cache_key", "checkpoint_judge", "clear", "default_world_model", "load_runtime", "load_world_model"]

#: Folder inside a checkpoint that holds its success judge.
JUDGE_SUBDIR = "judge"
#: Folder inside the embedded default that holds its world model (and that model's judge).
WORLD_MODEL_SUBDIR = "world_model"

_RUNTIMES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
# Two threads asking for one checkpoint must not both load it.
_LOCK = threading.RLock()


def _checkpoint_key(checkpoint: str | os.PathLike | None) -> str | None:
    """One spelling per checkpoint: local folders by their resolved path (``ckpt/`` == ``./ckpt``), Hub ids as
    given, ``None`` (the embedded default) as the default's folder."""
    if checkpoint is None:
        from wvla_gym.runtime import DEFAULT_ASSET_DIR

        return str(Path(DEFAULT_ASSET_DIR).resolve())
    if not isinstance(checkpoint, (str, os.PathLike)) or not os.fspath(checkpoint):
        raise fail("checkpoint", checkpoint,
                   "None (the embedded default), a local checkpoint folder or a Hub id (a non-empty str or path)")
    path = Path(checkpoint)
    return str(path.resolve()) if path.exists() else os.fspath(checkpoint)


def _option_items(options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The loading options with ``from_pretrained``'s defaults filled in, so ``load_runtime(c)`` and
    ``load_runtime(c, device="cpu")`` share one entry; values by ``str`` (``torch.device("cpu")`` == ``"cpu"``)."""
    from wvla_gym.runtime import WorldVLARuntime

    sig = inspect.signature(WorldVLARuntime.from_pretrained)
    try:
        bound = sig.bind(None, **options)
    except TypeError as e:
        names = [p for p in sig.parameters if p not in ("cls", "path_or_hub_id")]
        raise TypeError(f"runtime loading options {sorted(options)}: {e}; expected some of {names}") from e
    bound.apply_defaults()
    return tuple(sorted((k, str(v)) for k, v in bound.arguments.items() if k not in ("cls", "path_or_hub_id")))


def cache_key(checkpoint: str | os.PathLike | None, **options: Any) -> tuple[Any, ...]:
    """The cache entry ``load_runtime(checkpoint, **options)`` uses (equal keys share one runtime)."""
    return (_checkpoint_key(checkpoint), _option_items(options))


def load_runtime(checkpoint: str | os.PathLike | None = None, device: Any = "cpu", **options: Any) -> WorldVLARuntime:
    """Load (or reuse) the runtime of ``checkpoint``; ``None`` means the embedded default.

    ``device`` and ``options`` (``dtype``, ``attn_implementation``, ``decode_backend``, ``vq_batch``) are
    :meth:`WorldVLARuntime.from_pretrained`'s; runtimes loaded with other options are separate entries.
    """
    key = cache_key(checkpoint, device=device, **options)
    with _LOCK:
        rt = _RUNTIMES.get(key)
        if rt is not None:
            return rt
        from wvla_gym.runtime import WorldVLARuntime

        try:
            rt = WorldVLARuntime.from_pretrained(checkpoint, device=device, **options)
        except FileNotFoundError as e:
            if checkpoint is not None:
                raise
            raise FileNotFoundError(
                "there is no embedded default WorldVLA model in this install. Pass checkpoint=<a local folder or "
                "Hub id of a WorldVLA checkpoint> or runtime=<a loaded wvla_gym.runtime.WorldVLARuntime>; for "
                "tests, build a tiny random model with wvla_gym.model.tiny.make_tiny_checkpoint(out_dir) and pass "
                "checkpoint=out_dir."
            ) from e
        _RUNTIMES[key] = rt
        return rt


def default_world_model() -> str | None:
    """The embedded default's world model (``assets/default/world_model``, sharing the policy's VQ), or ``None``
    (then the default checkpoint itself) in an install that ships none."""
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    folder = Path(DEFAULT_ASSET_DIR) / WORLD_MODEL_SUBDIR
    return str(folder) if (folder / "config.json").exists() else None


def load_world_model(checkpoint: str | os.PathLike | None = None, device: Any = "cpu", **options: Any) -> WorldVLARuntime:
    """:func:`load_runtime` for a world model: ``None`` means the embedded default's world model
    (:func:`default_world_model`), which the imagined envs and ``wvla-gym eval --env imagined`` use by default."""
    return load_runtime(default_world_model() if checkpoint is None else checkpoint, device, **options)


def clear() -> None:
    """Forget every cached runtime (the runtimes themselves live on while something else holds them)."""
    with _LOCK:
        _RUNTIMES.clear()


def checkpoint_judge(source: Any) -> SuccessJudge | None:
    """The success judge a checkpoint ships in ``judge/`` (the embedded default does), else ``None``.

    ``source`` is a runtime (its ``checkpoint_dir``; ``None`` for a Hub download) or a checkpoint folder.
    """
    ckpt = getattr(source, "checkpoint_dir", None) if not isinstance(source, (str, os.PathLike)) else source
    if ckpt is None:
        return None
    from wvla_gym.judge import CONFIG_NAME, ClassifierJudge

    folder = Path(ckpt) / JUDGE_SUBDIR
    if not (folder / CONFIG_NAME).exists():
        return None
    return ClassifierJudge.from_pretrained(folder)
