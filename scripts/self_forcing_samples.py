"""Self-forcing world-model samples (``wvla_gym.training.self_forcing``): contexts made of the world model's own
rolled-out codes, targets from the recording, for ``wvla-gym train model --extra-world-samples``.

    python scripts/self_forcing_samples.py --world-model runs/wm/model --data datasets/libero_object_t0/expert \
        datasets/libero_object_t0/wm --rollout 8 --every 24 --out runs/sf/samples.pt [--shard 0/2]

A rollout starts every ``--every`` recorded steps of every episode and runs ``--rollout - 1`` open-loop steps
under the recorded actions (one sample each); ``--shard i/n`` takes every n-th rollout, so n processes (one per
core) split the work, and all the shards' files go to training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-model", required=True, help="world-model checkpoint (folder)")
    p.add_argument("--data", nargs="+", required=True, help="code-file folders or .codes.npz files")
    p.add_argument("--rollout", type=int, default=8, help="open-loop steps per rollout (samples per rollout)")
    p.add_argument("--every", type=int, default=24, help="a rollout starts every this many recorded steps")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shard", default="0/1", help="i/n: this process's share of the rollouts")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        raise SystemExit(f"--shard {args.shard!r}; expected i/n with 0 <= i < n, e.g. 0/2") from None

    from wvla_gym.data.codes import CodeFile
    from wvla_gym.runtime_cache import load_world_model
    from wvla_gym.training.joint_data import save_samples
    from wvla_gym.training.self_forcing import self_forcing_samples
    from wvla_gym.utils.run_identity import path_digest

    torch.set_num_threads(1)
    rt = load_world_model(args.world_model)
    files = []
    for d in args.data:
        q = Path(d)
        files += sorted(q.glob("*.codes.npz")) if q.is_dir() else [q]
    if not files:
        raise SystemExit(f"--data {args.data}: no .codes.npz files")
    episodes = []
    for f in files:
        cf = CodeFile(f)
        episodes += [(cf.array("codes", i), cf.array("actions", i)) for i in range(len(cf))]
    t0 = time.perf_counter()

    def progress(done: int, total: int, n: int) -> None:
        print(json.dumps({"rollouts": done, "of": total, "samples": n, "s": round(time.perf_counter() - t0, 1)}),
              flush=True)

    samples = self_forcing_samples(rt, episodes, rollout=args.rollout, every=args.every, batch=args.batch,
                                   shard=(shard, shards), progress=progress)
    key = json.dumps({"self_forcing": True, "world_model": path_digest(args.world_model), "rollout": args.rollout,
                      "every": args.every, "shard": args.shard, "data": [str(f) for f in files]}, sort_keys=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_samples(out, {"world": samples}, key)
    print(json.dumps({"out": str(out), "samples": len(samples)}))


if __name__ == "__main__":
    main()
