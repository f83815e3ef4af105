"""WorldVLA as an agent: ``agent.act(obs) -> (7,)`` with a frame-history buffer and an action-chunk queue."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from wvla_gym.runtime_cache import load_runtime
from wvla_gym.utils.validation import check_bool, check_choice, check_int, check_str, fail

if TYPE_CHECKING:
    from wvla_gym.runtime import WorldVLARuntime

#: ``decode=`` values: WorldVLA's parallel action decoding, or token by token.
DECODE_MODES = ("parallel", "sequential")
#: ``head=`` values: WorldVLA checkpoints have the discrete head only; RynnVLA-002's also the continuous one.
HEADS = ("continuous", "discrete")
#: Observation keys a two-view (RynnVLA-002) agent reads, with what each holds.
TWO_VIEW_KEYS = {
    "image": "uint8 HxWx3 agent view",
    "wrist_image": "uint8 HxWx3 wrist (eye-in-hand) view; WorldVLA-LIBERO-v0 gives it with wrist=True",
    "state": "8 floats: eef position (3), eef axis-angle (3), gripper qpos (2)",
}


@dataclass
class _Slot:
    """One episode's state: the last M frames and the actions left of the current chunk (a two-view agent keeps
    each step's views stacked ``(2, H, W, 3)``: third-person, wrist)."""

    history: deque[np.ndarray]
    queue: deque[np.ndarray] = field(default_factory=deque)


