"""Crash-safe episode results (JSONL) and the summary JSON.

Layout of one run directory::

    <out>/episodes.jsonl   one JSON object per finished episode, appended + flushed + fsync'ed
    <out>/summary.json     per-task / per-suite success with Wilson 95 % intervals, knobs and versions
    <out>/videos/          optional per-episode mp4s

Durability: each record is written as one ``write`` of a full line followed by ``fsync``, so a SIGKILL can
at worst leave one torn (unterminated) last line. Readers skip it and the writer truncates it before
appending, so a rerun never glues a new record onto half an old one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wvla_gym.evaluation.metrics import wilson_interval

logger = logging.getLogger(__name__)

EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"

#: Fields of every episode record, in order (extra fields may follow).
RECORD_FIELDS = (
    "policy",
    "env",
    "suite",
    "task_id",
    "init_state_id",
    "seed",
    "success",
    "steps",
    "wall_time_s",
    "error",
    "traceback",
    "task_description",
)

EpisodeKey = tuple[str, str, str, int, int, int]


def episode_key(record: dict[str, Any]) -> EpisodeKey:
    """Identity of an episode: (policy, env kind, suite, task, init state, seed)."""
    return (
        str(record["policy"]),
        str(record["env"]),
        str(record["suite"]),
        int(record["task_id"]),
        int(record["init_state_id"]),
        int(record["seed"]),
    )


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a JSONL file, in file order; a torn or corrupt line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            # Only the final line can be torn by a kill; anything else means the file was edited by hand.
            where = "torn last line" if i == len(lines) - 1 else f"corrupt line {i + 1}"
            logger.warning("%s: skipping %s", path, where)
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def latest_records(records: Iterable[dict[str, Any]]) -> dict[EpisodeKey, dict[str, Any]]:
    """One record per episode key: the last successful run (no error) wins over errors; else the last error."""
    best: dict[EpisodeKey, dict[str, Any]] = {}
    for rec in records:
        key = episode_key(rec)
        prev = best.get(key)
        if prev is None or rec.get("error") is None or prev.get("error") is not None:
            best[key] = rec
    return best


class ResultsWriter:
    """Append-only JSONL writer that survives SIGKILL (see module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # Writers in several processes share the file (evaluations split over processes): an exclusive lock
        # around the repair and each append keeps a repair from cutting another writer's line in half.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._repair_tail()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # 0 when the only line is torn
            logger.warning("%s: truncating a torn last line (%d bytes)", self.path, len(data) - keep)
            with self.path.open("r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())

    def write(self, record: dict[str, Any]) -> None:
        line = dumps_record(record).encode()
        # One write() of the whole line under the lock: O_APPEND + flock keep concurrent writers apart.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            os.write(self._fd, line)
            os.fsync(self._fd)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dumps_record(record: dict[str, Any]) -> str:
    """One JSONL line (with its newline) for a record."""
    return json.dumps(record, sort_keys=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _rate_block(recs: list[dict[str, Any]]) -> dict[str, Any]:
    valid = [r for r in recs if r.get("error") is None]
    n = len(valid)
    k = sum(bool(r["success"]) for r in valid)
    lo, hi = wilson_interval(k, n)
    return {
        "n": n,
        "successes": k,
        "errors": len(recs) - n,
        "success_rate": (k / n) if n else None,
        "ci95": [lo, hi] if n else None,
        "mean_steps": (sum(int(r["steps"]) for r in valid) / n) if n else None,
    }


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per (policy, env kind): per-suite and per-task success rates with Wilson 95 % intervals.

    Errors are excluded from n and the rates, and counted separately (``errors``) together with the list of
    failing episodes, so a crash never reads as a policy failure.
    """
    latest = list(latest_records(records).values())
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in latest:
        groups.setdefault((str(r["policy"]), str(r["env"])), []).append(r)
    out: dict[str, Any] = {}
    for (policy, kind), recs in sorted(groups.items()):
        suites: dict[str, Any] = {}
        for suite in sorted({r["suite"] for r in recs}):
            srecs = [r for r in recs if r["suite"] == suite]
            tasks = {}
            for t in sorted({int(r["task_id"]) for r in srecs}):
                trecs = [r for r in srecs if int(r["task_id"]) == t]
                block = _rate_block(trecs)
                block["task_description"] = trecs[0].get("task_description")
                tasks[str(t)] = block
            suites[suite] = {**_rate_block(srecs), "tasks": tasks}
        out.setdefault(policy, {})[kind] = {
            "overall": _rate_block(recs),
            "suites": suites,
            "error_episodes": [
                {"suite": r["suite"], "task_id": r["task_id"], "init_state_id": r["init_state_id"], "error": r["error"]}
                for r in recs
                if r.get("error") is not None
            ],
        }
    return out


def write_summary(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Write JSON atomically (unique temp file + rename) so a kill never leaves a half summary."""
    from wvla_gym.utils.io import atomic_write_json

    atomic_write_json(path, summary, indent=2, default=_json_default)
