"""Start frames of the imagined env: LIBERO init states rendered in real LIBERO (cached), and datasets.

* :func:`render_init_frames` renders init states after the settle steps, exactly as ``WorldVLA-LIBERO-v0``
  observes them (``reset(seed=INIT_FRAME_SEED, options={"init_state_id": k})``), and caches them on disk.
* :func:`render_start_frame` does the same for any other start the real env accepts: a fresh placement
  (``{"placement": "sampled"}``), a perturbed one (``"perturb_radius"``) or a replayed ``"sim_state"``, rendered
  with the reset seed that drew it, so the imagined twin of a real episode starts from the real first frame.
* :func:`load_init_frames` turns a dataset of start frames (array, mapping, ``.npz`` or LIBERO-layout HDF5,
  ours or official, read through :class:`wvla_gym.data.hdf5.LiberoFile`) into the env's arrays.
* :func:`libero_task_description` looks a task's instruction up in LIBERO's benchmark registry.

Cache layout: ``cache_dir()/init_frames/<suite>/<task>/<resolution>/<key>/<init_state>.npz`` where ``key``
(:func:`init_frame_cache_key`) names the settle steps and the seed and hashes the versions of the packages
that change the rendering (MuJoCo, robosuite, LIBERO, BDDL), so upgrading any of them misses the cache
instead of silently serving stale frames. Entries are written atomically (temporary file, fsync, rename);
a damaged entry (unreadable, missing keys, wrong shape or dtype) is reported with a warning naming the file
and rendered again. Other starts live in ``<key>/starts/<mode>-....npz`` (:func:`start_frame_path`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wvla_gym.protocol import NUM_STEPS_WAIT, STATE_DIM, validate_suite_task

#: Seed used when rendering an init state in real LIBERO for the on-disk cache (and by ``side_by_side``).
INIT_FRAME_SEED = 0
#: Packages whose versions key the cache (``stack_versions()`` names).
RENDER_PACKAGES = ("mujoco", "robosuite", "rlinf-libero", "bddl")
#: Bump when the entry format changes.
CACHE_FORMAT = 1
_ENTRY_KEYS = ("image", "wrist_image", "state")


def cache_dir() -> Path:
    """Root of the on-disk cache (``$WVLA_GYM_CACHE`` or ``~/.cache/wvla-gym``)."""
    return Path(os.environ.get("WVLA_GYM_CACHE") or Path.home() / ".cache" / "wvla-gym")


@functools.lru_cache(maxsize=1)
def render_stack_versions() -> tuple[tuple[str, str | None], ...]:
    """Installed versions of :data:`RENDER_PACKAGES` (cached per process; ``cache_clear()`` after changes)."""
    from wvla_gym.utils import libero_setup

    v = libero_setup.stack_versions()
    return tuple((name, v.get(name)) for name in RENDER_PACKAGES)


def init_frame_cache_key(settle_steps: int = NUM_STEPS_WAIT, seed: int = INIT_FRAME_SEED) -> str:
    """``settle<N>-seed<S>-<hash of versions>``: the cache folder of frames rendered with these settings."""
    blob = json.dumps({"format": CACHE_FORMAT, "versions": dict(render_stack_versions()),
                       "settle_steps": int(settle_steps), "seed": int(seed)}, sort_keys=True)
    return f"settle{int(settle_steps)}-seed{int(seed)}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def init_frame_path(task_suite: str, task_id: int, resolution: int, init_state_id: int, *,
                    settle_steps: int = NUM_STEPS_WAIT, seed: int = INIT_FRAME_SEED) -> Path:
    """Where the rendered start frame of a LIBERO init state is cached (see the module doc)."""
    return (cache_dir() / "init_frames" / task_suite / str(int(task_id)) / str(int(resolution))
            / init_frame_cache_key(settle_steps, seed) / f"{int(init_state_id)}.npz")


def start_frame_path(task_suite: str, task_id: int, resolution: int, options: Mapping[str, Any], seed: int, *,
                     settle_steps: int = NUM_STEPS_WAIT) -> Path:
    """Cache path of the start ``LiberoEnv.reset(seed=seed, options=options)`` gives (plain init states: the
    :func:`init_frame_path` entry, whose rendering does not depend on the seed)."""
    k = options.get("init_state_id")
    mode = options.get("placement", "fixed")
    r = float(options.get("perturb_radius", 0.0))
    if "sim_state" not in options and mode == "fixed" and r == 0.0 and k is not None:
        return init_frame_path(task_suite, task_id, resolution, int(k), settle_steps=settle_steps)
    if "sim_state" in options:
        digest = hashlib.sha256(np.ascontiguousarray(options["sim_state"], dtype=np.float64).tobytes()).hexdigest()[:16]
        name = f"simstate-{digest}"
    else:
        name = f"{mode}-k{'none' if k is None else int(k)}"
    name += f"-r{r!r}-seed{int(seed)}.npz"
    folder = init_frame_path(task_suite, task_id, resolution, 0, settle_steps=settle_steps).parent
    return folder / "starts" / name


def _read_entry(path: Path, resolution: int) -> tuple[dict[str, np.ndarray] | None, str]:
    """The entry's arrays, or ``(None, why it is unusable)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _ENTRY_KEYS if k not in z.files]
            if missing:
                return None, f"missing arrays {missing}"
            out = {k: z[k] for k in _ENTRY_KEYS}
    except Exception as e:  # noqa: BLE001 - any read failure (truncated zip, bad header) means "damaged"
        return None, f"unreadable ({type(e).__name__}: {e})"
    for k in ("image", "wrist_image"):
        a = out[k]
        if a.dtype != np.uint8 or a.shape != (resolution, resolution, 3):
            return None, f"{k} is {a.dtype} {a.shape}, expected uint8 ({resolution}, {resolution}, 3)"
    s = out["state"]
    if s.dtype != np.float32 or s.shape != (STATE_DIM,) or not np.all(np.isfinite(s)):
        return None, f"state is {s.dtype} {s.shape}, expected finite float32 ({STATE_DIM},)"
    return out, ""


