"""Shared by the benchmarks: write one result JSON with the facts needed to read it later.

Every figure in the README cites such a file under ``benchmarks/results/``. Besides the benchmark's own
numbers it records the stack versions, the machine (cores, load average before and after, CPU model), torch's
thread count, the command line and the time, because on a shared 2-core machine a ratio means little without
the load it was measured under.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from wvla_gym.utils.io import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class BenchRecord:
    """Start it before measuring (it notes the load then); :meth:`save` after."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.load_before = os.getloadavg()

    def facts(self) -> dict[str, Any]:
        from wvla_gym.utils.libero_setup import stack_versions

        try:
            import torch

            threads: int | None = torch.get_num_threads()
            cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except ImportError:
            threads, cuda = None, None
        return {
            "benchmark": self.name,
            "started": self.started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "gpu": cuda,
                        "load_avg_1_5_15_before": [round(x, 2) for x in self.load_before],
                        "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
            "torch_threads": threads,
            "versions": stack_versions(),
        }

    def save(self, result: dict[str, Any], path: str | os.PathLike | None) -> Path | None:
        """Write ``{facts..., "result": result}`` to ``path`` (``"default"``: ``results/<name>.json``)."""
        if path is None:
            return None
        target = RESULTS_DIR / f"{self.name}.json" if str(path) == "default" else Path(path)
        atomic_write_json(target, {**self.facts(), "result": result}, indent=2, default=str)  # a kill keeps the old figures
        print(f"saved {target}", file=sys.stderr)
        return target
