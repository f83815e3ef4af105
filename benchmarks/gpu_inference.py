"""GPU inference at the hardware's limit: a 7B-shaped random WorldVLA (hidden 4096, 32 layers, vocab 65536, bf16,
sdpa) on CUDA. Prints prefill ms, decode ms/step next to the bandwidth floor (weight bytes / bandwidth), K=5/K=10
chunk ms for sequential and parallel decoding, act() latency at batch 1 and 8, imagine frames/s at batch 1 and 16,
parallel-vs-sequential token agreement in bf16 and float32, and peak memory, for each decode backend.
Without CUDA it runs the same code on a small config on CPU and says so. The last line is one JSON object.

    python benchmarks/gpu_inference.py                        # H200: --bandwidth-tbs 4.8
    python benchmarks/gpu_inference.py --small                # force the small config
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev, repeats: int) -> float:
    fn()  # warm-up (captures graphs, allocates caches)
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def build(args, dev: torch.device, dtype: torch.dtype, small: bool):
    from wvla_gym.model.configuration_worldvla import WorldVLAConfig
    from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
    from wvla_gym.model.processing_worldvla import ByteTextTokenizer
    from wvla_gym.model.token_layout import TokenLayout
    from wvla_gym.runtime import WorldVLARuntime

    layout = TokenLayout.worldvla(4 + np.arange(8192))
    h, n_layers, heads, inter = (128, 2, 4, 352) if small else (4096, 32, 32, 11008)
    cfg = WorldVLAConfig(
        vocab_size=layout.vocab_size, layout=layout.to_dict(), hidden_size=h, intermediate_size=inter,
        num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=4096, resolution=args.resolution,
        vq_config=dict(embed_dim=4, num_embeddings=8192, latent_channels=4, resolution=args.resolution,
                       base_channels=32, channel_multiplier=[1, 1, 1, 1, 1], num_res_blocks=1),
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    with torch.device(dev):
        model = WorldVLAForConditionalGeneration(cfg)
    model = model.to(dtype).eval()
    model.model.vqmodel.float()  # the VQGAN stays float32 (as released)
    rt = WorldVLARuntime(model, ByteTextTokenizer(0))
    n_lm = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "vqmodel" not in n)
    return rt, n_lm


def run_backend(rt, backend: str, args, dev) -> dict:
    rt.decode_backend = backend
    r = rt.resolution
    rng = np.random.default_rng(args.seed)
    out: dict = {"backend": rt.decode_backend}
    hist1 = rng.integers(0, 256, (1, 2, r, r, 3), dtype=np.uint8)
    with torch.inference_mode():
        toks = rt.image_tokenizer.encode(hist1[0]).tolist()
        prompt = rt.processor.action_prompt("put the bowl on the plate", toks)
        out["prompt_tokens"] = len(prompt)
        dec = rt.decoder  # the backend just selected; fed the prompt directly to time prefill and decode apart
        out["prefill_ms"] = 1e3 * _timed(lambda: dec.start([prompt], 90), dev, args.repeats)
        for k in (5, 10):
            t_seq = _timed(lambda k=k: dec.decode_actions([prompt], k, constrain=True, mode="sequential"), dev,
                           args.repeats)
            t_par = _timed(lambda k=k: dec.decode_actions([prompt], k, constrain=True, mode="parallel"), dev,
                           args.repeats)
            out[f"k{k}_sequential_ms"] = round(1e3 * t_seq, 2)
            out[f"k{k}_parallel_ms"] = round(1e3 * t_par, 2)
            if k == 10:  # ms per one-token step: (chunk - prefill) / (9K - 1) forwards
                out["decode_ms_per_step"] = round((1e3 * t_seq - out["prefill_ms"]) / (9 * k - 1), 3)
        out["prefill_ms"] = round(out["prefill_ms"], 2)
        for b in (1, 8):
            hist = rng.integers(0, 256, (b, 2, r, r, 3), dtype=np.uint8)
            t = _timed(lambda hist=hist: rt.predict_action_chunk(hist, "go", constrain_actions=True), dev, args.repeats)
            out[f"act_b{b}_ms"] = round(1e3 * t, 2)
        for b in (1, 16):
            imgs = rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8)
            acts = rng.uniform(-1, 1, (b, 7))
            t = _timed(lambda imgs=imgs, acts=acts: rt.imagine(imgs, acts), dev, args.repeats)
            out[f"imagine_b{b}_frames_per_s"] = round(b / t, 3)
    return out


def agreement(rt, args) -> bool:
    rng = np.random.default_rng(args.seed + 1)
    hist = rng.integers(0, 256, (4, 2, rt.resolution, rt.resolution, 3), dtype=np.uint8)
    seq = rt.predict_action_chunk(hist, "go", decode="sequential", constrain_actions=True, n_actions=10,
                                  return_info=True)
    par = rt.predict_action_chunk(hist, "go", decode="parallel", constrain_actions=True, n_actions=10,
                                  return_info=True)
    return par.info.tokens == seq.info.tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bandwidth-tbs", type=float, default=4.8, help="HBM bandwidth in TB/s (H200: 4.8)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="dynamic,static,auto")
    ap.add_argument("--small", action="store_true", help="small config even on CUDA")
    ap.add_argument("--no-fp32", action="store_true", help="skip the float32 agreement check (needs ~28 GB more)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None, help="a path, or 'default' for benchmarks/results/gpu_inference.json")
    args = ap.parse_args()
    from bench_io import BenchRecord

    record = BenchRecord("gpu_inference")
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    small = args.small or not cuda
    if not cuda:
        args.resolution = min(args.resolution, 64)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print("no CUDA: running the same code on a small config on CPU (numbers are not GPU numbers)")
    dtype = torch.bfloat16 if cuda else torch.float32
    rt, weight_bytes = build(args, dev, dtype, small)
    floor_ms = weight_bytes / (args.bandwidth_tbs * 1e12) * 1e3
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "small_config": small,
                    "dtype": str(dtype), "lm_weight_gb": round(weight_bytes / 1e9, 3),
                    "bandwidth_tbs": args.bandwidth_tbs, "decode_floor_ms_per_step": round(floor_ms, 3),
                    "backends": {}}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for b in [x for x in args.backends.split(",") if x]:
        try:
            res = run_backend(rt, b, args, dev)
        except ValueError as e:  # e.g. cuda_graph without CUDA
            print(f"backend {b}: skipped ({e})")
            continue
        key = res["backend"] if b == res["backend"] else f"{b}->{res['backend']}"  # "auto" resolves to a backend
        if key in result["backends"]:  # e.g. "auto" on CPU is "dynamic", measured already: keep both rows
            key = f"{b}->{res['backend']}"
        res["requested"] = b
        result["backends"][key] = res
        print(f"[{key}] prefill {res['prefill_ms']:.1f} ms ({res['prompt_tokens']} tokens), decode "
              f"{res['decode_ms_per_step']:.3f} ms/step (floor {floor_ms:.3f}); K=5 seq/par {res['k5_sequential_ms']}/"
              f"{res['k5_parallel_ms']} ms, K=10 {res['k10_sequential_ms']}/{res['k10_parallel_ms']} ms; act b1/b8 "
              f"{res['act_b1_ms']}/{res['act_b8_ms']} ms; imagine b1/b16 {res['imagine_b1_frames_per_s']}/"
              f"{res['imagine_b16_frames_per_s']} frames/s")
    result[f"agreement_{str(dtype).replace('torch.', '')}"] = agreement(rt, args)
    if cuda:
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    if cuda and not args.no_fp32:
        del rt
        torch.cuda.empty_cache()
        rt32, _ = build(args, dev, torch.float32, small)
        rt32.decode_backend = "auto"
        result["agreement_float32"] = agreement(rt32, args)
    record.save(result, args.json_out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
