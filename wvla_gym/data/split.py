"""WorldVLA's deterministic train / val_ind / val_ood split (docs/protocol.md §12).

* Tasks sorted by name; tasks with index ``>= ceil(0.9 * n_tasks)`` form ``val_ood`` (the last ~10 %).
* Within every other task, trajectories sorted lexicographically as strings (``demo_0, demo_1, demo_10, ...``,
  exactly how the reference sorts its ``trj_i`` folders); those with index ``>= ceil(0.9 * n)`` form ``val_ind``.
* Everything else is ``train``. (The released models trained on all three splits.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

SPLITS = ("train", "val_ind", "val_ood")


def _cut(n: int, frac: float) -> int:
    # Same float formula as the reference (ceil of 0.9 * n), so tie cases round the way it does.
    return int(math.ceil((1.0 - frac) * n))


def split_trajectories(
    tasks: Mapping[str, Iterable[str]], *, ood_frac: float = 0.1, ind_frac: float = 0.1
) -> dict[str, list[tuple[str, str]]]:
    """Split ``{task_name: [trajectory names]}`` into ``{"train"|"val_ind"|"val_ood": [(task, traj), ...]}``.

    The result depends only on the names (not on input order), so it is deterministic across runs/machines.
    """
    for name, frac in (("ood_frac", ood_frac), ("ind_frac", ind_frac)):
        if not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ValueError(f"{name}={frac!r}; expected a float in [0, 1)")
    if not isinstance(tasks, Mapping):
        raise ValueError(f"tasks must be a mapping task_name -> trajectory names; got {type(tasks).__name__}")
    names = sorted(tasks)
    ood_start = _cut(len(names), ood_frac)
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for i, task in enumerate(names):
        trajs = sorted(str(t) for t in tasks[task])
        if i >= ood_start:
            out["val_ood"].extend((task, t) for t in trajs)
            continue
        ind_start = _cut(len(trajs), ind_frac)
        for j, t in enumerate(trajs):
            out["val_ind" if j >= ind_start else "train"].append((task, t))
    return out


def split_files(paths: Iterable[str], **kwargs) -> dict[str, list[tuple[str, str]]]:
    """The split over LIBERO demo files: tasks are file names without ``_demo.hdf5``, trajectories ``demo_i``.

    Returns ``{split: [(file path, demo name), ...]}``.
    """
    from pathlib import Path

    from wvla_gym.data.hdf5 import LiberoFile

    by_task: dict[str, list[str]] = {}
    path_of: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        task = p.name.removesuffix(".hdf5").removesuffix("_demo")
        if task in path_of:
            raise ValueError(f"paths holds two files for task {task!r}: {path_of[task]} and {p}")
        with LiberoFile(p) as f:
            by_task[task] = list(f.demos)
        path_of[task] = str(p)
    parts = split_trajectories(by_task, **kwargs)
    return {s: [(path_of[t], d) for t, d in items] for s, items in parts.items()}
