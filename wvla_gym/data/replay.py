"""Re-render recorded demos' images from their simulator states at another resolution."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wvla_gym.data.capture import gym_make_env
from wvla_gym.data.hdf5 import (
    ROTATED_ATTR,
    atomic_write_hdf5,
    demo_names,
    read_demo,
    require_h5py,
    write_demo,
    write_file_attrs,
)


def replay_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    resolution: int,
    suite: str,
    task_id: int,
    wrist: bool = True,
    make_env: Callable[..., Any] | None = None,
    progress: bool = True,
) -> int:
    """Re-render a demo file's images from its ``states`` at another resolution (atomic; skips if done).

    Works on our files and on official LIBERO files (whose images are upside down: the output is rotated
    like the env's observations and marked so). Returns the number of demos written.
    """
    from tqdm.auto import tqdm

    h5py = require_h5py()
    dst = Path(dst)
    if dst.exists():
        with h5py.File(dst, "r") as f:
            return len(demo_names(f["data"]))
    env = (make_env or gym_make_env)(suite, task_id, resolution, wrist)
    try:
        u = env.unwrapped
        env.reset(seed=0, options={"init_state_id": 0})  # builds the simulator
        with h5py.File(src, "r") as fsrc:
            names = demo_names(fsrc["data"])
            src_attrs = {k: fsrc["data"].attrs[k] for k in fsrc["data"].attrs}

            def fill(f):
                data = f.create_group("data")
                for n in tqdm(names, desc=f"replay {Path(src).name}", unit="demo", disable=not progress):
                    ep = read_demo(fsrc["data"][n])
                    imgs, wrists = [], []
                    for s in ep.states:
                        obs = u.set_sim_state(s)
                        imgs.append(obs["image"])
                        if "wrist_image" in obs:
                            wrists.append(obs["wrist_image"])
                    ep.agentview_rgb = np.stack(imgs)
                    ep.eye_in_hand_rgb = np.stack(wrists) if wrists else None
                    write_demo(data.create_group(n), ep, success=bool(np.asarray(fsrc["data"][n]["dones"])[-1]))
                write_file_attrs(data, {k: v for k, v in src_attrs.items()})
                data.attrs["resolution"] = resolution
                data.attrs[ROTATED_ATTR] = True
                data.attrs["replayed_from"] = str(Path(src).name)

            atomic_write_hdf5(dst, fill)
        return len(names)
    finally:
        env.close()
