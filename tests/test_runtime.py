"""WorldVLARuntime: parallel == sequential tokens, batching, imagination, input errors."""

import numpy as np
import pytest
import torch

from wvla_gym.model.processing_worldvla import action_mask_row, build_action_attention_mask
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import MalformedActionOutput, WorldVLARuntime

INSTR = ["pick up the bowl", "open the drawer", "x"]


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    torch.set_num_threads(2)
    return WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), action_chunk=5))


def _frames(b, m, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, m, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_parallel_equals_sequential_and_batch(rt, k):
    hist = _frames(3, 2)
    seq, seq_info = rt.predict_action_chunk(hist, INSTR, decode="sequential", constrain_actions=True, n_actions=k,
                                            return_info=True)
    seq_tokens = seq_info.tokens
    par, info = rt.predict_action_chunk(hist, INSTR, decode="parallel", constrain_actions=True, n_actions=k,
                                        return_info=True)
    assert info.tokens == seq_tokens and info.passes == 8
    assert par.shape == (3, k, 7) and par.dtype == np.float32
    np.testing.assert_array_equal(par, seq)
    for b in range(3):  # B=1 gives the same tokens as row b of B=3 (left padding is exact)
        one = rt.predict_action_chunk(hist[b : b + 1], INSTR[b], constrain_actions=True, n_actions=k, return_info=True)
        assert one.info.tokens[0] == seq_tokens[b]
    lay = rt.layout
    for g in seq_tokens:
        assert g[0::9] == [lay.boa_id] * k and g[8::9] == [lay.eoa_id] * k
        assert all(lay.action_first_id <= t < lay.action_first_id + 256 for j in range(k) for t in g[9 * j + 1 : 9 * j + 8])


def test_blocks_differ_with_flat_positions(rt):
    # with correct positions the K blocks are not all identical (same positions would make them equal)
    res = rt.predict_action_chunk(_frames(1, 2, seed=4), "go", constrain_actions=True, n_actions=5, return_info=True)
    blocks = {tuple(res.info.tokens[0][9 * j : 9 * j + 9]) for j in range(5)}
    assert len(blocks) > 1


def test_variable_history_lengths(rt):
    f = _frames(2, 2, seed=1)
    hist = [[f[0, 1]], [f[1, 0], f[1, 1]]]  # first query has one frame
    s = rt.predict_action_chunk(hist, ["a", "b"], decode="sequential", constrain_actions=True, return_info=True).info.tokens
    par = rt.predict_action_chunk(hist, ["a", "b"], decode="parallel", constrain_actions=True, return_info=True)
    assert par.info.tokens == s


def test_unconstrained_is_official_and_falls_back(rt):
    # a random model does not emit well-formed blocks: parallel detects it, re-decodes sequentially, and both
    # report the same malformed output
    hist = _frames(1, 1, seed=2)
    assert not getattr(rt.config, "constrain_actions", False)  # the tiny config leaves the default (None) off
    with pytest.raises(MalformedActionOutput) as seq_err:
        rt.predict_action_chunk(hist, "go", decode="sequential", n_actions=2)
    s = list(seq_err.value.info.tokens[0])
    assert s
    with pytest.raises(MalformedActionOutput) as par_err:
        rt.predict_action_chunk(hist, "go", decode="parallel", n_actions=2)
    assert par_err.value.info.fallback == [True]
    assert par_err.value.info.tokens[0] == s  # the fallback re-decodes exactly the official sequential tokens
    assert str(par_err.value) == str(seq_err.value)


def test_constrain_actions_default_is_the_checkpoint_config(rt, monkeypatch):
    hist = _frames(1, 2, seed=2)
    forced = rt.predict_action_chunk(hist, "go", constrain_actions=True, n_actions=2)
    monkeypatch.setattr(rt.config, "constrain_actions", True, raising=False)  # as packaged checkpoints set it
    np.testing.assert_array_equal(rt.predict_action_chunk(hist, "go", n_actions=2), forced)
    monkeypatch.setattr(rt.config, "constrain_actions", False)
    with pytest.raises(MalformedActionOutput):  # the random model's own (malformed) output again
        rt.predict_action_chunk(hist, "go", n_actions=2)


def test_mask_row_matches_full_mask(rt):
    lay = rt.layout
    rng = np.random.default_rng(0)
    seq = [lay.bos_id, 50, lay.boi_id, 9, 9, lay.eoi_id, lay.end_of_turn_id]
    for _ in range(3):
        seq += [lay.boa_id, *rng.integers(lay.action_first_id, lay.action_first_id + 256, 7).tolist(), lay.eoa_id]
    full = build_action_attention_mask(torch.tensor([seq]), lay)[0]
    for i in range(len(seq)):
        assert torch.equal(action_mask_row(torch.tensor(seq[: i + 1]), lay), full[i, : i + 1])


def test_imagine_batch(rt):
    imgs = _frames(3, 1, seed=3)[:, 0]
    acts = np.zeros((3, 7))
    out = rt.imagine(imgs, acts)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    one = rt.imagine(imgs[1:2], acts[1:2])
    np.testing.assert_array_equal(one[0], out[1])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = rt.imagine(imgs, acts, do_sample=True, generator=g1)
    s2 = rt.imagine(imgs, acts, do_sample=True, generator=g2)
    np.testing.assert_array_equal(s1, s2)


def test_errors(rt):
    ok = _frames(2, 2)
    with pytest.raises(ValueError, match="decode"):
        rt.predict_action_chunk(ok, "a", decode="beam")
    with pytest.raises(ValueError, match="image_history"):
        rt.predict_action_chunk(ok.astype(np.float32), "a")
    with pytest.raises(ValueError, match=r"\(32, 32, 3\)"):
        rt.predict_action_chunk(np.zeros((1, 1, 64, 64, 3), np.uint8), "a")
    with pytest.raises(ValueError, match="1..2 frames"):
        rt.predict_action_chunk(np.zeros((1, 3, 32, 32, 3), np.uint8), "a")
    with pytest.raises(ValueError, match="instruction"):
        rt.predict_action_chunk(ok, ["only one"])
    with pytest.raises(ValueError, match="n_actions"):
        rt.predict_action_chunk(ok, "a", n_actions=0)
    with pytest.raises(ValueError, match="images"):
        rt.imagine(np.zeros((2, 32, 32), np.uint8), np.zeros((2, 7)))
    with pytest.raises(ValueError, match="actions"):
        rt.imagine(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="batch size"):
        rt.imagine(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((3, 7)))
    assert (rt.action_chunk, rt.history, rt.resolution, rt.action_dim) == (5, 2, 32, 7)


def test_default_asset_missing(monkeypatch, tmp_path):
    import wvla_gym.runtime as r

    monkeypatch.setattr(r, "DEFAULT_ASSET_DIR", tmp_path / "default")
    with pytest.raises(FileNotFoundError, match="default"):
        WorldVLARuntime.from_pretrained()
