"""A visuomotor behaviour-cloning policy: :class:`wvla_gym.training.bc.BCNet` (small ResNet-style CNN on the
agent-view image + the 8-dim proprio state) predicting a chunk of K actions, executed open-loop from a queue.

Train with ``wvla-gym train bc --data <HDF5 demos> --out PATH``; evaluate with ``wvla-gym eval --policy bc:PATH``
(the final policy) or ``--policy bc:PATH/epochs/epoch_003`` (after epoch 3). Option ``replan_steps`` (``<= K``)
executes only the first actions of each chunk before predicting again.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from agents.base import ChunkQueuePolicy
from wvla_gym.protocol import STATE_DIM
from wvla_gym.utils.validation import check_int, fail

__all__ = ["BCFactory", "BCPolicy"]


class BCPolicy(ChunkQueuePolicy):
    """One episode's BC policy on a shared model (see the module docstring)."""

    def __init__(self, model: Any, config: dict[str, Any], *, replan_steps: int | None = None) -> None:
        super().__init__()
        self.model, self.config = model, config
        self.chunk = int(config["chunk"])
        self.replan_steps = check_int("replan_steps", self.chunk if replan_steps is None else replan_steps,
                                      lo=1, hi=self.chunk)
        self.resolution = int(config["resolution"])

    def knobs(self) -> dict[str, Any]:
        return {"K": self.chunk, "replan_steps": self.replan_steps, "resolution": self.resolution,
                "use_state": bool(self.config["use_state"]), "train_episodes": self.config.get("train_episodes")}

    def predict_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        from wvla_gym.training.bc import normalise, unnormalise

        if not isinstance(obs, dict) or "image" not in obs:
            raise ValueError(f"obs is {type(obs).__name__} without 'image'; expected a dict with obs['image']")
        img = np.asarray(obs["image"])
        want = (self.resolution, self.resolution, 3)
        if img.dtype != np.uint8 or img.shape != want:
            raise ValueError(f"obs['image'] is {img.dtype} {img.shape}; this bc policy expects uint8 {want} "
                             f"(evaluate at --resolution {self.resolution})")
        state = None
        if self.config["use_state"]:
            raw = np.asarray(obs.get("state", ()), dtype=np.float32)
            if raw.shape != (STATE_DIM,):
                raise ValueError(f"obs['state'] has shape {raw.shape}; this bc policy uses the proprio state, "
                                 f"expected ({STATE_DIM},)")
            state = torch.from_numpy(normalise(raw, self.config["state_min"], self.config["state_max"])[None])
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(img))[None], state)[0].numpy()
        chunk = unnormalise(out, self.config["action_min"], self.config["action_max"])
        return np.clip(chunk[: self.replan_steps], -1.0, 1.0).astype(np.float32)


class BCFactory:
    """``factory(env)`` -> a fresh :class:`BCPolicy` (its own queue) on the model of folder ``path``, loaded once.

    Pickles without the model (Ray actors and vector workers load their own copy once).
    """

    def __init__(self, path: str | os.PathLike, **options: Any) -> None:
        unknown = set(options) - {"replan_steps"}
        if unknown:
            raise ValueError(f"bc options {sorted(unknown)}; expected some of replan_steps")
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise fail("path", path, "a bc policy folder written by `wvla-gym train bc`")
        self.path = os.fspath(path)
        self.options = options
        self._loaded: tuple[Any, dict[str, Any]] | None = None

    def load(self) -> tuple[Any, dict[str, Any]]:
        if self._loaded is None:
            from wvla_gym.training.bc import load_bc

            self._loaded = load_bc(self.path)
        return self._loaded

    def digest(self) -> str:
        """Content hash of the weights: an evaluation's run identity tells a retrained folder apart."""
        from wvla_gym.utils.run_identity import path_digest

        return path_digest(os.path.join(self.path, "model.safetensors"))

    def __call__(self, env: Any = None) -> BCPolicy:
        model, config = self.load()
        return BCPolicy(model, config, **self.options)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}
