"""Prompts, labels and the action attention mask (docs/protocol.md §3, §5)."""

import numpy as np
import pytest
import torch

from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
from wvla_gym.model.processing_worldvla import (
    IGNORE_INDEX,
    ByteTextTokenizer,
    WorldVLAProcessor,
    build_action_attention_mask,
    pad_left,
    to_model_mask,
)

from .model_fixtures import image_tokens, tiny_lm_config


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_lm_config()
    lay = cfg.token_layout
    proc = WorldVLAProcessor(lay, ByteTextTokenizer(lay.text_byte_offset), cfg.action_tokenizer())
    return cfg, lay, proc


def test_action_prompt_and_labels(setup):
    cfg, lay, proc = setup
    img1, img2 = image_tokens(lay, seed=1), image_tokens(lay, seed=2)
    prompt = proc.action_prompt("pick up the bowl", [img1, img2])
    text = "What action should the robot take to pick up the bowl?"
    assert prompt == [lay.bos_id] + [lay.text_byte_offset + b for b in text.encode()] + img1 + img2 + [lay.end_of_turn_id]
    acts = np.zeros((2, 7))
    ids, labels = proc.action_sample("pick up the bowl", [img1, img2], acts)
    n = len(prompt)
    assert ids[:n] == prompt and labels[:n] == [IGNORE_INDEX] * n
    a0 = cfg.action_tokenizer().encode(np.zeros(7)).tolist()
    block = [lay.boa_id, *a0, lay.eoa_id]
    assert ids[n:] == block + block + [lay.end_of_turn_id] and labels[n:] == ids[n:]


def test_world_prompts(setup):
    cfg, lay, proc = setup
    img = image_tokens(lay)
    p = proc.world_prompt(img, np.zeros(7))
    inf = "Generate the image based on the current image and the action."
    assert p[: 1 + len(inf)] == [lay.bos_id] + [lay.text_byte_offset + b for b in inf.encode()]
    train = WorldVLAProcessor(lay, proc.text_tokenizer, proc.action_tokenizer, world_model_prompt="train")
    assert train.world_text().startswith("Generate the next image based on the provided sequence")
    ids, labels = proc.world_sample(img, np.zeros(7), image_tokens(lay, seed=3))
    assert labels.count(IGNORE_INDEX) == len(p) and ids[-1] == lay.end_of_turn_id


def _action_sequence(lay, proc, k=3, seed=0):
    rng = np.random.default_rng(seed)
    img = image_tokens(lay, seed=seed)
    prompt = proc.action_prompt("go", [img])
    acts = rng.uniform(-0.5, 0.5, (k, 7))
    ids, _ = proc.action_sample("go", [img], acts)
    return torch.tensor([ids]), len(prompt)


