"""The one runtime cache and the one judge lookup: a checkpoint used as policy and world model is loaded once."""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path

import pytest

from wvla_gym import runtime_cache
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import eval_fakes  # noqa: E402

RES = 32
INSTR = "pick up the alphabet soup and place it in the basket"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), resolution=RES, action_chunk=3, history=2))


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every real checkpoint load (``WorldVLARuntime.from_pretrained``) in the test, by checkpoint."""
    runtime_cache.clear()
    calls: list[str] = []
    real = WorldVLARuntime.from_pretrained.__func__

    @functools.wraps(real)  # the cache reads from_pretrained's defaults from its signature
    def counting(cls, path_or_hub_id=None, **kw):
        calls.append(str(path_or_hub_id))
        return real(cls, path_or_hub_id, **kw)

    monkeypatch.setattr(WorldVLARuntime, "from_pretrained", classmethod(counting))
    yield calls
    runtime_cache.clear()


def test_one_runtime_per_checkpoint_and_options(checkpoint, loads, monkeypatch):
    rt = runtime_cache.load_runtime(checkpoint)
    # The same checkpoint spelled differently, with from_pretrained's defaults spelled out: one entry.
    monkeypatch.chdir(Path(checkpoint).parent)
    assert runtime_cache.load_runtime(Path(checkpoint).name, device="cpu") is rt
    assert runtime_cache.load_runtime(Path(checkpoint), attn_implementation="sdpa") is rt
    assert len(loads) == 1
    # Other loading options are another runtime.
    other = runtime_cache.load_runtime(checkpoint, vq_batch=False)
    assert other is not rt and len(loads) == 2


def test_runtimes_are_held_weakly(checkpoint, loads):
    rt = runtime_cache.load_runtime(checkpoint)
    key = runtime_cache.cache_key(checkpoint)
    del rt
    gc.collect()
    assert key not in runtime_cache._RUNTIMES  # nothing used it any more: its memory is freed
    runtime_cache.load_runtime(checkpoint)
    assert len(loads) == 2


def test_bad_checkpoint_and_options_are_named(checkpoint):
    with pytest.raises(TypeError, match="checkpoint=5"):
        runtime_cache.load_runtime(5)
    with pytest.raises(TypeError, match="colour"):
        runtime_cache.load_runtime(checkpoint, colour="red")


def test_checkpoint_judge_is_found_from_a_runtime_or_a_folder(checkpoint, tmp_path):
    from wvla_gym.judge import ClassifierJudge

    rt = runtime_cache.load_runtime(checkpoint)
    assert runtime_cache.checkpoint_judge(rt) is None and runtime_cache.checkpoint_judge(checkpoint) is None
    ClassifierJudge(input_size=16, channels=(4,)).save_pretrained(tmp_path / "judge")
    assert isinstance(runtime_cache.checkpoint_judge(tmp_path), ClassifierJudge)
    assert runtime_cache.checkpoint_judge(object()) is None  # e.g. a runtime downloaded from the Hub


def test_eval_with_one_checkpoint_as_policy_and_world_model_loads_it_once(checkpoint, loads, tmp_path):
    """``wvla-gym eval --policy worldvla --checkpoint C --env imagined``: the policy's agents and the imagined
    env's world model are one runtime, loaded once."""
    from wvla_gym.cli.eval import main

    with eval_fakes.init_frame_cache(tmp_path / "cache", tasks=(0,), n_init=2, resolution=RES):
        rc = main(["--policy", "worldvla", "--checkpoint", checkpoint, "--env", "imagined", "--tasks", "0",
                   "--trials", "2", "--max-episode-steps", "3", "--resolution", str(RES), "--out",
                   str(tmp_path / "out"), "--no-progress", "--policy-kwargs", '{"constrain_actions": true}',
                   "--imagined-kwargs", f'{{"instruction": "{INSTR}"}}'])
    assert rc == 0
    from wvla_gym.evaluation import read_records

    recs = read_records(tmp_path / "out" / "episodes.jsonl")
    assert len(recs) == 2 and all(r["error"] is None and r["steps"] == 3 for r in recs), recs
    assert loads == [checkpoint]