class WorldVLAAgent:
    """The WorldVLA policy behind the loop every LIBERO user writes::

        agent = WorldVLAAgent.from_pretrained()          # or a local folder / Hub id
        obs, info = env.reset(options={"init_state_id": 0})
        agent.reset(instruction=info["task_description"])
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs))

    Protocol (WorldVLA's LIBERO eval): the model is queried only when the action queue is empty; each query
    returns a chunk of K actions (``n_action_steps``, default the checkpoint's K), all executed open-loop. The
    prompt holds the last M frames of the *environment steps* (M from the checkpoint, 2 for the released models):
    the frame of the previous env step and the current one; the first query of an episode has one frame. The
    history is appended on every ``act`` call, including steps served from the queue.

    The instruction comes from ``obs["instruction"]``, then ``info["task_description"]``, then the one given to
    the constructor or ``reset``; none of them -> ``ValueError``.

    RynnVLA-002 checkpoints (:mod:`wvla_gym.runtime_rynnvla`) take ``head="continuous"`` (default) or
    ``"discrete"`` and read ``obs["image"]``, ``obs["wrist_image"]`` and ``obs["state"]`` (``WorldVLA-LIBERO-v0``
    with ``wrist=True`` gives all three); the prompt holds both views of the previous and current env step and the
    current state. ``act_chunk`` returns the continuous chunk exactly as the released head produces it
    (unclipped); ``act`` hands the env each of its actions clipped to [-1, 1]. The released eval passes the
    unclipped values to robosuite, whose OSC controller clips its input to [-1, 1] itself, so the robot receives
    the same command; our envs refuse out-of-range actions (they never clip silently), hence the explicit clip.

    State is kept per slot (one frame history and one chunk queue per env), and every acting entry point goes
    through one step function (:meth:`_step`: append the frames, one model call for the slots whose queues are
    empty, pop one action per slot):

    * ``act`` / ``act_chunk``: one env (the :class:`wvla_gym.policy.Policy` protocol);
    * ``act_batch(obs_batch)``: one slot per sub-env of a vector env;
    * ``WorldVLAAgent.act_group(agents, observations)``: one slot per agent, for agents that share a
      ``batch_key()`` (one runtime, weights loaded once; the evaluation backends use it for per-slot agents);
    * ``predict(obs, state, episode_start, deterministic)``: SB3's ``PolicyPredictor``, so
      ``stable_baselines3.common.evaluation.evaluate_policy(agent, vec_env)`` runs it.
    """

    def __init__(
        self,
        runtime: WorldVLARuntime,
        *,
        instruction: str | None = None,
        n_action_steps: int | None = None,
        decode: str = "parallel",
        constrain_actions: bool | None = None,
        image_key: str = "image",
        head: str | None = None,
    ) -> None:
        missing = [a for a in ("predict_action_chunk", "action_chunk", "history", "resolution") if not hasattr(runtime, a)]
        if missing:
            raise fail("runtime", runtime, "a loaded wvla_gym.runtime.WorldVLARuntime",
                       f"it lacks {missing}; load one with WorldVLAAgent.from_pretrained(checkpoint)")
        n_action_steps = check_int("n_action_steps", n_action_steps, lo=1, optional=True)
        decode = check_choice("decode", decode, DECODE_MODES)
        constrain_actions = check_bool("constrain_actions", constrain_actions, optional=True)
        self.image_key = check_str("image_key", image_key, nonempty=True)
        self.two_view = int(getattr(runtime, "views", 1)) == 2
        head = check_choice("head", head, HEADS, optional=True)
        if self.two_view:
            head = "continuous" if head is None else head
            if n_action_steps is not None and head == "continuous" and n_action_steps > runtime.action_chunk:
                raise fail("n_action_steps", n_action_steps, f"an int in [1, {runtime.action_chunk}]",
                           f"the continuous head predicts time_horizon={runtime.action_chunk} actions")
            if image_key != "image":
                raise fail("image_key", image_key, "'image'", "a two-view agent reads image, wrist_image and state")
        elif head == "continuous":
            raise fail("head", head, "'discrete' or None for this checkpoint",
                       "a WorldVLA checkpoint has no continuous action head; RynnVLA-002 checkpoints have one")
        else:
            head = "discrete"
        #: "continuous" (RynnVLA-002's action head) or "discrete" (action tokens; WorldVLA's only head).
        self.head = head
        # the continuous head's raw chunk can leave [-1, 1], which our envs refuse: act() clips (see the class doc)
        self.clip_actions = head == "continuous"
        if instruction is not None:
            _check_instruction(instruction, "instruction")
        self.runtime = runtime
        self.instruction = instruction
        self.n_action_steps = int(runtime.action_chunk if n_action_steps is None else n_action_steps)
        self.decode = decode
        # None: the checkpoint decides (released checkpoints decode unconstrained, as the official eval does;
        # our small embedded default sets constrain_actions in its config).
        if constrain_actions is None:
            constrain_actions = bool(getattr(getattr(runtime, "config", None), "constrain_actions", False))
        self.constrain_actions = constrain_actions
        self.history_len = int(runtime.history)
        self.resolution = int(runtime.resolution)
        self._slots: list[_Slot] = []
        # Wall time inside act*/predict and inside model calls, for the overhead benchmark.
        self.timing = {"act_s": 0.0, "model_s": 0.0, "queries": 0, "steps": 0}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
        dtype: Any = None,
        head: str | None = None,
        tokenizer_dir: str | os.PathLike | None = None,
        base_model_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> WorldVLAAgent:
        """Load a checkpoint (ours or a released one, WorldVLA or RynnVLA-002; ``None`` -> the embedded default)
        and wrap it.

        ``head``: "continuous" (RynnVLA-002's action transformer, its default) or "discrete" (action tokens, the
        only head of WorldVLA checkpoints). ``tokenizer_dir`` / ``base_model_dir``: where a released checkpoint's
        VQGAN + ``text_tokenizer.json`` and Lumina-mGPT ``tokenizer.json`` are when they are not in ``chameleon/``
        beside the model folders. The runtime comes from the process's runtime cache, so an imagined env on the
        same checkpoint shares its weights with this agent."""
        if path_or_hub_id is not None and not isinstance(path_or_hub_id, (str, os.PathLike)):
            raise fail("path_or_hub_id", path_or_hub_id,
                       "None (the embedded default), a local checkpoint folder or a Hub id (str or os.PathLike)")
        check_choice("head", head, HEADS, optional=True)  # before a (possibly 14 GB) load
        side = {k: v for k, v in (("tokenizer_dir", tokenizer_dir), ("base_model_dir", base_model_dir)) if v is not None}
        return cls(load_runtime(path_or_hub_id, device=device, dtype=dtype, **side), head=head, **kwargs)

    @property
    def action_chunk(self) -> int:
        return self.n_action_steps

    # ------------------------------------------------------------------ episode state
    def _new_slot(self) -> _Slot:
        return _Slot(deque(maxlen=self.history_len))

    def reset(self, instruction: str | None = None, *, num_envs: int | None = None, seed: int | None = None) -> None:
        """Start new episodes: clears frame histories and action queues (and sets the instruction if given).

        ``seed`` is accepted for the policy protocol and unused: decoding is greedy."""
        num_envs = check_int("num_envs", num_envs, lo=1, optional=True)
        check_int("seed", seed, optional=True)
        if instruction is not None:
            self.instruction = _check_instruction(instruction, "instruction")
        n = len(self._slots) if num_envs is None else num_envs
        self._slots = [self._new_slot() for _ in range(n)]

    def _ensure_envs(self, n: int) -> None:
        if len(self._slots) != n:
            if any(s.queue for s in self._slots):
                raise ValueError(
                    f"got a batch of {n} observations but the agent tracks {len(self._slots)} envs; "
                    "call reset(num_envs=...) when the number of envs changes"
                )
            self._slots = [self._new_slot() for _ in range(n)]

    # Read-only views of the per-slot state (tests and benchmarks look at the queues).
    @property
    def _queues(self) -> list[deque[np.ndarray]]:
        return [s.queue for s in self._slots]

    @property
    def _histories(self) -> list[deque[np.ndarray]]:
        return [s.history for s in self._slots]

    # ------------------------------------------------------------------ input checks
    def _frames(self, obs: Any, batched: bool) -> np.ndarray:
        """The frames ``(N, H, W, 3)`` (one view) or ``(N, 2, H, W, 3)`` (two views: third-person, wrist)."""
        keys = list(TWO_VIEW_KEYS) if self.two_view else [self.image_key]
        if not isinstance(obs, Mapping) or any(k not in obs for k in keys):
            got = sorted(map(str, obs)) if isinstance(obs, Mapping) else type(obs).__name__
            key = next((k for k in keys if k not in obs), keys[0]) if isinstance(obs, Mapping) else keys[0]
            what = TWO_VIEW_KEYS[key] if self.two_view else "uint8 HxWx3 agent view"
            raise ValueError(f"obs must be a dict with key {key!r} ({what}); got {got}")
        views = [self._view(obs, k, batched) for k in (("image", "wrist_image") if self.two_view else (self.image_key,))]
        if not self.two_view:
            return views[0]
        if len(views[0]) != len(views[1]):
            raise ValueError(f"obs['image'] has {len(views[0])} frames and obs['wrist_image'] {len(views[1])}")
        return np.stack(views, axis=1)

    def _view(self, obs: Mapping, key: str, batched: bool) -> np.ndarray:
        img = np.asarray(obs[key])
        r = self.resolution
        want = f"(N, {r}, {r}, 3)" if batched else f"({r}, {r}, 3)"
        if img.dtype != np.uint8 or img.shape[-3:] != (r, r, 3) or img.ndim != (4 if batched else 3):
            raise ValueError(
                f"obs[{key!r}] must be uint8 of shape {want} (rotated like WorldVLA-LIBERO-v0, at the "
                f"checkpoint's resolution); got {img.dtype} {img.shape}"
            )
        if batched and len(img) == 0:
            raise ValueError(f"obs[{key!r}] is an empty batch {img.shape}; expected {want} with N >= 1")
        return img if batched else img[None]

    def _states(self, obs: Mapping, n: int, batched: bool) -> np.ndarray | None:
        """The proprio states ``(N, 8)`` of a two-view agent (None for one view, whose prompt has none)."""
        if not self.two_view:
            return None
        try:
            s = np.asarray(obs["state"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"obs['state'] must be {TWO_VIEW_KEYS['state']}; got {obs['state']!r:.80}") from e
        want = (n, 8) if batched else (8,)
        if s.shape != want or not np.isfinite(s).all():
            raise ValueError(f"obs['state'] must be {TWO_VIEW_KEYS['state']}, finite, shape {want}; got {s.shape}")
        return s if batched else s[None]

    def _instructions(self, obs: Mapping, info: Any, n: int) -> list[str]:
        if info is not None and not isinstance(info, Mapping):
            raise fail("info", info, "None or the env's info dict")
        if "instruction" in obs:
            out = _instruction_list(obs["instruction"], "obs['instruction']", n)
        elif isinstance(info, Mapping) and "task_description" in info:
            out = _instruction_list(info["task_description"], "info['task_description']", n)
        elif self.instruction is not None:
            out = [self.instruction] * n
        else:
            raise ValueError(
                "no instruction: pass obs['instruction'], info['task_description'] (act(obs, info)), "
                "WorldVLAAgent(..., instruction=...) or agent.reset(instruction=...)"
            )
        if len(out) != n:
            raise ValueError(f"got {len(out)} instructions for {n} observations")
        return out

    # ------------------------------------------------------------------ THE step
    @staticmethod
    def _step(owners: Sequence[WorldVLAAgent], slots: Sequence[_Slot], frames: Sequence[np.ndarray],
              instructions: Sequence[str], states: Sequence[np.ndarray] | None = None, *,
              clip: bool = True) -> list[np.ndarray]:
        """One env step for every slot: append its frame, ONE model call for the slots whose queues are empty,
        pop one action per slot. ``owners[i]`` is the agent of ``slots[i]`` (one agent for a vector env, one
        agent per slot for :meth:`act_group`); they share a ``batch_key``, so the first one's settings decode.
        ``states``: per slot, the current proprio state (two-view agents). ``clip``: clip the popped actions to
        [-1, 1] when the agent's head can leave that range (``clip_actions``; :meth:`act_chunk` passes False).

        If the model call fails, the frames are taken back, so every slot is as before the call."""
        lead = owners[0]
        t0 = time.perf_counter()
        saved = [list(s.history) for s in slots]  # a full history drops its oldest frame on append
        for slot, f in zip(slots, frames, strict=True):
            slot.history.append(f)
        need = [i for i, s in enumerate(slots) if not s.queue]
        model_s = 0.0
        if need:
            t1 = time.perf_counter()
            histories = [list(slots[i].history) for i in need]
            kwargs: dict[str, Any] = {}
            if lead.two_view:  # each history entry is (third-person, wrist) of one env step
                kwargs = {"wrist_history": [[f[1] for f in h] for h in histories], "head": lead.head,
                          "state": np.stack([states[i] for i in need]) if states is not None else None}
                histories = [[f[0] for f in h] for h in histories]
            try:
                chunks = lead.runtime.predict_action_chunk(
                    histories,
                    [instructions[i] for i in need],
                    decode=lead.decode,
                    constrain_actions=lead.constrain_actions,
                    n_actions=lead.n_action_steps,
                    **kwargs,
                )
            except BaseException:
                for slot, frames_before in zip(slots, saved, strict=True):
                    slot.history.clear()
                    slot.history.extend(frames_before)
                raise
            model_s = time.perf_counter() - t1
            for i, chunk in zip(need, chunks, strict=True):
                slots[i].queue.extend(np.asarray(chunk, dtype=np.float32))
        out = [s.queue.popleft().astype(np.float32) for s in slots]
        if clip and lead.clip_actions:
            out = [np.clip(a, -1.0, 1.0) for a in out]
        act_s = time.perf_counter() - t0
        # Each agent is charged its share of the call: one query and one step per call it took part in.
        for agent in {id(a): a for a in owners}.values():
            share = sum(o is agent for o in owners) / len(owners)
            queried = sum(owners[i] is agent for i in need)
            if queried:
                agent.timing["model_s"] += model_s * queried / len(need)
                agent.timing["queries"] += 1
            agent.timing["act_s"] += act_s * share
            agent.timing["steps"] += 1
        return out

    # ------------------------------------------------------------------ acting entry points
    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> np.ndarray:
        """The next action ``(7,)`` float32 for one env; queries the model only when the chunk queue is empty.

        With the continuous head the action is clipped to [-1, 1] (the env's action space; see the class doc)."""
        frames = self._frames(obs, batched=False)
        states = self._states(obs, 1, batched=False)
        instructions = self._instructions(obs, info, 1)
        self._ensure_envs(1)
        return self._step([self], self._slots, frames, instructions, states)[0]

    def act_chunk(self, obs: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> np.ndarray:
        """A fresh chunk ``(K, 7)`` for one env (drops any queued actions; the frame joins the history).

        The chunk is the model's, unclipped (the continuous head's values may leave [-1, 1])."""
        frames = self._frames(obs, batched=False)
        states = self._states(obs, 1, batched=False)
        instructions = self._instructions(obs, info, 1)
        self._ensure_envs(1)
        slot = self._slots[0]
        slot.queue.clear()
        first = self._step([self], [slot], frames, instructions, states, clip=False)[0]
        rest = list(slot.queue)
        slot.queue.clear()
        return np.stack([first, *rest]).astype(np.float32)

    def act_batch(self, obs_batch: Mapping[str, Any], infos: Mapping[str, Any] | None = None) -> np.ndarray:
        """Next actions ``(N, 7)`` for N sub-envs of a vector env (one batched model call for empty queues)."""
        frames = self._frames(obs_batch, batched=True)
        states = self._states(obs_batch, len(frames), batched=True)
        instructions = self._instructions(obs_batch, infos, len(frames))
        self._ensure_envs(len(frames))
        return np.stack(self._step([self] * len(frames), self._slots, frames, instructions, states))

    def batch_key(self) -> tuple[Any, ...]:
        """Agents with equal keys can be served by one :meth:`act_group` call (same runtime and decoding)."""
        return (id(self.runtime), self.decode, self.constrain_actions, self.n_action_steps, self.head)

    @classmethod
    def act_group(cls, agents: Sequence[WorldVLAAgent], observations: Sequence[Mapping[str, Any]]) -> list[Any]:
        """``agent.act(obs)`` for every pair, with one batched model call for the agents whose queues are empty.

        Each agent keeps its own frame history and chunk queue, so the actions equal separate ``act`` calls
        (up to the float rounding of a batched forward pass). Returns an action ``(7,)`` per agent, or the
        exception its input raised (that agent's state is then left unchanged).
        """
        if len(agents) != len(observations):
            raise ValueError(f"act_group got {len(agents)} agents and {len(observations)} observations")
        if len({a.batch_key() for a in agents}) > 1:
            raise ValueError("act_group needs agents with one batch_key(): the same runtime and decoding settings")
        out: list[Any] = [None] * len(agents)
        ready: list[tuple[int, np.ndarray, str, np.ndarray | None]] = []
        for j, (agent, obs) in enumerate(zip(agents, observations, strict=True)):
            try:
                frame = agent._frames(obs, batched=False)[0]
                states = agent._states(obs, 1, batched=False)
                text = agent._instructions(obs, None, 1)[0]
                agent._ensure_envs(1)
                ready.append((j, frame, text, None if states is None else states[0]))
            except Exception as exc:  # this agent's input is bad: only its episode ends
                out[j] = exc
        if not ready:
            return out
        owners = [agents[j] for j, *_ in ready]
        two_view = owners[0].two_view
        try:
            actions = cls._step(owners, [a._slots[0] for a in owners], [r[1] for r in ready],
                                [r[2] for r in ready], [r[3] for r in ready] if two_view else None)
        except Exception as exc:  # the model call failed for the whole group (the slots are unchanged)
            actions = [exc] * len(ready)
        for (j, *_), a in zip(ready, actions, strict=True):
            out[j] = a
        return out

    def knobs(self) -> dict[str, Any]:
        """The settings that change this agent's actions, for results files (the evaluation summary)."""
        rt = self.runtime
        ckpt = getattr(rt, "checkpoint_dir", None)
        return {
            "K": self.n_action_steps,
            "M": self.history_len,
            "decode": self.decode,
            "constrain_actions": self.constrain_actions,
            "resolution": self.resolution,
            "image_key": self.image_key,
            **({"head": self.head} if self.two_view else {}),  # WorldVLA agents' knobs (run identities) unchanged
            "checkpoint_dir": None if ckpt is None else str(ckpt),
            "device": str(getattr(rt, "device", "cpu")),
            "dtype": str(getattr(rt, "dtype", "")).removeprefix("torch."),
            "attn_implementation": getattr(rt, "attn_implementation", None),
        }

    # ------------------------------------------------------------------ SB3 PolicyPredictor
    def predict(
        self,
        observation: Mapping[str, Any],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``PolicyPredictor.predict``: batched or single observations; ``episode_start`` resets sub-envs.

        Decoding is greedy whatever ``deterministic`` says (WorldVLA's protocol). The agent keeps its own
        recurrent state (histories and queues), so ``state`` is passed through unchanged.
        """
        img = np.asarray(observation[self.image_key]) if isinstance(observation, Mapping) and self.image_key in observation else None
        if img is not None and img.ndim == 3:
            return self.act(observation), state
        frames = self._frames(observation, batched=True)
        states = self._states(observation, len(frames), batched=True)
        instructions = self._instructions(observation, None, len(frames))
        self._ensure_envs(len(frames))
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if len(starts) != len(frames):
                raise ValueError(f"episode_start has {len(starts)} entries for {len(frames)} observations")
            for i in np.flatnonzero(starts):
                self._slots[int(i)] = self._new_slot()
        return np.stack(self._step([self] * len(frames), self._slots, frames, instructions, states)), state

    def __repr__(self) -> str:
        return (
            f"WorldVLAAgent(K={self.n_action_steps}, M={self.history_len}, resolution={self.resolution}, "
            f"decode={self.decode!r}" + (f", head={self.head!r})" if self.two_view else ")")
        )


#: Instructions longer than this are refused before tokenisation (LIBERO's longest is under 100 characters).
MAX_INSTRUCTION_CHARS = 1000


def _check_instruction(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{name}={text!r} is a {type(text).__name__}; expected a str (the task instruction)")
    if not text.strip():
        raise ValueError(f"{name} is empty; expected the task instruction, e.g. info['task_description']")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise ValueError(
            f"{name} has {len(text)} characters; expected at most {MAX_INSTRUCTION_CHARS} (a task instruction)"
        )
    return text


def _instruction_list(val: Any, name: str, n: int) -> list[str]:
    if isinstance(val, str):
        return [_check_instruction(val, name)] * n
    if isinstance(val, (list, tuple, np.ndarray)):
        return [_check_instruction(v.item() if isinstance(v, np.generic) else v, f"{name}[{i}]")
                for i, v in enumerate(val)]
    raise ValueError(f"{name} is a {type(val).__name__}; expected a str or a list of str (one per env)")