def test_mask_hand_values(setup):
    cfg, lay, proc = setup
    ids, p = _action_sequence(lay, proc, k=3)
    m = build_action_attention_mask(ids, lay)[0]
    b0, b1, b2 = p, p + 9, p + 18
    assert m[b1 + 3, b0 : b0 + 9].sum() == 0  # block 1 never sees block 0 (BOA..EOA inclusive)
    assert m[b2, b0 : b1 + 9].sum() == 0
    assert m[b1 + 3, : p].all() and m[b1 + 3, b1 : b1 + 4].all()  # prompt + own causal prefix
    assert not m[b1 + 3, b1 + 4]
    last = ids.shape[1] - 1  # the final end-of-turn is outside any block: sees everything
    assert m[last].all()
    assert torch.equal(m[:p, :p], torch.ones(p, p, dtype=torch.bool).tril())
    # world-model sample: the action block lies before the last image -> plain causal mask
    w_ids, _ = proc.world_sample(image_tokens(lay), np.zeros(7), image_tokens(lay, seed=5))
    wm = build_action_attention_mask(torch.tensor([w_ids]), lay)[0]
    assert torch.equal(wm, torch.ones_like(wm).tril())
    # unterminated block runs to the end
    cut = ids[:, : b1 + 4]
    mc = build_action_attention_mask(cut, lay)[0]
    assert mc[b1 + 3, b0 : b0 + 9].sum() == 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_mask_equals_per_block_reference(setup, attn):
    cfg, lay, proc = setup
    cfg = tiny_lm_config()
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = WorldVLAForConditionalGeneration(cfg).eval()
    ids, p = _action_sequence(lay, proc, k=3, seed=1)
    keep = build_action_attention_mask(ids, lay)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=to_model_mask(keep, attn), mask_image_logits=False).logits[0]
        for j in range(3):  # each block alone after the prompt, at its original positions, plain causal
            s = p + 9 * j
            sub = torch.cat([ids[:, :p], ids[:, s : s + 9]], dim=1)
            pos = torch.cat([torch.arange(p), torch.arange(s, s + 9)])[None]
            ref = model(input_ids=sub, position_ids=pos, mask_image_logits=False).logits[0]
            assert (full[s : s + 9] - ref[p:]).abs().max() < 1e-5
            assert (full[:p] - ref[:p]).abs().max() < 1e-5
        causal = model(input_ids=ids, mask_image_logits=False).logits[0]
        assert (full[p + 9 : p + 18] - causal[p + 9 : p + 18]).abs().max() > 1e-3  # the mask matters
        if attn == "eager":  # the trap: a boolean mask is *added* by eager attention and silently wrong
            wrong = model(input_ids=ids, attention_mask=keep[:, None], mask_image_logits=False).logits[0]
            assert (wrong - full).abs().max() > 1e-3


def test_left_padding(setup):
    cfg, lay, proc = setup
    torch.manual_seed(0)
    model = WorldVLAForConditionalGeneration(cfg).eval()
    a, _ = _action_sequence(lay, proc, k=2, seed=2)
    b, _ = _action_sequence(lay, proc, k=1, seed=3)
    ids, valid = pad_left([a[0].tolist(), b[0].tolist()], lay.pad_id)
    keep = build_action_attention_mask(ids, lay, valid)
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = model(input_ids=ids, position_ids=pos, attention_mask=to_model_mask(keep, "sdpa")).logits
        alone = model(input_ids=b, attention_mask=to_model_mask(build_action_attention_mask(b, lay), "sdpa")).logits
    assert (batched[1, -b.shape[1] :] - alone[0]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="attn_implementation"):
        to_model_mask(keep, "flash")


def test_loss_weights_and_zloss(setup):
    cfg, lay, proc = setup
    torch.manual_seed(0)
    model = WorldVLAForConditionalGeneration(cfg).eval()
    ids, labels = proc.world_sample(image_tokens(lay), np.zeros(7), image_tokens(lay, seed=4))
    ids, labels = torch.tensor([ids]), torch.tensor([labels])
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        logits = out.logits[0, :-1]
        tgt = labels[0, 1:]
        sel = tgt >= 0
        lp = torch.log_softmax(logits[sel], -1).gather(1, tgt[sel, None])[:, 0]
        w = torch.tensor([0.04 if int(t) in set(lay.image_ids) else 1.0 for t in tgt[sel]])
        ce = -(w * lp).sum() / w.sum()
        z = torch.logsumexp(logits[sel], -1).pow(2).mean()
    torch.testing.assert_close(out.loss, ce + 1e-5 * z, rtol=1e-5, atol=1e-6)
    ref_cfg = tiny_lm_config(image_loss_weight_ids="reference")
    assert WorldVLAForConditionalGeneration(ref_cfg).loss_weights()[3:8195].eq(0.04).all()
    # image logits are masked at inference by default (stock), and not when asked
    with torch.no_grad():
        masked = model(input_ids=ids).logits
        free = model(input_ids=ids, mask_image_logits=False).logits
    img = torch.as_tensor(lay.image_ids)
    assert (masked[..., img] == torch.finfo(torch.float32).min).all() and (free[..., img] > -1e30).all()
