"""One policy protocol (``wvla_gym.policy``): every policy of the package follows it; adapters; the registry."""

from __future__ import annotations

import inspect
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.adapters import CallablePolicy, SB3ModelPolicy
from agents.registry import WorldVLAFactory, resolve_policy
from agents.scripted import ScriptedLiberoExpert
from agents.worldvla import WorldVLAAgent
from wvla_gym.evaluation.policies import RandomPolicy, ReplayPolicy, ZeroPolicy, reset_policy
from wvla_gym.policy import ChunkedPolicy, Policy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cls", [ZeroPolicy, RandomPolicy, ReplayPolicy, SB3ModelPolicy, CallablePolicy,
                                 WorldVLAAgent, ScriptedLiberoExpert])
def test_every_policy_of_the_package_resets_with_a_seed(cls):
    params = inspect.signature(cls.reset).parameters
    assert "seed" in params and params["seed"].kind is inspect.Parameter.KEYWORD_ONLY
    assert callable(getattr(cls, "act", None))


def test_adapters_are_policies():
    class Model:
        def predict(self, obs, deterministic=False):
            return np.full(7, 0.5 if deterministic else -0.5), None

    sb3 = SB3ModelPolicy(Model())
    fn = CallablePolicy(lambda obs: [0.1] * 7)
    for p in (sb3, fn, ZeroPolicy()):
        assert isinstance(p, Policy)
        p.reset(seed=3)
        a = p.act({"image": np.zeros((8, 8, 3), np.uint8)})
        assert a.shape == (7,) and a.dtype == np.float32
    assert sb3.act({})[0] == 0.5
    with pytest.raises(ValueError, match="model="):
        SB3ModelPolicy(object())
    with pytest.raises(ValueError, match="fn="):
        CallablePolicy(5)


def test_worldvla_agent_is_a_chunked_policy():
    assert issubclass(WorldVLAAgent, ChunkedPolicy)


def test_reset_policy_passes_the_seed_and_still_runs_seedless_policies():
    seen = []

    class New:
        def reset(self, *, seed=None):
            seen.append(("new", seed))

    class Legacy:
        def reset(self):
            seen.append(("legacy", None))

    reset_policy(New(), 7)
    reset_policy(Legacy(), 7)
    assert seen == [("new", 7), ("legacy", None)]


class _PrivilegedEnv:
    """The attributes ScriptedLiberoExpert checks for (it reads them only when acting)."""

    sim = raw_env = goal_state = get_object_pose = get_site_pos = get_eef_pose = None

    @property
    def unwrapped(self):
        return self


def test_scripted_reset_seed_equals_a_freshly_seeded_expert():
    a = ScriptedLiberoExpert(_PrivilegedEnv(), noise_std=0.1, seed=0)
    a._rng.normal(size=5)
    a.reset(seed=11)
    b = ScriptedLiberoExpert(_PrivilegedEnv(), noise_std=0.1, seed=11)
    np.testing.assert_array_equal(a._rng.normal(size=6), b._rng.normal(size=6))
    with pytest.raises(ValueError, match="seed"):
        a.reset(seed=1.5)


def test_registry_forms():
    assert resolve_policy("zero").name == "zero"
    assert isinstance(resolve_policy("random").factory(None), RandomPolicy)
    scripted = resolve_policy("scripted", noise_std=0.05)
    assert scripted.privileged and scripted.name == "scripted_noise0.05"
    assert isinstance(scripted.factory(_PrivilegedEnv()), ScriptedLiberoExpert)
    assert resolve_policy("tests.eval_fakes:counting_factory").name == "tests.eval_fakes:counting_factory"
    with pytest.raises(ValueError, match="sb3:PATH, module:callable"):
        resolve_policy("nonsense")


def test_worldvla_factory_pickles_without_its_runtime(tmp_path):
    from wvla_gym.model.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tiny", resolution=32, action_chunk=2)
    resolved = resolve_policy("worldvla", checkpoint=str(ckpt), policy_kwargs={"constrain_actions": True})
    factory = resolved.factory
    assert isinstance(factory, WorldVLAFactory) and factory._runtime is not None
    assert resolved.knobs["K"] == 2 and resolved.knobs["constrain_actions"] is True
    clone = pickle.loads(pickle.dumps(factory))
    assert clone._runtime is None and clone.checkpoint == str(ckpt)
    # Unpickled in the same process, it finds the same runtime in the cache.
    assert clone.runtime() is factory.runtime()


def test_nothing_outside_the_cli_imports_it():
    """Benchmarks and examples are not packages, so import-linter does not see them: grep them."""
    pattern = re.compile(r"^\s*(from\s+wvla_gym\.cli\b|import\s+wvla_gym\.cli\b|from\s+wvla_gym\s+import\s+cli\b)",
                         re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for folder in ("benchmarks", "examples", "agents", "envs")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_sb3_is_optional():
    code = (
        "import sys; sys.modules['stable_baselines3'] = None\n"
        "import envs.sb3 as m\n"
        "m.SB3Compat\n"
        "try:\n    m.SB3VecEnvAdapter\nexcept ImportError as e:\n    print(e)\n"
        "from agents.adapters import load_sb3_model\n"
        "try:\n    load_sb3_model('x.zip')\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.count("pip install 'wvla-gym[sb3]'") == 2, out


def test_sb3_vec_env_adapter_is_an_sb3_vec_env():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import VecEnv

    from envs.sb3 import SB3VecEnvAdapter

    assert issubclass(SB3VecEnvAdapter, VecEnv) and not SB3VecEnvAdapter.__abstractmethods__
    assert pickle.loads(pickle.dumps(SB3VecEnvAdapter)) is SB3VecEnvAdapter


def test_chunk_queue_base_serves_chunks_in_order():
    from agents.base import ChunkQueuePolicy

    class Counter(ChunkQueuePolicy):
        def __init__(self):
            super().__init__()
            self.seen, self.calls, self.seeds = 0, 0, []

        def observe(self, obs):
            self.seen += 1

        def on_reset(self, seed):
            self.seeds.append(seed)

        def predict_chunk(self, obs):
            self.calls += 1
            return np.arange(3)[:, None] * np.ones(7) / 10 + self.calls

    p = Counter()
    assert isinstance(p, ChunkedPolicy)
    p.reset(seed=4)
    acts = [p.act({}) for _ in range(4)]
    assert [a[0] for a in acts] == pytest.approx([1.0, 1.1, 1.2, 2.0]) and p.seen == 4 and p.calls == 2
    assert p.act_chunk({}).shape == (3, 7) and p.calls == 3
    p.reset()
    assert p.act({})[0] == pytest.approx(4.0) and p.seeds == [4, None]

    class Bad(ChunkQueuePolicy):
        def predict_chunk(self, obs):
            return np.zeros(7)

    with pytest.raises(ValueError, match=r"Bad.predict_chunk returned shape \(7,\); expected \(K, 7\)"):
        Bad().act({})
