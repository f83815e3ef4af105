"""World model with a history (``world_history`` > 1) and context-noise training: the prompt round-trips through
the processor, samples hold the right frames, the runtime and both imagined envs feed the episode's past."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.imagined import ImaginedEnv
from envs.imagined_vector import ImaginedVectorEnv
from wvla_gym.data.tokens import token_samples
from wvla_gym.model.processing_worldvla import (
    IGNORE_INDEX,
    ByteTextTokenizer,
    WorldVLAProcessor,
    token_blocks,
)
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime
from wvla_gym.training.joint_data import corrupt_context, draw_batch

from .model_fixtures import image_tokens, tiny_lm_config

RES = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def proc():
    cfg = tiny_lm_config()
    lay = cfg.token_layout
    return WorldVLAProcessor(lay, ByteTextTokenizer(lay.text_byte_offset), cfg.action_tokenizer())


def test_history_prompt_layout_and_round_trip(proc):
    lay, at = proc.layout, proc.action_tokenizer
    imgs = [image_tokens(lay, seed=s) for s in (1, 2, 3)]
    acts = at.decode(at.encode(np.random.default_rng(0).uniform(-0.9, 0.9, (3, 7))))  # bin centres: exact round trip
    p = proc.world_prompt(imgs, acts)
    text = [lay.text_byte_offset + b for b in proc.world_text().encode()]
    block = lambda a: [lay.boa_id, *at.encode(a[None])[0].tolist(), lay.eoa_id]  # noqa: E731
    assert p == [lay.bos_id, *text, *imgs[0], *block(acts[0]), *imgs[1], *block(acts[1]), *imgs[2],
                 *block(acts[2]), lay.end_of_turn_id]
    # parse it back: the image blocks and action blocks, in order, give the inputs
    row = torch.tensor(p)
    got_imgs = [p[s : e + 1] for s, e in token_blocks(row, lay.boi_id, lay.eoi_id)]
    got_acts = np.stack([at.decode(np.array([p[s + 1 : e]]))[0] for s, e in token_blocks(row, lay.boa_id, lay.eoa_id)])
    assert got_imgs == imgs
    np.testing.assert_array_equal(got_acts, acts)
    # one pair given as a history is the released his=1 prompt
    assert proc.world_prompt([imgs[0]], acts[:1]) == proc.world_prompt(imgs[0], acts[0])
    ids, labels = proc.world_sample(imgs[:2], acts[:2], imgs[2])
    n = len(proc.world_prompt(imgs[:2], acts[:2]))
    assert labels[:n] == [IGNORE_INDEX] * n and ids[n:] == labels[n:] == [*imgs[2], lay.end_of_turn_id]


@pytest.mark.parametrize("action_shape", [(7,), (3, 7), (2, 6)])
def test_history_prompt_refuses_mismatched_actions(proc, action_shape):
    imgs = [image_tokens(proc.layout, seed=s) for s in (1, 2)]
    with pytest.raises(ValueError, match=r"action must have shape \(2, 7\), one action per frame"):
        proc.world_prompt(imgs, np.zeros(action_shape))


class _MeanEncoder:
    """Frame -> one-code 'image' whose code is the frame's first pixel value (frames here are constant)."""

    def __init__(self, lay):
        self.lay = lay

    def encode(self, images):
        return np.array([[self.lay.boi_id, int(self.lay.image_ids[int(im[0, 0, 0])]), self.lay.eoi_id]
                         for im in images])


def test_token_samples_hold_the_last_h_pairs(proc, tmp_path):
    import h5py

    lay, n = proc.layout, 6
    path = tmp_path / "t_demo.hdf5"
    acts = np.random.default_rng(1).uniform(-0.5, 0.5, (n, 7))
    with h5py.File(path, "w") as f:
        d = f.create_group("data")
        d.attrs["language_instruction"] = "go"
        d.attrs["images_rotated_180"] = False
        g = d.create_group("demo_0")
        g["actions"] = acts
        g["obs/agentview_rgb"] = np.stack([np.full((4, 4, 3), t, np.uint8) for t in range(n)])
    enc = _MeanEncoder(lay)
    img = [enc.encode(np.full((1, 4, 4, 3), t, np.uint8))[0].tolist() for t in range(n)]
    world = [s for s in token_samples([str(path)], proc, enc, kinds=("world",), world_history=3, rotate=False)]
    assert [s.t for s in world] == list(range(n - 1))
    for s in world:
        lo = max(0, s.t - 2)
        want, _ = proc.world_sample(img[lo : s.t + 1], acts[lo : s.t + 1], img[s.t + 1])
        assert s.input_ids == want
    one = [s for s in token_samples([str(path)], proc, enc, kinds=("world",), world_history=1, rotate=False)]
    assert one[3].input_ids == proc.world_sample(img[3], acts[3], img[4])[0]


