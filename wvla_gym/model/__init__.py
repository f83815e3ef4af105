"""The WorldVLA model: token layout, action/image tokenizers, processing, the Chameleon subclass, loading.

RynnVLA-002 (WorldVLA's successor: state block, wrist view, continuous action head) lives in the ``*_rynnvla``
modules beside the WorldVLA ones.

Importing this package is cheap: the public names below resolve lazily on first access (the submodules
import torch and transformers), so ``import wvla_gym.model`` or ``import wvla_gym`` loads no model code::

    from wvla_gym.model import ImageTokenizer, make_tiny_checkpoint   # imports the submodules now
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule (relative to this package)
_LAZY: dict[str, str] = {
    "ActionTokenizer": "action_tokenizer",
    "WorldVLAConfig": "configuration_worldvla",
    "ChameleonVQGAN": "image_tokenizer",
    "ImageTokenizer": "image_tokenizer",
    "pixels_to_tensor": "image_tokenizer",
    "tensor_to_pixels": "image_tokenizer",
    "load_checkpoint": "loading",
    "resolve_checkpoint": "loading",
    "save_pretrained": "loading",
    "WorldVLAForConditionalGeneration": "modeling_worldvla",
    "worldvla_loss": "modeling_worldvla",
    "worldvla_loss_terms": "modeling_worldvla",
    "ByteTextTokenizer": "processing_worldvla",
    "HFTextTokenizer": "processing_worldvla",
    "WorldVLAProcessor": "processing_worldvla",
    "RynnVLAConfig": "configuration_rynnvla",
    "RynnVLAActionHead": "modeling_rynnvla",
    "RynnVLAForConditionalGeneration": "modeling_rynnvla",
    "RynnVLAProcessor": "processing_rynnvla",
    "make_tiny_checkpoint": "tiny",
    "tiny_config": "tiny",
    "TokenLayout": "token_layout",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
