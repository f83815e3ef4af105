"""Imagining from codes: the runtime takes prompt frames as VQ codes, and the imagined envs with
``imagine_from="codes"`` feed back the codes the world model generated instead of re-encoding decoded frames."""

from __future__ import annotations

import numpy as np
import pytest

from envs.imagined import ImaginedEnv
from envs.imagined_vector import ImaginedVectorEnv
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RES = 32


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    h3 = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("c3"), resolution=RES, seed=1,
                                                              world_history=3))
    h1 = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("c1"), resolution=RES, seed=1))
    return h3, h1


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def _acts(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 7)).astype(np.float32)


def _codes(rt, frames):
    return rt.image_tokenizer.encode_codes(frames).numpy()


def test_codes_of_the_frames_give_the_frames_prediction(runtimes):
    h3, h1 = runtimes
    f, a = _frames(3), _acts(3)
    np.testing.assert_array_equal(h1.imagine(None, a[:2], codes=_codes(h1, f[:2])), h1.imagine(f[:2], a[:2]))
    ragged_f = h3.imagine([f, f[2:]], [a, a[2:]], return_info=True)
    ragged_c = h3.imagine(None, [a, a[2:]], codes=[_codes(h3, f), _codes(h3, f[2:])], return_info=True)
    np.testing.assert_array_equal(ragged_c.frames, ragged_f.frames)
    assert np.array_equal(ragged_c.info.codes.numpy(), ragged_f.info.codes.numpy())
    # the returned codes decode to the returned frames
    np.testing.assert_array_equal(h3.image_tokenizer.decode_codes(ragged_c.info.codes), ragged_c.frames)


@pytest.mark.parametrize("bad, match", [
    (dict(codes=np.full((1, 4, 4), 99)), r"codes must be integer codes in \[0, 64\)"),
    (dict(codes=np.zeros((1, 3, 4), np.int64)), r"codes must be .*row 0 is int64 \(1, 3, 4\)"),
    (dict(codes=np.zeros((1, 4, 4), np.float32)), r"codes must be .*row 0 is float32"),
    (dict(codes=np.zeros((1, 2, 4, 4), np.int64)), r"codes must be .*T <= 1"),
])
def test_bad_codes_are_named(runtimes, bad, match):
    _, h1 = runtimes
    with pytest.raises(ValueError, match=match):
        h1.imagine(None, _acts(1), **bad)


def test_images_and_codes_are_exclusive(runtimes):
    _, h1 = runtimes
    f = _frames(1)
    with pytest.raises(ValueError, match="exactly one of images .* and codes"):
        h1.imagine(f, _acts(1), codes=_codes(h1, f))
    with pytest.raises(ValueError, match="exactly one of images .* and codes"):
        h1.imagine(None, _acts(1))


def test_env_from_codes_equals_explicit_runtime_calls(runtimes):
    """Stateful: each step is the runtime's prediction from the last 3 (codes, action) pairs, where every code
    after the start is the world model's own output (never a re-encoding of a decoded frame)."""
    h3, _ = runtimes
    start = _frames(2, seed=5)
    env = ImaginedEnv(runtime=h3, init_frames=start, instruction="go", max_episode_steps=50, imagine_from="codes")
    obs, _ = env.reset(seed=0, options={"frame_id": 1})
    codes, acts = [_codes(h3, start[1:2])[0]], []
    reencoded_differs = False
    for t in range(6):
        a = _acts(1, seed=10 + t)[0]
        acts.append(a)
        obs, *_ = env.step(a)
        lo = max(0, t - 2)
        want = h3.imagine(None, np.stack(acts[lo : t + 1])[None], codes=np.stack(codes[lo : t + 1])[None],
                          return_info=True)
        np.testing.assert_array_equal(obs["image"], want.frames[0])
        codes.append(want.info.codes[0].numpy())
        reencoded_differs |= not np.array_equal(_codes(h3, obs["image"][None])[0], codes[-1])
    # the frames mode would have fed other codes at some step (random weights: decode -> encode is lossy)
    assert reencoded_differs
    obs, _ = env.reset(seed=0, options={"frame_id": 0})  # a reset forgets the past and re-encodes the start
    a = _acts(1, seed=99)[0]
    nxt, *_ = env.step(a)
    np.testing.assert_array_equal(nxt["image"], h3.imagine(start[:1], a[None])[0])


def test_vector_env_from_codes_equals_single_envs(runtimes):
    h3, _ = runtimes
    start = _frames(2, seed=6)
    kw = dict(runtime=h3, init_frames=start, instruction="go", max_episode_steps=50, imagine_from="codes")
    venv = ImaginedVectorEnv(2, **kw)
    singles = [ImaginedEnv(**kw) for _ in range(2)]
    venv.reset(seed=0, options={"frame_id": 0})
    for e in singles:
        e.reset(seed=0, options={"frame_id": 0})
    for t in range(5):
        acts = _acts(2, seed=20 + t)
        if t == 2:  # env 1 restarts: its history is shorter than env 0's from here on
            venv.reset(options={"frame_id": 1, "reset_mask": np.array([False, True])})
            singles[1].reset(options={"frame_id": 1})
        obs, *_ = venv.step(acts)
        for i, e in enumerate(singles):
            o, *_ = e.step(acts[i])
            np.testing.assert_array_equal(obs["image"][i], o["image"])


def test_imagine_from_is_validated(runtimes):
    _, h1 = runtimes
    with pytest.raises(ValueError, match="imagine_from"):
        ImaginedEnv(runtime=h1, init_frames=_frames(1), instruction="go", imagine_from="pixels")
