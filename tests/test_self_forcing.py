"""Self-forcing samples: each is the world model's own rollout (explicit runtime calls here) as the prompt and the
recorded next frame as the target; training takes them as extra world samples, named in the run identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime
from wvla_gym.training.self_forcing import rollout_starts, self_forcing_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RES = 32


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    return WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("sf"), resolution=RES, seed=2,
                                                                world_history=2))


def _episode(rt, n, seed):
    h, w = rt.image_tokenizer.latent_shape(RES, RES)
    r = np.random.default_rng(seed)
    n_codes = rt.layout.n_image_codes
    return r.integers(0, n_codes, (n, h, w)), r.uniform(-1, 1, (n, 7)).astype(np.float32)


def _toks(rt, codes):
    return rt.image_tokenizer.codes_to_tokens(torch.as_tensor(np.asarray(codes, np.int64))).tolist()


def test_rollout_starts_leave_a_history_before_and_the_rollout_after():
    assert list(rollout_starts(20, 2, 4, 5)) == [1, 6, 11]  # 11 + 4 = 15 < 19: the targets stay in the episode
    assert list(rollout_starts(6, 2, 4, 1)) == []  # start 1 would need frame 1 + 4 + 1 = 6 (there are 0-5)
    assert list(rollout_starts(7, 2, 4, 1)) == [1]
    assert list(rollout_starts(5, 1, 8, 1)) == []


def test_samples_are_the_models_own_rollout_with_recorded_targets(rt):
    eps = [_episode(rt, 12, 0), _episode(rt, 9, 1)]
    got = self_forcing_samples(rt, eps, rollout=3, every=4, batch=2)
    # starts range(1, n - 4, 4): episode 0 (n 12) -> 1, 5; episode 1 (n 9) -> 1
    starts = [(0, 1), (0, 5), (1, 1)]
    assert len(got) == 2 * len(starts)
    want = []
    for e, s in starts:
        c, a = eps[e]
        # the world model's own codes, by explicit calls: p1 from the recorded history, p2 from [c_s, p1]
        p1 = rt.imagine(None, a[s - 1 : s + 1][None], codes=c[s - 1 : s + 1][None], return_info=True).info.codes[0]
        p1 = p1.numpy()
        want.append(rt.processor.world_sample(_toks(rt, np.stack([c[s], p1])), a[s : s + 2], _toks(rt, c[s + 2][None])[0]))
        p2 = rt.imagine(None, a[s : s + 2][None], codes=np.stack([c[s], p1])[None], return_info=True).info.codes[0]
        want.append(rt.processor.world_sample(_toks(rt, np.stack([p1, p2.numpy()])), a[s + 1 : s + 3],
                                              _toks(rt, c[s + 3][None])[0]))
    # batched rows run in lockstep, so the samples come step-major within a batch: compare as multisets
    assert len(got) == len(want) and sorted(map(str, got)) == sorted(map(str, want))
    assert got[0] == want[0]
    # shards split the rollouts and together give every sample once
    parts = [self_forcing_samples(rt, eps, rollout=3, every=4, batch=1, shard=(i, 2)) for i in range(2)]
    assert sorted(map(str, parts[0] + parts[1])) == sorted(map(str, got))


@pytest.mark.parametrize("kw, match", [({"rollout": 1}, "rollout=1"), ({"every": 0}, "every=0"),
                                        ({"shard": (2, 2)}, "shard=")])
def test_bad_arguments_are_named(rt, kw, match):
    with pytest.raises(ValueError, match=match):
        self_forcing_samples(rt, [_episode(rt, 12, 0)], **kw)
