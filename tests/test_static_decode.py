"""Static-cache decoding (wvla_gym.generation) gives the dynamic path's tokens; backend selection; batched VQ."""

import numpy as np
import pytest
import torch

from wvla_gym.generation import ActionMaskState, StaticDecoder, StepRunner, resolve_backend
from wvla_gym.model.processing_worldvla import action_mask_row
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime

INSTR = ["pick up the bowl and put it on the plate", "open", "x y"]  # different prompt lengths: left padding


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), action_chunk=5)


@pytest.fixture(scope="module")
def rts(ckpt):
    torch.set_num_threads(1)
    dyn = WorldVLARuntime.from_pretrained(ckpt, decode_backend="dynamic")
    sta = WorldVLARuntime.from_pretrained(ckpt, decode_backend="static")
    return dyn, sta


def _frames(b, m, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, m, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("decode", ["sequential", "parallel"])
@pytest.mark.parametrize("k", [1, 5, 10])
@pytest.mark.parametrize("bsz", [1, 3])
def test_static_action_tokens_equal_dynamic(rts, decode, k, bsz):
    dyn, sta = rts
    hist, instr = _frames(bsz, 2, seed=k), INSTR[:bsz]
    a, dyn_info = dyn.predict_action_chunk(hist, instr, decode=decode, constrain_actions=True, n_actions=k,
                                           return_info=True)
    b, sta_info = sta.predict_action_chunk(hist, instr, decode=decode, constrain_actions=True, n_actions=k,
                                           return_info=True)
    assert sta_info.tokens == dyn_info.tokens
    np.testing.assert_array_equal(a, b)
    assert sta_info.backend == "static" and dyn_info.backend == "dynamic"


def test_static_unconstrained_sequential_and_fallback_equal_dynamic(rts):
    # random model: malformed output; the static decode must stop where the dynamic one stops (EOT / limit)
    dyn, sta = rts
    hist = [[f] for f in _frames(2, 1, seed=2)[:, 0]]
    for decode in ("sequential", "parallel"):
        out = []
        for rt in (dyn, sta):
            try:
                res = rt.predict_action_chunk(hist, INSTR[:2], decode=decode, n_actions=2, return_info=True)
            except Exception as e:  # noqa: BLE001 - the same error from both is the point
                out.append((type(e), str(e), e.info.tokens))
            else:
                out.append((None, "", res.info.tokens))
        assert out[0] == out[1]


def test_static_mixed_history_lengths(rts):
    dyn, sta = rts
    f = _frames(2, 2, seed=1)
    hist = [[f[0, 1]], [f[1, 0], f[1, 1]]]
    for decode in ("sequential", "parallel"):
        d = dyn.predict_action_chunk(hist, ["a", "bb"], decode=decode, constrain_actions=True, return_info=True)
        s = sta.predict_action_chunk(hist, ["a", "bb"], decode=decode, constrain_actions=True, return_info=True)
        assert s.info.tokens == d.info.tokens


@pytest.mark.parametrize("bsz", [1, 3])
def test_static_imagine_equals_dynamic(rts, bsz):
    dyn, sta = rts
    imgs = _frames(bsz, 1, seed=3)[:, 0]
    acts = np.random.default_rng(0).uniform(-1, 1, (bsz, 7))
    np.testing.assert_array_equal(sta.imagine(imgs, acts), dyn.imagine(imgs, acts))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    np.testing.assert_array_equal(sta.imagine(imgs, acts, do_sample=True, generator=g1),
                                  dyn.imagine(imgs, acts, do_sample=True, generator=g2))


def test_cache_reused_across_calls_and_sizes(rts):
    # stale keys of a longer earlier call must stay masked
    dyn, sta = rts
    long_hist, short = _frames(1, 2, seed=7), _frames(1, 1, seed=8)
    for hist in (long_hist, short, long_hist):
        d = dyn.predict_action_chunk(hist, "go", decode="sequential", constrain_actions=True, n_actions=3,
                                     return_info=True)
        s = sta.predict_action_chunk(hist, "go", decode="sequential", constrain_actions=True, n_actions=3,
                                     return_info=True)
        assert s.info.tokens == d.info.tokens
    assert len(sta.decoder._caches) <= 4


def test_mask_state_equals_action_mask_row_on_garbage(rts):
    lay = rts[0].layout
    rng = np.random.default_rng(0)
    special = [lay.boi_id, lay.eoi_id, lay.boa_id, lay.eoa_id]
    for trial in range(30):
        prompt_len = int(rng.integers(1, 12))
        seq = [int(rng.choice(special)) if rng.random() < 0.4 else 50 for _ in range(prompt_len + 25)]
        prompts = [seq[:prompt_len], [50] * (prompt_len + 3)]  # a second, longer row: row 0 is left-padded
        lp = max(map(len, prompts))
        state = ActionMaskState(prompts, lay, lp + 40, torch.device("cpu"))
        off = lp - prompt_len
        for step, tok in enumerate(seq[prompt_len:]):
            row = state.push(torch.tensor([tok, 50]), lp + step)
            ref = action_mask_row(torch.tensor(seq[: prompt_len + step + 1]), lay)
            assert torch.equal(row[0, off : lp + step + 1], ref), (trial, step)
            assert not row[0, :off].any() and not row[0, lp + step + 1 :].any()


def test_backend_selection():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "dynamic"  # CPU: auto never changes results
    assert resolve_backend("static", cpu) == "static"
    with pytest.raises(ValueError, match="cuda_graph"):
        resolve_backend("cuda_graph", cpu)
    with pytest.raises(ValueError, match="decode_backend"):
        resolve_backend("fast", cpu)
    if torch.cuda.is_available():
        assert resolve_backend("auto", torch.device("cuda")) == "cuda_graph"


def test_auto_on_cpu_is_the_dynamic_path(ckpt, rts):
    rt = WorldVLARuntime.from_pretrained(ckpt)
    assert rt.decode_backend == "dynamic" and not isinstance(rt.decoder, StaticDecoder)
    hist = _frames(2, 2, seed=9)
    a = rt.predict_action_chunk(hist, INSTR[:2], constrain_actions=True)
    np.testing.assert_array_equal(a, rts[0].predict_action_chunk(hist, INSTR[:2], constrain_actions=True))


def test_graph_step_plumbing_with_a_fake_capture(ckpt, rts):
    """The cuda_graph backend's buffer handling (static inputs, capture once per shape, replay) on CPU: the
    fake capture runs the function at capture time like a CUDA warm-up would, so the cache rewind is needed."""
    captured = []

    def fake_capture(run, cache):
        lengths = [layer.cumulative_length.clone() for layer in cache.layers]
        run()  # a warm-up writes the slots; the runner must write them again at replay
        for layer, n in zip(cache.layers, lengths, strict=True):
            layer.cumulative_length.copy_(n)
        captured.append(1)
        return run

    rt = WorldVLARuntime.from_pretrained(ckpt, decode_backend="static")
    rt.decoder.step = StepRunner(rt.model, rt.attn_implementation, rt.dtype, capture=True, capture_fn=fake_capture)
    dyn = rts[0]
    hist = _frames(2, 2, seed=11)
    for decode in ("sequential", "parallel"):
        d = dyn.predict_action_chunk(hist, INSTR[:2], decode=decode, constrain_actions=True, return_info=True)
        r = rt.predict_action_chunk(hist, INSTR[:2], decode=decode, constrain_actions=True, return_info=True)
        assert r.info.tokens == d.info.tokens
    n_graphs = len(captured)
    assert 0 < n_graphs <= 3  # sequential q=1, parallel q=n (no recapture per step)
    rt.predict_action_chunk(hist, INSTR[:2], decode="sequential", constrain_actions=True)
    assert len(captured) == n_graphs  # replayed, not recaptured


def test_vq_batch_option(ckpt):
    rt = WorldVLARuntime.from_pretrained(ckpt)
    assert rt.vq_batch is False  # "auto" on CPU: frame by frame (exact vector == single envs)
    imgs = _frames(4, 1, seed=12)[:, 0]
    codes_f = rt.image_tokenizer.encode_codes(imgs)
    px_f = rt.image_tokenizer.decode_codes(codes_f)
    rt.vq_batch = True
    codes_b = rt.image_tokenizer.encode_codes(imgs)
    px_b = rt.image_tokenizer.decode_codes(codes_f)
    assert codes_b.shape == codes_f.shape and px_b.shape == px_f.shape
    # batched convs may round differently: codes almost always agree, pixels within 1 level
    assert (codes_b == codes_f).float().mean() > 0.95
    assert np.abs(px_b.astype(int) - px_f.astype(int)).max() <= 1
    rt.vq_batch = "auto"
    assert rt.vq_batch is False
    with pytest.raises(TypeError, match="vq_batch must be a bool or 'auto', got 'yes'"):
        rt.vq_batch = "yes"
