"""Demo windows -> token sequences for the action model and the world model (docs/protocol.md §3, §8, §12).

Uses the model core's :class:`~wvla_gym.model.processing_worldvla.WorldVLAProcessor` (prompt text, action
blocks, labels) and an image tokenizer with ``encode(uint8 (B, H, W, 3)) -> ids (B, L)``
(:class:`~wvla_gym.model.image_tokenizer.ImageTokenizer`; ``WorldVLARuntime`` holds both).

Every frame of a demo is tokenized once and reused by all windows that contain it.

* action sample at step t: ``BOS text [img_{t-1}] [img_t] EOT | K x [BOA a EOA] EOT`` (t = 0: one image),
  dropped when fewer than K actions remain;
* world sample at step t: ``BOS text [img_t] [BOA a_t EOA] EOT | [img_{t+1}] EOT``; with ``world_history`` H > 1
  the prompt holds the last H frame-action pairs ``[img_{t-H+1}] [BOA a_{t-H+1} EOA] ... [img_t] [BOA a_t EOA]``
  (fewer at the start of a demo, as the imagined env has at the start of an episode).
Labels are -100 on the prompt part (left of ``|``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wvla_gym.data.codes import stored_codes, vq_sha256
from wvla_gym.data.dataset import DemoIndex, Source

TASKS = ("action", "world")


class ImageEncoder(Protocol):
    def encode(self, images: np.ndarray) -> Any: ...


@dataclass
class TokenSample:
    input_ids: list[int]
    labels: list[int]
    kind: str  # "action" or "world"
    file: str
    demo: str
    t: int


def tokenize_frames(frames: np.ndarray, image_tokenizer: ImageEncoder, batch_size: int = 32) -> list[list[int]]:
    """uint8 ``(T, H, W, 3)`` -> one token-id list per frame, encoded in batches."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {frames.dtype} {frames.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1")
    out: list[list[int]] = []
    for i in range(0, len(frames), batch_size):
        ids = image_tokenizer.encode(frames[i : i + batch_size])
        out.extend([int(x) for x in row] for row in np.asarray(ids.tolist() if hasattr(ids, "tolist") else ids))
    return out


def token_samples(
    sources: Source | Iterable[Source],
    processor: Any,
    image_tokenizer: ImageEncoder,
    *,
    kinds: Iterable[str] = TASKS,
    history: int = 2,
    chunk: int = 5,
    world_history: int = 1,
    view: str = "agentview",
    rotate: bool | None = None,
    batch_size: int = 32,
    code_tokenizer: Any = None,
) -> Iterator[TokenSample]:
    """Yield training samples of the requested ``kinds`` ("action", "world"), demo by demo.

    Args:
        sources: demo files / folders / ``(file, demo)`` pairs, as for :class:`~wvla_gym.data.dataset.ActionWindowDataset`.
        processor: a ``WorldVLAProcessor`` (``action_sample``, ``world_sample``).
        image_tokenizer: ``encode(uint8 (B, H, W, 3)) -> ids (B, L)``.
        history, chunk: M and K of the action model.
        world_history: frame-action pairs in a world sample's prompt.
        code_tokenizer: an ``ImageTokenizer`` (``codes_to_tokens``, ``vqgan``): files unpacked from a code file
            by the same VQ (:mod:`wvla_gym.data.codes`) then give their stored codes instead of re-encoding the
            decoded frames, so training sees exactly the codes of the recorded frames.
    """
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in TASKS]
    if bad or not kinds:
        raise ValueError(f"kinds={kinds!r}; expected a non-empty subset of {TASKS}")
    for name, v in (("history", history), ("chunk", chunk), ("world_history", world_history)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}; expected an int >= 1")
    digest = None if code_tokenizer is None else vq_sha256(code_tokenizer.vqgan)
    index = DemoIndex(sources, view, rotate)
    try:
        for path, demo, n in index.demos:
            instruction = index.instructions[path]
            codes = stored_codes(index.file(path), demo, view, digest)
            if codes is not None:
                img = [[int(x) for x in row] for row in code_tokenizer.codes_to_tokens(codes).tolist()]
            else:
                img = tokenize_frames(index.frames(path, demo, 0, n), image_tokenizer, batch_size)
            actions = index.actions(path, demo, 0, n)
            if "action" in kinds:
                for t in range(0, n - chunk + 1):
                    hist = img[max(0, t - history + 1) : t + 1]
                    ids, labels = processor.action_sample(instruction, hist, actions[t : t + chunk])
                    yield TokenSample(ids, labels, "action", path, demo, t)
            if "world" in kinds:
                for t in range(n - 1):
                    lo = max(0, t - world_history + 1)
                    # world_history 1: one pair, the released his=1 sample
                    ids, labels = processor.world_sample(img[lo : t + 1], actions[lo : t + 1], img[t + 1])
                    yield TokenSample(ids, labels, "world", path, demo, t)
    finally:
        index.close()
