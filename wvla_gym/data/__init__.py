"""LIBERO demonstrations: recording (scripted expert rollouts), LIBERO-layout HDF5 files, window datasets,
WorldVLA's split and token sequences.

Submodules import lazily-heavy pieces (h5py, gymnasium, torch) only when used::

    from wvla_gym.data import ActionWindowDataset, split_files, noop_mask
"""

from __future__ import annotations

from wvla_gym.data.capture import rollout
from wvla_gym.data.dataset import (
    ActionWindow,
    ActionWindowDataset,
    WorldModelWindowDataset,
    WorldWindow,
    iter_windows,
)
from wvla_gym.data.hdf5 import OBS_KEYS, Episode, validate_file
from wvla_gym.data.noop import noop_mask
from wvla_gym.data.record import RecordConfig, Recorder, parse_tasks, record
from wvla_gym.data.replay import replay_file
from wvla_gym.data.split import split_files, split_trajectories
from wvla_gym.data.tokens import TokenSample, token_samples, tokenize_frames

__all__ = [
    "ActionWindow",
    "ActionWindowDataset",
    "Episode",
    "OBS_KEYS",
    "RecordConfig",
    "Recorder",
    "TokenSample",
    "WorldModelWindowDataset",
    "WorldWindow",
    "iter_windows",
    "noop_mask",
    "parse_tasks",
    "record",
    "replay_file",
    "rollout",
    "split_files",
    "split_trajectories",
    "token_samples",
    "tokenize_frames",
    "validate_file",
]
