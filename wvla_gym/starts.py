"""The one parser of start requests: the ``options`` of ``reset`` for every env of the package.

Each env accepts its own subset of the option keys (an env refuses keys it cannot honour rather than ignoring
them):

=================  =======================================================================  ==========  ========
key                value                                                                    real env    imagined
=================  =======================================================================  ==========  ========
``init_state_id``  int in ``[0, n_init - 1]``: one of the benchmark's fixed init states       yes         yes
``placement``      ``"fixed"`` (default) or ``"sampled"`` (a fresh placement by LIBERO)       yes         yes
``perturb_radius`` float in ``[0, MAX_PERTURB_RADIUS]`` metres: seeded object shifts          yes         yes
``sim_state``      finite 1-D float array: a flattened MuJoCo state                           yes         yes
``image``          uint8 ``(R, R, 3)`` start frame                                            no          yes
``wrist_image``    uint8 ``(R, R, 3)`` wrist frame (only with ``image``)                      no          yes
``state``          finite float ``(8,)`` proprioceptive state (only with ``image``)           no          yes
``frame_id``       int in ``[0, n_frames - 1]``: a row of the env's start-frame dataset       no          yes
=================  =======================================================================  ==========  ========

One start source at most: ``init_state_id``, ``placement="sampled"`` or ``sim_state`` (``perturb_radius``
goes with any of them), or ``image`` or ``frame_id``, which cannot be combined with the real env's starts.

:func:`parse_start` checks, in this order, that ``options`` is ``None`` or a mapping with ``str`` keys, that
every key is one the env accepts, every value's form (the error names the key, the value and the expected
form), then how the keys combine; it returns a :class:`StartRequest`. Envs keep their own policy for a
request without a source (cycling init states, drawing a dataset row).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wvla_gym.protocol import MAX_PERTURB_RADIUS, NUM_INIT_STATES, STATE_DIM
from wvla_gym.utils.validation import (
    check_choice,
    check_float,
    check_int,
    check_mapping,
    describe,
    fail,
)

__all__ = [
    "IMAGINED_START_KEYS",
    "LIBERO_START_KEYS",
    "PLACEMENT_MODES",
    "REAL_START_KEYS",
    "StartRequest",
    "check_options",
    "check_perturb_radius",
    "parse_start",
]

PLACEMENT_MODES = ("fixed", "sampled")
#: The options of ``LiberoEnv.reset``.
REAL_START_KEYS = ("init_state_id", "placement", "perturb_radius", "sim_state")
#: The options of ``ImaginedEnv.reset``: the real env's starts (rendered in LIBERO) and frames given directly.
IMAGINED_START_KEYS = (
    "init_state_id",
    "image",
    "wrist_image",
    "state",
    "frame_id",
    "placement",
    "perturb_radius",
    "sim_state",
)
#: Starts the real env makes beyond a plain fixed init state.
LIBERO_START_KEYS = ("placement", "perturb_radius", "sim_state")
_FRAME_KEYS = ("image", "frame_id")
_OPTIONS_EXAMPLE = "{'init_state_id': 3}"


@dataclass
class StartRequest:
    """A validated ``reset(options=...)``: where an episode starts.

    ``source`` is ``"init_state"`` (``init_state_id`` given, or ``None``: no source given, the env chooses),
    ``"sampled"``, ``"sim_state"``, ``"image"`` or ``"dataset"`` (``frame_id``). ``options`` is the options
    dict as given (the values unconverted, e.g. for cache keys that must not change).
    """

    source: str
    init_state_id: int | None = None
    sim_state: np.ndarray | None = None
    perturb_radius: float = 0.0
    placement: str = "fixed"
    image: np.ndarray | None = None
    wrist_image: np.ndarray | None = None
    state: np.ndarray | None = None
    frame_id: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def libero_start(self) -> bool:
        """Whether the start is one only the real env can make (a placement, a perturbation or a sim_state)."""
        return any(k in self.options for k in LIBERO_START_KEYS)

    @property
    def given(self) -> bool:
        """Whether the options name a start source (else the env picks one: its init-state cycle or dataset)."""
        return self.source != "init_state" or self.init_state_id is not None


def check_options(options: Any, accepted: Collection[str], *, name: str = "options") -> dict[str, Any]:
    """``options`` as a new dict: ``None`` or a mapping with ``str`` keys, each one of ``accepted``."""
    opts = check_mapping(name, options, optional=True, example=_OPTIONS_EXAMPLE)
    unknown = [k for k in opts if k not in accepted]
    if unknown:
        raise fail(
            name,
            options,
            f"only {list(accepted)}",
            message=f"{name} has unknown keys {sorted(map(repr, unknown))}; expected only {list(accepted)}",
        )
    return opts


def check_perturb_radius(name: str, value: Any) -> float:
    """A perturbation radius in metres, ``[0, MAX_PERTURB_RADIUS]`` (shared with the evaluation's config)."""
    return check_float(name, value, lo=0, hi=MAX_PERTURB_RADIUS, hint="metres in the table plane")


def _key(name: str) -> str:
    return f"options[{name!r}]"


def _array(name: str, value: Any, expected: str, dtype: Any = None) -> np.ndarray:
    """``np.asarray`` that names the option when numpy cannot read the value (ragged lists, strings, objects)."""
    try:
        a = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise fail(
            _key(name), value, expected, message=f"{_key(name)}={describe(value)}; expected {expected}"
        ) from e
    return a


def _check_frame(name: str, value: Any, resolution: int | None) -> np.ndarray:
    shape = f"({resolution}, {resolution}, 3)" if resolution is not None else "(R, R, 3)"
    expected = f"a uint8 array of shape {shape} (HWC, rotated 180° like the real env's obs)"
    a = _array(name, value, expected)
    ok_shape = (
        a.ndim == 3 and a.shape[2] == 3 and (resolution is None or a.shape[:2] == (resolution, resolution))
    )
    if a.dtype != np.uint8 or not ok_shape:
        raise fail(
            _key(name),
            value,
            expected,
            message=f"{_key(name)} must be {expected}; got dtype {a.dtype} and shape {a.shape}",
        )
    return np.ascontiguousarray(a)


def _check_real_vector(name: str, value: Any, length: int | None, what: str, dtype: Any) -> np.ndarray:
    want = f"({length},)" if length is not None else "(n,)"
    expected = f"a finite 1-D float array of shape {want} ({what})"
    a = _array(name, value, expected)
    # Strings, objects, complex numbers and bools would be converted silently (or fail deep in numpy).
    if a.dtype.kind not in "iuf":
        raise fail(
            _key(name), value, expected, message=f"{_key(name)} has dtype {a.dtype}; expected {expected}"
        )
    with np.errstate(over="ignore"):  # a value too large for float32 becomes inf and is refused below
        a = a.astype(dtype)
    if a.ndim != 1 or (length is not None and len(a) != length) or not np.all(np.isfinite(a)):
        raise fail(
            _key(name),
            value,
            expected,
            message=f"{_key(name)} has shape {a.shape}; expected {expected}"
            + ("" if a.ndim != 1 or np.all(np.isfinite(a)) else " (it has NaN or inf)"),
        )
    return a


def parse_start(
    options: Any,
    *,
    accepted: Collection[str] = REAL_START_KEYS,
    n_init: int = NUM_INIT_STATES,
    state_dim: int | None = None,
    resolution: int | None = None,
    n_frames: int | None = None,
) -> StartRequest:
    """Validate ``reset`` ``options`` against the keys an env ``accepted``; see the module doc.

    ``n_init`` bounds ``init_state_id``, ``state_dim`` is the length of a ``sim_state`` (``None``: any),
    ``resolution`` the side of ``image``/``wrist_image`` (``None``: any square), ``n_frames`` the size of
    the env's start-frame dataset (``None``: the env has none, so ``frame_id`` is refused). Raises
    :class:`~wvla_gym.utils.validation.ArgumentError` (a ``TypeError`` and a ``ValueError``) naming the option.
    """
    opts = check_options(options, accepted)
    req = StartRequest(source="init_state", options=opts)

    # ---- each value's form
    if "init_state_id" in opts:
        req.init_state_id = check_int(_key("init_state_id"), opts["init_state_id"], lo=0, hi=n_init - 1)
    if "placement" in opts:
        req.placement = check_choice(_key("placement"), opts["placement"], PLACEMENT_MODES)
    if "perturb_radius" in opts:
        req.perturb_radius = check_perturb_radius(_key("perturb_radius"), opts["perturb_radius"])
    if "sim_state" in opts:
        what = "a flattened MuJoCo state such as info['sim_state'] or a demo's states row"
        req.sim_state = _check_real_vector("sim_state", opts["sim_state"], state_dim, what, np.float64).copy()
    for name in ("image", "wrist_image"):
        if name in opts:
            setattr(req, name, _check_frame(name, opts[name], resolution))
    if "state" in opts:
        what = "eef position, axis-angle and gripper qpos"
        req.state = _check_real_vector("state", opts["state"], STATE_DIM, what, np.float32)
    if "frame_id" in opts:
        if n_frames is None:
            raise fail(
                _key("frame_id"),
                opts["frame_id"],
                "a row of the env's start-frame dataset",
                message="options['frame_id'] needs a dataset: construct the env with init_frames=...",
            )
        req.frame_id = check_int(_key("frame_id"), opts["frame_id"], lo=0, hi=n_frames - 1)

    # ---- how the keys combine
    libero = [k for k in LIBERO_START_KEYS if k in opts]
    frames = [k for k in _FRAME_KEYS if k in opts]
    if libero and frames:
        raise fail(
            "options",
            options,
            "one start",
            message=f"options {libero} start from a real-env state; they cannot be combined with {frames}",
        )
    frame_sources = [k for k in ("init_state_id", *_FRAME_KEYS) if k in opts]
    if len(frame_sources) > 1:
        raise fail(
            "options",
            options,
            "one start",
            message=f"options give more than one start source {frame_sources}; pass one of them",
        )
    real_sources = [k for k in ("init_state_id", "sim_state") if k in opts]
    real_sources += ["placement"] if req.placement == "sampled" else []
    if len(real_sources) > 1:
        raise fail(
            "options",
            options,
            "one start",
            message=f"options {real_sources} conflict; give one start: 'init_state_id' (fixed init state), "
            "'placement': 'sampled' (fresh placement) or 'sim_state' (a flattened MuJoCo state)",
        )
    if ("wrist_image" in opts or "state" in opts) and "image" not in opts:
        raise fail(
            "options",
            options,
            "'image' with them",
            message="options 'wrist_image' / 'state' are only valid together with 'image'",
        )

    if "image" in opts:
        req.source = "image"
    elif "frame_id" in opts:
        req.source = "dataset"
    elif "sim_state" in opts:
        req.source = "sim_state"
    elif req.placement == "sampled":
        req.source = "sampled"
    return req
