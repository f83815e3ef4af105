"""Every special token id and id range of a WorldVLA vocabulary, in one place.

Two layouts exist:

* :meth:`TokenLayout.worldvla` is the released 65536-id Chameleon / Lumina-mGPT layout. Its image ids are a
  *permutation* of the VQ codes, read from the ``IMGIMG*`` token names of Meta's ``text_tokenizer.json``.
* :meth:`TokenLayout.compact` is a small layout with the same structure for models trained by this project
  (byte-level text, contiguous image ids).

This module is pure Python + numpy so that configs can be built without torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

IMG_NAME_PREFIX = "IMGIMG"
N_ACTION_BINS = 256  # digitize() of a value in [-1, 1] against 256 edges returns 1..256


def reserved_id(n: int) -> int:
    """Id of ``<reservedNNNNN>`` in the Chameleon vocabulary (the rule holds for every id WorldVLA hard-codes)."""
    return n + 4


def image_code_from_name(name: str) -> int:
    """VQ code of an ``IMGIMG*`` token name: strip the prefix and the last character, letters A-J are digits 0-9."""
    body = name[len(IMG_NAME_PREFIX) : -1]
    return int("".join(str(ord(c) - ord("A")) if "A" <= c <= "J" else c for c in body))


def image_name_from_code(code: int) -> str:
    """Inverse of :func:`image_code_from_name` (the trailing character is ``Z`` in Meta's vocabulary)."""
    return IMG_NAME_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


@dataclass(frozen=True)
class TokenLayout:
    """Special ids and id ranges. Instances are immutable and JSON-serialisable (:meth:`to_dict`).

    ``image_ids[c]`` is the token id of VQ code ``c``. Action value tokens are
    ``action_first_id + bin`` for bin 0..255 (``action_first_id = boa_id + 2`` in the released layout,
    i.e. ``boa + 1 + digitize``). Grid tokens are ``grid_base_id + latent_size // grid_scale``.
    """

    vocab_size: int
    bos_id: int
    pad_id: int
    end_of_turn_id: int
    boi_id: int
    eoi_id: int
    row_end_id: int
    grid_base_id: int
    grid_scale: int
    boa_id: int
    eoa_id: int
    action_first_id: int
    image_ids: tuple[int, ...] = field(repr=False)
    text_byte_offset: int | None = None  # compact layout: byte b of UTF-8 text is id offset+b
    name: str = "custom"

    def __post_init__(self) -> None:
        ids = np.asarray(self.image_ids)
        if ids.ndim != 1 or len(np.unique(ids)) != len(ids):
            raise ValueError("image_ids must be a 1-D sequence of distinct ids")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError("image_ids out of vocabulary range")
        if self.action_first_id + N_ACTION_BINS > self.vocab_size:
            raise ValueError("action ids exceed the vocabulary")

    # ---- constructors -------------------------------------------------------------------------------------
    @classmethod
    def worldvla(cls, image_ids: Sequence[int] | np.ndarray) -> TokenLayout:
        """The released 65536-id layout; ``image_ids`` comes from :meth:`image_ids_from_vocab`."""
        return cls(
            vocab_size=65536,
            bos_id=0,
            pad_id=0,  # the training collate pads with 0 (labels -100); padded keys are masked anyway
            end_of_turn_id=reserved_id(8706),  # 8710
            boi_id=8197,
            eoi_id=8196,
            row_end_id=reserved_id(8799),  # 8803
            grid_base_id=reserved_id(8800),  # 8804
            grid_scale=2,  # grid token n = latent_size / 2 (the released VQGAN latent is H/16, token H/32)
            boa_id=reserved_id(10000),  # 10004
            eoa_id=reserved_id(15000),  # 15004
            action_first_id=reserved_id(10000) + 2,  # 10006
            image_ids=tuple(int(i) for i in image_ids),
            name="worldvla",
        )

    @classmethod
    def worldvla_from_text_tokenizer(cls, path: str | os.PathLike) -> TokenLayout:
        """Released layout with the code<->id permutation read from Meta's ``text_tokenizer.json``."""
        return cls.worldvla(cls.image_ids_from_vocab(read_vocab(path)))

    @staticmethod
    def image_ids_from_vocab(vocab: Mapping[str, int]) -> np.ndarray:
        """``ids[code]`` for every ``IMGIMG*`` name in ``vocab``; codes must be exactly 0..n-1."""
        pairs = sorted((image_code_from_name(n), int(i)) for n, i in vocab.items() if n.startswith(IMG_NAME_PREFIX))
        if not pairs:
            raise ValueError(f"no {IMG_NAME_PREFIX}* tokens in the vocabulary")
        codes = [c for c, _ in pairs]
        if codes != list(range(len(codes))):
            raise ValueError("IMGIMG* token names do not cover the VQ codes 0..n-1 exactly once")
        return np.asarray([i for _, i in pairs], dtype=np.int64)

    @classmethod
    def compact(cls, n_image_codes: int, max_grid: int = 64) -> TokenLayout:
        """Small layout for project-trained models: specials, grid tokens, 256 text bytes, 256 actions, images.

        ``grid_scale`` is 1 here so that any latent size (odd ones too) is representable.
        """
        bos, pad, eot, boi, eoi, row_end, boa, eoa = range(8)
        grid_base = 8
        text = grid_base + max_grid + 1
        action_first = text + 256
        image_first = action_first + N_ACTION_BINS
        return cls(
            vocab_size=image_first + n_image_codes,
            bos_id=bos,
            pad_id=pad,
            end_of_turn_id=eot,
            boi_id=boi,
            eoi_id=eoi,
            row_end_id=row_end,
            grid_base_id=grid_base,
            grid_scale=1,
            boa_id=boa,
            eoa_id=eoa,
            action_first_id=action_first,
            image_ids=tuple(range(image_first, image_first + n_image_codes)),
            text_byte_offset=text,
            name="compact",
        )

    # ---- derived ------------------------------------------------------------------------------------------
    @property
    def n_image_codes(self) -> int:
        return len(self.image_ids)

    @property
    def action_ids(self) -> range:
        """The 256 action value ids (the last one only occurs for a normalised value of exactly 1.0)."""
        return range(self.action_first_id, self.action_first_id + N_ACTION_BINS)

    def grid_token(self, latent_size: int) -> int:
        if latent_size % self.grid_scale:
            raise ValueError(f"latent size {latent_size} is not a multiple of this layout's grid scale {self.grid_scale}")
        return self.grid_base_id + latent_size // self.grid_scale

    def latent_size_from_grid_token(self, token: int) -> int:
        return (int(token) - self.grid_base_id) * self.grid_scale

    def image_seq_len(self, latent_h: int, latent_w: int) -> int:
        """``[BOI, grid_h, grid_w] + h * (w codes + row-end) + [EOI]`` (276 at 256 px, 1060 at 512 px released)."""
        return 3 + latent_h * (latent_w + 1) + 1

    def code_to_id_table(self) -> np.ndarray:
        return np.asarray(self.image_ids, dtype=np.int64)

    def id_to_code_table(self) -> np.ndarray:
        """Array over the vocabulary: code of an image id, -1 elsewhere."""
        table = np.full(self.vocab_size, -1, dtype=np.int64)
        table[self.code_to_id_table()] = np.arange(self.n_image_codes)
        return table

    def structural_ids(self) -> frozenset[int]:
        """Ids whose appearance changes the block structure seen by the action mask."""
        return frozenset({self.boi_id, self.eoi_id, self.boa_id, self.eoa_id, self.end_of_turn_id})

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        ids = np.asarray(self.image_ids)
        # store contiguous ranges compactly; the released permutation is stored in full
        if len(ids) and np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
            d["image_ids"] = {"start": int(ids[0]), "count": len(ids)}
        else:
            d["image_ids"] = [int(i) for i in ids]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenLayout:
        d = dict(d)
        ids = d["image_ids"]
        if isinstance(ids, Mapping):
            ids = range(ids["start"], ids["start"] + ids["count"])
        d["image_ids"] = tuple(int(i) for i in ids)
        return cls(**d)


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Token-name -> id map of a HF ``tokenizers`` JSON file (``model.vocab`` plus ``added_tokens``)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # json's message does not name the file
        raise ValueError(f"{path}: not valid JSON ({e}); expected a tokenizers JSON with a model.vocab mapping") from e
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict):
        raise ValueError(f"{path}: expected a tokenizers JSON with a model.vocab mapping")
    try:
        out = {str(k): int(v) for k, v in vocab.items()}
        for tok in data.get("added_tokens", []) or []:
            out[str(tok["content"])] = int(tok["id"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: model.vocab / added_tokens must map token names to int ids ({e!r})") from e
    return out
