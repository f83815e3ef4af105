"""Greedy rollouts of the embedded default model are pinned token for token (tests/data/greedy_default_tokens.json).

The fixture holds its own input frames (taken once from the committed LIBERO sample, stored compressed), so it
does not change when the sample is re-recorded. It pins, at one torch thread (CPU kernels round differently per
thread count), the action tokens of ``predict_action_chunk`` (parallel and sequential decoding, one row and a
ragged batch) and the image codes of a 3-step closed-loop ``imagine`` rollout (greedy), plus one sampled step
with a seeded generator; the dynamic and the static decoding backends must both reproduce them exactly.

Regenerate (only when a change is *meant* to alter the model's outputs)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/test_greedy_fixture.py --write
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).parent / "data" / "greedy_default_tokens.json"
INSTRUCTION = "pick up the alphabet soup and place it in the basket"  # libero_object task 0
SAMPLE = Path(__file__).parent / "data" / "libero_sample" / f"{INSTRUCTION.replace(' ', '_')}_demo.hdf5"
FRAME_STEPS = (0, 1, 40, 41)  # demo_0 steps whose agentview frames are the inputs
IMAGINE_STEPS = 3


def _pack(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "zlib_b64": base64.b64encode(zlib.compress(a.tobytes(), 9)).decode()}


def _unpack(d: dict) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(d["zlib_b64"])), dtype=np.uint8).reshape(d["shape"]).copy()


def _inputs_from_sample() -> dict:
    from wvla_gym.data.hdf5 import LiberoFile

    with LiberoFile(SAMPLE) as f:
        frames = np.stack([f.frames("demo_0", s, s + 1)[0] for s in FRAME_STEPS])
        actions = f.actions("demo_0", 0, IMAGINE_STEPS, dtype=np.float64)
    return {"frames": _pack(frames), "actions": actions.tolist()}


def _rollouts(rt, inputs: dict) -> dict:
    """Every pinned output of ``rt`` on ``inputs`` (see the module docstring)."""
    from wvla_gym.runtime import WorldVLARuntime

    assert isinstance(rt, WorldVLARuntime)
    frames = _unpack(inputs["frames"])
    actions = np.asarray(inputs["actions"], dtype=np.float64)
    out: dict = {}
    one = frames[None, :2]  # one row, two frames
    ragged = [[frames[2], frames[3]], [frames[1]]]
    for decode in ("parallel", "sequential"):
        for name, hist, instr in (("one", one, INSTRUCTION), ("ragged", ragged, [INSTRUCTION, "open the drawer"])):
            res = rt.predict_action_chunk(hist, instr, decode=decode, return_info=True)
            out[f"actions_{decode}_{name}"] = {"tokens": res.info.tokens, "actions": res.actions.tolist()}
    frame = frames[:1]
    greedy = []
    for t in range(IMAGINE_STEPS):
        frame, info = rt.imagine(frame, actions[t : t + 1], return_info=True)
        greedy.append({"codes": info.codes[0].reshape(-1).tolist(),
                       "pixels_sha256": hashlib.sha256(frame.tobytes()).hexdigest()})
    out["imagine_greedy"] = greedy
    gen = torch.Generator().manual_seed(7)
    sampled, info = rt.imagine(frames[:1], actions[:1], do_sample=True, temperature=1.0, generator=gen,
                               return_info=True)
    out["imagine_sampled_seed7"] = {"codes": info.codes[0].reshape(-1).tolist(),
                                    "pixels_sha256": hashlib.sha256(sampled.tobytes()).hexdigest()}
    return out


def _generate(backend: str = "dynamic", inputs: dict | None = None) -> dict:
    from wvla_gym.runtime import WorldVLARuntime

    inputs = inputs or _inputs_from_sample()
    rt = WorldVLARuntime.from_pretrained(None, decode_backend=backend)
    return {"torch_threads": 1, "instruction": INSTRUCTION, "inputs": inputs, "outputs": _rollouts(rt, inputs)}


@pytest.fixture(scope="module")
def fixture_data():
    if not FIXTURE.exists():
        pytest.skip(f"{FIXTURE} missing; write it with: python {Path(__file__).name} --write")
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("backend", ["dynamic", "static"])
def test_default_greedy_tokens_are_pinned(fixture_data, backend):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = _generate(backend, fixture_data["inputs"])["outputs"]
    finally:
        torch.set_num_threads(n)
    want = fixture_data["outputs"]
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == want[key], f"{key} differs from the pinned fixture ({backend} backend)"


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit(f"usage: {sys.argv[0]} --write   (overwrites {FIXTURE})")
    torch.set_num_threads(1)
    data = _generate("dynamic")
    FIXTURE.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
