"""``benchmarks/gpu_inference.py`` runs its CUDA code path's eager fallback on CPU (small config), so a GPU run
later is a measurement, not a debugging session: every backend row, the "auto" row kept apart, and exact
parallel == sequential tokens in float32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_inference_benchmark_runs_on_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_inference.py"), "--repeats", "1",
                           "--resolution", "32"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no CUDA: running the same code on a small config" in done.stdout
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["device"] == "cpu" and res["small_config"] is True and res["dtype"] == "torch.float32"
    rows = res["backends"]
    assert set(rows) == {"dynamic", "static", "auto->dynamic"}  # "auto" resolves to dynamic on CPU, its own row
    assert rows["auto->dynamic"]["requested"] == "auto" and rows["static"]["backend"] == "static"
    for row in rows.values():
        assert row["decode_ms_per_step"] > 0 and row["imagine_b16_frames_per_s"] > 0
    assert res["agreement_float32"] is True  # parallel and sequential decodes give the same tokens
