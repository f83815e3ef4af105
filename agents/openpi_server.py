"""Serve a policy over openpi's websocket policy protocol, so any openpi client (openpi's own LIBERO example,
``wvla-gym eval --policy openpi:HOST:PORT``) can drive it from another process or virtualenv.

The wire format is openpi's (``openpi_client`` 0.1.x, ``websocket_policy_server.py``):

* right after the websocket handshake the server sends ONE binary frame: ``msgpack_numpy.packb(metadata)``;
* then lock-step: the client sends ``packb(observation dict)``, the server answers ``packb(reply)`` with
  ``reply["actions"]`` a float32 ``(K, 7)`` array plus ``reply["server_timing"] = {"infer_ms", "prev_total_ms"}``
  (``prev_total_ms``, the previous round trip, is absent on a connection's first call);
* ``GET /healthz`` answers ``200 OK`` (for readiness probes; the model is warmed before the socket listens);
* errors are TEXT frames (openpi's client raises ``RuntimeError("Error in inference server: ...")``):

  - bad input (:class:`RequestError`: a missing key, a wrong shape or dtype) gets one text frame
    ``"RequestError: observation['observation/image'] must be ...; got ..."`` naming the key and the expected
    form; the connection stays open and its episode state is unchanged, so the client may send again;
  - any other exception gets its traceback as a text frame and the connection is closed with 1011
    (openpi's behaviour). Other connections are never affected.

One *session* per connection (:class:`WorldVLASession` for WorldVLA, :class:`PolicySession` around any
:class:`wvla_gym.policy.Policy`), all on one shared model. Model calls run in worker threads, so the event loop
keeps answering pings and other connections while a chunk is decoded; one lock serialises them per model.

Observation keys (both spellings are accepted; openpi's LIBERO client sends the first):

=========================================== ==========================================================
``observation/image`` or ``image``          uint8 ``(H, H, 3)`` (or ``(3, H, H)``) agent view, rotated 180°
                                            as LIBERO's raw frame ``[::-1, ::-1]`` (openpi's LIBERO client
                                            and ``WorldVLA-LIBERO-v0`` both do this); any size, resized
                                            to the model's resolution with :func:`wvla_gym.utils.images.resize_uint8`
``observation/wrist_image``/``wrist_image`` optional, same form (WorldVLA ignores it)
``observation/state`` or ``state``          optional, 8 numbers (eef pos, axis-angle, gripper qpos; unused by WorldVLA)
``prompt`` or ``instruction``               the task instruction (str), on every call
``reset``                                   optional bool: ``True`` starts a new episode
``replan_steps``                            optional int: actions of each reply the client executes before its
                                            next call (default: the server's ``replan_steps``)
=========================================== ==========================================================

This module imports only numpy, websockets and ``openpi_client`` at import time (WorldVLA parts load on use),
so it can serve a policy from a virtualenv that has no torch.
"""

from __future__ import annotations

import asyncio
import http
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from wvla_gym.protocol import ACTION_DIM, STATE_DIM

if TYPE_CHECKING:
    from wvla_gym.runtime import WorldVLARuntime

try:
    import websockets
    import websockets.asyncio.server as ws_server
    from openpi_client import msgpack_numpy
except ImportError as e:  # an optional extra: say which one
    raise ImportError(
        f"the openpi protocol needs the 'openpi' extra ({e}); install it with "
        "pip install 'wvla-gym[openpi]' (openpi-client==0.1.2, typing-extensions)"
    ) from e

__all__ = [
    "IMAGE_KEYS",
    "OpenpiPolicyServer",
    "PolicySession",
    "RequestError",
    "Session",
    "WorldVLASession",
    "parse_observation",
    "serve_worldvla",
]

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("observation/image", "image")
WRIST_KEYS = ("observation/wrist_image", "wrist_image")
STATE_KEYS = ("observation/state", "state")
PROMPT_KEYS = ("prompt", "instruction")

#: How a new episode is recognised (also sent in the metadata).
RESET_RULE = ("a new episode starts on a connection's first call, when 'prompt' changes, or when the "
              "observation carries 'reset': true (openpi's LIBERO client never sends it, so consecutive "
              "episodes of one task continue one state there)")


