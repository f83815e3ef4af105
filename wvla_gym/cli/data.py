"""``wvla-gym data``: compact datasets of VQ codes (what the repository commits) and back.

    wvla-gym data pack   --data runs/t0_wm --out datasets/libero_object_t0/wm            # HDF5 -> .codes.npz
    wvla-gym data unpack --data datasets/libero_object_t0/wm --out data/t0_wm            # .codes.npz -> HDF5
    wvla-gym data info   datasets/libero_object_t0/wm/*.codes.npz                       # episodes, behaviours

The VQ is the embedded default's unless ``--vq`` (a VQ folder of ``wvla-gym train vq``) or ``--checkpoint`` (a
WorldVLA checkpoint, whose VQ is used) is given; unpacking refuses a VQ other than the one that made the codes.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro


@dataclass
class _VQChoice:
    vq: Path | None = None
    """A VQ folder (vq_config.json + vqgan.safetensors, as `wvla-gym train vq` writes); default: see --checkpoint."""
    checkpoint: str | None = None
    """A WorldVLA checkpoint whose VQ to use; default (neither given): the embedded default model's VQ."""

    def load(self):
        if self.vq is not None and self.checkpoint is not None:
            raise ValueError("give --vq or --checkpoint, not both")
        if self.vq is not None:
            from wvla_gym.training.vq import load_vq

            return load_vq(self.vq)
        from wvla_gym.runtime import WorldVLARuntime

        return WorldVLARuntime.from_pretrained(self.checkpoint).image_tokenizer.vqgan


@dataclass
class PackArgs(_VQChoice):
    """Encode LIBERO demo files (each *_demo.hdf5 of the given folders) into code files in --out."""

    data: tuple[Path, ...] = ()
    out: Path = Path("datasets")
    view: str = "agentview"


@dataclass
class UnpackArgs(_VQChoice):
    """Decode code files (or every *.codes.npz of the given folders) into LIBERO demo files in --out."""

    data: tuple[Path, ...] = ()
    out: Path = Path("data")


@dataclass
class InfoArgs:
    """Summarise code files: episodes, steps, successes per behaviour, VQ digest."""

    files: tuple[Path, ...] = ()


def _expand(paths: tuple[Path, ...], pattern: str, arg: str) -> list[Path]:
    if not paths:
        raise ValueError(f"--{arg} is empty; expected files or folders")
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob(pattern))
            if not found:
                raise ValueError(f"--{arg} folder {p} has no {pattern} files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"--{arg} {p} does not exist; expected a file or a folder of {pattern} files")
    return out


def info(path: Path) -> dict:
    from wvla_gym.data.codes import CodeFile

    cf = CodeFile(path)
    by: Counter = Counter()
    ok: Counter = Counter()
    for e in cf.episodes:
        b = str(e["attrs"].get("behaviour_name", e["attrs"].get("behaviour", "?")))
        by[b] += 1
        ok[b] += int(bool(e["success"]))
    return {"file": str(path), "instruction": cf.meta.get("instruction"), "episodes": len(cf),
            "steps": int(cf.offsets[-1]), "successes": sum(ok.values()),
            "by_behaviour": {b: {"episodes": n, "successes": ok[b]} for b, n in sorted(by.items())},
            "vq_sha256": cf.meta["vq_sha256"][:16]}


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(
        Annotated[PackArgs, tyro.conf.subcommand("pack")]
        | Annotated[UnpackArgs, tyro.conf.subcommand("unpack")]
        | Annotated[InfoArgs, tyro.conf.subcommand("info")],
        args=argv, prog="wvla-gym data",
    )
    try:
        if isinstance(args, InfoArgs):
            for f in _expand(args.files, "*.codes.npz", "files"):
                print(json.dumps(info(f)))
            return 0
        from wvla_gym.data.codes import pack_codes, unpack_codes

        if isinstance(args, PackArgs):
            files = _expand(args.data, "*_demo.hdf5", "data")
            vq = args.load()
            for f in files:
                out = pack_codes(f, vq, args.out / (f.name[: -len(".hdf5")] + ".codes.npz"), view=args.view,
                                 progress=True)
                print(json.dumps(info(out)))
        else:
            files = _expand(args.data, "*.codes.npz", "data")
            vq = args.load()
            for f in files:
                print(json.dumps({"written": str(unpack_codes(f, vq, args.out))}))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