def test_context_noise_touches_only_prompt_image_codes(proc):
    lay = proc.layout
    codes = np.asarray(lay.image_ids)
    ids, labels = proc.world_sample([image_tokens(lay, 4, 4, seed=1), image_tokens(lay, 4, 4, seed=2)], np.zeros((2, 7)), image_tokens(lay, 4, 4, seed=3))
    prompt_codes = [i for i, (t, lab) in enumerate(zip(ids, labels, strict=True)) if lab == IGNORE_INDEX and t in set(codes.tolist())]
    assert len(prompt_codes) == 32
    new, new_labels = corrupt_context(ids, labels, 1.0, codes, np.random.default_rng(0))
    assert new_labels == labels
    changed = [i for i, (a, b) in enumerate(zip(ids, new, strict=True)) if a != b]
    assert set(changed) <= set(prompt_codes) and len(changed) >= 28  # a redraw may hit the same code
    assert all(new[i] in set(codes.tolist()) for i in prompt_codes)
    same, _ = corrupt_context(ids, labels, 0.0, codes, np.random.default_rng(0))
    assert same == ids
    # in a batch: only world samples are corrupted, action samples and the indices drawn are unchanged
    samples = {"action": [proc.action_sample("go", [image_tokens(lay, seed=5)], np.zeros((2, 7)))], "world": [(ids, labels)]}
    clean = draw_batch(samples, 8, 1.0, seed=0, step=3)
    noisy = draw_batch(samples, 8, 1.0, seed=0, step=3, context_noise=0.5, image_ids=codes)
    assert noisy == draw_batch(samples, 8, 1.0, seed=0, step=3, context_noise=0.5, image_ids=codes)  # (seed, step)
    assert [b for b in noisy if b[0] == samples["action"][0][0]] == [b for b in clean if b[0] == samples["action"][0][0]]
    n_world = sum(1 for b in clean if b[0] == ids)
    assert n_world == 4 and sum(1 for b in noisy if b[0] == ids) == 0


# ---- runtime and envs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    """The same random weights with world_history 3 and 1 (the LM does not depend on the field)."""
    h3 = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("wh3"), resolution=RES,
                                                              seed=0, world_history=3))
    h1 = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("wh1"), resolution=RES, seed=0))
    return h3, h1


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def _acts(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 7)).astype(np.float32)


def test_runtime_history_batch_and_errors(runtimes):
    h3, h1 = runtimes
    assert (h3.world_history, h1.world_history) == (3, 1)
    f, a = _frames(3), _acts(3)
    # one pair: exactly the released his=1 call
    np.testing.assert_array_equal(h3.imagine(f[:1], a[:1]), h1.imagine(f[:1], a[:1]))
    np.testing.assert_array_equal(h3.imagine(f[None, :1], a[None, :1]), h1.imagine(f[:1], a[:1]))
    # the past is in the prompt: the 3-pair prediction is not the prediction from the last pair alone
    hist = h3.imagine(f[None], a[None])
    assert (hist != h3.imagine(f[2:], a[2:])).mean() > 0.5
    # ragged rows in one batch equal the rows one by one (float32 CPU)
    ragged = h3.imagine([f, f[2:]], [a, a[2:]])
    np.testing.assert_array_equal(ragged[0], hist[0])
    np.testing.assert_array_equal(ragged[1], h3.imagine(f[2:], a[2:])[0])
    with pytest.raises(ValueError, match=r"images must be .*T <= 3.*row 0 is uint8 \(4, 32, 32, 3\)"):
        h3.imagine(_frames(4)[None], _acts(4)[None])
    with pytest.raises(ValueError, match=r"images must be uint8 \(B, 32, 32, 3\); row 0 is uint8 \(2, 32, 32, 3\)"):
        h1.imagine(f[None, :2], a[None, :2])
    with pytest.raises(ValueError, match=r"row 0 must be \(3, 7\), one action per frame"):
        h3.imagine(f[None], a[None, :2])