class RequestError(ValueError):
    """An observation the server cannot use; its message names the key and the expected form."""


class Session(Protocol):
    """One connection's policy state: ``infer(observation) -> {"actions": (K, 7), ...}`` (a mutable dict)."""

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------- input checks
def _first_key(obs: Mapping[str, Any], keys: tuple[str, ...], *, required: bool, form: str) -> str | None:
    found = [k for k in keys if k in obs]
    if len(found) > 1:
        raise RequestError(f"observation has both {found[0]!r} and {found[1]!r}; expected one of them ({form})")
    if not found:
        if required:
            raise RequestError(f"observation lacks {' or '.join(map(repr, keys))}; expected {form}; "
                               f"got keys {sorted(map(str, obs))}")
        return None
    return found[0]


def _image(obs: Mapping[str, Any], key: str) -> np.ndarray:
    """A uint8 ``(H, H, 3)`` frame from HWC or CHW (openpi's LIBERO policy accepts both)."""
    form = "uint8 (H, H, 3) or (3, H, H), rotated 180° like LIBERO's raw frame [::-1, ::-1]"
    val = obs[key]
    if not isinstance(val, np.ndarray):
        raise RequestError(f"observation[{key!r}] must be {form}; got a {type(val).__name__}")
    img = val
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3 or img.shape[0] != img.shape[1] or img.shape[0] < 1:
        raise RequestError(f"observation[{key!r}] must be {form}; got {val.dtype} {val.shape}")
    # Decoded arrays are read-only views of the frame buffer: keep a private, writable copy.
    return np.ascontiguousarray(img).copy()


def parse_observation(obs: Any, *, resolution: int | None = None) -> dict[str, Any]:
    """An openpi-style observation -> our keys (``image``, ``wrist_image``, ``state``, ``instruction``, ``reset``,
    ``replan_steps``); raises :class:`RequestError` naming the bad key. ``resolution`` resizes the images."""
    if not isinstance(obs, Mapping):
        raise RequestError(f"the request must be a map of observation keys; got a {type(obs).__name__}")
    out: dict[str, Any] = {}
    key = _first_key(obs, IMAGE_KEYS, required=True, form="the agent-view image, uint8 (H, H, 3)")
    out["image"] = _image(obs, key)
    key = _first_key(obs, WRIST_KEYS, required=False, form="the wrist image, uint8 (H, H, 3)")
    if key is not None:
        out["wrist_image"] = _image(obs, key)
    if resolution is not None:
        from wvla_gym.utils.images import resize_uint8

        for k in ("image", "wrist_image"):
            if k in out:
                out[k] = resize_uint8(out[k], resolution)
    key = _first_key(obs, STATE_KEYS, required=False, form=f"{STATE_DIM} numbers")
    if key is not None:
        try:
            state = np.asarray(obs[key], dtype=np.float32)
        except (TypeError, ValueError):
            state = None
        if state is None or state.shape != (STATE_DIM,) or not np.isfinite(state).all():
            got = type(obs[key]).__name__ if state is None else f"shape {state.shape}"
            raise RequestError(f"observation[{key!r}] must be {STATE_DIM} finite numbers (eef pos, axis-angle, "
                               f"gripper qpos); got {got}")
        out["state"] = state
    key = _first_key(obs, PROMPT_KEYS, required=True, form="the task instruction, a str")
    text = obs[key]
    if not isinstance(text, str) or not text.strip():
        raise RequestError(f"observation[{key!r}] must be a non-empty str (the task instruction); got {text!r:.80}")
    out["instruction"] = text
    if "reset" in obs:
        flag = obs["reset"]
        if not isinstance(flag, (bool, np.bool_)):
            raise RequestError(f"observation['reset'] must be a bool (true starts a new episode); got {flag!r:.80}")
        out["reset"] = bool(flag)
    if "replan_steps" in obs:
        r = obs["replan_steps"]
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)) or r < 1:
            raise RequestError(f"observation['replan_steps'] must be an int >= 1 (actions executed per call); "
                               f"got {r!r:.80}")
        out["replan_steps"] = int(r)
    return out


