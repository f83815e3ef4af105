"""VQ encode + decode of N frames in one batch vs frame by frame: speed ratio and how much the results differ.

    python benchmarks/vq_batch.py --threads 1 --json-out default          # embedded default model, CPU, < 1 min
    python benchmarks/vq_batch.py --checkpoint PATH --device cuda --n 64   # where batching pays (GPU)

Frames are real LIBERO frames from ``--data`` (a LIBERO-layout HDF5 file) when given, else smooth random images
(low-frequency noise, closer to scenes than white noise). Prints a table and, last, one JSON object:
``batched_speedup`` (frame-by-frame time / batched time, encode + decode), ``code_agreement`` (share of codes
equal between the two encodes) and ``max_pixel_diff`` (decodes of the same codes, uint8 levels).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from wvla_gym.runtime import WorldVLARuntime


@dataclass
class Args:
    checkpoint: str | None = None
    """None: the embedded default"""
    data: str | None = None
    """LIBERO-layout HDF5 file whose agent-view frames are encoded (default: smooth random frames)"""
    n: int = 16
    repeats: int = 3
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    json_out: str | None = None
    """write the result with machine facts: a path, or "default" (benchmarks/results/vq_batch.json)"""


def frames_for(args: Args, res: int) -> np.ndarray:
    if args.data:
        from wvla_gym.data.hdf5 import LiberoFile
        from wvla_gym.utils.images import resize_uint8

        with LiberoFile(args.data) as f:
            demo = f.demos[0]
            imgs = f.frames(demo)
        idx = np.linspace(0, len(imgs) - 1, args.n).round().astype(int)
        return resize_uint8(np.asarray(imgs)[idx], res)
    rng = np.random.default_rng(args.seed)
    low = rng.uniform(0, 255, (args.n, 3, res // 8, res // 8)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(low), size=(res, res), mode="bilinear", align_corners=False)
    return up.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - t0) / repeats, out


def main(args: Args) -> dict:
    from bench_io import BenchRecord

    record = BenchRecord("vq_batch")
    torch.set_num_threads(args.threads)
    rt = WorldVLARuntime.from_pretrained(args.checkpoint, device=args.device)
    tok = rt.image_tokenizer
    imgs = frames_for(args, rt.resolution)
    res = {}
    for batched in (False, True):
        rt.vq_batch = batched
        enc_s, codes = timed(lambda: tok.encode_codes(imgs), args.repeats)
        dec_s, pixels = timed(lambda c=codes: tok.decode_codes(c), args.repeats)
        res[batched] = {"encode_s": enc_s, "decode_s": dec_s, "codes": codes.cpu(), "pixels": pixels}
    rt.vq_batch = False
    ref_pixels_of_batched_codes = tok.decode_codes(res[True]["codes"])
    rt.vq_batch = True
    batched_pixels_of_same_codes = tok.decode_codes(res[True]["codes"])
    f, b = res[False], res[True]
    speedup = (f["encode_s"] + f["decode_s"]) / (b["encode_s"] + b["decode_s"])
    agree = float((f["codes"] == b["codes"]).float().mean())
    diff = int(np.abs(ref_pixels_of_batched_codes.astype(int) - batched_pixels_of_same_codes.astype(int)).max())
    print(f"model={args.checkpoint or 'embedded-default'} resolution={rt.resolution} n={args.n} threads={args.threads} "
          f"device={args.device} frames={'data' if args.data else 'smooth-random'}")
    print(f"{'mode':<16}{'encode ms/frame':>17}{'decode ms/frame':>17}")
    for name, r in (("frame by frame", f), ("batched", b)):
        print(f"{name:<16}{1e3 * r['encode_s'] / args.n:>17.2f}{1e3 * r['decode_s'] / args.n:>17.2f}")
    print(f"batched speed-up {speedup:.2f}x; codes equal {100 * agree:.2f} %; decode of the same codes differs by "
          f"at most {diff} uint8 level(s)")
    result = {"model": args.checkpoint or "embedded-default", "resolution": rt.resolution, "n": args.n,
              "device": args.device, "threads": args.threads, "frames": "data" if args.data else "smooth-random",
              "frame_by_frame_ms_per_frame": {"encode": round(1e3 * f["encode_s"] / args.n, 3),
                                              "decode": round(1e3 * f["decode_s"] / args.n, 3)},
              "batched_ms_per_frame": {"encode": round(1e3 * b["encode_s"] / args.n, 3),
                                       "decode": round(1e3 * b["decode_s"] / args.n, 3)},
              "batched_speedup": round(speedup, 3), "code_agreement": round(agree, 5), "max_pixel_diff": diff}
    record.save(result, args.json_out)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
