"""A nearest-neighbour policy on VQ codes: look up the closest recorded frame, replay what the demo did next.

The index maps every recorded step's frame codes (step ``t``, optionally ``t-1`` too) to the demo's action
chunk ``[t .. t+K-1]`` (padded with the episode's last action). At act time the observation's image is encoded
with the same VQ, the ``k`` nearest keys by Hamming distance over codes are found (ties go to the lowest row,
so the choice never depends on the platform's sort) and the chunk is executed open-loop for ``K`` steps from a
queue (:class:`agents.base.ChunkQueuePolicy`), as WorldVLA's agent does.

With ``k > 1`` the policy returns the mean of the ``k`` chunks, or, with ``temperature > 0``, one of them drawn
with probability ``exp(-d / temperature)``; ``noise`` adds Gaussian noise. Both draws come from a generator
reseeded by ``reset(seed=...)``.

An index is a small folder (``index.npz`` + ``config.json``; no pickles) written by
``wvla-gym train knn --data <code files or HDF5> --out PATH``: the VQ is named there (``vq``: a checkpoint
folder, or ``null`` for the embedded default) with its weights' digest, and loading with another VQ is refused.
Evaluate with ``wvla-gym eval --policy knn:PATH``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import ChunkQueuePolicy
from wvla_gym.protocol import ACTION_DIM
from wvla_gym.utils.io import atomic_path, atomic_write_json, read_json
from wvla_gym.utils.validation import check_float, check_int, fail

__all__ = ["KNNFactory", "KNNIndex", "KNNPolicy", "build_index", "load_vq_tokenizer"]

FORMAT = "wvla-gym.knn/1"
INDEX_NAME = "index.npz"
CONFIG_NAME = "config.json"


def load_vq_tokenizer(vq: str | os.PathLike | None) -> Any:
    """The image tokenizer of checkpoint ``vq`` (``None``: the embedded default), from the runtime cache, so a
    WorldVLA policy or imagined env on the same checkpoint shares its weights."""
    from wvla_gym.runtime_cache import load_runtime

    return load_runtime(None if vq is None else os.fspath(vq)).image_tokenizer


def _vq_digest(tokenizer: Any) -> str:
    from wvla_gym.data.codes import vq_sha256

    return vq_sha256(tokenizer.vqgan)


def _expand_sources(data: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; folders -> their ``*.codes.npz`` and ``*.hdf5`` files, sorted."""
    out: list[Path] = []
    for d in data:
        p = Path(d)
        if p.is_dir():
            out.extend(sorted([*p.glob("*.codes.npz"), *p.glob("*.hdf5")]))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"--data {p} does not exist; expected code files (.codes.npz), HDF5 demo files "
                                    "or folders of them")
    if not out:
        raise ValueError("--data holds no .codes.npz or .hdf5 files")
    return out


def _episodes(sources: Sequence[Path], tokenizer: Any, resolution: int,
              digest: str) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, codes (T, h, w), actions (T, 7))`` per episode, in file / demo order."""
    for src in sources:
        if src.name.endswith(".npz"):
            from wvla_gym.data.codes import CodeFile

            cf = CodeFile(src)
            if cf.meta["vq_sha256"] != digest:
                raise ValueError(f"{src} holds codes of another VQ (digest {cf.meta['vq_sha256'][:12]} != "
                                 f"{digest[:12]}); pass --vq with the checkpoint whose VQ made them")
            for i, ep in enumerate(cf.episodes):
                yield f"{src.name}:{ep['name']}", cf.array("codes", i), cf.array("actions", i)
            continue
        from wvla_gym.data.codes import stored_codes
        from wvla_gym.data.hdf5 import LiberoFile

        with LiberoFile(src) as lf:
            for name in lf.demos:
                codes = stored_codes(lf, name, "agentview", digest)  # an unpacked code file: the exact codes
                if codes is None:
                    frames = lf.frames(name)
                    if frames.shape[1:3] != (resolution, resolution):
                        raise ValueError(f"{src}:{name} has {frames.shape[1]}x{frames.shape[2]} frames; the VQ "
                                         f"encodes {resolution}x{resolution}")
                    codes = tokenizer.encode_codes(frames).numpy()
                yield f"{src.name}:{name}", np.asarray(codes), lf.actions(name, dtype=np.float64)


@dataclass
class KNNIndex:
    """Keys ``(N, D)`` uint16 (``history`` frames of codes, newest first), chunks ``(N, K, 7)`` float32 and the
    config (``chunk``, ``history``, ``k``, ``temperature``, ``noise``, ``vq``, ``vq_sha256``, ``resolution``,
    ``code_shape``, ``episodes``)."""

    keys: np.ndarray
    chunks: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    config: dict[str, Any]

    @property
    def chunk(self) -> int:
        return int(self.chunks.shape[1])

    @property
    def history(self) -> int:
        return int(self.config["history"])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def nearest(self, key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and Hamming distances of the ``k`` nearest keys; ties go to the lower row (a stable sort)."""
        d = np.count_nonzero(self.keys != np.asarray(key, dtype=self.keys.dtype)[None], axis=1)
        rows = np.argsort(d, kind="stable")[:k]
        return rows, d[rows]

    def save(self, out: str | os.PathLike) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / INDEX_NAME) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, keys=self.keys, chunks=self.chunks, episode=self.episode, step=self.step)
        atomic_write_json(out / CONFIG_NAME, self.config, indent=2, sort_keys=True)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> KNNIndex:
        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / INDEX_NAME).is_file():
            raise FileNotFoundError(f"knn index {path} has no {CONFIG_NAME} + {INDEX_NAME}; expected a folder "
                                    "written by `wvla-gym train knn`")
        config = read_json(path / CONFIG_NAME)
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{path / CONFIG_NAME} is not a knn index config (format != {FORMAT!r})")
        try:
            with np.load(path / INDEX_NAME, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("keys", "chunks", "episode", "step")}
        except (ValueError, KeyError, OSError) as e:
            raise ValueError(f"{path / INDEX_NAME} is not a readable knn index ({e})") from e
        n = len(arrays["keys"])
        if (arrays["chunks"].ndim != 3 or arrays["chunks"].shape[2] != ACTION_DIM
                or any(len(a) != n for a in arrays.values()) or n == 0):
            raise ValueError(f"{path / INDEX_NAME}: arrays disagree in length or shape "
                             f"{ {k: v.shape for k, v in arrays.items()} }")
        return cls(config=config, **arrays)