# ---------------------------------------------------------------------------------------------- sessions
class WorldVLASession:
    """One connection's :class:`agents.worldvla.WorldVLAAgent` on a shared runtime.

    Every observation received goes into the agent's frame history (one ``agent.act`` per call), and the reply
    is the action that call returns followed by the actions still queued (``(n, 7)``, ``n`` = what is left of
    the current chunk). A client that calls every step and executes the first action (``replan_steps`` 1) thus
    gets exactly the in-process agent's actions. A client that executes ``r`` actions per call
    (``replan_steps`` r, 5 for openpi's LIBERO client) has the ``r - 1`` actions it executed beyond the first
    dropped from the queue at its next call; a remainder shorter than ``r`` is dropped too (a fresh chunk is
    decoded) so every reply holds at least ``r`` actions, as openpi's LIBERO client asserts.
    """

    def __init__(self, runtime: WorldVLARuntime, *, lock: threading.Lock, replan_steps: int = 1,
                 **agent_kwargs: Any) -> None:
        from agents.worldvla import WorldVLAAgent

        self.agent = WorldVLAAgent(runtime, **agent_kwargs)
        self.lock = lock
        self.replan_steps = int(replan_steps)
        self.instruction: str | None = None
        self._episode_calls = 0
        self._last_replan = 1

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        req = parse_observation(obs, resolution=self.agent.resolution)
        r = req.get("replan_steps", self.replan_steps)
        if r > self.agent.n_action_steps:
            raise RequestError(f"observation['replan_steps']={r} exceeds the model's chunk of "
                               f"{self.agent.n_action_steps} actions; expected an int in [1, {self.agent.n_action_steps}]")
        new_episode = self._episode_calls == 0 or req.get("reset", False) or req["instruction"] != self.instruction
        if new_episode:
            try:
                self.agent.reset(instruction=req["instruction"])
            except ValueError as e:  # e.g. an over-long instruction: the client's input, not a server fault
                raise RequestError(f"observation['prompt']: {e}") from e
            self._episode_calls = 0
        else:
            # The agent's own queue (same package): drop what the client executed beyond the first action of
            # the last reply, and a remainder too short for this call's replan_steps.
            queue = self.agent._slots[0].queue
            for _ in range(min(self._last_replan - 1, len(queue))):
                queue.popleft()
            if len(queue) < r:
                queue.clear()
        t0 = time.perf_counter()
        with self.lock:  # one model call at a time per runtime
            first = self.agent.act({"image": req["image"]})
        model_ms = 1000 * (time.perf_counter() - t0)
        rest = list(self.agent._slots[0].queue)
        self.instruction = req["instruction"]
        self._episode_calls += 1
        self._last_replan = r
        actions = np.stack([first, *rest]).astype(np.float32)
        return {"actions": actions, "policy_timing": {"infer_ms": model_ms}}


class PolicySession:
    """One connection's policy (any :class:`wvla_gym.policy.Policy`, from ``policy_factory()``).

    The observation is passed on in our keys (``image``, ``wrist_image``, ``state``, ``instruction``; images at
    the size they arrived unless ``resolution``); the reply is ``policy.act_chunk(obs)`` for a chunked policy,
    else the one action of ``policy.act(obs)`` (``(1, 7)``). A new episode (as :data:`RESET_RULE`) calls
    ``policy.reset(seed=None)``; a policy that needs the instruction reads ``obs["instruction"]``.
    """

    def __init__(self, policy_factory: Callable[[], Any], *, lock: threading.Lock | None = None,
                 resolution: int | None = None) -> None:
        self.policy = policy_factory()
        self.lock = lock or threading.Lock()
        self.resolution = resolution
        self.instruction: str | None = None
        self._calls = 0

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        req = parse_observation(obs, resolution=self.resolution)
        if self._calls == 0 or req.get("reset", False) or req["instruction"] != self.instruction:
            self.policy.reset(seed=None)
        self.instruction = req["instruction"]
        self._calls += 1
        ours = {k: req[k] for k in ("image", "wrist_image", "state", "instruction") if k in req}
        with self.lock:
            if callable(getattr(self.policy, "act_chunk", None)):
                actions = np.asarray(self.policy.act_chunk(ours), dtype=np.float32)
            else:
                actions = np.asarray(self.policy.act(ours), dtype=np.float32)[None]
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
            raise RuntimeError(f"the policy returned actions of shape {actions.shape}; expected (K, {ACTION_DIM})")
        return {"actions": actions}


