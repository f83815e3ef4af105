"""Per-episode mp4s (imageio + ffmpeg) and side-by-side real | imagined videos for ``--env both``."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_name(text: str) -> str:
    """A file-system-safe version of a policy name such as ``sb3:/ckpt/model.zip``."""
    return _UNSAFE.sub("_", text).strip("_") or "policy"


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(frames) == 0:
        raise ValueError("frames is empty; expected at least one (H, W, 3) uint8 frame")
    out = []
    for i, f in enumerate(frames):
        a = np.asarray(f)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"frames[{i}] has shape {a.shape}; expected (H, W, 3)")
        out.append(a.astype(np.uint8, copy=False))
    return out


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 30) -> Path:
    """Write frames (H, W, 3 uint8) as an H.264 mp4 (30 fps like the reference eval)."""
    import imageio.v2 as imageio

    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps={fps!r}; expected an int >= 1")
    frames = _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    # macro_block_size=1 keeps the exact resolution (ffmpeg would otherwise rescale to multiples of 16).
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8) as w:
        for f in frames:
            w.append_data(f)
    os.replace(tmp, path)  # a kill mid-write leaves only a .tmp, never a truncated final file
    return path


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    import imageio.v2 as imageio

    with imageio.get_reader(Path(path)) as r:
        return [np.asarray(f) for f in r]


def side_by_side(left: Sequence[np.ndarray], right: Sequence[np.ndarray], gap: int = 2) -> list[np.ndarray]:
    """Concatenate two clips horizontally; the shorter one holds its last frame (episodes differ in length)."""
    left, right = _check_frames(left), _check_frames(right)
    h = max(left[0].shape[0], right[0].shape[0])

    def pad(f: np.ndarray) -> np.ndarray:
        if f.shape[0] == h:
            return f
        return np.pad(f, ((0, h - f.shape[0]), (0, 0), (0, 0)))

    sep = np.full((h, gap, 3), 255, np.uint8)
    n = max(len(left), len(right))
    return [
        np.concatenate([pad(left[min(i, len(left) - 1)]), sep, pad(right[min(i, len(right) - 1)])], axis=1)
        for i in range(n)
    ]


class VideoSink:
    """Names and writes the videos of one evaluation under ``<out>/videos/<policy>/<kind>/``."""

    def __init__(self, out: str | os.PathLike, config: Any) -> None:
        self.root = Path(out)
        self.fps = int(config.video_fps)
        self.both = config.env == "both"

    def relpath(self, rec: dict[str, Any], kind: str | None = None) -> Path:
        kind = kind or rec["env"]
        name = f"{rec['suite']}_task{int(rec['task_id']):02d}_init{int(rec['init_state_id']):02d}_seed{rec['seed']}.mp4"
        return Path("videos") / safe_name(str(rec["policy"])) / kind / name

    def write(self, rec: dict[str, Any], frames: Sequence[np.ndarray]) -> str:
        rel = self.relpath(rec)
        write_video(self.root / rel, frames, self.fps)
        if self.both:
            other = "imagined" if rec["env"] == "real" else "real"
            partner = self.root / self.relpath(rec, other)
            if partner.exists():
                mine = [np.asarray(f) for f in frames]
                theirs = read_video(partner)
                real, imag = (mine, theirs) if rec["env"] == "real" else (theirs, mine)
                both_rel = self.relpath(rec, "both")
                write_video(self.root / both_rel, side_by_side(real, imag), self.fps)
                rec["video_both"] = str(both_rel)
        return str(rel)


# ---------------------------------------------------------------------- labelled, upscaled side-by-side clips
def upscale_nearest(frame: np.ndarray, min_height: int = 256) -> np.ndarray:
    """Enlarge by the smallest integer factor that makes the frame at least ``min_height`` tall (nearest
    neighbour: every model pixel stays a sharp square, no interpolated detail)."""
    f = np.asarray(frame)
    scale = max(1, -(-int(min_height) // f.shape[0]))
    return f if scale == 1 else np.repeat(np.repeat(f, scale, axis=0), scale, axis=1)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable default font
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def draw_labels(frame: np.ndarray, top: str | None = None, bottom: str | None = None) -> np.ndarray:
    """A copy of ``frame`` with ``top`` written at its top-left and ``bottom`` at its bottom-left, each in
    white on a dark box (PIL's default font, sized to the frame)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    h = img.height
    font = _font(max(10, h // 16))
    pad = max(2, h // 100)
    for text, at_top in ((top, True), (bottom, False)):
        if not text:
            continue
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        y = pad if at_top else h - pad - (y1 - y0) - 2 * pad
        draw.rectangle((0, y, x1 - x0 + 3 * pad, y + (y1 - y0) + 2 * pad), fill=(0, 0, 0))
        draw.text((pad - x0 + pad // 2, y + pad - y0), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def labelled_side_by_side(
    clips: Sequence[tuple[str, Sequence[np.ndarray], str]],
    min_height: int = 256,
    hold_frames: int = 0,
    gap: int = 4,
) -> list[np.ndarray]:
    """Clips next to each other, each upscaled (nearest neighbour) to at least ``min_height`` pixels, with its
    label over it and, at the bottom, the step counter while it runs and its outcome once it has ended.

    ``clips``: ``(label, frames, outcome)`` triples, e.g. ``("real LIBERO", frames, "success in 127 steps")``;
    frame 0 is the reset observation, so a clip of n + 1 frames ran n steps. A shorter clip holds its last
    frame; ``hold_frames`` extra copies of the final composite keep the outcomes on screen at the end.
    """
    if not clips:
        raise ValueError("clips is empty; expected (label, frames, outcome) triples")
    checked = [(label, _check_frames(frames), outcome) for label, frames, outcome in clips]
    n = max(len(frames) for _, frames, _ in checked)
    out = []
    for t in range(n):
        panels = []
        for label, frames, outcome in checked:
            i = min(t, len(frames) - 1)
            ended = i == len(frames) - 1
            panels.append(draw_labels(upscale_nearest(frames[i], min_height), top=label,
                                      bottom=outcome if ended else f"step {i}"))
        out.append(_hconcat(panels, gap))
    out.extend([out[-1]] * int(hold_frames))
    return out


def _hconcat(panels: list[np.ndarray], gap: int) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0))) if p.shape[0] < h else p for p in panels]
    sep = np.full((h, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, p in enumerate(padded):
        parts.extend([sep, p] if i else [p])
    return np.concatenate(parts, axis=1)