def build_index(data: Iterable[str | os.PathLike], *, vq: str | None = None, chunk: int = 8, history: int = 1,
                max_episodes: int | None = None, k: int = 1, temperature: float = 0.0, noise: float = 0.0,
                tokenizer: Any = None) -> KNNIndex:
    """Index the episodes of code files / HDF5 demo files (the first ``max_episodes`` in file / demo order).

    ``tokenizer`` (the image tokenizer of ``vq``) is loaded from ``vq`` when not given.
    """
    chunk = check_int("chunk", chunk, lo=1)
    history = check_int("history", history, lo=1, hi=2)
    max_episodes = check_int("max_episodes", max_episodes, lo=1, optional=True)
    k = check_int("k", k, lo=1)
    temperature = check_float("temperature", temperature, lo=0)
    noise = check_float("noise", noise, lo=0)
    tok = tokenizer if tokenizer is not None else load_vq_tokenizer(vq)
    res = int(tok.vqgan.config.resolution)
    digest = _vq_digest(tok)
    keys, chunks, episode, step, names = [], [], [], [], []
    for name, codes, actions in _episodes(_expand_sources(data), tok, res, digest):
        if max_episodes is not None and len(names) >= max_episodes:
            break
        t_len = len(actions)
        if t_len == 0 or len(codes) != t_len:
            raise ValueError(f"{name}: {len(codes)} frames for {t_len} actions; expected one frame per action")
        flat = np.asarray(codes, dtype=np.uint16).reshape(t_len, -1)
        prev = np.concatenate([flat[:1], flat[:-1]])  # the first step has no past: it repeats itself
        keys.append(flat if history == 1 else np.concatenate([flat, prev], axis=1))
        # Chunk rows t..t+K-1, the last action repeated past the end (the demo's final command holds).
        idx = np.minimum(np.arange(t_len)[:, None] + np.arange(chunk)[None], t_len - 1)
        chunks.append(np.clip(np.asarray(actions, np.float32)[idx], -1.0, 1.0))
        episode.append(np.full(t_len, len(names), np.int32))
        step.append(np.arange(t_len, dtype=np.int32))
        names.append(name)
    if not names:
        raise ValueError("--data holds no episodes")
    if k > sum(len(s) for s in step):
        raise fail("k", k, f"an int <= the index's {sum(len(s) for s in step)} rows")
    code_shape = list(np.asarray(codes).shape[1:])
    config = {"format": FORMAT, "chunk": chunk, "history": history, "k": k, "temperature": temperature,
              "noise": noise, "vq": vq, "vq_sha256": digest, "resolution": res, "code_shape": code_shape,
              "episodes": names, "max_episodes": max_episodes}
    return KNNIndex(np.concatenate(keys), np.concatenate(chunks), np.concatenate(episode), np.concatenate(step),
                    config)


