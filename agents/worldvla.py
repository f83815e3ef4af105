"""WorldVLA as an agent: ``agent.act(obs) -> (7,)`` with a frame-history buffer and an action-chunk queue."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from wvla_gym.runtime import WorldVLARuntime


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

    Vector envs: ``act_batch(obs_batch)`` keeps one history and queue per sub-env and batches the model call over
    the sub-envs whose queues are empty. Several agents may share one runtime (weights loaded once): each agent
    owns its histories and queues, and ``WorldVLAAgent.act_group(agents, observations)`` serves agents that
    share a ``batch_key()`` with one model call (the evaluation backends use it for per-slot agents). SB3: ``predict(obs, state, episode_start, deterministic)`` implements
    ``PolicyPredictor``, so ``stable_baselines3.common.evaluation.evaluate_policy(agent, vec_env)`` runs it.
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
    ) -> None:
        k = runtime.action_chunk if n_action_steps is None else n_action_steps
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_action_steps={n_action_steps!r}; expected None or a positive int")
        if decode not in ("parallel", "sequential"):
            raise ValueError(f"decode={decode!r}; expected 'parallel' or 'sequential'")
        if instruction is not None:
            _check_instruction(instruction, "instruction")
        self.runtime = runtime
        self.instruction = instruction
        self.n_action_steps = int(k)
        self.decode = decode
        # None: the checkpoint decides (released checkpoints decode unconstrained, as the official eval does;
        # our small embedded default sets constrain_actions in its config).
        if constrain_actions is None:
            constrain_actions = bool(getattr(getattr(runtime, "config", None), "constrain_actions", False))
        self.constrain_actions = bool(constrain_actions)
        self.image_key = image_key
        self.history_len = int(runtime.history)
        self.resolution = int(runtime.resolution)
        self._histories: list[deque[np.ndarray]] = []
        self._queues: list[deque[np.ndarray]] = []
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
        **kwargs: Any,
    ) -> WorldVLAAgent:
        """Load a checkpoint (ours or a released one; ``None`` -> the embedded default) and wrap it."""
        return cls(WorldVLARuntime.from_pretrained(path_or_hub_id, device=device, dtype=dtype), **kwargs)

    @property
    def action_chunk(self) -> int:
        return self.n_action_steps

    # ------------------------------------------------------------------ episode state
    def reset(self, instruction: str | None = None, *, num_envs: int | None = None) -> None:
        """Start new episodes: clears frame histories and action queues (and sets the instruction if given)."""
        if instruction is not None:
            self.instruction = _check_instruction(instruction, "instruction")
        n = len(self._queues) if num_envs is None else num_envs
        self._histories = [deque(maxlen=self.history_len) for _ in range(n)]
        self._queues = [deque() for _ in range(n)]

    def _reset_env(self, i: int) -> None:
        self._histories[i] = deque(maxlen=self.history_len)
        self._queues[i] = deque()

    def _ensure_envs(self, n: int) -> None:
        if len(self._queues) != n:
            if self._queues and any(self._queues) and len(self._queues) != n:
                raise ValueError(
                    f"got a batch of {n} observations but the agent tracks {len(self._queues)} envs; "
                    "call reset(num_envs=...) when the number of envs changes"
                )
            self.reset(num_envs=n)

    # ------------------------------------------------------------------ input checks
    def _frames(self, obs: Any, batched: bool) -> np.ndarray:
        if not isinstance(obs, Mapping) or self.image_key not in obs:
            got = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            raise ValueError(f"obs must be a dict with key {self.image_key!r} (uint8 HxWx3 agent view); got {got}")
        img = np.asarray(obs[self.image_key])
        r = self.resolution
        want = f"(N, {r}, {r}, 3)" if batched else f"({r}, {r}, 3)"
        if img.dtype != np.uint8 or img.shape[-3:] != (r, r, 3) or img.ndim != (4 if batched else 3):
            raise ValueError(
                f"obs[{self.image_key!r}] must be uint8 of shape {want} (rotated like WorldVLA-LIBERO-v0, at the "
                f"checkpoint's resolution); got {img.dtype} {img.shape}"
            )
        return img if batched else img[None]

    def _instructions(self, obs: Mapping, info: Any, n: int) -> list[str]:
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

    # ------------------------------------------------------------------ acting
    def _step_batch(self, frames: np.ndarray, instructions: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            self._histories[i].append(f)
        need = [i for i, q in enumerate(self._queues) if not q]
        if need:
            t1 = time.perf_counter()
            chunks = self.runtime.predict_action_chunk(
                [list(self._histories[i]) for i in need],
                [instructions[i] for i in need],
                decode=self.decode,
                constrain_actions=self.constrain_actions,
                n_actions=self.n_action_steps,
            )
            self.timing["model_s"] += time.perf_counter() - t1
            self.timing["queries"] += 1
            for i, chunk in zip(need, chunks, strict=True):
                self._queues[i].extend(np.asarray(chunk, dtype=np.float32))
        out = np.stack([q.popleft() for q in self._queues]).astype(np.float32)
        self.timing["act_s"] += time.perf_counter() - t0
        self.timing["steps"] += 1
        return out

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> np.ndarray:
        """The next action ``(7,)`` float32 for one env; queries the model only when the chunk queue is empty."""
        frames = self._frames(obs, batched=False)
        self._ensure_envs(1)
        return self._step_batch(frames, self._instructions(obs, info, 1))[0]

    def act_chunk(self, obs: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> np.ndarray:
        """A fresh chunk ``(K, 7)`` for one env (drops any queued actions; the frame joins the history)."""
        frames = self._frames(obs, batched=False)
        self._ensure_envs(1)
        self._queues[0].clear()
        first = self._step_batch(frames, self._instructions(obs, info, 1))[0]
        rest = list(self._queues[0])
        self._queues[0].clear()
        return np.stack([first, *rest]).astype(np.float32)

    def act_batch(self, obs_batch: Mapping[str, Any], infos: Mapping[str, Any] | None = None) -> np.ndarray:
        """Next actions ``(N, 7)`` for N sub-envs of a vector env (one batched model call for empty queues)."""
        frames = self._frames(obs_batch, batched=True)
        self._ensure_envs(len(frames))
        return self._step_batch(frames, self._instructions(obs_batch, infos, len(frames)))

    # ------------------------------------------------------------------ per-slot agents, one model call
    def batch_key(self) -> tuple[Any, ...]:
        """Agents with equal keys can be served by one :meth:`act_group` call (same runtime and decoding)."""
        return (id(self.runtime), self.decode, self.constrain_actions, self.n_action_steps)

    @classmethod
    def act_group(cls, agents: list[WorldVLAAgent], observations: list[Mapping[str, Any]]) -> list[Any]:
        """``agent.act(obs)`` for every pair, with one batched model call for the agents whose queues are empty.

        Each agent keeps its own frame history and chunk queue, so the actions equal separate ``act`` calls
        (up to the float rounding of a batched forward pass). Returns an action ``(7,)`` per agent, or the
        exception its input raised (that agent's state is then left unchanged).
        """
        if len(agents) != len(observations):
            raise ValueError(f"act_group got {len(agents)} agents and {len(observations)} observations")
        keys = {a.batch_key() for a in agents}
        if len(keys) > 1:
            raise ValueError("act_group needs agents with one batch_key(): the same runtime and decoding settings")
        out: list[Any] = [None] * len(agents)
        ready: list[tuple[int, np.ndarray, str]] = []
        for j, (agent, obs) in enumerate(zip(agents, observations, strict=True)):
            try:
                frame = agent._frames(obs, batched=False)[0]
                agent._ensure_envs(1)
                ready.append((j, frame, agent._instructions(obs, None, 1)[0]))
            except Exception as exc:  # this agent's input is bad: only its episode ends
                out[j] = exc
        if not ready:
            return out
        t0 = time.perf_counter()
        for j, frame, _ in ready:
            agents[j]._histories[0].append(frame)
        need = [(j, text) for j, _, text in ready if not agents[j]._queues[0]]
        if need:
            lead = agents[need[0][0]]
            t1 = time.perf_counter()
            try:
                chunks = lead.runtime.predict_action_chunk(
                    [list(agents[j]._histories[0]) for j, _ in need], [text for _, text in need],
                    decode=lead.decode, constrain_actions=lead.constrain_actions, n_actions=lead.n_action_steps,
                )
            except Exception as exc:  # the model call failed for the whole group: undo the history appends
                for j, _, _ in ready:
                    agents[j]._histories[0].pop()
                    out[j] = exc
                return out
            dt = time.perf_counter() - t1
            for (j, _), chunk in zip(need, chunks, strict=True):
                agents[j]._queues[0].extend(np.asarray(chunk, dtype=np.float32))
                agents[j].timing["model_s"] += dt / len(need)
                agents[j].timing["queries"] += 1
        dt = time.perf_counter() - t0
        for j, _, _ in ready:
            out[j] = agents[j]._queues[0].popleft().astype(np.float32)
            agents[j].timing["act_s"] += dt / len(ready)
            agents[j].timing["steps"] += 1
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
        self._ensure_envs(len(frames))
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if len(starts) != len(frames):
                raise ValueError(f"episode_start has {len(starts)} entries for {len(frames)} observations")
            for i in np.flatnonzero(starts):
                self._reset_env(int(i))
        return self._step_batch(frames, self._instructions(observation, None, len(frames))), state

    def __repr__(self) -> str:
        return (
            f"WorldVLAAgent(K={self.n_action_steps}, M={self.history_len}, resolution={self.resolution}, "
            f"decode={self.decode!r})"
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