# ---------------------------------------------------------------------------------------------- the server
class OpenpiPolicyServer:
    """openpi's websocket policy server, one :class:`Session` per connection (see the module docstring).

    ``serve_forever()`` blocks (Ctrl-C stops it); ``start()`` serves from a background thread and returns the
    bound port (``port=0`` picks a free one), ``stop()`` ends it. ``warm_up`` runs once before the socket
    listens, so a slow first model call cannot time out a client's handshake.
    """

    def __init__(self, session_factory: Callable[[], Session], *, metadata: Mapping[str, Any] | None = None,
                 host: str = "127.0.0.1", port: int = 8000, warm_up: Callable[[], Any] | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port={port!r}; expected an int in [0, 65535] (0 picks a free port)")
        self.session_factory = session_factory
        self.metadata = dict(metadata or {})
        msgpack_numpy.packb(self.metadata)  # fail now, not at the first handshake, if it cannot be sent
        self.host, self.port = host, port
        self.warm_up = warm_up
        self._warm = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ---------------------------------------------------------------- running
    def _warm_once(self) -> None:
        if self.warm_up is not None and not self._warm:
            t0 = time.perf_counter()
            self.warm_up()
            logger.info("warmed up in %.1f s", time.perf_counter() - t0)
        self._warm = True

    async def _run(self) -> None:
        try:
            # compression off and no size cap: frames are ~300 KB of images (as openpi's server).
            async with ws_server.serve(self._handler, self.host, self.port, compression=None, max_size=None,
                                       process_request=_health_check) as server:
                self._server, self._loop = server, asyncio.get_running_loop()
                self.port = int(server.sockets[0].getsockname()[1])
                logger.info("serving the openpi policy protocol on ws://%s:%d", self.host, self.port)
                self._ready.set()
                await server.serve_forever()
        except BaseException as exc:
            self._startup_error = exc
            raise
        finally:
            self._ready.set()

    def serve_forever(self) -> None:
        """Warm up, listen and serve until interrupted."""
        self._warm_once()
        try:
            asyncio.run(self._run())
        except (KeyboardInterrupt, asyncio.CancelledError):
            logger.info("server stopped")

    def start(self, timeout: float = 60.0) -> int:
        """Warm up, then serve from a daemon thread; returns the bound port once it listens."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        self._warm_once()
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._thread_main, name="openpi-policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not listen within {timeout} s")
        if self._startup_error is not None or self._server is None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"the server failed to start on {self.host}:{self.port}: {self._startup_error!r}")
        return self.port

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException:  # reported to start() through _startup_error; nothing else waits on this thread
            logger.debug("server thread ended", exc_info=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection (1001) and stop listening; returns when the server thread has ended."""
        if self._loop is not None and self._server is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._server.close)
            except RuntimeError:  # the loop has already shut down
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread, self._server, self._loop = None, None, None

    def __enter__(self) -> OpenpiPolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- one connection
    async def _handler(self, ws: Any) -> None:
        peer = ws.remote_address
        try:
            session = await asyncio.to_thread(self.session_factory)
        except Exception:
            logger.exception("could not open a session for %s", peer)
            await ws.close(code=1011, reason="could not open a policy session")
            return
        logger.info("connection from %s opened", peer)
        await ws.send(msgpack_numpy.packb(self.metadata))
        prev_total_ms: float | None = None
        while True:
            try:
                frame = await ws.recv()
            except websockets.ConnectionClosed:
                break
            t0 = time.monotonic()
            try:
                if isinstance(frame, str):
                    raise RequestError("the request is a text frame; expected a binary msgpack-numpy map "
                                       "(openpi_client.msgpack_numpy.packb(observation))")
                try:
                    obs = msgpack_numpy.unpackb(frame)
                except Exception as e:
                    raise RequestError(f"the request is not msgpack-numpy ({type(e).__name__}: {e}); expected "
                                       "openpi_client.msgpack_numpy.packb(observation)") from e
                t_infer = time.monotonic()
                reply = await asyncio.to_thread(session.infer, obs)
                reply = dict(reply)
                reply["server_timing"] = {"infer_ms": 1000 * (time.monotonic() - t_infer)}
                if prev_total_ms is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total_ms
                payload = msgpack_numpy.packb(reply)
            except RequestError as e:
                logger.info("bad request from %s: %s", peer, e)
                try:
                    await ws.send(f"RequestError: {e}")
                except websockets.ConnectionClosed:
                    break
                continue
            except Exception:
                logger.exception("inference failed for %s; closing its connection", peer)
                try:
                    await ws.send(traceback.format_exc())
                    await ws.close(code=1011, reason="Internal server error. Traceback included in previous frame.")
                except websockets.ConnectionClosed:
                    pass
                break
            try:
                await ws.send(payload)
            except websockets.ConnectionClosed:
                break
            prev_total_ms = 1000 * (time.monotonic() - t0)
        logger.info("connection from %s closed", peer)


