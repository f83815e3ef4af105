"""The demo's wall time with 1 vs 2 torch threads, on this machine as loaded as it is (``wvla-gym demo``'s default).

Runs ``wvla-gym demo`` (shortened with ``--max-steps``; each run a fresh process) once per thread count and
repeat, alternating the order between repeats so that a drifting background load favours neither, and records
every run's JSON (wall time, per-episode times, torch threads, load average before and after). Prints a table,
the ratio ``wall(2 threads) / wall(1 thread)`` (> 1: one thread is faster) and, last, one JSON object.

    python benchmarks/demo_threads.py --max-steps 60 --json-out default     # ~5-10 min on a loaded 2-core CPU
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from bench_io import BenchRecord


@dataclass
class Args:
    threads: list[int] = field(default_factory=lambda: [1, 2])
    max_steps: int = 60
    """steps per episode (real and imagined); the full demo runs until success or the suite limit"""
    repeats: int = 1
    checkpoint: str | None = None
    """None: the embedded default, as the demo"""
    json_out: str | None = None
    """write the result JSON here ("default": benchmarks/results/demo_threads.json)"""


def run_demo(threads: int, args: Args, out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "wvla_gym.cli.main", "demo", "--threads", str(threads), "--max-steps",
           str(args.max_steps), "--out", str(out_dir / f"demo_t{threads}.mp4"), "--no-progress"]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # as a user runs it
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv)
    record = BenchRecord("demo_threads")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(args.threads[0], Args(max_steps=1, checkpoint=args.checkpoint), Path(tmp))  # warm caches (init frames)
        for r in range(args.repeats):
            order = args.threads if r % 2 == 0 else args.threads[::-1]
            for t in order:
                res = run_demo(t, args, Path(tmp))
                runs.append(res)
                print(f"threads={t} wall={res['wall_s']:.1f}s real={res['real']['wall_s']:.1f}s "
                      f"imagined={res['imagined']['wall_s']:.1f}s load={res['load_avg_1_5_15_before']}",
                      file=sys.stderr, flush=True)
    wall = {t: statistics.median(r["wall_s"] for r in runs if r["torch_threads"] == t) for t in args.threads}
    print(f"{'threads':>8} {'median wall s':>14}")
    for t, w in wall.items():
        print(f"{t:>8} {w:>14.1f}")
    result = {"max_steps": args.max_steps, "repeats": args.repeats, "median_wall_s": wall, "runs": runs,
              "cpus": os.cpu_count(), "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()]}
    if 1 in wall and 2 in wall:
        result["ratio_wall_2_over_1"] = round(wall[2] / wall[1], 3)
        print(f"wall(2 threads) / wall(1 thread) = {result['ratio_wall_2_over_1']:.3f} (> 1: one thread is faster)")
    record.save(result, args.json_out)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