class KNNPolicy(ChunkQueuePolicy):
    """One episode's kNN policy on a shared index and VQ (see the module docstring)."""

    def __init__(self, index: KNNIndex, tokenizer: Any, *, k: int | None = None, temperature: float | None = None,
                 noise: float | None = None, seed: int = 0) -> None:
        super().__init__()
        self.index, self.tokenizer = index, tokenizer
        cfg = index.config
        self.k = check_int("k", cfg["k"] if k is None else k, lo=1, hi=len(index))
        self.temperature = check_float("temperature", cfg["temperature"] if temperature is None else temperature, lo=0)
        self.noise = check_float("noise", cfg["noise"] if noise is None else noise, lo=0)
        self.resolution = int(cfg["resolution"])
        self._seed = check_int("seed", seed)
        self._rng = np.random.default_rng(self._seed)
        self._frames: list[np.ndarray] = []  # the last ``history`` images, newest last

    def knobs(self) -> dict[str, Any]:
        return {"k": self.k, "K": self.index.chunk, "history": self.index.history, "temperature": self.temperature,
                "noise": self.noise, "rows": len(self.index), "episodes": len(self.index.config["episodes"])}

    def on_reset(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(self._seed if seed is None else seed)
        self._frames = []

    def observe(self, obs: dict[str, Any]) -> None:
        img = np.asarray(obs["image"]) if isinstance(obs, dict) and "image" in obs else None
        want = (self.resolution, self.resolution, 3)
        if img is None or img.dtype != np.uint8 or img.shape != want:
            got = "missing" if img is None else f"{img.dtype} {img.shape}"
            raise ValueError(f"obs['image'] is {got}; the knn index's VQ expects uint8 {want} (evaluate at "
                             f"--resolution {self.resolution})")
        # Only the frames a query can use are kept; encoding waits for the query (queued steps cost nothing).
        self._frames = [*self._frames, img][-self.index.history:]

    def _key(self) -> np.ndarray:
        frames = self._frames[::-1]  # newest first, as the index keys
        frames += [frames[-1]] * (self.index.history - len(frames))  # episode start: the frame repeats itself
        codes = self.tokenizer.encode_codes(np.stack(frames)).numpy()
        return codes.reshape(-1).astype(np.uint16)

    def predict_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        rows, dist = self.index.nearest(self._key(), self.k)
        chunks = self.index.chunks[rows]
        if self.temperature > 0 and len(rows) > 1:
            logits = -(dist - dist.min()) / self.temperature
            p = np.exp(logits) / np.exp(logits).sum()
            chunk = chunks[int(self._rng.choice(len(rows), p=p))]
        else:
            chunk = chunks.mean(axis=0)
        if self.noise > 0:
            chunk = chunk + self._rng.normal(0.0, self.noise, chunk.shape)
        return np.clip(chunk, -1.0, 1.0).astype(np.float32)


class KNNFactory:
    """``factory(env)`` -> a fresh :class:`KNNPolicy` on the shared index and VQ of folder ``path``.

    Options override the index's defaults (``k``, ``temperature``, ``noise``) or its VQ (``vq``: a checkpoint
    folder whose VQ has the recorded digest, e.g. after moving it). Pickles without the loaded arrays (Ray
    actors and vector workers load their own copy once).
    """

    def __init__(self, path: str | os.PathLike, **options: Any) -> None:
        unknown = set(options) - {"k", "temperature", "noise", "vq", "seed"}
        if unknown:
            raise ValueError(f"knn options {sorted(unknown)}; expected some of k, temperature, noise, vq, seed")
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise fail("path", path, "a knn index folder written by `wvla-gym train knn`")
        self.path = os.fspath(path)
        if not Path(self.path).is_dir():
            raise FileNotFoundError(f"knn index folder {self.path} does not exist; expected a folder written by "
                                    "`wvla-gym train knn`")
        self.options = options
        self._loaded: tuple[KNNIndex, Any] | None = None

    def load(self) -> tuple[KNNIndex, Any]:
        if self._loaded is None:
            index = KNNIndex.load(self.path)
            vq = self.options.get("vq", index.config["vq"])
            tok = load_vq_tokenizer(vq)
            digest = _vq_digest(tok)
            if digest != index.config["vq_sha256"]:
                raise ValueError(f"vq={vq!r} is not the VQ of knn index {self.path} (weights digest {digest[:12]} "
                                 f"!= {index.config['vq_sha256'][:12]}); pass vq= with the checkpoint that built it")
            self._loaded = (index, tok)
        return self._loaded

    def digest(self) -> str:
        """Content hash of the index: an evaluation's run identity tells a rebuilt folder apart."""
        from wvla_gym.utils.run_identity import path_digest

        return path_digest(Path(self.path) / INDEX_NAME)

    def __call__(self, env: Any = None) -> KNNPolicy:
        index, tok = self.load()
        kw = {k: v for k, v in self.options.items() if k != "vq"}
        return KNNPolicy(index, tok, **kw)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}


def index_summary(index: KNNIndex) -> dict[str, Any]:
    """What ``wvla-gym train knn`` prints."""
    return {"rows": len(index), "episodes": len(index.config["episodes"]), "chunk": index.chunk,
            "history": index.history, "k": index.config["k"], "resolution": index.config["resolution"]}

