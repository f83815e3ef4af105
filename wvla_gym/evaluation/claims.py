"""Atomic per-episode claims, so evaluations sharing one ``--out`` never run an episode twice.

Before a backend starts an episode it takes the job from a :class:`JobQueue`, which creates
``<out>/claims/<key>.json`` with ``O_CREAT | O_EXCL`` (atomic on a local file system). A job whose claim is
held by a live process is skipped; a claim left by a dead process (a SIGKILLed run) is taken over unless a
finished record of the episode already exists. Several processes can therefore split one evaluation by
simply running the same command into the same folder (the agreement study does this), and a rerun after a
kill redoes exactly the episodes that had no finished record.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from wvla_gym.evaluation.config import EpisodeJob

CLAIMS_DIR = "claims"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class JobQueue:
    """Pending jobs handed out one at a time, each claimed atomically in ``<out>/claims``."""

    def __init__(self, out: str | os.PathLike, policy_name: str, jobs: Iterable[EpisodeJob],
                 is_finished: Callable[[EpisodeJob], bool]) -> None:
        self.dir = Path(out) / CLAIMS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.policy_name = policy_name
        self._jobs = list(jobs)
        self._is_finished = is_finished
        self._me = {"pid": os.getpid(), "host": socket.gethostname()}
        #: Jobs skipped because another live process holds them.
        self.skipped: list[EpisodeJob] = []

    def __len__(self) -> int:
        return len(self._jobs)

    def __bool__(self) -> bool:
        return bool(self._jobs)

    def path(self, job: EpisodeJob) -> Path:
        key = json.dumps([self.policy_name, job.kind, job.suite, job.task_id, job.init_state_id, job.seed])
        return self.dir / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".json")

    def _try_claim(self, job: EpisodeJob) -> bool:
        p = self.path(job)
        payload = json.dumps({**self._me, "policy": self.policy_name, "time": time.time(), "job": [job.kind, job.task_id, job.init_state_id]})
        for _ in range(2):
            # Write the payload to a private file, then hard-link it into place: the claim appears atomically
            # WITH its content (a bare O_EXCL create is briefly empty, and an empty claim reads as stale).
            tmp = self.dir / f".{p.name}.{self._me['pid']}.tmp"
            tmp.write_text(payload)
            try:
                os.link(tmp, p)
            except FileExistsError:
                try:
                    held = json.loads(p.read_text())
                except (OSError, json.JSONDecodeError):
                    held = {}  # torn by a kill mid-write: treat as stale
                pid = int(held.get("pid", -1))
                if held.get("host") == self._me["host"] and pid == self._me["pid"]:
                    return True  # our own claim (a retried error episode)
                if held.get("host") == self._me["host"] and pid > 0 and _alive(pid):
                    return False
                if held.get("host") not in (None, self._me["host"]):
                    return False  # another machine's process: its liveness cannot be checked here
                if self._is_finished(job):
                    return False
                p.unlink(missing_ok=True)  # stale: its process died before finishing the episode
                continue
            finally:
                tmp.unlink(missing_ok=True)
            return True
        return False

    def pop(self) -> EpisodeJob | None:
        """The next job this process now owns, or ``None`` when none is left."""
        while self._jobs:
            job = self._jobs.pop(0)
            if self._try_claim(job):
                return job
            self.skipped.append(job)
        return None

    def pop_task(self, task_id: int) -> EpisodeJob | None:
        """Like :meth:`pop`, restricted to one task (the batched backend hosts one task per vector env)."""
        i = 0
        while i < len(self._jobs):
            job = self._jobs[i]
            if job.task_id != task_id:
                i += 1
                continue
            self._jobs.pop(i)
            if self._try_claim(job):
                return job
            self.skipped.append(job)
        return None

    def task_ids(self) -> list[int]:
        seen: dict[int, None] = {}
        for j in self._jobs:
            seen.setdefault(j.task_id, None)
        return list(seen)

    def count_task(self, task_id: int) -> int:
        return sum(j.task_id == task_id for j in self._jobs)

    def release(self, job: EpisodeJob) -> None:
        """Drop our claim (an episode that ended in an error, so another run may retry it)."""
        p = self.path(job)
        try:
            held = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if held.get("pid") == self._me["pid"] and held.get("host") == self._me["host"]:
            p.unlink(missing_ok=True)
