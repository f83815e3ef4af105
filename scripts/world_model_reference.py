"""Reference outputs of a packaged world model, written beside it (``reference_outputs.json``).

A greedy open-loop rollout from the first held-out committed episode (its start frame and recorded actions,
codes fed back as ``imagine_from="codes"`` does), run by the packaged (float16-stored) model and, when
``--original`` is given, by the float32 training checkpoint it was packaged from. The tests reload the shipped
model and must reproduce its codes exactly; the file also records how many codes the float16 storage changed.

    python scripts/world_model_reference.py --model wvla_gym/assets/default/world_model \\
        --original /work/wvla-runs/wm_t0/model --data datasets/libero_object_t0/heldout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def rollout(runtime, start_codes: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
    """Greedy rollout; each step's prompt is the last ``world_history`` (codes, action) pairs."""
    codes, out = [start_codes], []
    h = int(runtime.world_history)
    for t in range(len(actions)):
        lo = max(0, t + 1 - h)
        res = runtime.imagine(None, actions[None, lo : t + 1], codes=np.stack(codes[lo : t + 1])[None],
                              return_info=True)
        codes.append(res.info.codes[0].numpy())
        out.append(codes[-1])
    return out


def reference_input(data: Path, steps: int) -> tuple[np.ndarray, np.ndarray, str]:
    from wvla_gym.data.codes import CodeFile

    files = sorted(Path(data).glob("*.codes.npz")) if Path(data).is_dir() else [Path(data)]
    cf = CodeFile(files[0])
    return cf.array("codes", 0)[0].astype(np.int64), cf.array("actions", 0)[:steps], f"{files[0].name}:{cf.episodes[0]['name']}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--original", type=Path, default=None)
    p.add_argument("--data", type=Path, default=Path("datasets/libero_object_t0/heldout"))
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    from wvla_gym.runtime import WorldVLARuntime

    start, actions, source = reference_input(args.data, args.steps)
    shipped = rollout(WorldVLARuntime.from_pretrained(args.model), start, actions)
    ref = {"source": source, "steps": len(actions), "torch_threads": 1,
           "codes": [c.tolist() for c in shipped]}
    if args.original is not None:
        original = rollout(WorldVLARuntime.from_pretrained(args.original), start, actions)
        same = [float((a == b).mean()) for a, b in zip(shipped, original, strict=True)]
        ref["float32_original"] = {"codes": [c.tolist() for c in original], "share_equal_per_step": same}
    (args.model / "reference_outputs.json").write_text(json.dumps(ref))
    print(json.dumps({k: v for k, v in ref.items() if k != "codes"} | (
        {"share_equal_per_step": ref["float32_original"]["share_equal_per_step"]} if args.original else {})))


if __name__ == "__main__":
    main()