def _write_entry(path: Path, frame: Mapping[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **frame)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: parallel workers never read half a file
    finally:
        if tmp.exists():
            tmp.unlink()
    info = path.parent / "key.json"
    if not info.exists():  # human-readable record of what the folder's hash stands for
        tmp_info = info.with_name(f".key.{os.getpid()}.tmp")
        tmp_info.write_text(json.dumps({"format": CACHE_FORMAT, "versions": dict(render_stack_versions()),
                                        "key": path.parent.name}, indent=2))
        os.replace(tmp_info, info)


def render_init_frames(
    task_suite: str,
    task_id: int,
    resolution: int,
    init_state_ids: Sequence[int],
    *,
    overwrite: bool = False,
    libero_env: Any = None,
    settle_steps: int = NUM_STEPS_WAIT,
) -> list[dict[str, np.ndarray]]:
    """Render LIBERO init states after the settle steps (``reset(seed=0, options={"init_state_id": k})``).

    Frames are cached as ``.npz`` under :func:`init_frame_path`, so real LIBERO runs once per init state;
    damaged entries are re-rendered (with a warning naming the file). Returns one dict per id with
    ``image``, ``wrist_image`` (uint8, rotated like the real env) and ``state`` (float32). ``libero_env``
    (a ``LiberoEnv`` of this task and resolution with ``wrist=True``) is used instead of building one.
    """
    starts = [(INIT_FRAME_SEED, {"init_state_id": int(k)}) for k in init_state_ids]
    return _render_starts(task_suite, task_id, resolution, starts, overwrite=overwrite, libero_env=libero_env,
                          settle_steps=settle_steps)


def render_start_frame(
    task_suite: str,
    task_id: int,
    resolution: int,
    options: Mapping[str, Any],
    seed: int,
    *,
    overwrite: bool = False,
    libero_env: Any = None,
    settle_steps: int = NUM_STEPS_WAIT,
) -> dict[str, np.ndarray]:
    """The first observation of ``LiberoEnv.reset(seed=seed, options=options)`` (any start it accepts: a fixed
    init state, ``"placement": "sampled"``, ``"perturb_radius"``, ``"sim_state"``), cached under
    :func:`start_frame_path`; otherwise as :func:`render_init_frames`."""
    return _render_starts(task_suite, task_id, resolution, [(int(seed), dict(options))], overwrite=overwrite,
                          libero_env=libero_env, settle_steps=settle_steps)[0]


def _render_starts(task_suite: str, task_id: int, resolution: int, starts: Sequence[tuple[int, dict[str, Any]]], *,
                   overwrite: bool, libero_env: Any, settle_steps: int) -> list[dict[str, np.ndarray]]:
    validate_suite_task(task_suite, task_id)
    if libero_env is not None and int(getattr(libero_env, "num_steps_wait", settle_steps)) != int(settle_steps):
        raise ValueError(f"libero_env runs {libero_env.num_steps_wait} settle steps; expected settle_steps={settle_steps}")
    out: list[dict[str, np.ndarray]] = []
    own_env = None
    try:
        for seed, options in starts:
            path = start_frame_path(task_suite, task_id, resolution, options, seed, settle_steps=settle_steps)
            if path.exists() and not overwrite:
                frame, why = _read_entry(path, resolution)
                if frame is not None:
                    out.append(frame)
                    continue
                warnings.warn(f"start-frame cache entry {path} is damaged ({why}); rendering it again",
                              RuntimeWarning, stacklevel=3)
            env = libero_env
            if env is None:
                if own_env is None:
                    from envs.libero import LiberoEnv  # lazy: MuJoCo only when a frame is missing

                    own_env = LiberoEnv(task_suite, task_id, resolution=resolution, wrist=True,
                                        num_steps_wait=settle_steps)
                env = own_env
            obs, _ = env.reset(seed=seed, options=dict(options))
            frame = {"image": np.ascontiguousarray(obs["image"], dtype=np.uint8),
                     "wrist_image": np.ascontiguousarray(obs["wrist_image"], dtype=np.uint8),
                     "state": np.asarray(obs["state"], dtype=np.float32)}
            _write_entry(path, frame)
            out.append(frame)
    finally:
        if own_env is not None:
            own_env.close()
    return out


def libero_task_description(task_suite: str, task_id: int) -> str:
    """The LIBERO instruction of a task (imports LIBERO's benchmark registry, not the simulator)."""
    validate_suite_task(task_suite, task_id)
    from wvla_gym.utils.libero_setup import prepare_libero

    prepare_libero(None)  # LIBERO's config and assets must exist before its import (else it prompts)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from libero.libero import benchmark

        suite = benchmark.get_benchmark_dict()[task_suite]()
    return suite.get_task(int(task_id)).language


def _hdf5_start_frames(path: Path) -> dict[str, np.ndarray]:
    """The first step of every demo of a LIBERO-layout file, in the env's orientation."""
    from wvla_gym.data.hdf5 import LiberoFile

    frames: dict[str, list[np.ndarray]] = {"image": [], "wrist_image": [], "state": []}
    with LiberoFile(path) as f:
        for demo in f.demos:
            frames["image"].append(f.frames(demo, 0, 1)[0])
            if f.has_view(demo, "wrist"):
                frames["wrist_image"].append(f.frames(demo, 0, 1, view="wrist")[0])
            state = f.env_states(demo, 0, 1)
            if state is not None:
                frames["state"].append(state[0])
    return {k: np.stack(v) for k, v in frames.items() if v and len(v) == len(frames["image"])}


def load_init_frames(source: Any, resolution: int) -> dict[str, np.ndarray]:
    """Normalise a dataset of start frames to ``{"image": (N,R,R,3) uint8[, "wrist_image"][, "state": (N,8)]}``.

    ``source`` is an array of frames, a mapping with those keys, a ``.npz`` file with those keys, or a
    LIBERO-layout HDF5 file (the first step of every demo; ours or official LIBERO: frames come out in the
    env's orientation either way, see :class:`wvla_gym.data.hdf5.LiberoFile`).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"init_frames={os.fspath(path)!r} does not exist")
        if path.suffix in (".hdf5", ".h5"):
            data = _hdf5_start_frames(path)
        else:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
    elif isinstance(source, Mapping):
        data = {k: np.asarray(v) for k, v in source.items()}
    else:
        data = {"image": np.asarray(source)}
    if "image" not in data:
        raise ValueError(f"init_frames needs an 'image' array; got keys {sorted(data)}")
    images = data["image"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3) or not len(images):
        raise ValueError(
            f"init_frames['image'] must be uint8 (N, {resolution}, {resolution}, 3) with N >= 1; "
            f"got {images.dtype} {images.shape}"
        )
    out = {"image": np.ascontiguousarray(images)}
    if "wrist_image" in data:
        w = data["wrist_image"]
        if w.dtype != np.uint8 or w.shape != images.shape:
            raise ValueError(f"init_frames['wrist_image'] must be uint8 {images.shape}; got {w.dtype} {w.shape}")
        out["wrist_image"] = np.ascontiguousarray(w)
    if "state" in data:
        s = np.asarray(data["state"], dtype=np.float32)
        if s.shape != (len(images), STATE_DIM):
            raise ValueError(f"init_frames['state'] must have shape ({len(images)}, {STATE_DIM}); got {s.shape}")
        out["state"] = s
    return out
