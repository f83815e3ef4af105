"""The demo's labelled side-by-side video: upscaled (nearest neighbour), labels and outcomes drawn on it."""

from __future__ import annotations

import numpy as np
import pytest

from wvla_gym.evaluation.video import (
    draw_labels,
    labelled_side_by_side,
    read_video,
    upscale_nearest,
    write_video,
)


def _clip(n: int, value: int, res: int = 64) -> list[np.ndarray]:
    return [np.full((res, res, 3), value, np.uint8) for _ in range(n)]


def test_upscale_nearest_integer_factor():
    f = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    up = upscale_nearest(f, 5)  # factor 3: 6 >= 5 rows
    assert up.shape == (6, 9, 3)
    np.testing.assert_array_equal(up[::3, ::3], f)
    np.testing.assert_array_equal(up[2, 8], f[0, 2])
    assert upscale_nearest(f, 1) is f


def test_labels_change_pixels_only_where_drawn():
    plain = np.full((256, 256, 3), 128, np.uint8)
    out = draw_labels(plain, top="real LIBERO", bottom="success in 127 steps")
    assert out.shape == plain.shape and plain.max() == 128  # the input is untouched
    diff = np.abs(out.astype(int) - plain).sum(-1) > 0
    assert diff[:40].any() and diff[-40:].any()  # text at the top and at the bottom
    assert not diff[100:150].any()  # the middle of the scene is left alone


def test_written_mp4_is_tall_and_labelled(tmp_path):
    real, imagined = _clip(5, 120, 64), _clip(3, 120, 64)
    frames = labelled_side_by_side(
        [("real LIBERO", real, "success in 4 steps"), ("imagined (world model)", imagined, "no success (2 steps)")],
        min_height=256, hold_frames=4,
    )
    assert len(frames) == 5 + 4
    path = write_video(tmp_path / "demo.mp4", frames, fps=20)
    video = read_video(path)
    assert len(video) == 9
    h, w = video[0].shape[:2]
    assert h >= 256 and w >= 2 * 256
    unlabelled = upscale_nearest(real[0], 256)
    # the label boxes (top-left of each half) and the step counter / outcome (bottom-left) are visible after
    # H.264 compression, against the same but unlabelled frame
    for part in (video[0][:30, :120], video[0][:30, 260:380], video[-1][-30:, :120], video[-1][-30:, 260:380]):
        assert np.abs(part.astype(int) - unlabelled[:30, :120].astype(int)).mean() > 20
    # the scene itself is not covered
    assert np.abs(video[0][100:150, 100:150].astype(int) - unlabelled[100:150, 100:150]).mean() < 8


def test_outcome_appears_only_once_an_episode_ended():
    clips = [("a", _clip(4, 90), "success in 3 steps"), ("b", _clip(2, 90), "no success (1 steps)")]
    frames = labelled_side_by_side(clips, min_height=256)
    counter = labelled_side_by_side([("a", _clip(4, 90)[:1] * 4, "success in 3 steps")], min_height=256)
    # while clip a runs its bottom strip reads "step i" (differs between steps); its last frame shows the outcome
    assert not np.array_equal(frames[1][-30:, :256], frames[2][-30:, :256])
    assert not np.array_equal(frames[2][-30:, :256], frames[3][-30:, :256])
    assert np.array_equal(frames[3][-30:, :256], counter[3][-30:, :256])


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        labelled_side_by_side([])
    with pytest.raises(ValueError, match="shape"):
        labelled_side_by_side([("a", [np.zeros((4, 4))], "x")])
