"""The demo's wall time by torch thread count and by how many other CPU-bound processes run beside it.

Runs ``wvla-gym demo`` (each run a fresh process; shortened with ``--max-steps``, or the full demo with
``--max-steps 0``) once per (busy processes, thread count) and repeat, alternating the thread order between
repeats so that a drifting background load favours neither. ``--busy 0 1`` starts that many busy-loop
processes (``while True: pass``, one core each) for the runs of that group and stops them after. Records every
run's JSON (wall time, per-episode times, torch threads, load average before and after). Prints a table, the
ratios ``wall(2 threads) / wall(1 thread)`` (> 1: one thread is faster) and ``wall(busy=b) / wall(busy=0)``
(the slowdown another CPU-bound process causes) and, last, one JSON object.

    python benchmarks/demo_threads.py --max-steps 60 --json-out default     # ~5-10 min on a loaded 2-core CPU
    python benchmarks/demo_threads.py --max-steps 0 --threads 1 --busy 0 1 --json-out results/demo_busy.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from bench_io import BenchRecord


@dataclass
class Args:
    threads: list[int] = field(default_factory=lambda: [1, 2])
    max_steps: int = 60
    """steps per episode (real and imagined); 0: the full demo (until success or the suite limit)"""
    busy: list[int] = field(default_factory=lambda: [0])
    """run every thread count once beside each of these numbers of busy-loop processes"""
    repeats: int = 1
    checkpoint: str | None = None
    """None: the embedded default, as the demo"""
    json_out: str | None = None
    """write the result JSON here ("default": benchmarks/results/demo_threads.json)"""


def run_demo(threads: int, args: Args, out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "wvla_gym.cli.main", "demo", "--threads", str(threads),
           "--out", str(out_dir / f"demo_t{threads}.mp4"), "--no-progress"]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # as a user runs it
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` single-core busy loops (the "one other CPU-bound process" of a shared machine) while inside."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv)
    record = BenchRecord("demo_threads")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(args.threads[0], Args(max_steps=1, checkpoint=args.checkpoint), Path(tmp))  # warm caches (init frames)
        for b in args.busy:
            with busy_processes(b):
                for r in range(args.repeats):
                    order = args.threads if r % 2 == 0 else args.threads[::-1]
                    for t in order:
                        res = run_demo(t, args, Path(tmp)) | {"busy_processes": b}
                        runs.append(res)
                        print(f"busy={b} threads={t} wall={res['wall_s']:.1f}s real={res['real']['wall_s']:.1f}s "
                              f"imagined={res['imagined']['wall_s']:.1f}s load={res['load_avg_1_5_15_before']}",
                              file=sys.stderr, flush=True)
    wall = {b: {t: statistics.median(r["wall_s"] for r in runs if r["torch_threads"] == t and r["busy_processes"] == b)
                for t in args.threads} for b in args.busy}
    print(f"{'busy':>5} {'threads':>8} {'median wall s':>14}")
    for b, by_t in wall.items():
        for t, w in by_t.items():
            print(f"{b:>5} {t:>8} {w:>14.1f}")
    result = {"max_steps": args.max_steps or "full", "repeats": args.repeats, "busy_processes": args.busy,
              "median_wall_s": wall if len(args.busy) > 1 else wall[args.busy[0]], "runs": runs,
              "cpus": os.cpu_count(), "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()]}
    by_t = wall[args.busy[0]]
    if 1 in by_t and 2 in by_t:
        result["ratio_wall_2_over_1"] = round(by_t[2] / by_t[1], 3)
        print(f"wall(2 threads) / wall(1 thread) = {result['ratio_wall_2_over_1']:.3f} (> 1: one thread is faster)")
    if 0 in wall:
        result["ratio_busy_over_quiet"] = {
            f"busy{b}_threads{t}": round(wall[b][t] / wall[0][t], 3) for b in args.busy if b for t in args.threads}
        for k, v in result["ratio_busy_over_quiet"].items():
            print(f"wall({k}) / wall(quiet) = {v:.3f}")
    record.save(result, args.json_out)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