def _health_check(connection: Any, request: Any) -> Any:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None  # the websocket handshake goes on


# ---------------------------------------------------------------------------------------------- WorldVLA
def worldvla_metadata(runtime: WorldVLARuntime, *, replan_steps: int, **agent_kwargs: Any) -> dict[str, Any]:
    """What a client learns at the handshake: the policy's knobs (with the checkpoint's content hash) and the
    observation/reset conventions. Clients record it in their run identity."""
    from pathlib import Path

    from agents.worldvla import WorldVLAAgent
    from wvla_gym.utils.run_identity import path_digest

    knobs = WorldVLAAgent(runtime, **agent_kwargs).knobs()
    ckpt = knobs.get("checkpoint_dir")
    return {
        "server": "wvla-gym",
        "policy": "worldvla",
        "knobs": knobs,
        "checkpoint_digest": path_digest(ckpt) if ckpt and Path(ckpt).exists() else None,
        "action_dim": ACTION_DIM,
        "action_chunk": int(knobs["K"]),
        "resolution": int(knobs["resolution"]),
        "replan_steps": int(replan_steps),
        "image_keys": list(IMAGE_KEYS),
        "prompt_keys": list(PROMPT_KEYS),
        "reset": RESET_RULE,
    }


def serve_worldvla(checkpoint: str | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                   replan_steps: int = 5, policy_kwargs: Mapping[str, Any] | None = None) -> OpenpiPolicyServer:
    """A (not yet started) server of ``checkpoint`` (``None``: the embedded default), warmed up on start.

    ``replan_steps`` is what the server assumes when a client does not send it (5: openpi's LIBERO client).
    ``policy_kwargs`` are ``--policy worldvla``'s (runtime options such as ``device``, agent options such as
    ``n_action_steps`` and ``decode``)."""
    from agents.registry import WorldVLAFactory

    factory = WorldVLAFactory(checkpoint, **dict(policy_kwargs or {}))
    runtime = factory.runtime()
    agent_kwargs = factory.agent_kwargs
    k = int(agent_kwargs.get("n_action_steps") or runtime.action_chunk)
    if isinstance(replan_steps, bool) or not isinstance(replan_steps, int) or not 1 <= replan_steps <= k:
        raise ValueError(f"replan_steps={replan_steps!r}; expected an int in [1, {k}] (the model's chunk)")
    lock = threading.Lock()

    def session() -> WorldVLASession:
        return WorldVLASession(runtime, lock=lock, replan_steps=replan_steps, **agent_kwargs)

    def warm_up() -> None:
        r = int(runtime.resolution)
        s = session()
        s.infer({"image": np.zeros((r, r, 3), np.uint8), "prompt": "warm up", "replan_steps": 1})

    meta = worldvla_metadata(runtime, replan_steps=replan_steps, **agent_kwargs)
    return OpenpiPolicyServer(session, metadata=meta, host=host, port=port, warm_up=warm_up)
