"""What the three training stages share to resume exactly and never mix runs.

* :func:`claim_training_run`: the run identity of a training output folder (``run_identity.json``, see
  :mod:`wvla_gym.utils.run_identity`): the training config minus the fields that only steer progress / logging
  (:data:`NOT_IDENTITY`), the data files with content hashes and whatever else the stage adds (the VQ's hash,
  the world model's hash). Resuming with other settings raises ``RunIdentityError`` naming them; ``restart``
  deletes the stage's outputs first.
* :func:`safe_load`: ``torch.load(..., weights_only=True)`` only; a file holding anything but tensors and plain
  containers (a crafted pickle) is refused with an error naming it, before any of its code can run.
* :func:`atomic_torch_save` / :func:`save_checkpoint_dir`: a kill leaves the old file / checkpoint or the new one.
* :func:`truncate_log`: on resume the JSONL log keeps only the steps the checkpoint covers, so no step repeats.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from wvla_gym.utils.io import atomic_path, atomic_write, atomic_write_text
from wvla_gym.utils.run_identity import claim_run, path_digest

CKPT = "ckpt"
STATE = "train_state.pt"

NOT_IDENTITY = frozenset({"out", "data", "log_every", "checkpoint_every", "progress", "stop_at", "restart"})
"""Config fields that never change a stage's results: where it writes, how often it logs / checkpoints /
reports progress, where this invocation stops (``stop_at`` keeps the schedule of ``steps``), ``restart``.
``data`` is replaced by the expanded files with their content hashes."""


def expand_data(data: Iterable[str]) -> list[str]:
    """Files and folders (every ``*.hdf5`` directly inside, sorted), as the data loaders expand them."""
    out: list[str] = []
    for d in data:
        p = Path(d)
        out.extend(str(f) for f in sorted(p.glob("*.hdf5"))) if p.is_dir() else out.append(str(p))
    if not out:
        raise ValueError("no HDF5 files in --data")
    return out


def data_identity(data: Iterable[str]) -> list[list[str]]:
    """``[[resolved path, sha256 of its bytes], ...]`` of every data file."""
    return [[str(Path(f).resolve()), path_digest(f)] for f in expand_data(data)]


def config_identity(cfg: Any, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The config's fields that change results (tuples as lists), minus :data:`NOT_IDENTITY` and ``exclude``."""
    skip = NOT_IDENTITY | set(exclude)
    items = ((f.name, getattr(cfg, f.name)) for f in fields(cfg)) if is_dataclass(cfg) else vars(cfg).items()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items if k not in skip}


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def claim_training_run(out: str | os.PathLike, kind: str, identity: Mapping[str, Any], outputs: Sequence[str], *,
                       restart: bool = False) -> dict[str, Any]:
    """:func:`claim_run` for a training folder whose results are the names in ``outputs`` (files or folders).

    ``restart`` deletes exactly those (and their ``.tmp`` / ``.old`` siblings), never anything else in ``out``.
    """
    names = [*outputs, *(f"{n}.tmp" for n in outputs), *(f"{n}.old" for n in outputs)]

    def clear(folder: Path) -> None:
        for n in names:
            _remove(folder / n)
        for stray in folder.glob(".*.tmp"):  # temp files of atomic writes a kill left behind
            _remove(stray)

    def has_results(folder: Path) -> bool:
        return any((folder / n).exists() for n in names)

    return claim_run(out, kind, identity, restart=restart, clear=clear, has_results=has_results)


def safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and plain containers only."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as e:
        raise ValueError(
            f"refusing to load {path}: it is not a plain tensor/primitive file that loads with weights_only=True "
            f"(it may be corrupt, from an older version, or crafted to run code: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); delete it or rerun with --restart"
        ) from e


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def save_checkpoint_dir(out: Path, write: Callable[[Path], None], name: str = CKPT) -> None:
    """Let ``write(tmp)`` fill ``<out>/<name>.tmp`` completely, then swap it in for ``<out>/<name>``.

    A kill at any point leaves ``<name>`` or ``<name>.old`` complete (:func:`latest_checkpoint` finds it).
    """
    tmp, final, old = out / f"{name}.tmp", out / name, out / f"{name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out: Path, name: str = CKPT, state: str = STATE) -> Path | None:
    for n in (name, f"{name}.old"):  # .old survives only a kill between the two renames
        if (out / n / state).exists():
            return out / n
    return None


def truncate_log(path: Path, before_step: int) -> None:
    """Keep the JSONL records with ``step < before_step`` (and drop a line a kill cut short)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and int(rec.get("step", -1)) < before_step:
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``safetensors.torch.save_file`` to a temp file in the same folder, then ``os.replace``."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
