"""Compact recorded datasets: VQ codes in place of frames, everything else as recorded.

A *code file* (``<task>.codes.npz``, numpy's compressed archive, read with ``allow_pickle=False``) holds one
LIBERO-layout demo file's episodes with the camera frames replaced by their VQ codes. It is what the
repository commits: 64² frames cost 12 KB each, their 8×8 uint16 codes 128 bytes, and the frames come back
with the same VQ (:func:`unpack_codes`), bit for bit as the world model sees them.

Arrays (``N`` = steps over all episodes, ``E`` = episodes; episode ``i`` is rows ``offsets[i]:offsets[i+1]``)::

    codes          (N, h, w)  uint16    VQ codes of the view's frame observed before each action
    actions        (N, 7)     float64   as recorded
    states         (N, S)     float64   flattened MuJoCo state before each action (row 0: the start sim_state)
    robot_states   (N, 9)     float64
    ee_states      (N, 6)     float64
    gripper_states (N, 2)     float64
    joint_states   (N, 7)     float64
    rewards        (N,)       uint8     per-step success labels (0 ... 0 1 for a success, all 0 for a failure)
    offsets        (E + 1,)   int64
    meta           ()         str       JSON: file attributes, per-episode attributes (behaviour, init state,
                                        reset options, success), view, resolution, ``vq_sha256``, versions

``vq_sha256`` is the digest of the VQ weights that made the codes (:func:`vq_sha256`). :func:`unpack_codes`
writes a LIBERO HDF5 file again (frames decoded with that VQ, plus the codes under ``obs/<view>_codes``), so
every stage that reads demo files (training, judges, open-loop evaluation) runs from a code file; training
uses the stored codes directly when its VQ has the same digest (:func:`stored_codes`), so a model trained
from an unpacked file sees exactly the codes of the recorded frames.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wvla_gym.data.hdf5 import Episode, LiberoFile, atomic_write_hdf5, view_key, write_demo, write_file_attrs
from wvla_gym.utils.io import atomic_path

__all__ = ["CODES_ATTR", "CodeFile", "pack_codes", "stored_codes", "unpack_codes", "vq_sha256"]

FORMAT = "wvla-gym.codes/1"
#: ``data`` attribute of an unpacked HDF5 file: the digest of the VQ whose codes ``obs/<view>_codes`` hold.
CODES_ATTR = "vq_sha256"
_STEP_KEYS = ("actions", "states", "robot_states", "ee_states", "gripper_states", "joint_states", "rewards")
# Demo attributes that are derived again on writing (write_demo) or too large to keep per episode.
_DROP_DEMO_ATTRS = {"init_state", "num_samples", "model_file"}


def vq_sha256(vqgan: Any) -> str:
    """SHA-256 of a VQGAN's weights: which codes a code file holds (the ``vq_sha256`` of a checkpoint's config)."""
    from wvla_gym.model.loading import VQ_PREFIX, vq_state_digest

    return vq_state_digest({VQ_PREFIX + k: v for k, v in vqgan.state_dict().items()})


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _code_tokenizer(vqgan: Any) -> Any:
    from wvla_gym.model.image_tokenizer import ImageTokenizer
    from wvla_gym.model.token_layout import TokenLayout

    # Codes only: any layout with the VQ's code count does (ids are never produced here).
    return ImageTokenizer(vqgan, TokenLayout.compact(int(vqgan.config.num_embeddings)))


def pack_codes(source: str | os.PathLike, vqgan: Any, out: str | os.PathLike, *, view: str = "agentview",
               demos: Sequence[str] | None = None, progress: bool = False) -> Path:
    """Encode one LIBERO-layout demo file's ``view`` frames with ``vqgan`` and write a code file to ``out``.

    The frames are encoded at the VQ's resolution: a file recorded at another size is refused (re-render it
    with ``wvla-gym record --replay`` first) rather than silently resized.
    """
    source, out = Path(source), Path(out)
    tok = _code_tokenizer(vqgan)
    res = int(vqgan.config.resolution)
    digest = vq_sha256(vqgan)
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("codes", *_STEP_KEYS)}
    episodes: list[dict[str, Any]] = []
    offsets = [0]
    with LiberoFile(source) as lf:
        names = list(lf.demos if demos is None else demos)
        if not names:
            raise ValueError(f"source {source} has no demos; expected a LIBERO demo file with data/demo_i groups")
        it: Iterable[str] = names
        if progress:
            from tqdm import tqdm

            it = tqdm(names, desc=f"pack {source.name}", unit="ep")
        for name in it:
            codes = stored_codes(lf, name, view, digest)  # an unpacked file packs back to the same codes
            if codes is None:
                frames = lf.frames(name, view=view)
                if frames.shape[1:3] != (res, res):
                    raise ValueError(f"{source}:{name} has {frames.shape[1]}x{frames.shape[2]} frames; the VQ "
                                     f"encodes {res}x{res} (re-render with `wvla-gym record --replay --resolution {res}`)")
                codes = tok.encode_codes(frames)
            arrays["codes"].append(np.asarray(codes, dtype=np.uint16))
            g = lf.demo(name)
            n = int(g["actions"].shape[0])
            for k in _STEP_KEYS:
                src = g[k] if k in g else g["obs"][k]
                arrays[k].append(np.asarray(src[()]))
            offsets.append(offsets[-1] + n)
            attrs = {k: _jsonable(v) for k, v in g.attrs.items() if k not in _DROP_DEMO_ATTRS}
            episodes.append({"name": name, "attrs": attrs, "success": lf.success(name)})
        file_attrs = {k: _jsonable(v) for k, v in lf.attrs.items()}
        rotated = not lf.rotate
    from wvla_gym.utils.libero_setup import stack_versions

    meta = {
        "format": FORMAT, "source": source.name, "view": view, "resolution": res, "vq_sha256": digest,
        "instruction": file_attrs.get("language_instruction"), "images_rotated_180": rotated,
        "file_attrs": file_attrs, "episodes": episodes, "versions": stack_versions(),
    }
    # a kill never leaves a half-written code file under the final name
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:  # a file object: savez would append ".npz" to a name
        np.savez_compressed(
            fh, meta=np.array(json.dumps(meta, sort_keys=True)), offsets=np.asarray(offsets, dtype=np.int64),
            **{k: np.concatenate(v) for k, v in arrays.items()},
        )
    return out


class CodeFile:
    """Read a code file: ``meta``, ``episodes`` (names, attributes, success) and per-episode arrays."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"code file {self.path} does not exist; expected a .codes.npz written by pack_codes")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                self._arrays = {k: z[k] for k in z.files}
            self.meta: dict[str, Any] = json.loads(str(self._arrays.pop("meta")))
        except (ValueError, KeyError, OSError) as e:
            raise ValueError(f"{self.path} is not a readable code file ({e})") from e
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.path} has format {self.meta.get('format')!r}; expected {FORMAT!r}")
        self.offsets = self._arrays.pop("offsets")
        missing = [k for k in ("codes", *_STEP_KEYS) if k not in self._arrays]
        if missing:
            raise ValueError(f"{self.path} lacks arrays {missing}")
        n = int(self.offsets[-1])
        bad = [k for k, a in self._arrays.items() if len(a) != n]
        if bad or len(self.offsets) != len(self.meta["episodes"]) + 1:
            raise ValueError(f"{self.path}: arrays {bad or ['offsets']} disagree with the episode offsets")

    @property
    def episodes(self) -> list[dict[str, Any]]:
        return self.meta["episodes"]

    def __len__(self) -> int:
        return len(self.episodes)

    def _index(self, episode: int | str) -> int:
        if isinstance(episode, str):
            names = [e["name"] for e in self.episodes]
            if episode not in names:
                raise ValueError(f"episode={episode!r} is not in {self.path}; it has {names[:3]}...")
            return names.index(episode)
        if isinstance(episode, bool) or not isinstance(episode, (int, np.integer)) or not 0 <= episode < len(self):
            raise ValueError(f"episode={episode!r}; expected a name or an index in [0, {len(self)})")
        return int(episode)

    def array(self, key: str, episode: int | str) -> np.ndarray:
        """``key`` (``codes`` or a per-step key) of one episode."""
        if key not in self._arrays:
            raise ValueError(f"key={key!r}; expected one of {sorted(self._arrays)}")
        i = self._index(episode)
        return self._arrays[key][self.offsets[i] : self.offsets[i + 1]]

    def start_state(self, episode: int | str) -> np.ndarray:
        """The episode's start MuJoCo ``sim_state`` (``reset(options={"sim_state": ...})`` replays it)."""
        return self.array("states", episode)[0]


