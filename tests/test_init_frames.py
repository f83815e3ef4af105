"""Init-frame cache: keyed by the rendering stack, settle steps and seed; atomic; damaged entries heal."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from envs.init_frames import (
    init_frame_cache_key,
    init_frame_path,
    render_init_frames,
    render_stack_versions,
)
from wvla_gym.protocol import NUM_STEPS_WAIT
from wvla_gym.utils import libero_setup

RES = 16


class FakeLibero:
    """Stands in for LiberoEnv: init state k renders as a frame full of k (and counts the renders)."""

    num_steps_wait = NUM_STEPS_WAIT

    def __init__(self):
        self.resets: list[tuple[int, int]] = []

    def reset(self, *, seed=None, options=None):
        k = int(options["init_state_id"])
        self.resets.append((seed, k))
        img = np.full((RES, RES, 3), k, np.uint8)
        return {"image": img, "wrist_image": 255 - img, "state": np.full(8, k, np.float32)}, {}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path))
    render_stack_versions.cache_clear()
    yield tmp_path
    render_stack_versions.cache_clear()


def _expected(k):
    return {"image": np.full((RES, RES, 3), k, np.uint8), "wrist_image": np.full((RES, RES, 3), 255 - k, np.uint8),
            "state": np.full(8, k, np.float32)}


def _assert_frame(got, k):
    for key, want in _expected(k).items():
        np.testing.assert_array_equal(got[key], want)
        assert got[key].dtype == want.dtype


def test_render_once_then_read_from_the_cache(cache):
    env = FakeLibero()
    frames = render_init_frames("libero_object", 0, RES, [3, 5], libero_env=env)
    assert env.resets == [(0, 3), (0, 5)]  # rendered with INIT_FRAME_SEED = 0
    _assert_frame(frames[0], 3)
    _assert_frame(frames[1], 5)
    again = render_init_frames("libero_object", 0, RES, [5, 3], libero_env=env)
    assert env.resets == [(0, 3), (0, 5)]  # no new render
    _assert_frame(again[0], 5)
    entries = sorted(p.name for p in init_frame_path("libero_object", 0, RES, 3).parent.iterdir())
    assert entries == ["3.npz", "5.npz", "key.json"]  # no temporary files left behind


def test_key_names_settle_steps_seed_and_versions(monkeypatch):
    key = init_frame_cache_key()
    assert key.startswith(f"settle{NUM_STEPS_WAIT}-seed0-")
    assert init_frame_cache_key(settle_steps=5) != key and init_frame_cache_key(seed=1) != key
    path = init_frame_path("libero_object", 2, RES, 7)
    assert path.parts[-6:] == ("init_frames", "libero_object", "2", str(RES), key, "7.npz")


def test_changing_the_stack_version_misses_the_cache(monkeypatch):
    env = FakeLibero()
    render_init_frames("libero_object", 0, RES, [1], libero_env=env)
    old_path = init_frame_path("libero_object", 0, RES, 1)
    real = libero_setup.stack_versions()
    monkeypatch.setattr(libero_setup, "stack_versions", lambda: {**real, "mujoco": "9.9.9"})
    render_stack_versions.cache_clear()
    new_path = init_frame_path("libero_object", 0, RES, 1)
    assert new_path != old_path and not new_path.exists() and old_path.exists()
    render_init_frames("libero_object", 0, RES, [1], libero_env=env)
    assert env.resets == [(0, 1), (0, 1)]  # rendered again for the new stack
    assert new_path.exists()
    # a package that does not change rendering (numpy) keeps the key
    monkeypatch.setattr(libero_setup, "stack_versions", lambda: {**real, "numpy": "0.0.1"})
    render_stack_versions.cache_clear()
    assert init_frame_path("libero_object", 0, RES, 1) == old_path


@pytest.mark.parametrize("damage", ["truncate", "wrong_dtype", "wrong_shape", "missing_key"])
def test_damaged_entry_is_reported_and_healed(damage):
    env = FakeLibero()
    render_init_frames("libero_object", 0, RES, [2], libero_env=env)
    path = init_frame_path("libero_object", 0, RES, 2)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        arrays = _expected(2)
        if damage == "wrong_dtype":
            arrays["image"] = arrays["image"].astype(np.float32)
        elif damage == "wrong_shape":
            arrays["wrist_image"] = arrays["wrist_image"][:8]
        else:
            del arrays["state"]
        np.savez(path, **arrays)
    with pytest.warns(RuntimeWarning, match=re.escape(str(path)) + ".*damaged"):
        frame = render_init_frames("libero_object", 0, RES, [2], libero_env=env)[0]
    assert env.resets == [(0, 2), (0, 2)]  # rendered again
    _assert_frame(frame, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # healed: read back without complaint or render
        _assert_frame(render_init_frames("libero_object", 0, RES, [2], libero_env=env)[0], 2)
    assert len(env.resets) == 2


def test_libero_env_with_other_settle_steps_is_refused():
    env = FakeLibero()
    env.num_steps_wait = 3
    with pytest.raises(ValueError, match="settle"):
        render_init_frames("libero_object", 0, RES, [0], libero_env=env)
