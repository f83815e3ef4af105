"""``wvla-gym wm-eval``: open-loop world-model quality (PSNR/SSIM per horizon) on recorded episodes.

Example::

    wvla-gym wm-eval --checkpoint ckpt/ --data demos/libero_object_task0.hdf5 --horizon 10 --out wm_eval.json

LPIPS and FVD are added when local weights are given (nothing is downloaded)::

    wvla-gym wm-eval --data demos/libero_object_task0.hdf5 \\
        --lpips-weights vgg16-397923af.pth --lpips-linear vgg.pth --fvd-weights i3d_torchscript.pt

* LPIPS (per horizon) needs both ``--lpips-weights`` (torchvision VGG16 weights: the full ``vgg16`` state_dict
  with ``features.N.*`` keys, or a ``vgg16().features`` state_dict with ``N.*`` keys) and ``--lpips-linear``
  (the lpips package's ``vgg.pth``: ``lin0.model.1.weight`` ... ``lin4.model.1.weight``).
* FVD (over every clip of the full ``--horizon`` frames) needs ``--fvd-weights`` (StyleGAN-V's I3D TorchScript).

``--lpips`` / ``--fvd`` only make a missing file an explicit error; giving the files is enough to enable them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro


@dataclass
class WmEvalArgs:
    """Replay recorded actions from recorded start frames in the world model; compare to the recorded frames.

    PSNR/SSIM always; LPIPS with --lpips-weights VGG16.pth --lpips-linear vgg.pth and FVD with --fvd-weights
    i3d_torchscript.pt (local files only, nothing is downloaded)."""

    data: list[Path]
    """LIBERO-layout HDF5 files (data/demo_*/obs/<image-key>, data/demo_*/actions)."""
    checkpoint: str | None = None
    """World-model checkpoint (folder or Hub id); default: the embedded default model."""
    horizon: int = 10
    every: int = 10
    """Start an open-loop rollout every N frames of each episode."""
    batch_size: int = 32
    """Rollouts imagined in lockstep, one batched world-model call per step (the numbers do not depend on it)."""
    max_episodes: int | None = None
    image_key: str = "agentview_rgb"
    rotate180: bool | None = None
    """Force (True) or suppress (False) the 180° rotation on read; default: decided per file from its
    images_rotated_180 attribute (official LIBERO files are rotated, ours are not)."""
    imagine_from: Literal["frames", "codes"] = "codes"
    """What each imagined step's prompt is built from: the decoded frames, re-encoded (as a policy sees them), or
    the codes the world model generated (the imagined envs' imagine_from="codes")."""
    device: str = "cpu"
    lpips_weights: Path | None = None
    """LPIPS backbone: torchvision VGG16 weights (full vgg16 state_dict with features.N.* keys, e.g.
    vgg16-397923af.pth, or a vgg16().features state_dict with N.* keys). Needs --lpips-linear; enables LPIPS."""
    lpips_linear: Path | None = None
    """LPIPS linear layers: the lpips package's VGG 'vgg.pth' (lin0.model.1.weight ... lin4.model.1.weight)."""
    fvd_weights: Path | None = None
    """FVD features: StyleGAN-V's I3D TorchScript file 'i3d_torchscript.pt'. Enables FVD over --horizon clips."""
    lpips: bool = False
    """Require LPIPS (error if its weights are missing); implied by --lpips-weights/--lpips-linear."""
    fvd: bool = False
    """Require FVD (error if --fvd-weights is missing); implied by --fvd-weights."""
    fvd_batch_size: int = 16
    """Clips per I3D forward pass."""
    baseline: bool = True
    """Also score the trivial predictor "every future frame = the start frame" on the same start states: a
    world model is only useful where it beats this (robot scenes are mostly static)."""
    out: Path = Path("wm_eval.json")


def main(argv: list[str] | None = None) -> int:
    from wvla_gym.evaluation.world_model_metrics import (
        LPIPS,
        CodeFeedback,
        I3DFeatures,
        evaluate_open_loop,
        load_hdf5_episodes,
        require_feature_weights,
    )
    from wvla_gym.utils.images import resize_uint8
    from wvla_gym.utils.libero_setup import stack_versions

    args = tyro.cli(WmEvalArgs, args=argv, prog="wvla-gym wm-eval")
    want_lpips = args.lpips or args.lpips_weights is not None or args.lpips_linear is not None
    want_fvd = args.fvd or args.fvd_weights is not None
    try:
        lpips_model = fvd_features = None
        if want_lpips:
            require_feature_weights("lpips", args.lpips_weights)
            if args.lpips_linear is None:
                raise ValueError(
                    "LPIPS needs --lpips-linear PATH too: the lpips package's VGG linear-layer weights 'vgg.pth' "
                    "(lin0.model.1.weight ... lin4.model.1.weight); nothing is downloaded here"
                )
            lpips_model = LPIPS.from_files(args.lpips_weights, args.lpips_linear, device=args.device)
        if want_fvd:
            require_feature_weights("fvd", args.fvd_weights)
            fvd_features = I3DFeatures.from_file(
                args.fvd_weights, device=args.device, batch_size=args.fvd_batch_size
            )
        missing = [str(p) for p in args.data if not p.exists()]
        if missing:
            raise ValueError(f"--data {missing} do not exist; expected LIBERO-layout HDF5 files")
        from wvla_gym.runtime import WorldVLARuntime

        runtime = WorldVLARuntime.from_pretrained(args.checkpoint, device=args.device)
        res = int(runtime.resolution)
        episodes = []
        for p in args.data:
            for frames, actions in load_hdf5_episodes(p, args.image_key, args.rotate180, args.max_episodes):
                episodes.append((resize_uint8(frames, res), actions))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    t0 = time.perf_counter()
    try:
        report = evaluate_open_loop(
            episodes,
            CodeFeedback(runtime) if args.imagine_from == "codes" else (lambda f, a: runtime.imagine(f, a)),
            args.horizon,
            args.every,
            lpips=lpips_model,
            fvd_features=fvd_features,
            history=runtime.world_history,
            batch_size=args.batch_size,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report.update({"checkpoint": args.checkpoint, "data": [str(p) for p in args.data], "resolution": res,
                   "episodes": len(episodes), "every": args.every, "batch_size": args.batch_size,
                   "imagine_from": args.imagine_from,
                   "world_history": runtime.world_history, "wall_s": round(time.perf_counter() - t0, 1),
                   "torch_threads": torch.get_num_threads(), "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
                   "versions": stack_versions()})
    if want_lpips:
        report.update({"lpips_weights": str(args.lpips_weights), "lpips_linear": str(args.lpips_linear)})
    if want_fvd:
        report["fvd_weights"] = str(args.fvd_weights)
    if args.baseline:
        # PSNR/SSIM only: the feature metrics would double the cost for a number nobody tunes on.
        base = evaluate_open_loop(episodes, lambda f, a: np.asarray(f).copy(), args.horizon, args.every)
        report["baseline_copy_start_frame"] = {k: base[k] for k in ("psnr", "ssim", "n")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if "lpips" in report:
        print("| horizon | PSNR (dB) | SSIM | LPIPS | n |\n|---|---|---|---|---|")
        for h, p, s, lp, n in zip(
            report["horizon"], report["psnr"], report["ssim"], report["lpips"], report["n"], strict=True
        ):
            print(f"| {h} | {p:.2f} | {s:.4f} | {lp:.4f} | {n} |")
    else:
        print("| horizon | PSNR (dB) | SSIM | n |\n|---|---|---|---|")
        for h, p, s, n in zip(report["horizon"], report["psnr"], report["ssim"], report["n"], strict=True):
            print(f"| {h} | {p:.2f} | {s:.4f} | {n} |")
    if args.baseline:
        b = report["baseline_copy_start_frame"]
        print("baseline (copy the start frame) PSNR: " + " ".join(f"{p:.2f}" for p in b["psnr"]))
    if "fvd" in report:
        if report["fvd"] is None:
            print(f"FVD: n/a ({report['fvd_clips']} clip(s) of {args.horizon} frames; need >= 2)")
        else:
            print(f"FVD ({report['fvd_clips']} clips of {args.horizon} frames): {report['fvd']:.2f}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