def unpack_codes(path: str | os.PathLike, vqgan: Any, out: str | os.PathLike) -> Path:
    """Write a code file back as a LIBERO-layout HDF5 demo file (``out``: a file, or a folder for the source name).

    Frames are the VQ's decoding of the codes (refused when ``vqgan`` is not the VQ that made them); the codes
    are kept under ``obs/<view>_codes`` and the digest in the ``data`` attribute ``vq_sha256``.
    """
    cf = CodeFile(path)
    digest = vq_sha256(vqgan)
    if digest != cf.meta["vq_sha256"]:
        raise ValueError(f"vqgan is not the VQ that made {cf.path} (weights digest {digest[:12]} != "
                         f"{cf.meta['vq_sha256'][:12]}); pass the VQ the codes came from")
    out = Path(out)
    if out.suffix != ".hdf5":
        out = out / cf.meta["source"]
    tok = _code_tokenizer(vqgan)
    key = view_key(cf.meta["view"])

    def fill(f: Any) -> None:
        data = f.create_group("data")
        for i, ep in enumerate(cf.episodes):
            codes = cf.array("codes", i)
            frames = tok.decode_codes(codes.astype(np.int64))
            if not cf.meta.get("images_rotated_180", True):
                frames = np.ascontiguousarray(frames[:, ::-1, ::-1])  # back to the raw camera orientation
            g = data.create_group(ep["name"])
            a = {k: cf.array(k, i) for k in _STEP_KEYS}
            write_demo(g, Episode(a["actions"], a["states"], a["robot_states"],
                                  frames if key == "agentview_rgb" else np.zeros((len(codes), 1, 1, 3), np.uint8),
                                  frames if key == "eye_in_hand_rgb" else None, a["ee_states"], a["gripper_states"],
                                  a["joint_states"], dict(ep["attrs"])), success=bool(ep["success"]))
            if key != "agentview_rgb":  # keep the layout's agentview key out of a wrist-only file
                del g["obs"]["agentview_rgb"]
            g["rewards"][...] = a["rewards"]  # the recorded labels, whatever write_demo derives
            g["obs"].create_dataset(f"{cf.meta['view']}_codes", data=codes)
        attrs: dict[str, Any] = dict(cf.meta["file_attrs"])
        attrs[CODES_ATTR] = digest
        write_file_attrs(data, attrs)

    atomic_write_hdf5(out, fill)
    return out


def stored_codes(lf: LiberoFile, demo: str, view: str, digest: str | None) -> np.ndarray | None:
    """The codes an unpacked file stores for ``demo``'s ``view`` when they come from the VQ with ``digest``."""
    if digest is None or str(lf.attrs.get(CODES_ATTR, "")) != digest:
        return None
    obs = lf.demo(demo)["obs"]
    name = f"{view}_codes"
    return None if name not in obs else np.asarray(obs[name][()], dtype=np.int64)

