"""Imagined steps/s for N = 1, 4, 16 batched envs on one model, and real LIBERO steps/s at the same resolution.

    python benchmarks/imagination_throughput.py                 # embedded default model (tiny fallback), < 5 min
    python benchmarks/imagination_throughput.py --checkpoint PATH --threads 8

Prints a table, then one JSON object as the last line: ``{"n16_vs_n1": ..., "imagined_n16_vs_real": ...}``
(steps/s ratios; one env step = one env advancing by one action). Torch threads are pinned (``--threads``).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from envs.imagined_vector import ImaginedVectorEnv
from wvla_gym.runtime import WorldVLARuntime


@dataclass
class Args:
    checkpoint: str | None = None
    """world-model checkpoint; None = the embedded default, or a tiny random model if it is not installed"""
    tiny_resolution: int = 64
    """resolution of the fallback tiny model"""
    ns: list[int] = field(default_factory=lambda: [1, 4, 16])
    steps: int = 6
    """timed vector steps per N (after one warm-up step)"""
    real_steps: int = 20
    """timed real LIBERO steps (0 skips the real env)"""
    task_suite: str = "libero_object"
    task_id: int = 0
    threads: int = 0
    """torch threads (0 = all cores, capped at 8)"""
    device: str = "cpu"
    decode_backend: str = "auto"
    """auto | dynamic | static | cuda_graph (wvla_gym.generation)"""
    vq_batch: bool = False
    """VQ encode/decode the batch in one call (not bit-identical to frame by frame; see AGENTS.md)"""
    seed: int = 0
    json_out: str | None = None
    """Also write the result with machine/load/version facts: a path, or 'default' for
    benchmarks/results/imagination_throughput.json."""


def load(args: Args) -> tuple[WorldVLARuntime, str]:
    rt, name = _load(args)
    rt.decode_backend = args.decode_backend
    rt.vq_batch = args.vq_batch
    return rt, name


def _load(args: Args) -> tuple[WorldVLARuntime, str]:
    if args.checkpoint is not None:
        return WorldVLARuntime.from_pretrained(args.checkpoint, device=args.device), args.checkpoint
    try:
        return WorldVLARuntime.from_pretrained(None, device=args.device), "embedded-default"
    except FileNotFoundError:
        from wvla_gym.model.tiny import make_tiny_checkpoint

        path = make_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="wvla_tiny_")), resolution=args.tiny_resolution)
        return WorldVLARuntime.from_pretrained(path, device=args.device), f"tiny-random-{args.tiny_resolution}px"


class _PartTimer:
    """Accumulates wall time of the VQ encode and decode calls (the rest of a step is the LM and the env)."""

    def __init__(self, rt: WorldVLARuntime):
        self.tok, self.s = rt.image_tokenizer, {"vq_encode": 0.0, "vq_decode": 0.0}
        self._orig = (self.tok.encode_codes, self.tok.decode_codes)
        self.tok.encode_codes = self._wrap(self._orig[0], "vq_encode")
        self.tok.decode_codes = self._wrap(self._orig[1], "vq_decode")

    def _wrap(self, fn, key):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[key] += time.perf_counter() - t0
        return timed

    def close(self) -> None:
        self.tok.encode_codes, self.tok.decode_codes = self._orig


def imagined_steps_per_s(rt: WorldVLARuntime, n: int, args: Args, parts: dict | None = None) -> float:
    frames = np.random.default_rng(args.seed).integers(0, 256, (4, rt.resolution, rt.resolution, 3), dtype=np.uint8)
    venv = ImaginedVectorEnv(
        n, runtime=rt, init_frames=frames, instruction="benchmark", max_episode_steps=args.steps + 10,
        task_suite=args.task_suite, task_id=args.task_id, wrist=False,
    )
    rng = np.random.default_rng(args.seed)
    venv.reset(seed=args.seed)
    venv.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))  # warm-up (allocator, kernels)
    timer = _PartTimer(rt)
    t0 = time.perf_counter()
    try:
        for _ in range(args.steps):
            venv.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))
    finally:
        timer.close()
    dt = time.perf_counter() - t0
    venv.close()
    if parts is not None:  # seconds per vector step: VQ encode, VQ decode, the rest (LM decode, env, judge)
        enc, dec = timer.s["vq_encode"] / args.steps, timer.s["vq_decode"] / args.steps
        parts[n] = {"step_s": round(dt / args.steps, 4), "vq_encode_s": round(enc, 4), "vq_decode_s": round(dec, 4),
                    "lm_and_env_s": round(dt / args.steps - enc - dec, 4)}
    return n * args.steps / dt


def real_steps_per_s(resolution: int, args: Args) -> float | None:
    if args.real_steps <= 0:
        return None
    try:
        from envs.libero import LiberoEnv

        env = LiberoEnv(args.task_suite, args.task_id, resolution=resolution, wrist=True)
    except ImportError:
        return None
    env.reset(seed=args.seed, options={"init_state_id": 0})  # not timed: 5-10 s of MuJoCo setup
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for _ in range(args.real_steps):
        _, _, te, tr, _ = env.step(rng.uniform(-0.3, 0.3, 7).astype(np.float32))
        if te or tr:
            env.reset(seed=args.seed, options={"init_state_id": 0})
    dt = time.perf_counter() - t0
    env.close()
    return args.real_steps / dt


def main(args: Args) -> dict:
    from bench_io import BenchRecord

    record = BenchRecord("imagination_throughput")
    threads = args.threads or min(os.cpu_count() or 1, 8)
    torch.set_num_threads(threads)
    rt, model_name = load(args)
    parts: dict[int, dict] = {}
    rows = {n: imagined_steps_per_s(rt, n, args, parts) for n in args.ns}
    real = real_steps_per_s(rt.resolution, args)
    print(f"model={model_name} resolution={rt.resolution} image_tokens={rt.image_seq_len} threads={threads} "
          f"device={args.device} cpu={platform.processor() or platform.machine()}")
    print(f"{'env':<14}{'steps/s':>10}{'vs N=1':>9}")
    for n, sps in rows.items():
        print(f"{'imagined N=' + str(n):<14}{sps:>10.2f}{sps / rows[args.ns[0]]:>9.2f}")
    if real is not None:
        print(f"{'real LIBERO':<14}{real:>10.2f}")
    print(f"{'per step (s)':<14}{'total':>9}{'VQ enc':>9}{'VQ dec':>9}{'LM+env':>9}")
    for n, p in parts.items():
        print(f"{'N=' + str(n):<14}{p['step_s']:>9.3f}{p['vq_encode_s']:>9.3f}{p['vq_decode_s']:>9.3f}{p['lm_and_env_s']:>9.3f}")
    n_lo, n_hi = min(args.ns), max(args.ns)
    lo = parts[n_lo]
    # The VQ work grows with N (compute-bound convolutions); even if the LM and env cost nothing more at N_hi
    # than at N_lo, the ratio cannot exceed this bound:
    vq_lo = lo["vq_encode_s"] + lo["vq_decode_s"]
    bound = (n_hi / n_lo) * lo["step_s"] / (lo["lm_and_env_s"] + vq_lo * n_hi / n_lo)
    print(f"N={n_hi} vs N={n_lo} bound if only the VQ scaled with N: {bound:.2f}x")
    n_max = max(args.ns)
    result = {
        "model": model_name, "resolution": rt.resolution, "threads": threads,
        "decode_backend": rt.decode_backend, "vq_batch": rt.vq_batch,
        **{f"imagined_n{n}_steps_per_s": round(v, 3) for n, v in rows.items()},
        "real_steps_per_s": None if real is None else round(real, 3),
        "n16_vs_n1": round(rows[n_max] / rows[min(args.ns)], 3) if n_max == 16 and 1 in rows else None,
        "imagined_n16_vs_real": round(rows[n_max] / real, 3) if real and n_max == 16 else None,
        "per_step_parts_s": {str(n): p for n, p in parts.items()},
        "ratio_bound_vq_scaling": round(bound, 3),
    }
    record.save(result, args.json_out)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
