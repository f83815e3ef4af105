"""Sequential (official, masked, one token per step) vs parallel chunk decoding, same prompt, same tokens.

Builds a random model of the given size (no weights needed), prefills one action-model-like prompt and decodes
K=5 and K=10 action blocks both ways with ``constrain_actions=True`` (a random model does not emit the block
structure by itself). Decode time excludes the shared prompt prefill, which is timed separately.
The last printed line is one JSON object.

    python benchmarks/decode_speed.py                       # ~290M params, < 5 min on 2 CPU cores
    python benchmarks/decode_speed.py --hidden 512 --layers 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--prompt-len", type=int, default=576, help="about 2 images at 256 px + text")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="dynamic", choices=["auto", "dynamic", "static", "cuda_graph"],
                    help="decode backend of the runtime (wvla_gym.generation)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per mode; the best is reported")
    ap.add_argument("--agent-steps", type=int, default=10, help="agent.act() calls for the overhead share")
    ap.add_argument("--json-out", default=None,
                    help="also write the result with machine/load/version facts: a path, or 'default' for "
                         "benchmarks/results/decode_speed.json")
    args = ap.parse_args()
    from bench_io import BenchRecord

    record = BenchRecord("decode_speed")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from wvla_gym.model.configuration_worldvla import WorldVLAConfig
    from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
    from wvla_gym.model.processing_worldvla import ByteTextTokenizer
    from wvla_gym.model.token_layout import TokenLayout
    from wvla_gym.runtime import WorldVLARuntime

    layout = TokenLayout.worldvla(4 + np.arange(8192))  # released 65536-id vocabulary
    cfg = WorldVLAConfig(
        vocab_size=layout.vocab_size, layout=layout.to_dict(), hidden_size=args.hidden,
        intermediate_size=args.intermediate, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, max_position_embeddings=4096, resolution=32,
        vq_config=dict(embed_dim=4, num_embeddings=8192, latent_channels=4, resolution=32, base_channels=32,
                       channel_multiplier=[1, 1], num_res_blocks=1),
    )
    cfg._attn_implementation = args.attn
    model = WorldVLAForConditionalGeneration(cfg).eval()
    n_params = sum(p.numel() for n, p in model.named_parameters() if "vqmodel" not in n)
    rt = WorldVLARuntime(model, ByteTextTokenizer(0), decode_backend=args.backend)
    rng = np.random.default_rng(args.seed)
    prompt = [layout.bos_id, *rng.integers(20000, 30000, 20).tolist()]
    side = 16  # 256 px images: 276 tokens each; whole images only (a cut image would change the mask rule)
    while len(prompt) + layout.image_seq_len(side, side) < args.prompt_len:
        img = [layout.boi_id, layout.grid_token(side), layout.grid_token(side)]
        for _ in range(side):
            img += [int(layout.image_ids[c]) for c in rng.integers(0, 8192, side)] + [layout.row_end_id]
        prompt += img + [layout.eoi_id]
    prompt = prompt + [layout.end_of_turn_id]

    dec = rt.decoder  # the runtime's decoder, fed the synthetic prompt directly (no frames to encode)
    with torch.inference_mode():
        dec.start([prompt], 0)  # warm-up
        prefill = dec.start([prompt], 0).prefill_s
        rows, result, identical = [], {}, True
        for k in (5, 10):
            # best of `repeats`, alternating the two modes so machine load hits both alike; decode_s excludes
            # the prompt prefill
            t_seq = t_par = float("inf")
            for _ in range(args.repeats):
                seq = dec.decode_actions([prompt], k, constrain=True, mode="sequential")
                t_seq = min(t_seq, seq.decode_s)
                par = dec.decode_actions([prompt], k, constrain=True, mode="parallel")
                t_par = min(t_par, par.decode_s)
            same = seq.tokens == par.tokens
            identical &= same
            rows.append((k, seq.passes, par.passes, t_seq, t_par, t_seq / t_par, same))
            result[f"k{k}_speedup"] = round(t_seq / t_par, 2)
            result[f"k{k}_sequential_s"] = round(t_seq, 3)
            result[f"k{k}_parallel_s"] = round(t_par, 3)

    print(f"model: {n_params / 1e6:.0f}M params (LM), hidden {args.hidden}, {args.layers} layers, vocab 65536, "
          f"{args.attn}, {args.threads} threads; prompt {len(prompt)} tokens, prefill {prefill:.2f} s")
    print(f"{'K':>3} {'seq passes':>10} {'par passes':>10} {'seq s':>8} {'par s':>8} {'speedup':>8} {'same tokens':>12}")
    for k, sp, pp, ts, tp, s, same in rows:
        print(f"{k:>3} {sp:>10} {pp:>10} {ts:>8.2f} {tp:>8.2f} {s:>7.2f}x {str(same):>12}")
    result.update(backend=rt.decode_backend, tokens_identical=bool(identical), params_m=round(n_params / 1e6, 1), prompt_len=len(prompt),
                  prefill_s=round(prefill, 3))
    share = measure_agent_overhead(rt, args.agent_steps, args.seed)
    print(f"agent overhead: {100 * share:.2f} % of act() time outside model calls ({args.agent_steps} act() calls)")
    result["agent_overhead_share"] = round(share, 4)
    record.save(result, args.json_out)
    print(json.dumps(result))


def measure_agent_overhead(rt, steps: int, seed: int) -> float:
    """Share of ``WorldVLAAgent.act`` time spent outside ``predict_action_chunk`` (queue, history, checks)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from agents.worldvla import WorldVLAAgent

    agent = WorldVLAAgent(rt, instruction="put the bowl on the plate", constrain_actions=True, n_action_steps=5)
    rng = np.random.default_rng(seed)
    r = rt.resolution
    for _ in range(steps):
        agent.act({"image": rng.integers(0, 256, (r, r, 3), dtype=np.uint8)})
    t = agent.timing
    return (t["act_s"] - t["model_s"]) / t["act_s"]


if __name__ == "__main__":
    main()
