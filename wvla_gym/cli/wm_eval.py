"""``wvla-gym wm-eval``: open-loop world-model quality (PSNR/SSIM per horizon) on recorded episodes.

Example::

    wvla-gym wm-eval --checkpoint ckpt/ --data demos/libero_object_task0.hdf5 --horizon 10 --out wm_eval.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class WmEvalArgs:
    """Replay recorded actions from recorded start frames in the world model; compare to the recorded frames."""

    data: list[Path]
    """LIBERO-layout HDF5 files (data/demo_*/obs/<image-key>, data/demo_*/actions)."""
    checkpoint: str | None = None
    """World-model checkpoint (folder or Hub id); default: the embedded default model."""
    horizon: int = 10
    every: int = 10
    """Start an open-loop rollout every N frames of each episode."""
    max_episodes: int | None = None
    image_key: str = "agentview_rgb"
    rotate180: bool = False
    """Set for LIBERO's original datasets (their frames are upside down)."""
    device: str = "cpu"
    lpips_weights: Path | None = None
    fvd_weights: Path | None = None
    lpips: bool = False
    fvd: bool = False
    out: Path = Path("wm_eval.json")


def main(argv: list[str] | None = None) -> int:
    from wvla_gym.evaluation.world_model_metrics import (
        evaluate_open_loop,
        load_hdf5_episodes,
        require_feature_weights,
        resize_frames,
    )

    args = tyro.cli(WmEvalArgs, args=argv, prog="wvla-gym wm-eval")
    try:
        if args.lpips:
            require_feature_weights("lpips", args.lpips_weights)
        if args.fvd:
            require_feature_weights("fvd", args.fvd_weights)
        if args.lpips or args.fvd:
            raise ValueError("LPIPS/FVD with local weights are not implemented yet; PSNR/SSIM are")
        missing = [str(p) for p in args.data if not p.exists()]
        if missing:
            raise ValueError(f"--data {missing} do not exist; expected LIBERO-layout HDF5 files")
        from wvla_gym.runtime import WorldVLARuntime

        runtime = WorldVLARuntime.from_pretrained(args.checkpoint, device=args.device)
        res = int(runtime.resolution)
        episodes = []
        for p in args.data:
            for frames, actions in load_hdf5_episodes(p, args.image_key, args.rotate180, args.max_episodes):
                episodes.append((resize_frames(frames, res), actions))
    except ValueError as e:
        print(f"error: {e}")
        return 2
    report = evaluate_open_loop(episodes, lambda f, a: runtime.imagine(f, a), args.horizon, args.every)
    report.update({"checkpoint": args.checkpoint, "data": [str(p) for p in args.data], "resolution": res,
                   "episodes": len(episodes), "every": args.every})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| horizon | PSNR (dB) | SSIM | n |\n|---|---|---|---|")
    for h, p, s, n in zip(report["horizon"], report["psnr"], report["ssim"], report["n"], strict=True):
        print(f"| {h} | {p:.2f} | {s:.4f} | {n} |")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
