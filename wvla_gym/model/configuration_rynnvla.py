"""RynnVLA-002 configuration: a WorldVLA config plus the continuous head's K and D, the proprio state block and
the world model's action statistics (docs/rynnvla002.md; ``../shared/reference/rynnvla002-protocol.md``).

RynnVLA-002 (alibaba-damo-academy/RynnVLA-002) is WorldVLA's successor on the same Chameleon backbone, VQGAN,
vocabulary and action tokens. What changes, and lives here:

* ``time_horizon`` (K) and ``action_dim`` (D) from the released ``config.json`` size the continuous action head;
  K is also the discrete chunk length (``action_chunk`` mirrors it);
* an 8-d state block ``[15504, s1..s8, 16004]``, the values binned like actions on their own min/max
  (``state_min`` / ``state_max``, ids ``15505 + digitize`` = 15506..15761);
* the VLA's action min/max differ from WorldVLA's in dims 3 and 5 (``action_min`` / ``action_max``), while the
  released world-model pipeline tokenises its *input* actions with WorldVLA's old statistics
  (``world_action_norm="worldvla"``, the default, as the released world-model eval does; ``"rynnvla"`` switches);
* the world model predicts two views (third-person and wrist) from one step of history, prompted with the
  *training* text by default (``world_model_prompt="train"``).
"""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict

from .action_tokenizer import (
    LIBERO_MAX,
    LIBERO_MIN,
    RELEASED_FIRST_ID,
    RYNNVLA_LIBERO_MAX,
    RYNNVLA_LIBERO_MIN,
    ActionTokenizer,
)
from .configuration_worldvla import ACTION_DIM, WorldVLAConfig
from .token_layout import reserved_id

#: Proprio state: eef position (3), eef axis-angle (3), gripper qpos (2) — LIBERO's ``state`` observation.
STATE_DIM = 8
#: The released state statistics (``FlexARItemProcessor_Action_State.norm_state``; all four LIBERO suites).
RYNNVLA_STATE_MIN = (
    -0.4827807,
    -0.3309336,
    0.00812818,
    1.00279467,
    -3.63125079,
    -1.84273835,
    -0.00545302,
    -0.04201502,
)
RYNNVLA_STATE_MAX = (
    0.210313803,
    0.390426440,
    1.47277813,
    3.72486417,
    3.56188956,
    1.38632160,
    0.0423214189,
    0.00131260958,
)
#: ``<reserved15500>`` / ``<reserved16000>`` open and close the state block; values are ``start + 1 + digitize``.
STATE_START_ID = reserved_id(15500)  # 15504
STATE_END_ID = reserved_id(16000)  # 16004
STATE_FIRST_ID = STATE_START_ID + 2  # 15506: digitize() of a value in [-1, 1] is 1..256

#: Action statistics the world model's *input* action block can be tokenised with.
WORLD_ACTION_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "worldvla": (LIBERO_MIN, LIBERO_MAX),  # the released pretokenize pipeline and world-model eval
    "rynnvla": (RYNNVLA_LIBERO_MIN, RYNNVLA_LIBERO_MAX),  # the NoPretokenize pipeline (the VLA's statistics)
}

#: Released continuous-head internals (``ActionHead(hidden_size_factor=0.25, num_encoder_layers=2)`` on a 4096
#: LM); only the input side follows the LM's ``hidden_size``.
HEAD_MODEL_DIM = 1024
HEAD_NUM_HEADS = 4
HEAD_FF_DIM = 4096
HEAD_ENCODER_LAYERS = 2
HEAD_MLP_BLOCKS = 2
HEAD_DROPOUT = 0.1  # training only; the head runs in eval mode


