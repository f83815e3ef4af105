"""Run identity: every resumable job (eval, record, train) records what changes its output, and refuses to
resume into a folder made with other settings.

A job calls :func:`claim_run` with a flat JSON-able ``identity`` dict (checkpoint path and content hash,
resolution, step limits, training config, data hashes, ...). The first call writes ``<out>/run_identity.json``
atomically; later calls compare and raise :class:`RunIdentityError` naming every differing setting with its
old and new value. ``restart=True`` (the CLIs' ``--restart``) deletes the folder's results through the
caller-supplied ``clear`` callback and starts over with the new identity.

Content hashes (:func:`path_digest`) cover the bytes of a file or of every file below a folder, so a
retrained checkpoint saved to the same path is a different run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from wvla_gym.utils.io import atomic_write_json, read_json

IDENTITY_FILE = "run_identity.json"


class RunIdentityError(ValueError):
    """Resuming into a folder whose recorded settings differ from this run's."""


def path_digest(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative paths + bytes, sorted); ``sha256:<hex>``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; expected a file or folder to hash")
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode() + b"\0")
        with q.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def _canonical(x: Any) -> Any:
    """JSON round trip, so tuples/lists and int/float keys compare the way they are stored."""
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every key whose value differs (missing keys count as ``None``)."""
    old_c, new_c = _canonical(dict(old)), _canonical(dict(new))
    return {k: (old_c.get(k), new_c.get(k)) for k in sorted(set(old_c) | set(new_c)) if old_c.get(k) != new_c.get(k)}


def read_identity(out: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(out) / IDENTITY_FILE
    if not p.exists():
        return None
    try:
        return read_json(p)
    except ValueError as e:
        raise RunIdentityError(f"{e}; delete it or pass --restart to start over") from e


def claim_run(
    out: str | os.PathLike,
    kind: str,
    identity: Mapping[str, Any],
    *,
    restart: bool = False,
    clear: Callable[[Path], None] | None = None,
    has_results: Callable[[Path], bool] | None = None,
) -> dict[str, Any]:
    """Record or check the identity of the job writing into ``out``; returns the stored record.

    ``kind`` names the job (``"eval"``, ``"record"``, ``"train-model"``...): a folder of one kind is never
    resumed as another. A folder with results but no identity file (written before identities existed) is
    refused unless ``restart``; ``has_results(out)`` tells whether it holds any (default: any file at all).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    new = {"kind": kind, "identity": _canonical(dict(identity))}
    stored = read_identity(out)
    if restart:
        if clear is not None:
            clear(out)
        stored = None
    elif stored is None:
        found = has_results(out) if has_results is not None else any(
            q.name != IDENTITY_FILE for q in out.iterdir()
        )
        if found:
            raise RunIdentityError(
                f"{out} already holds results but no {IDENTITY_FILE}, so it cannot be checked that they came from "
                "the same settings; use a new folder, or --restart to delete them and start over"
            )
    else:
        if stored.get("kind") != kind:
            raise RunIdentityError(
                f"{out} holds a {stored.get('kind')!r} run, not a {kind!r} run; use another folder"
            )
        diff = identity_diff(stored.get("identity", {}), new["identity"])
        if diff:
            lines = "; ".join(f"{k}: {a!r} in the folder, {b!r} now" for k, (a, b) in diff.items())
            raise RunIdentityError(
                f"{out} was made with other settings ({lines}). Resuming would mix two runs: use a new folder, or "
                "--restart to delete its results and start over"
            )
        return stored
    atomic_write_json(out / IDENTITY_FILE, new, indent=2, sort_keys=True)
    return new
