"""RynnVLA-002 checkpoints (issue 24) on random fixtures in the exact released layout (tests/rynn_fixtures.py).

The parity tests compare the package with an independent reimplementation written below from the protocol
(``rynnvla002-protocol.md``): it reads the shards, the tokenizer files and ``config.json`` itself, runs stock
``transformers`` Chameleon (eager attention, the q/k norms repeated by hand), builds the prompt from the
protocol's ids, and computes the action head with plain tensor operations. It imports nothing of ours.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

import wvla_gym  # noqa: F401  (registers the ids)
from agents.worldvla import WorldVLAAgent
from wvla_gym.model.loading import load_checkpoint
from wvla_gym.model.modeling_rynnvla import RynnVLAActionHead, RynnVLAForConditionalGeneration
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import MalformedActionOutput, WorldVLARuntime
from wvla_gym.runtime_cache import load_runtime
from wvla_gym.runtime_rynnvla import RynnVLARuntime

from .rynn_fixtures import (
    BOA,
    CHAIN_VALUES,
    EOA,
    EOT,
    HIDDEN,
    WORD_BASE,
    WORDS,
    head_shapes,
    write_rynnvla_root,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INSTR = "pick up the black bowl and place it on the plate"
# protocol §1 (the VLA's action statistics, the state statistics) and worldvla-protocol §2 (WorldVLA's)
VLA_MIN = np.array([-0.9375, -0.9375, -0.9375, -0.24214286, -0.375, -0.36428571, -1.0])
VLA_MAX = np.array([0.9375, 0.9375, 0.9375, 0.34821429, 0.375, 0.375, 1.0])
STATE_MIN = np.array(
    [-0.4827807, -0.3309336, 0.00812818, 1.00279467, -3.63125079, -1.84273835, -0.00545302, -0.04201502]
)
STATE_MAX = np.array(
    [0.210313803, 0.390426440, 1.47277813, 3.72486417, 3.56188956, 1.38632160, 0.0423214189, 0.00131260958]
)
BOI, EOI, ROW_END = 8197, 8196, 8803
STATE_START, STATE_END = 15504, 16004


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_rynnvla_root(tmp_path_factory.mktemp("rynnvla002"))


@pytest.fixture(scope="module")
def runtime(fx):
    """Held for the module, so every agent on the VLA fixture shares this one load (the cache is weak)."""
    return load_runtime(fx["vla"])


def observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "state": rng.uniform(STATE_MIN, STATE_MAX).astype(np.float32),
    }


# ------------------------------------------------------------------------------ independent reimplementation
class Reference:
    """The released head and prompt from the protocol, on stock transformers; nothing of ours is imported."""

    def __init__(self, ck, root):
        from tokenizers import Tokenizer
        from transformers import ChameleonConfig, ChameleonModel, ChameleonVQVAEConfig

        raw = json.loads((ck / "config.json").read_text())
        self.k, self.d, self.h = raw["time_horizon"], raw["action_dim"], raw["hidden_size"]
        weight_map = json.loads((ck / "model.safetensors.index.json").read_text())["weight_map"]
        sd = {}
        for shard in sorted(set(weight_map.values())):
            sd.update(load_file(str(ck / shard)))
        self.head_w = {
            k[len("action_head.") :]: v.float() for k, v in sd.items() if k.startswith("action_head.")
        }
        tok_dir = root / "chameleon" / "tokenizer"
        vocab = json.loads((tok_dir / "text_tokenizer.json").read_text())["model"]["vocab"]
        dd = yaml.safe_load((tok_dir / "vqgan.yaml").read_text())["model"]["params"]
        vq_cfg = ChameleonVQVAEConfig(
            embed_dim=dd["embed_dim"], num_embeddings=dd["n_embed"], latent_channels=dd["ddconfig"]["z_channels"],
            resolution=dd["ddconfig"]["resolution"], base_channels=dd["ddconfig"]["ch"],
            channel_multiplier=dd["ddconfig"]["ch_mult"], num_res_blocks=dd["ddconfig"]["num_res_blocks"],
            attn_resolutions=dd["ddconfig"]["attn_resolutions"],
        )  # fmt: skip
        cfg = ChameleonConfig(
            vocab_size=raw["vocab_size"], hidden_size=self.h, intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"], num_attention_heads=raw["num_attention_heads"],
            num_key_value_heads=raw["num_key_value_heads"], max_position_embeddings=8192,
            rms_norm_eps=raw["rms_norm_eps"], vq_config=vq_cfg.to_dict(), vocabulary_map={**vocab, "<image>": 8711},
        )  # fmt: skip
        cfg._attn_implementation = "eager"  # the released code's additive-mask path
        self.model = ChameleonModel(cfg).eval()
        lm = {}
        for k, v in sd.items():
            if k.startswith("model."):
                if (
                    ".q_norm." in k or ".k_norm." in k
                ):  # stored (1, head_dim), one row per head in stock HF (§9)
                    v = v.repeat_interleave(raw["num_attention_heads"], 0)
                lm[k[len("model.") :]] = v
        vq_sd = torch.load(tok_dir / "vqgan.ckpt", weights_only=True)["state_dict"]
        lm.update({f"vqmodel.{k}": v for k, v in vq_sd.items() if not k.startswith("decoder.")})
        missing, unexpected = self.model.load_state_dict(lm, strict=False)
        assert not unexpected and not missing, (missing, unexpected)
        self.lm_head = sd["lm_head.weight"].float()
        self.text = Tokenizer.from_file(str(root / "chameleon" / "base_model" / "tokenizer.json"))
        self._discrete: dict[tuple[int, ...], np.ndarray] = {}

    @torch.no_grad()
    def image(self, frame: np.ndarray) -> list[int]:
        """``[BOI, grid, grid, (n codes + row-end) x n, EOI]``, n = side / 16, grid = 8804 + side / 32
        (worldvla-protocol §1, §4; 16 x 16 codes and grid token 8812 at 256 px)."""
        side = frame.shape[0]
        x = torch.from_numpy(frame).float().div(255).mul(2).sub(1).permute(2, 0, 1)[None]
        codes = self.model.vqmodel.encode(x).image_tokens
        ids = self.model.vocabulary_mapping.convert_img2bpe(codes).view(side // 16, side // 16).tolist()
        grid = 8804 + side // 32
        return [BOI, grid, grid, *[t for row in ids for t in (*row, ROW_END)], EOI]

    @staticmethod
    def state(state: np.ndarray) -> list[int]:
        norm = np.clip(
            2 * (np.asarray(state, np.float64) - STATE_MIN) / (STATE_MAX - STATE_MIN + 1e-8) - 1, -1, 1
        )
        return [STATE_START, *(np.digitize(norm, np.linspace(-1, 1, 256)) + 15505).tolist(), STATE_END]

    def prompt(self, instruction: str, steps: list[dict]) -> list[int]:
        """``BOS text [state] [third wrist] per step EOT``; the state is the current (last) step's."""
        text = self.text.encode(
            f"What action should the robot take to {instruction}?", add_special_tokens=False
        ).ids
        ids = [0, *text, *self.state(steps[-1]["state"])]
        for s in steps:
            ids += self.image(s["image"]) + self.image(s["wrist_image"])
        return ids + [EOT]

    @torch.no_grad()
    def hidden(self, ids: list[int], mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=torch.tensor([ids]), attention_mask=mask).last_hidden_state[0]

    @torch.no_grad()
    def head(self, ctx: torch.Tensor) -> torch.Tensor:
        """The Action Transformer (protocol §1), with plain tensor operations."""
        w, n_q, dm = self.head_w, self.k * self.d, 1024

        def ln(x, name, eps=1e-5):
            return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)

        def lin(x, name):
            return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

        queries = w["action_token_embeddings.weight"].view(n_q, self.h)
        x = torch.cat([ctx, queries]) @ w["hidden_projection.weight"].T + w["hidden_projection.bias"]
        for i in range(2):  # post-norm encoder layers, 4 heads, ReLU FF, no mask (bidirectional)
            p = f"transformer_encoder.layers.{i}."
            qkv = x @ w[p + "self_attn.in_proj_weight"].T + w[p + "self_attn.in_proj_bias"]
            q, k, v = (t.view(-1, 4, dm // 4).transpose(0, 1) for t in qkv.split(dm, dim=-1))
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dm // 4), dim=-1) @ v
            x = ln(x + lin(att.transpose(0, 1).reshape(-1, dm), p + "self_attn.out_proj"), p + "norm1")
            x = ln(x + lin(torch.relu(lin(x, p + "linear1")), p + "linear2"), p + "norm2")
        x = ln(x, "transformer_encoder.norm")
        y = x[-n_q:].reshape(self.k, self.d * dm)  # query k·D + d -> step k
        m = "output_projection.model."
        y = torch.relu(lin(ln(y, m + "layer_norm1"), m + "fc1"))
        for b in range(2):
            y = y + torch.relu(
                lin(ln(y, f"{m}mlp_resnet_blocks.{b}.ffn.0"), f"{m}mlp_resnet_blocks.{b}.ffn.1")
            )
        return lin(ln(y, m + "layer_norm2"), m + "fc2")

    def continuous(self, ids: list[int]) -> np.ndarray:
        norm = self.head(self.hidden(ids)).double().numpy()
        return (norm + 1) / 2 * (VLA_MAX - VLA_MIN + 1e-8) + VLA_MIN  # un-normalised, not clipped

    @staticmethod
    def action_mask(ids: list[int]) -> torch.Tensor:
        """generate_att_mask_3 (worldvla-protocol §5), as an additive float mask (1, 1, L, L)."""
        n = len(ids)
        keep = torch.ones(n, n, dtype=torch.bool).tril()

        def blocks(start, end):  # each start token to the next end token (an unterminated block: to L-1)
            ends = [i for i, t in enumerate(ids) if t == end]
            return [(s, next((e for e in ends if e > s), n - 1)) for s, t in enumerate(ids) if t == start]

        last_img_end = max((e for _, e in blocks(BOI, EOI)), default=-1)
        acts = blocks(BOA, EOA)
        for s, e in acts:
            if s > last_img_end:
                for s0, e0 in acts:
                    if e0 < s:
                        keep[s : e + 1, s0 : e0 + 1] = False
        return torch.zeros(n, n).masked_fill(~keep, torch.finfo(torch.float32).min)[None, None]

    def discrete(self, ids: list[int]) -> np.ndarray:
        key = tuple(ids)
        if key not in self._discrete:  # the parametrised tests ask for the same prompts
            self._discrete[key] = self._greedy_chunk(ids)
        return self._discrete[key]

    def greedy(self, ids: list[int], max_new: int = 300, stop_after_blocks: int | None = None) -> list[int]:
        """Greedy decoding with the action mask recomputed over the whole sequence at every step, until EOT or
        ``max_new`` tokens (the eval's 300), or once ``stop_after_blocks`` blocks are complete (the greedy prefix
        does not depend on when one stops)."""
        gen: list[int] = []
        while len(gen) < max_new and (stop_after_blocks is None or gen.count(EOA) < stop_after_blocks):
            seq = ids + gen
            nxt = int((self.hidden(seq, self.action_mask(seq))[-1] @ self.lm_head.T).argmax())
            gen.append(nxt)
            if nxt == EOT:
                break
        return gen

    def _greedy_chunk(self, ids: list[int]) -> np.ndarray:
        """Greedy tokens; the eval's parse (spans up to the first whose length is not 7); bin centres; VLA
        min/max."""
        gen = self.greedy(ids, 300, stop_after_blocks=self.k)
        spans, start = [], None
        for i, t in enumerate(gen):
            if t == BOA:
                start = i
            elif t == EOA and start is not None:
                spans.append(gen[start + 1 : i])
                start = None
        good = []
        for s in spans:
            if len(s) != 7:
                break
            good.append(s)
        centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
        norm = centres[np.clip(np.asarray(good[: self.k]) - 10006, 0, 254)]
        return (norm + 1) / 2 * (VLA_MAX - VLA_MIN + 1e-8) + VLA_MIN


@pytest.fixture(scope="module")
def reference(fx):
    return Reference(fx["vla"], fx["root"])


# ------------------------------------------------------------------------------ loading
def test_checkpoint_loads_with_the_head_as_its_own_module(fx, runtime):
    model = runtime.model
    assert isinstance(runtime, RynnVLARuntime) and isinstance(model, RynnVLAForConditionalGeneration)
    assert isinstance(model.action_head, RynnVLAActionHead)
    cfg = model.config
    assert (cfg.time_horizon, cfg.action_dim, cfg.action_chunk) == (5, 7, 5)  # K and D from config.json
    assert (cfg.history, cfg.resolution) == (2, 256)
    np.testing.assert_allclose(cfg.action_min, VLA_MIN)
    np.testing.assert_allclose(cfg.state_max, STATE_MAX)
    assert (cfg.world_action_norm, cfg.world_model_prompt) == ("worldvla", "train")
    assert cfg.mask_image_logits is False  # the released evals pass --unmask_image_logits
    # the 45 action_head.* tensors of the shards, by name and value, 1:1 in the module
    index = json.loads((fx["vla"] / "model.safetensors.index.json").read_text())["weight_map"]
    released = {k: v for s in sorted(set(index.values())) for k, v in load_file(str(fx["vla"] / s)).items()
                if k.startswith("action_head.")}  # fmt: skip
    ours = {f"action_head.{k}": v for k, v in model.action_head.state_dict().items()}
    assert len(released) == 45 and sorted(ours) == sorted(released) == sorted(head_shapes(5))
    assert all(torch.equal(ours[k], v) for k, v in released.items())
    # internals as released, the input side from the LM: K·D·hidden queries, hidden -> 1024
    assert model.action_head.hidden_projection.in_features == HIDDEN
    assert model.action_head.transformer_encoder.layers[0].linear1.out_features == 4096
    # the world-model checkpoint (512, an untrained head) loads too
    wm, _ = load_checkpoint(fx["wm"])
    assert isinstance(wm, RynnVLAForConditionalGeneration)
    assert (wm.config.resolution, wm.config.time_horizon) == (512, 5)


def _copy_with_links(src, dst):
    """A copy of the fixture tree whose big files are symlinks (a test edits only what it replaces)."""
    for p in src.rglob("*"):
        q = dst / p.relative_to(src)
        if p.is_dir():
            q.mkdir(parents=True, exist_ok=True)
        else:
            q.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p, q)


def test_missing_unexpected_and_missized_head_tensors_are_errors_naming_them(fx, tmp_path):
    root = tmp_path / "copy"
    _copy_with_links(fx["root"], root)
    ck = root / fx["vla"].relative_to(fx["root"])
    index = json.loads((ck / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["action_head.hidden_projection.bias"]
    sd = load_file(str(ck / shard))
    (ck / shard).unlink()

    def write(tensors):
        save_file(tensors, str(ck / shard))
        index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard} | {
            k: shard for k in tensors
        }
        (ck / "model.safetensors.index.json").unlink()
        (ck / "model.safetensors.index.json").write_text(json.dumps(index))

    write({k: v for k, v in sd.items() if k != "action_head.hidden_projection.bias"})
    with pytest.raises(ValueError, match=r"missing=\['action_head\.hidden_projection\.bias'\]"):
        load_checkpoint(ck)
    write({**sd, "action_head.extra.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected=\['action_head\.extra\.weight'\]"):
        load_checkpoint(ck)
    write(sd)
    cfg = json.loads((ck / "config.json").read_text())
    (ck / "config.json").unlink()
    (ck / "config.json").write_text(json.dumps({**cfg, "time_horizon": 10}))
    with pytest.raises(ValueError, match="time_horizon=10"):
        load_checkpoint(ck)


def test_tokenizer_files_found_beside_the_model_folders_or_given(fx, tmp_path):
    # a RynnVLA-002 download alone: no chameleon/ folder anywhere above the checkpoint
    ck = tmp_path / "RynnVLA-002" / "VLA_model_256" / "libero_object"
    ck.parent.mkdir(parents=True)
    os.symlink(fx["vla"], ck)
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(ck)
    msg = str(e.value)
    assert "chameleon/tokenizer" in msg and "looked in" in msg and str(ck.parent.parent) in msg
    assert "Alibaba-DAMO-Academy/WorldVLA" in msg and "tokenizer_dir=" in msg  # where to get it
    tok = fx["root"] / "chameleon"
    with pytest.raises(FileNotFoundError, match="Lumina-mGPT"):
        load_checkpoint(ck, tokenizer_dir=tok / "tokenizer")
    model, text = load_checkpoint(ck, tokenizer_dir=tok / "tokenizer", base_model_dir=tok / "base_model")
    assert isinstance(model, RynnVLAForConditionalGeneration)
    assert text.encode("pick up") == [WORD_BASE + WORDS.index("pick"), WORD_BASE + WORDS.index("up")]
    # and through the agent (the runtime cache passes them on)
    agent = WorldVLAAgent.from_pretrained(
        ck, tokenizer_dir=tok / "tokenizer", base_model_dir=tok / "base_model"
    )
    assert agent.head == "continuous" and agent.n_action_steps == 5


# ------------------------------------------------------------------------------ prompt
def test_prompt_token_ids_written_out_by_hand(runtime, reference):
    obs = observation(1)
    # edge cases of the state block: clipped below / above, the midpoint, min, max, and three plain values
    obs["state"] = np.array([STATE_MIN[0] - 1, STATE_MAX[1] + 1, (STATE_MIN[2] + STATE_MAX[2]) / 2, STATE_MIN[3],
                             STATE_MAX[4], 0.0, 0.02, -0.02])  # fmt: skip
    words = "What action should the robot take to pick up the black bowl and place it on the plate ?".split()
    text = [WORD_BASE + WORDS.index(w) for w in words]
    state = [15504, 15506, 15761, 15633, 15506, 15760, 15651, 15641, 15635, 16004]  # by hand, protocol §1
    third, wrist = reference.image(obs["image"]), reference.image(obs["wrist_image"])
    for img in (third, wrist):  # BOI, 256 px grid tokens, 16 rows of 16 codes + row-end, EOI: 276 tokens
        assert len(img) == 276 and img[:3] == [8197, 8812, 8812] and img[-1] == 8196
        assert all(img[3 + 17 * r + 16] == 8803 for r in range(16))
    first = runtime.action_prompts(
        [[obs["image"]]], INSTR, wrist_history=[[obs["wrist_image"]]], state=obs["state"]
    )
    assert first[0] == [0, *text, *state, *third, *wrist, 8710]
    # with the previous env step: [third_{t-1}][wrist_{t-1}][third_t][wrist_t], the current state
    prev = observation(2)
    both = runtime.action_prompts([[prev["image"], obs["image"]]], INSTR,
                                  wrist_history=[[prev["wrist_image"], obs["wrist_image"]]], state=obs["state"])  # fmt: skip
    assert both[0] == [0, *text, *state, *reference.image(prev["image"]), *reference.image(prev["wrist_image"]),
                       *third, *wrist, 8710]  # fmt: skip
    assert len(both[0]) == 1 + len(text) + 10 + 4 * 276 + 1


def test_agent_history_is_the_previous_env_step_first_query_current_only(runtime):
    calls = []
    real = runtime.predict_action_chunk

    class Spy:
        def __getattr__(self, name):
            return getattr(runtime, name)

        def predict_action_chunk(self, image_history, instruction, **kw):
            calls.append((image_history, kw["wrist_history"], kw["state"], kw["head"]))
            return real(image_history, instruction, **kw)

    assert WorldVLAAgent(Spy()).head == "continuous"  # RynnVLA-002's default head
    agent = WorldVLAAgent(
        Spy(), instruction=INSTR, head="discrete"
    )  # the cheaper head: only prompts matter here
    obs = [observation(10 + t) for t in range(6)]
    for o in obs:
        agent.act(o)
    assert len(calls) == 2  # K = 5: steps 0 and 5 query, 1..4 come from the queue
    (h0, w0, s0, head0), (h5, w5, s5, _) = calls
    assert head0 == "discrete" and len(h0[0]) == len(w0[0]) == 1
    assert np.array_equal(h0[0][0], obs[0]["image"])
    assert np.array_equal(w0[0][0], obs[0]["wrist_image"]) and np.array_equal(s0[0], obs[0]["state"])
    # the history is the previous *env step* (4, served from the queue), not the previous query (0)
    assert [f.tobytes() for f in h5[0]] == [obs[4]["image"].tobytes(), obs[5]["image"].tobytes()]
    assert [f.tobytes() for f in w5[0]] == [obs[4]["wrist_image"].tobytes(), obs[5]["wrist_image"].tobytes()]
    np.testing.assert_array_equal(s5[0], obs[5]["state"])


# ------------------------------------------------------------------------------ the continuous head
def test_head_output_shape_and_unnormalisation_identity(runtime):
    head = runtime.model.action_head
    ctx = torch.randn(1, 3, HIDDEN, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert head(ctx).shape == (1, 5, 7)
    fc2 = head.output_projection.model.fc2
    saved = fc2.weight.clone(), fc2.bias.clone()
    try:
        with torch.no_grad():  # a head that outputs the normalised 0 everywhere
            fc2.weight.zero_()
            fc2.bias.zero_()
        chunk = runtime.predict_action_chunk([[observation(3)["image"]]], INSTR,
                                             wrist_history=[[observation(3)["wrist_image"]]], state=np.zeros(8))  # fmt: skip
    finally:
        with torch.no_grad():
            fc2.weight.copy_(saved[0])
            fc2.bias.copy_(saved[1])
    mid = (VLA_MIN + VLA_MAX) / 2  # 0 on the symmetric dims, 0.05304 (dim 3) and 0.00536 (dim 5)
    assert chunk.shape == (1, 5, 7)
    np.testing.assert_allclose(chunk[0], np.tile(mid, (5, 1)), atol=1e-6)
    np.testing.assert_allclose(mid[[3, 5]], [0.05304, 0.00536], atol=1e-5)
    # the discrete bin-centre token 10133 decodes to the same point
    np.testing.assert_allclose(runtime.action_tokenizer.decode(np.full(7, 10133)), mid, atol=1e-7)


def test_every_action_head_tensor_changes_the_output(runtime):
    head = runtime.model.action_head
    ctx = torch.randn(1, 4, HIDDEN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = head(ctx)
        names = [n for n, _ in head.named_parameters()]
        assert len(names) == 45
        for name in names:
            p = head.get_parameter(name)
            saved = p.clone()
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
            changed = (head(ctx) - base).abs().max().item()
            p.copy_(saved)
            assert changed > 1e-6, f"action_head.{name} does not change the output"


def test_continuous_chunk_equals_the_independent_reimplementation(fx, reference):
    """Done when (1): same (K, 7) chunk as WorldVLAAgent.from_pretrained(...libero_object, head="continuous")."""
    agent = WorldVLAAgent.from_pretrained(fx["vla"], head="continuous", instruction=INSTR)
    o0, o1 = observation(20), observation(21)
    for o in (o0, o1):
        assert o["image"].dtype == np.uint8 and o["image"].shape == (256, 256, 3) and o["state"].shape == (8,)
    ours0 = agent.act_chunk(o0)  # first query: current views only
    ours1 = agent.act_chunk(o1)  # second: the previous env step's views too
    ref0 = reference.continuous(reference.prompt(INSTR, [o0]))
    ref1 = reference.continuous(reference.prompt(INSTR, [o0, o1]))
    assert ours0.shape == ours1.shape == (5, 7) and ours0.dtype == np.float32
    np.testing.assert_allclose(ours0, ref0, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours1, ref1, atol=1e-4, rtol=0)
    assert not np.allclose(ours0, ours1, atol=1e-3)  # the history matters
    assert np.abs(ours0).max() > 1.0  # this random head leaves [-1, 1]: act_chunk returns it unclipped


@pytest.mark.parametrize("decode", ["parallel", "sequential"])
def test_discrete_chunk_equals_the_independent_reimplementation(fx, reference, decode):
    agent = WorldVLAAgent.from_pretrained(fx["vla"], head="discrete", decode=decode, instruction=INSTR)
    o0, o1 = observation(30), observation(31)
    ours0, ours1 = agent.act_chunk(o0), agent.act_chunk(o1)
    np.testing.assert_allclose(ours0, reference.discrete(reference.prompt(INSTR, [o0])), atol=1e-6)
    np.testing.assert_allclose(ours1, reference.discrete(reference.prompt(INSTR, [o0, o1])), atol=1e-6)
    # the planted chain, decoded by hand: 5 blocks of CHAIN_VALUES through bin centres and the VLA min/max
    centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    expected = (centres[np.asarray(CHAIN_VALUES) - 10006] + 1) / 2 * (VLA_MAX - VLA_MIN + 1e-8) + VLA_MIN
    np.testing.assert_allclose(ours0, np.tile(expected, (5, 1)), atol=1e-6)


def test_discrete_tokens_equal_the_reimplementation_on_an_unrigged_model(fx, world_model):
    """The chain above makes the chunk prompt-independent; here, on the World_model checkpoint (no chain, strong
    layers, at 128 px), the discrete decode's greedy tokens depend on the whole prompt and equal the reference's."""
    reference = Reference(fx["wm"], fx["root"])
    o0, o1 = observation_at(32, 128), observation_at(33, 128)
    tokens = []
    for history in ([o0], [o0, o1]):
        try:
            info = world_model.predict_action_chunk(
                [[o["image"] for o in history]],
                INSTR,
                wrist_history=[[o["wrist_image"] for o in history]],
                state=history[-1]["state"],
                head="discrete",
                decode="sequential",
                return_info=True,
            ).info
        except MalformedActionOutput as e:  # random weights rarely write a well-formed block
            info = e.info
        tokens.append(info.tokens[0])
        prompt = reference.prompt(INSTR, history)
        assert tokens[-1][:40] == reference.greedy(prompt, 40)
    assert tokens[0][:40] != tokens[1][:40]  # the history changes what is generated


def test_discrete_parse_stops_at_the_first_malformed_span(runtime):
    from wvla_gym.generation import DecodeInfo

    good = [BOA, *CHAIN_VALUES, EOA]
    toks = good + [BOA, 10100, EOA] + good + [EOT]  # the 2nd span has 1 value: the chunk ends before it
    info = DecodeInfo("sequential", "dynamic", 0.0, 0.0, 0, [False], [toks])
    out = runtime._parse_released(info, 5)
    assert out.shape == (1, 1, 7)
    rows = runtime._parse_released(DecodeInfo("sequential", "dynamic", 0.0, 0.0, 0, [False, False],
                                              [toks, good * 3]), 5)  # fmt: skip
    assert [len(r) for r in rows] == [1, 3]  # ragged rows come back as a list


def test_act_clips_to_the_action_space_act_chunk_does_not(runtime):
    fc2 = runtime.model.action_head.output_projection.model.fc2
    saved = fc2.bias.clone()
    try:
        with torch.no_grad():
            fc2.bias[0] += 5.0  # dx far beyond the normalised range
        agent = WorldVLAAgent(runtime, instruction=INSTR)
        o = observation(40)
        chunk = agent.act_chunk(o)
        agent.reset()
        actions = [agent.act(o) for _ in range(5)]
    finally:
        with torch.no_grad():
            fc2.bias.copy_(saved)
    assert chunk[:, 0].min() > 1.0  # unclipped, as the released head produces it
    np.testing.assert_allclose(np.stack(actions), np.clip(chunk, -1, 1), atol=1e-6)
    assert all(a.dtype == np.float32 and np.abs(a).max() <= 1.0 for a in actions)


def test_missing_observation_keys_and_bad_heads_are_named(runtime, tmp_path):
    agent = WorldVLAAgent(runtime, instruction=INSTR)
    o = observation(50)
    for key in ("image", "wrist_image", "state"):
        with pytest.raises(ValueError, match=f"'{key}'"):
            agent.act({k: v for k, v in o.items() if k != key})
    with pytest.raises(ValueError, match=r"obs\['state'\]"):
        agent.act({**o, "state": np.zeros(7)})
    with pytest.raises(ValueError, match="head='sideways'"):
        WorldVLAAgent(runtime, head="sideways")
    with pytest.raises(ValueError, match="n_action_steps=6"):
        WorldVLAAgent(runtime, n_action_steps=6)
    with pytest.raises(ValueError, match="wrist_history"):
        runtime.predict_action_chunk([[o["image"]]], INSTR, state=o["state"])
    with pytest.raises(ValueError, match="state"):
        runtime.predict_action_chunk([[o["image"]]], INSTR, wrist_history=[[o["wrist_image"]]])
    # a WorldVLA checkpoint has no continuous head; its agent is unchanged (discrete, one view, no clipping)
    wv = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path / "wv", resolution=32, downsample=8))
    with pytest.raises(ValueError, match="head='continuous'.*no continuous action head"):
        WorldVLAAgent(wv, head="continuous")
    plain = WorldVLAAgent(wv)
    assert (plain.head, plain.two_view, plain.clip_actions) == ("discrete", False, False)
    with pytest.raises(ValueError, match="RynnVLA-002"):
        WorldVLARuntime(runtime.model, runtime.processor.text_tokenizer)


# ------------------------------------------------------------------------------ the two-view world model
def test_world_prompt_ids_and_the_action_normalisation_switch(runtime, reference):
    o = observation(60)
    action = np.array([0.0, 0.5, -1.0, 0.0, 0.1, 0.0, 1.0])
    words = "Generate the next image based on the provided sequence of historical images and corresponding actions .".split()
    text = [WORD_BASE + WORDS.index(w) for w in words]
    third, wrist = reference.image(o["image"]), reference.image(o["wrist_image"])
    old = [10004, 10133, 10201, 10006, 10124, 10167, 10133, 10260, 15004]  # WorldVLA's min/max, by hand
    new = [10004, 10133, 10201, 10006, 10110, 10167, 10131, 10260, 15004]  # the VLA's (dims 3 and 5 differ)
    default = runtime.world_prompts(o["image"][None], o["wrist_image"][None], action[None])
    assert default[0] == [0, *text, *third, *wrist, *old, 8710]  # the released eval's statistics by default
    switched = runtime.world_prompts(
        o["image"][None], o["wrist_image"][None], action[None], action_norm="rynnvla"
    )
    assert switched[0] == [0, *text, *third, *wrist, *new, 8710]
    with pytest.raises(ValueError, match="action_norm"):
        runtime.world_prompts(o["image"][None], o["wrist_image"][None], action[None], action_norm="new")


def test_two_image_constrained_decode_gives_valid_blocks(tmp_path):
    """The decoder's two-image schedule on a tiny model: every block valid, the first image the one-image one."""
    rt = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path / "tiny", resolution=32, downsample=8))
    prompt = [rt.processor.world_prompt(rt.image_tokenizer.encode(np.zeros((1, 32, 32, 3), np.uint8))[0].tolist(),
                                        np.zeros(7))]  # fmt: skip
    one = rt.decoder.decode_image(prompt, 4, 4)
    two = rt.decoder.decode_image(prompt, 4, 4, n_images=2)
    assert one.codes.shape == (1, 4, 4) and two.codes.shape == (1, 2, 4, 4)
    assert torch.equal(two.codes[:, 0], one.codes)
    # per image BOI, 2 grids, 15 codes, 3 row-ends; between them the last code, its row-end and EOI
    assert two.passes == 2 * (3 + 15 + 3) + 3
    tokens = rt.image_tokenizer.codes_to_tokens(two.codes[0])  # decodes back: valid blocks
    assert torch.equal(rt.image_tokenizer.tokens_to_codes(tokens), two.codes[0])


@pytest.fixture(scope="module")
def world_model(fx):
    """The World_model_512 fixture as the imagined env's world model, run at 128 px (8 x 8 codes per view) to keep
    the test short: the code path is the 512 / 256 one with smaller blocks (``resolution`` is a load override)."""
    model, text = load_checkpoint(fx["wm"], resolution=128)
    return RynnVLARuntime(model, text)


def observation_at(seed: int, r: int) -> dict:
    o = observation(seed)
    return {**o, "image": o["image"][:r, :r].copy(), "wrist_image": o["wrist_image"][:r, :r].copy()}


def test_imagined_env_with_two_views_three_steps_and_check_env(fx, runtime, world_model):
    """Done when (2): a RynnVLA-002 world model drives WorldVLA-Imagined-v0 with both views; check_env passes."""
    from gymnasium.utils.env_checker import check_env

    starts = {
        k: np.stack([observation_at(70 + i, 128)[k] for i in range(2)])
        for k in ("image", "wrist_image", "state")
    }
    env = gym.make("WorldVLA-Imagined-v0", runtime=world_model, init_frames=starts, instruction=INSTR)
    assert env.unwrapped.two_view and env.observation_space["wrist_image"].shape == (128, 128, 3)
    obs, info = env.reset(seed=0, options={"frame_id": 1})
    assert info["unpredicted_keys"] == {"state": "carried"}  # the wrist view is predicted, not carried
    np.testing.assert_array_equal(obs["wrist_image"], starts["wrist_image"][1])
    prev = obs
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        assert obs["image"].shape == obs["wrist_image"].shape == (128, 128, 3)
        assert not np.array_equal(obs["image"], prev["image"])
        assert not np.array_equal(obs["wrist_image"], prev["wrist_image"])
        assert not np.array_equal(obs["image"], obs["wrist_image"])
        np.testing.assert_array_equal(obs["state"], starts["state"][1])
        assert info["imagined"] and not (terminated or truncated)
        prev = obs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker complaint other than these known, documented ones fails
        warnings.filterwarnings(
            "ignore", message=".*(infinity|too low|too high).*"
        )  # state is unbounded, like real
        check_env(env.unwrapped)
    # by checkpoint path: the VLA checkpoint (also trained on two-view world-model samples) at 256, one shared load
    by_path = gym.make("WorldVLA-Imagined-v0", checkpoint=str(fx["vla"]), instruction=INSTR)
    assert by_path.unwrapped.two_view and by_path.unwrapped.runtime is runtime
    # the world model's input statistics are switchable per env; bad starts name the missing wrist frame
    other = gym.make("WorldVLA-Imagined-v0", runtime=world_model, init_frames=starts, instruction=INSTR,
                     world_action_norm="rynnvla")  # fmt: skip
    assert other.unwrapped.world_action_norm == "rynnvla"
    with pytest.raises(ValueError, match="wrist_image"):
        other.reset(options={"image": starts["image"][0]})
    with pytest.raises(ValueError, match="wrist_image"):
        gym.make("WorldVLA-Imagined-v0", runtime=world_model, init_frames=starts["image"], instruction=INSTR)
    with pytest.raises(ValueError, match="one-view"):
        gym.make_vec("WorldVLA-Imagined-v0", num_envs=2, vectorization_mode="vector_entry_point",
                     runtime=world_model, init_frames=starts, instruction=INSTR)  # fmt: skip


def test_imagine_views_equals_the_runtime_prompt_decode(runtime):
    """imagine_views from frames and from codes agree, and its codes come from the two-view prompt."""
    o = observation(80)
    a = np.zeros((1, 7))
    res = runtime.imagine_views(o["image"][None], o["wrist_image"][None], a, return_info=True)
    assert res.frames.shape == (1, 2, 256, 256, 3) and res.info.codes.shape == (1, 2, 16, 16)
    codes = runtime.image_tokenizer.encode_codes(np.stack([o["image"], o["wrist_image"]])).numpy()
    again = runtime.imagine_views(None, None, a, codes=codes[:1], wrist_codes=codes[1:], return_info=True)
    assert torch.equal(again.info.codes, res.info.codes)
    with pytest.raises(NotImplementedError, match="imagine_views"):
        runtime.imagine(o["image"][None], a)
    with pytest.raises(ValueError, match="wrist_images"):
        runtime.imagine_views(o["image"][None], None, a)


def test_own_format_roundtrip_keeps_the_head_and_the_two_views(runtime, tmp_path):
    from wvla_gym.model.loading import save_pretrained

    out = save_pretrained(runtime.model, tmp_path / "own", runtime.processor.text_tokenizer)
    assert json.loads((out / "config.json").read_text())["model_type"] == "rynnvla002"
    again = WorldVLARuntime.from_pretrained(out)
    assert isinstance(again, RynnVLARuntime) and again.time_horizon == 5
    ctx = torch.randn(1, 3, HIDDEN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(again.model.action_head(ctx), runtime.model.action_head(ctx))
    assert again.config.to_dict()["state_min"] == runtime.config.to_dict()["state_min"]
