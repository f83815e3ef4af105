"""Action guidance (classifier-free guidance of the world model's action): each image code is chosen from
``g + s * (c - g)``, ``c`` the logits under the step's action and ``g`` under the same context with the current
action's pose dims zeroed. Checked against a plain, cache-free reference decode written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.imagined import ImaginedEnv
from envs.imagined_vector import ImaginedVectorEnv
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RES = 32


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    return WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("g"), resolution=RES, seed=3,
                                                                world_history=2))


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def _acts(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 7)).astype(np.float32)


@torch.inference_mode()
def _reference(rt, codes, acts, scale):
    """Greedy guided decode by full forwards (no cache): the schedule BOI, grid h, grid w, codes with a row-end
    after every full row but the last; both contexts are fed the same chosen codes."""
    lay = rt.layout
    h, w = rt.image_tokenizer.latent_shape(RES, RES)
    toks = rt.image_tokenizer.codes_to_tokens(torch.as_tensor(codes)).tolist()
    still = acts.astype(np.float64).copy()
    still[-1, :6] = 0.0
    head = [lay.boi_id, lay.grid_token(h), lay.grid_token(w)]
    seq_c = rt.processor.world_prompt(toks, acts) + head
    seq_g = rt.processor.world_prompt(toks, still) + head
    image_ids = torch.as_tensor(lay.image_ids)
    out = []
    for k in range(h * w):
        lc, lg = (rt.model(input_ids=torch.tensor([s]), mask_image_logits=False).logits[0, -1].float()
                  for s in (seq_c, seq_g))
        idx = int((lg + scale * (lc - lg))[image_ids].argmax())
        out.append(idx)
        for s in (seq_c, seq_g):
            s.append(int(image_ids[idx]))
            if (k + 1) % w == 0 and k + 1 < h * w:
                s.append(lay.row_end_id)
    return np.array(out).reshape(h, w)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_guided_codes_equal_the_reference_decode(rt, scale):
    f, a = _frames(2, seed=1), _acts(2, seed=2)
    codes = rt.image_tokenizer.encode_codes(f).numpy()
    got = rt.imagine(None, a[None], codes=codes[None], action_guidance=scale, return_info=True)
    want = _reference(rt, codes, a, scale)
    np.testing.assert_array_equal(got.info.codes[0].numpy(), want)
    plain = rt.imagine(None, a[None], codes=codes[None], return_info=True)
    assert not np.array_equal(plain.info.codes[0].numpy(), want)  # the guidance changed the prediction


def test_guidance_is_a_no_op_without_pose_motion_and_at_scale_one(rt):
    f = _frames(2, seed=4)
    a = _acts(2, seed=5)
    a[-1, :6] = 0.0  # the current action is already "staying": c == g
    plain = rt.imagine(f[None], a[None])
    np.testing.assert_array_equal(rt.imagine(f[None], a[None], action_guidance=4.0), plain)
    b = _acts(2, seed=6)
    np.testing.assert_array_equal(rt.imagine(f[None], b[None], action_guidance=1.0), rt.imagine(f[None], b[None]))


def test_batched_guidance_equals_row_by_row(rt):
    f, a = _frames(3, seed=7), _acts(3, seed=8)
    rows = [(f[:2], a[:2]), (f[2:], a[2:])]  # ragged histories: 2 pairs and 1 pair
    both = rt.imagine([x for x, _ in rows], [y for _, y in rows], action_guidance=2.0)
    for i, (x, y) in enumerate(rows):
        np.testing.assert_array_equal(both[i], rt.imagine(x[None], y[None], action_guidance=2.0)[0])


def test_envs_pass_the_guidance_on_step_by_step(rt):
    start = _frames(1, seed=9)
    kw = dict(runtime=rt, init_frames=start, instruction="go", max_episode_steps=20, action_guidance=2.0)
    env, venv = ImaginedEnv(**kw), ImaginedVectorEnv(2, **kw)
    obs, _ = env.reset(seed=0, options={"frame_id": 0})
    venv.reset(seed=0, options={"frame_id": 0})
    codes = [rt.image_tokenizer.encode_codes(start).numpy()[0]]
    acts = []
    for t in range(3):
        a = _acts(1, seed=30 + t)[0]
        acts.append(a)
        obs, *_ = env.step(a)
        vobs, *_ = venv.step(np.stack([a, a]))
        lo = max(0, t - 1)
        want = rt.imagine(None, np.stack(acts[lo:])[None], codes=np.stack(codes[lo:])[None], return_info=True,
                          action_guidance=2.0)
        np.testing.assert_array_equal(obs["image"], want.frames[0])
        np.testing.assert_array_equal(vobs["image"][1], want.frames[0])
        codes.append(want.info.codes[0].numpy())


@pytest.mark.parametrize("bad", [0, -1.0, "2", True])
def test_bad_guidance_is_named(rt, bad):
    with pytest.raises(ValueError, match="action_guidance"):
        rt.imagine(_frames(1), _acts(1), action_guidance=bad)
    with pytest.raises(ValueError, match="action_guidance"):
        ImaginedEnv(runtime=rt, init_frames=_frames(1), instruction="go", action_guidance=bad)