@strict
class RynnVLAConfig(WorldVLAConfig):
    r"""Configuration of a RynnVLA-002 checkpoint (a :class:`WorldVLAConfig` with the fields below).

    time_horizon (`int`, defaults to 5): K, actions per chunk (the released ``config.json`` field; libero_spatial
        and libero_10 use 10). ``action_chunk`` must equal it.
    action_dim (`int`, defaults to 7): D, action dimensions (the released ``config.json`` field).
    state_min / state_max (`list[float]`): the state block's statistics (default: the released LIBERO values).
    world_action_norm (`str`, defaults to "worldvla"): statistics of the world model's input actions,
        "worldvla" (WorldVLA's, as the released world-model eval tokenises them) or "rynnvla" (the VLA's).
    world_model_prompt (`str`, defaults to "train"): the world model's prompt text; the released eval helper's
        other text is "inference".
    """

    model_type = "rynnvla002"

    world_model_prompt: str = "train"
    time_horizon: int = 5
    action_dim: int = ACTION_DIM
    state_min: list[float] | None = None
    state_max: list[float] | None = None
    world_action_norm: str = "worldvla"

    def __post_init__(self, **kwargs):
        if self.action_min is None:
            self.action_min = list(RYNNVLA_LIBERO_MIN)
        if self.action_max is None:
            self.action_max = list(RYNNVLA_LIBERO_MAX)
        if self.state_min is None:
            self.state_min = list(RYNNVLA_STATE_MIN)
        if self.state_max is None:
            self.state_max = list(RYNNVLA_STATE_MAX)
        super().__post_init__(**kwargs)
        self._validate_rynnvla_fields()

    def _validate_rynnvla_fields(self) -> None:
        """Fail at load, naming the field and the expected form."""
        for name in ("time_horizon", "action_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"config field {name}={v!r}; expected an int >= 1")
        if self.action_dim != len(self.action_min):
            raise ValueError(
                f"config field action_dim={self.action_dim}, but action_min/action_max have {len(self.action_min)} "
                f"dimensions; expected {ACTION_DIM} (LIBERO's [dx, dy, dz, drx, dry, drz, gripper])"
            )
        if self.action_chunk != self.time_horizon:
            raise ValueError(
                f"config fields action_chunk={self.action_chunk} and time_horizon={self.time_horizon} differ; a "
                "RynnVLA-002 chunk is time_horizon actions (run fewer with the agent's n_action_steps)"
            )
        if self.world_history != 1:
            raise ValueError(
                f"config field world_history={self.world_history!r}; RynnVLA-002's world model takes 1"
            )
        for name in ("state_min", "state_max"):
            v = getattr(self, name)
            ok = (
                isinstance(v, (list, tuple))
                and len(v) == STATE_DIM
                and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
                )
            )
            if not ok:
                raise ValueError(f"config field {name}={v!r}; expected a list of {STATE_DIM} finite floats")
        if not all(lo < hi for lo, hi in zip(self.state_min, self.state_max, strict=True)):
            raise ValueError("config fields state_min / state_max: expected min < max per dimension")
        if self.world_action_norm not in WORLD_ACTION_NORMS:
            raise ValueError(
                f"config field world_action_norm={self.world_action_norm!r}; expected one of {sorted(WORLD_ACTION_NORMS)}"
            )

    # ---- helpers -----------------------------------------------------------------------------------------
    def state_tokenizer(self) -> ActionTokenizer:
        """The state block's value tokenizer (same 256-bin scheme as actions, ids 15506..15761)."""
        return ActionTokenizer(self.state_min, self.state_max, STATE_FIRST_ID)

    def world_action_tokenizer(self, norm: str | None = None) -> ActionTokenizer:
        """Tokenizer of the world model's input action block; ``norm`` None -> ``world_action_norm``."""
        norm = self.world_action_norm if norm is None else norm
        if norm not in WORLD_ACTION_NORMS:
            raise ValueError(
                f"world action normalisation {norm!r}; expected one of {sorted(WORLD_ACTION_NORMS)}"
            )
        lo, hi = WORLD_ACTION_NORMS[norm]
        first = self.token_layout.action_first_id if self.layout else RELEASED_FIRST_ID
        return ActionTokenizer(lo, hi, first)
