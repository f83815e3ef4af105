"""Window datasets over LIBERO-layout demo files (ours or the official LIBERO / WorldVLA-regenerated ones).

* :class:`ActionWindowDataset` — WorldVLA's action-model samples: at step ``t`` the frames ``[t-M+1 .. t]``
  (fewer at the start of an episode: ``t = 0`` gives one frame) and the action chunk ``[t .. t+K-1]``;
  steps with fewer than ``K`` actions left are dropped.
* :class:`WorldModelWindowDataset` — world-model samples ``(frame_t, action_t, frame_{t+1})``.

Frames always come out in the env's orientation (rotated 180° from the raw camera): files we recorded say so
with ``data.attrs["images_rotated_180"]``; files without it (official LIBERO) are rotated on read. All reading
goes through :class:`wvla_gym.data.hdf5.LiberoFile`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wvla_gym.data.hdf5 import VIEWS, LiberoFile

__all__ = ["VIEWS", "ActionWindow", "ActionWindowDataset", "DemoIndex", "Source", "WorldModelWindowDataset",
           "WorldWindow", "iter_windows"]

Source = str | os.PathLike | tuple[str | os.PathLike, str]


@dataclass
class ActionWindow:
    frames: np.ndarray  # (m, H, W, 3) uint8, m = min(M, t + 1), oldest first
    actions: np.ndarray  # (K, 7) float32
    instruction: str
    file: str
    demo: str
    t: int


@dataclass
class WorldWindow:
    frame: np.ndarray  # (H, W, 3) uint8 at step t
    action: np.ndarray  # (7,) float32
    next_frame: np.ndarray  # (H, W, 3) uint8 at step t + 1
    instruction: str
    file: str
    demo: str
    t: int


def _expand_sources(sources: Source | Iterable[Source]) -> list[tuple[str, str | None]]:
    """Files, folders (every ``*.hdf5`` inside) or ``(file, demo)`` pairs -> ``[(file, demo or None)]``."""
    if isinstance(sources, (str, os.PathLike)) or (isinstance(sources, tuple) and len(sources) == 2 and isinstance(sources[1], str)):
        sources = [sources]  # type: ignore[list-item]
    out: list[tuple[str, str | None]] = []
    for s in sources:  # type: ignore[union-attr]
        if isinstance(s, tuple):
            out.append((str(s[0]), s[1]))
            continue
        p = Path(s)
        if p.is_dir():
            out.extend((str(f), None) for f in sorted(p.glob("*.hdf5")))
        elif p.exists():
            out.append((str(p), None))
        else:
            raise ValueError(f"source {str(p)!r} does not exist; expected a .hdf5 file, a folder of them or (file, demo)")
    if not out:
        raise ValueError("sources is empty; expected LIBERO demo .hdf5 files, folders of them or (file, demo) pairs")
    return out


class DemoIndex:
    """The demos of many files (one lazily opened :class:`LiberoFile` each) and their lengths.

    ``demos`` is ``[(file, demo, T)]`` in a stable order; ``instructions[file]`` and ``rotate[file]`` (whether
    that file's frames are rotated on read) come from the files. ``rotate=None`` decides per file from its
    ``images_rotated_180`` attribute; True/False forces the rotation.
    """

    def __init__(self, sources: Source | Iterable[Source], view: str = "agentview", rotate: bool | None = None):
        if view not in VIEWS:
            raise ValueError(f"view={view!r}; expected one of {sorted(VIEWS)}")
        self.view = view
        self.view_key = VIEWS[view]
        self.rotate_override = rotate
        self.demos: list[tuple[str, str, int]] = []  # (file, demo, T)
        self.instructions: dict[str, str] = {}
        self.rotate: dict[str, bool] = {}
        self._files: dict[str, LiberoFile] = {}
        for path, demo in _expand_sources(sources):
            with LiberoFile(path, rotate=rotate) as lf:
                self.instructions[path] = lf.instruction
                self.rotate[path] = lf.rotate
                for n in lf.demos if demo is None else [demo]:
                    self.demos.append((path, n, lf.num_steps(n)))

    def file(self, path: str) -> LiberoFile:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = LiberoFile(path, rotate=self.rotate[path])
        return f

    def frames(self, path: str, demo: str, lo: int, hi: int) -> np.ndarray:
        return self.file(path).frames(demo, lo, hi, view=self.view)

    def actions(self, path: str, demo: str, lo: int, hi: int) -> np.ndarray:
        return self.file(path).actions(demo, lo, hi)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self):
        # h5py handles cannot cross process boundaries (DataLoader workers): reopen lazily there.
        d = dict(self.__dict__)
        d["_files"] = {}
        return d


class ActionWindowDataset(Sequence[ActionWindow]):
    """WorldVLA action-model windows: M frames of history and a K-action chunk.

    Args:
        sources: demo files, folders of them, or ``(file, demo)`` pairs (e.g. one split from :mod:`.split`).
        history: M, frames per window (2 in WorldVLA).
        chunk: K, actions per window (5 for spatial/object/goal, 10 for libero_10).
        view: ``"agentview"`` or ``"wrist"``.
        rotate: None = automatic (see module doc); True/False forces a 180° rotation on read.
    """

    def __init__(self, sources: Source | Iterable[Source], *, history: int = 2, chunk: int = 5,
                 view: str = "agentview", rotate: bool | None = None) -> None:
        for name, v in (("history", history), ("chunk", chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}; expected an int >= 1")
        self.history, self.chunk = history, chunk
        self.index = DemoIndex(sources, view, rotate)
        self._items = [(d, t) for d, (_, _, n) in enumerate(self.index.demos) for t in range(0, n - chunk + 1)]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> ActionWindow:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        d, t = self._items[i]
        path, demo, _ = self.index.demos[d]
        lo = max(0, t - self.history + 1)
        return ActionWindow(self.index.frames(path, demo, lo, t + 1), self.index.actions(path, demo, t, t + self.chunk),
                            self.index.instructions[path], path, demo, t)

    def __iter__(self) -> Iterator[ActionWindow]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        self.index.close()


class WorldModelWindowDataset(Sequence[WorldWindow]):
    """World-model windows ``(frame_t, action_t, frame_{t+1})`` for every t < T - 1 of every demo."""

    def __init__(self, sources: Source | Iterable[Source], *, view: str = "agentview", rotate: bool | None = None) -> None:
        self.index = DemoIndex(sources, view, rotate)
        self._items = [(d, t) for d, (_, _, n) in enumerate(self.index.demos) for t in range(n - 1)]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> WorldWindow:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        d, t = self._items[i]
        path, demo, _ = self.index.demos[d]
        frames = self.index.frames(path, demo, t, t + 2)
        return WorldWindow(frames[0], self.index.actions(path, demo, t, t + 1)[0], frames[1],
                           self.index.instructions[path], path, demo, t)

    def __iter__(self) -> Iterator[WorldWindow]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        self.index.close()


def iter_windows(sources: Source | Iterable[Source], *, history: int = 2, chunk: int = 5, view: str = "agentview",
                 rotate: bool | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    """Yield ``(frames, actions, instruction)`` action-model windows (see :class:`ActionWindowDataset`)."""
    ds = ActionWindowDataset(sources, history=history, chunk=chunk, view=view, rotate=rotate)
    try:
        for w in ds:
            yield w.frames, w.actions, w.instruction
    finally:
        ds.close()
