"""Self-forcing world-model samples: the world model's own rolled-out frames as the prompt, the recorded next
frame as the target (``scripts/self_forcing_samples.py`` writes them; ``train model --extra-world-samples``
trains on them).

A world model trained on recorded prompts only (teacher forcing) meets its own outputs in closed loop. Ours stalls
there: given its own frames it predicts the same frame again, whatever the action. Each rollout starts from a
recorded step ``s`` (with its recorded history) and runs ``rollout - 1`` open-loop predictions under the recorded
actions; step ``j >= 1`` gives the sample ``prompt = the last world_history frames of the rollout (recorded, then
the model's own codes) + their recorded actions -> the recorded frame s + j + 1``. So the model learns to continue
from its own frames toward where the real scene went.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def rollout_starts(n_steps: int, world_history: int, rollout: int, every: int) -> range:
    """Start steps of one episode of ``n_steps`` frames: a full history before, ``rollout`` recorded frames after."""
    return range(world_history - 1, n_steps - 1 - rollout, every)


@torch.inference_mode()
def self_forcing_samples(
    runtime: Any,
    episodes: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rollout: int = 8,
    every: int = 24,
    batch: int = 32,
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[int, int, int], None] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """Samples ``(input_ids, labels)`` from ``episodes`` (``(codes (n, h, w), actions (n, 7))`` each), greedy.

    Rollouts run ``batch`` at a time in lockstep; ``shard=(i, n)`` takes every n-th rollout (processes split the
    work). ``progress(done, total, samples)`` is called after each batch."""
    for name, v in (("rollout", rollout), ("every", every), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (name == "rollout" and v < 2):
            raise ValueError(f"{name}={v!r}; expected an int >= {2 if name == 'rollout' else 1}")
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard={shard!r}; expected (i, n) with 0 <= i < n")
    wh = int(getattr(runtime.config, "world_history", 1))
    jobs = [(np.asarray(c, np.int64), np.asarray(a, np.float32), s) for c, a in episodes
            for s in rollout_starts(len(c), wh, rollout, every)][i::n]
    tok, proc = runtime.image_tokenizer, runtime.processor
    out: list[tuple[list[int], list[int]]] = []
    for b in range(0, len(jobs), batch):
        chunk = jobs[b : b + batch]
        ctx = [[c[s - k] for k in range(wh - 1, -1, -1)] for c, _, s in chunk]  # the rollout's frames so far
        for j in range(rollout):
            steps = [s + j for _, _, s in chunk]  # the frame each row predicts from
            acts = [a[t - wh + 1 : t + 1] for (_, a, _), t in zip(chunk, steps, strict=True)]
            hist = [np.stack(x[-wh:]) for x in ctx]
            if j:  # j = 0 is the teacher-forced sample the recorded data already holds
                for h, a, (c, _, _), t in zip(hist, acts, chunk, steps, strict=True):
                    out.append(proc.world_sample(tok.codes_to_tokens(torch.as_tensor(h)).tolist(), a,
                                                 tok.codes_to_tokens(torch.as_tensor(c[t + 1][None]))[0].tolist()))
            if j == rollout - 1:
                break
            res = runtime.imagine(None, np.stack(acts), codes=np.stack(hist), return_info=True)
            for x, pred in zip(ctx, res.info.codes.numpy(), strict=True):
                x.append(pred)
        if progress is not None:
            progress(min(b + batch, len(jobs)), len(jobs), len(out))
    return out