def test_imagined_env_feeds_the_episode_past(runtimes):
    """Stateful: every step's prediction is the runtime's on the last 3 (frame, action) pairs of this episode."""
    h3, _ = runtimes
    start = _frames(2, seed=5)
    env = ImaginedEnv(runtime=h3, init_frames=start, instruction="go", max_episode_steps=50, imagine_from="frames")
    obs, _ = env.reset(seed=0, options={"frame_id": 1})
    frames, acts = [obs["image"]], []
    for t in range(5):
        a = _acts(1, seed=10 + t)[0]
        acts.append(a)
        obs, *_ = env.step(a)
        lo = max(0, t - 2)
        want = h3.imagine(np.stack(frames[lo : t + 1])[None], np.stack(acts[lo : t + 1])[None])[0]
        np.testing.assert_array_equal(obs["image"], want)
        frames.append(obs["image"])
    # a reset forgets the past: the first step after it is a one-pair prediction
    obs, _ = env.reset(seed=0, options={"frame_id": 0})
    a = _acts(1, seed=99)[0]
    nxt, *_ = env.step(a)
    np.testing.assert_array_equal(nxt["image"], h3.imagine(start[:1], a[None])[0])


def test_vector_env_equals_single_envs_with_staggered_histories(runtimes):
    h3, _ = runtimes
    start = _frames(2, seed=6)
    venv = ImaginedVectorEnv(2, runtime=h3, init_frames=start, instruction="go", max_episode_steps=50)
    singles = [ImaginedEnv(runtime=h3, init_frames=start, instruction="go", max_episode_steps=50) for _ in range(2)]
    venv.reset(seed=0, options={"frame_id": 0})
    for e in singles:
        e.reset(seed=0, options={"frame_id": 0})
    for t in range(4):
        acts = _acts(2, seed=20 + t)
        if t == 2:  # env 1 restarts: its history is shorter than env 0's from here on
            venv.reset(options={"frame_id": 1, "reset_mask": np.array([False, True])})
            singles[1].reset(options={"frame_id": 1})
        obs, *_ = venv.step(acts)
        for i, e in enumerate(singles):
            o, *_ = e.step(acts[i])
            np.testing.assert_array_equal(obs["image"][i], o["image"])


def test_open_loop_rollout_feeds_the_rollout_history(runtimes):
    """wm-eval's rollout with a history world model equals the imagined env's episode on the same actions."""
    from wvla_gym.evaluation.world_model_metrics import open_loop_rollout

    h3, _ = runtimes
    start, acts = _frames(1, seed=8)[0], _acts(5, seed=9)
    roll = open_loop_rollout(h3.imagine, start, acts, horizon=5, history=h3.world_history)
    env = ImaginedEnv(runtime=h3, instruction="go", max_episode_steps=50, imagine_from="frames")
    env.reset(seed=0, options={"image": start})
    for t in range(5):
        obs, *_ = env.step(acts[t])
        np.testing.assert_array_equal(roll[t], obs["image"])
    # history 1 keeps the released his=1 calls: the same model gives another rollout from step 2 on
    one = open_loop_rollout(h3.imagine, start, acts, horizon=5, history=1)
    np.testing.assert_array_equal(one[0], roll[0])
    assert (one[2] != roll[2]).mean() > 0.5


@pytest.mark.parametrize("which", ["h3", "h1"])
def test_lockstep_rollouts_equal_single_rollouts(runtimes, which):
    """wm-eval batches rollouts of different lengths in lockstep: each equals its rollout alone, and the metrics
    do not depend on the batch size."""
    from wvla_gym.evaluation.world_model_metrics import (
        evaluate_open_loop,
        open_loop_rollout,
        open_loop_rollouts,
    )

    rt = runtimes[0] if which == "h3" else runtimes[1]
    starts = list(_frames(3, seed=11))
    acts = [_acts(n, seed=12 + n) for n in (5, 2, 4)]  # ragged: rows drop out at 2 and 4 steps
    together = open_loop_rollouts(rt.imagine, starts, acts, horizon=4, history=rt.world_history)
    assert [len(r) for r in together] == [4, 2, 4]
    for s, a, r in zip(starts, acts, together, strict=True):
        np.testing.assert_array_equal(r, open_loop_rollout(rt.imagine, s, a, horizon=4, history=rt.world_history))
    frames, actions = _frames(6, seed=13), _acts(5, seed=14)
    kw = dict(horizon=3, every=1, history=rt.world_history)
    assert (evaluate_open_loop([(frames, actions)], rt.imagine, batch_size=1, **kw)
            == evaluate_open_loop([(frames, actions)], rt.imagine, batch_size=4, **kw))
    with pytest.raises(ValueError, match=r"batch_size=0; expected an int >= 1"):
        evaluate_open_loop([(frames, actions)], rt.imagine, batch_size=0, **kw)
