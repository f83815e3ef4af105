"""WorldVLA configuration: Chameleon hyper-parameters + token layout, action statistics, K, M, resolution."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import ChameleonConfig

from .action_tokenizer import LIBERO_MAX, LIBERO_MIN, ActionTokenizer
from .token_layout import TokenLayout

#: Action dimensions: [dx, dy, dz, drx, dry, drz, gripper].
ACTION_DIM = 7

ACTION_PROMPT = "What action should the robot take to {instruction}?"
# The reference trains the world model with one prompt and its inference helper uses another (docs/protocol.md §3).
WORLD_PROMPTS = {
    "train": "Generate the next image based on the provided sequence of historical images and corresponding actions.",
    "inference": "Generate the image based on the current image and the action.",
}


@strict
class WorldVLAConfig(ChameleonConfig):
    r"""Configuration of a WorldVLA checkpoint (a ChameleonConfig with the fields below).

    layout (`dict`): `TokenLayout.to_dict()`; defaults to the compact layout sized from `vq_config`.
    action_min / action_max (`list[float]`): normalisation statistics (defaults: released LIBERO values).
    action_chunk (`int`, defaults to 5): K, action blocks per query.
    history (`int`, defaults to 2): M, frames in the action prompt (previous env step + current).
    world_history (`int`, defaults to 1): frame-action pairs in the world-model prompt (1: the released his=1
        prompt; more: the imagined env keeps that many past frames and actions).
    resolution (`int`, defaults to 256): square image side the checkpoint expects.
    mask_image_logits (`bool`, defaults to True): stock Chameleon behaviour (image ids can't be generated);
        the world model turns it off per call.
    image_loss_weight (`float`, defaults to 0.04): CE weight α of image-token targets.
    image_loss_weight_ids (`str`): "image" weights the true image ids; "reference" reproduces the upstream
        slice ``w[3:8195]`` (ids 3..8194, off by one) for exact training parity.
    z_loss_weight (`float`, defaults to 1e-5).
    world_model_prompt (`str`): "inference" (the reference eval helper's text, default) or "train".
    text_tokenizer (`str`): "bytes" (compact layout: UTF-8 bytes) or "file" (`tokenizer.json` next to the
        weights, e.g. the Lumina-mGPT tokenizer).
    """

    model_type = "worldvla"

    layout: dict | None = None
    action_min: list[float] | None = None
    action_max: list[float] | None = None
    action_chunk: int = 5
    history: int = 2
    world_history: int = 1
    resolution: int = 256
    mask_image_logits: bool = True
    image_loss_weight: float = 0.04
    image_loss_weight_ids: str = "image"
    z_loss_weight: float = 1e-5
    world_model_prompt: str = "inference"
    text_tokenizer: str = "bytes"

    def __post_init__(self, **kwargs):
        if self.vocabulary_map is None:
            self.vocabulary_map = {}  # stock masking is done by us from the layout, not from this map
        super().__post_init__(**kwargs)
        if self.action_min is None:
            self.action_min = list(LIBERO_MIN)
        if self.action_max is None:
            self.action_max = list(LIBERO_MAX)
        self._validate_worldvla_fields()
        if self.layout is None:
            self.layout = TokenLayout.compact(self.vq_config.num_embeddings).to_dict()
            self.vocab_size = self.layout["vocab_size"]
        if self.layout["vocab_size"] != self.vocab_size:
            raise ValueError(f"layout vocab_size {self.layout['vocab_size']} != config vocab_size {self.vocab_size}")
        if len(TokenLayout.from_dict(self.layout).image_ids) != self.vq_config.num_embeddings:
            raise ValueError("the layout's image ids must cover vq_config.num_embeddings codes")
        if isinstance(self.world_history, bool) or not isinstance(self.world_history, int) or self.world_history < 1:
            raise ValueError(f"world_history must be an int >= 1, got {self.world_history!r}")
        if self.world_model_prompt not in WORLD_PROMPTS:
            raise ValueError(f"world_model_prompt must be one of {sorted(WORLD_PROMPTS)}, got {self.world_model_prompt!r}")
        if self.image_loss_weight_ids not in ("image", "reference"):
            raise ValueError("image_loss_weight_ids must be 'image' or 'reference'")
        if self.text_tokenizer not in ("bytes", "file"):
            raise ValueError("text_tokenizer must be 'bytes' or 'file'")

    def _validate_worldvla_fields(self) -> None:
        """Fail at load, naming the field and the expected form, instead of deep inside a forward pass."""
        for name in ("action_chunk", "history", "resolution"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"config field {name}={v!r}; expected an int >= 1")
        for name in ("action_min", "action_max"):
            v = getattr(self, name)
            ok = isinstance(v, (list, tuple)) and len(v) == ACTION_DIM and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
            )
            if not ok:
                raise ValueError(f"config field {name}={v!r}; expected a list of {ACTION_DIM} finite floats")
        if not all(lo < hi for lo, hi in zip(self.action_min, self.action_max, strict=True)):
            raise ValueError(
                f"config fields action_min={self.action_min} / action_max={self.action_max}: expected min < max per dimension"
            )
        if self.resolution % self.downsample:
            raise ValueError(
                f"config field resolution={self.resolution}; expected a multiple of the VQGAN downsampling factor {self.downsample}"
            )
        mp = self.max_position_embeddings
        if isinstance(mp, bool) or not isinstance(mp, int) or mp < 1:
            raise ValueError(f"config field max_position_embeddings={mp!r}; expected an int >= 1")

    # ---- helpers -----------------------------------------------------------------------------------------
    @property
    def token_layout(self) -> TokenLayout:
        return TokenLayout.from_dict(self.layout)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vq_config.channel_multiplier) - 1)

    def action_tokenizer(self) -> ActionTokenizer:
        return ActionTokenizer(self.action_min, self.action_max, self.token_layout.action_first_id)
