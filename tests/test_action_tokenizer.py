"""Action tokenizer: docs/protocol.md §2 edge bins and round trips (hand-computed values)."""

import json

import numpy as np
import pytest

from wvla_gym.model.action_tokenizer import LIBERO_MAX, LIBERO_MIN, ActionTokenizer


def test_released_stats():
    tok = ActionTokenizer.worldvla_libero()
    assert tok.action_min.tolist() == [-0.9375, -0.9375, -0.9375, -0.32571429, -0.375, -0.375, -1.0]
    assert tok.action_max.tolist() == [0.9375, 0.9375, 0.9375, 0.375, 0.375, 0.375, 1.0]
    r = ActionTokenizer.rynnvla_libero()
    assert r.action_min[3] == -0.24214286 and r.action_max[5] == 0.375


def test_zero_symmetric_and_asymmetric():
    tok = ActionTokenizer.worldvla_libero()
    ids = tok.encode(np.zeros(7))
    # symmetric dims: 0 -> bin 127 -> 10133; rx range is asymmetric: 0 normalises to -0.0703 -> 10124
    assert ids.tolist() == [10133, 10133, 10133, 10124, 10133, 10133, 10133]
    dec = tok.decode(np.full(7, 10133))
    sym = [0, 1, 2, 4, 5, 6]
    assert np.abs(dec[sym]).max() < 1e-7


def test_max_and_min_edges():
    tok = ActionTokenizer.worldvla_libero()
    assert tok.encode(np.asarray(LIBERO_MAX)).tolist() == [10260] * 7
    assert tok.encode(np.asarray(LIBERO_MIN)).tolist() == [10006] * 7
    # bin centres 1 - 1/255 = 0.99608 of the way to each edge
    hi = tok.decode(np.full(7, 10260))
    lo = tok.decode(np.full(7, 10006))
    span = np.asarray(LIBERO_MAX) - np.asarray(LIBERO_MIN)
    mid = (np.asarray(LIBERO_MAX) + np.asarray(LIBERO_MIN)) / 2
    np.testing.assert_allclose((hi - mid) / (span / 2), 254 / 255, atol=1e-7)
    np.testing.assert_allclose((lo - mid) / (span / 2), -254 / 255, atol=1e-7)
    np.testing.assert_allclose(hi[6], 0.996078, atol=1e-6)  # gripper +1 -> +0.99608


def test_exact_one_and_clamp():
    tok = ActionTokenizer(np.full(7, -1.0), np.full(7, 1.0))
    # normalised exactly 1.0 is only hit through the clip (value above max): digitize -> 256 -> 10261
    assert tok.encode(np.full(7, 5.0)).tolist() == [10261] * 7
    assert tok.encode(np.full(7, -5.0)).tolist() == [10006] * 7
    # 10261 and out-of-range ids decode through the clamp to the last / first centre
    np.testing.assert_allclose(tok.decode(np.full(7, 10261)), tok.decode(np.full(7, 10260)))
    np.testing.assert_allclose(tok.decode(np.full(7, 42)), tok.decode(np.full(7, 10006)))


def test_roundtrip_error_at_most_half_bin():
    tok = ActionTokenizer.worldvla_libero()
    rng = np.random.default_rng(0)
    a = rng.uniform(LIBERO_MIN, LIBERO_MAX, size=(1000, 7))
    back = tok.decode(tok.encode(a))
    half_bin = (np.asarray(LIBERO_MAX) - np.asarray(LIBERO_MIN)) / 255 / 2
    assert np.all(np.abs(back - a) <= half_bin + 1e-9)
    ids = tok.encode(a)
    assert ids.min() >= 10006 and ids.max() <= 10260
    np.testing.assert_array_equal(tok.encode(back), ids)  # centres are fixed points


def test_stats_from_data_and_file(tmp_path):
    data = np.array([[0.0] * 7, [1.0] * 6 + [2.0], [-1.0] * 7])
    tok = ActionTokenizer.from_actions(data)
    assert tok.action_min.tolist() == [-1.0] * 7 and tok.action_max.tolist() == [1.0] * 6 + [2.0]
    p = tmp_path / "stats.json"
    p.write_text(json.dumps(tok.to_dict()))
    assert ActionTokenizer.from_stats_file(p).action_max.tolist() == tok.action_max.tolist()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="min"):
        ActionTokenizer.from_stats_file(bad)
    with pytest.raises(ValueError, match="last dimension"):
        tok.encode(np.zeros(3))
