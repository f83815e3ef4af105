"""Rewrite recorded LIBERO-layout HDF5 files through the current writer, arrays unchanged.

Files written before the recorder stored LIBERO's official file attributes (``env_args``, ``bddl_file_name``,
``bddl_file_content``, a complete ``problem_info``...) fail in LIBERO's own readers (``get_dataset_info``).
This reads every demo back and writes the file again with :func:`wvla_gym.data.hdf5.write_demo` and
:func:`wvla_gym.data.hdf5.write_file_attrs` (what the recorder writes today), atomically, keeping every array
and every demo attribute. Used once on ``tests/data/libero_sample/``::

    python scripts/rewrite_hdf5_attrs.py tests/data/libero_sample/*_demo.hdf5
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np

from wvla_gym.data.hdf5 import (
    atomic_write_hdf5,
    demo_names,
    read_demo,
    require_h5py,
    write_demo,
    write_file_attrs,
)


def _bddl_file(suite: str, task_id: int) -> str:
    from wvla_gym.utils.libero_setup import prepare_libero

    prepare_libero()
    from libero.libero import benchmark, get_libero_path

    with contextlib.redirect_stdout(io.StringIO()):
        task = benchmark.get_benchmark_dict()[suite]().get_task(task_id)
    return str(Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file)


def rewrite(path: Path) -> None:
    h5py = require_h5py()
    with h5py.File(path, "r") as f:
        data = f["data"]
        file_attrs = {k: data.attrs[k] for k in data.attrs}
        demos = []
        for n in demo_names(data):
            g = data[n]
            demos.append((n, read_demo(g), bool(np.asarray(g["dones"])[-1]), g["obs/agentview_rgb"].compression))
    bddl = _bddl_file(str(file_attrs["task_suite"]), int(file_attrs["task_id"]))

    def fill(f):
        out = f.create_group("data")
        for n, ep, success, compression in demos:
            write_demo(out.create_group(n), ep, success=success, compression=compression)
            for k, v in ep.attrs.items():  # the demo's own attributes (slot, seed, init state...) as they were
                out[n].attrs[k] = v
        write_file_attrs(out, file_attrs, bddl_file_name=bddl)

    atomic_write_hdf5(path, fill)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    for p in ap.parse_args().files:
        rewrite(p)
        print(f"rewrote {p}")


if __name__ == "__main__":
    main()
