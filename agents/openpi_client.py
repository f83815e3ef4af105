"""A policy that lives in another process: the client side of openpi's websocket policy protocol.

``wvla-gym eval --policy openpi:HOST:PORT`` makes one :class:`OpenpiClientPolicy` (one connection) per env slot.
Each call sends the observation in openpi's LIBERO keys, so the same client drives ``wvla-gym serve`` and
openpi's own LIBERO policy servers::

    {"observation/image": uint8 (H, W, 3), "observation/wrist_image": ... (when the env renders it),
     "observation/state": float32 (8,), "prompt": str, "reset": bool, "replan_steps": int}

The images are the env's frames (already rotated 180° like openpi's LIBERO client rotates them), unchanged or
resized to ``image_size``. ``reset`` is true on an episode's first call (``wvla-gym serve`` then starts a new
agent state; openpi's servers ignore the key). The reply's ``actions`` ``(K, 7)`` are queued and the first
``replan_steps`` of them executed before the next call, as openpi's LIBERO client does (its default: 5).

With ``replan_steps=1`` against ``wvla-gym serve`` the policy sees every step's frame and executes the server
agent's own chunk queue, so its actions equal ``--policy worldvla`` in-process on the same checkpoint.

A text frame from the server (its error message) raises :class:`OpenpiServerError`; a lost connection raises
``ConnectionError``. Either ends only the current episode (an error record), and the evaluation builds a new
policy (a new connection) for the next one.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import Any

import numpy as np

from wvla_gym.protocol import ACTION_DIM

try:
    import websockets
    import websockets.sync.client as ws_client
    from openpi_client import msgpack_numpy
except ImportError as e:  # an optional extra: say which one
    raise ImportError(
        f"--policy openpi:HOST:PORT needs the 'openpi' extra ({e}); install it with "
        "pip install 'wvla-gym[openpi]' (openpi-client==0.1.2, typing-extensions)"
    ) from e

__all__ = ["OpenpiClientFactory", "OpenpiClientPolicy", "OpenpiServerError", "parse_openpi_spec"]

#: ``--policy-kwargs`` this client takes.
CLIENT_KWARGS = ("replan_steps", "image_size", "timeout_s")


class OpenpiServerError(RuntimeError):
    """The server answered with an error (a text frame); the message is the server's."""


def parse_openpi_spec(spec: str) -> tuple[str, int]:
    """``"openpi:HOST:PORT"`` -> ``(host, port)``; ``ValueError`` naming the expected form otherwise."""
    form = "openpi:HOST:PORT, e.g. openpi:127.0.0.1:8000"
    if not isinstance(spec, str) or not spec.startswith("openpi:"):
        raise ValueError(f"--policy {spec!r}; expected {form}")
    host, sep, port = spec[len("openpi:"):].rpartition(":")
    host = host.strip("[]")  # IPv6 literals may come bracketed
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--policy {spec!r}; expected {form}")
    return host, int(port)


def _connect(uri: str, open_timeout: float) -> Any:
    kwargs: dict[str, Any] = {"compression": None, "max_size": None, "open_timeout": open_timeout,
                              # No client keepalive: openpi's own server blocks its event loop while it infers,
                              # so a long model call would otherwise end in "keepalive ping timeout".
                              "ping_interval": None}
    params = inspect.signature(ws_client.connect).parameters
    if "proxy" in params:
        kwargs["proxy"] = None  # websockets >= 15 follows *_PROXY variables by default; a policy server is local
    if "legacy" in params:
        kwargs["legacy"] = True  # a connection held across calls, not a with-block (websockets >= 16 asks)
    return ws_client.connect(uri, **kwargs)


class OpenpiClientPolicy:
    """:class:`wvla_gym.policy.Policy` backed by an openpi-protocol server at ``host:port`` (one connection).

    ``replan_steps``: actions of each returned chunk executed before the next call (at most the chunk's
    length). ``image_size``: resize the images to this side before sending (``None``: as the env renders
    them). ``timeout_s``: how long one reply may take. The instruction is ``obs["instruction"]``, else the
    env's ``task_description`` (read at every call), else ``instruction``.
    """

    def __init__(self, host: str, port: int, *, env: Any = None, instruction: str | None = None,
                 replan_steps: int = 5, image_size: int | None = None, timeout_s: float = 600.0) -> None:
        if isinstance(replan_steps, bool) or not isinstance(replan_steps, int) or replan_steps < 1:
            raise ValueError(f"replan_steps={replan_steps!r}; expected an int >= 1 (actions executed per call)")
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                       or image_size < 1):
            raise ValueError(f"image_size={image_size!r}; expected None (send frames unchanged) or an int >= 1")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r}; expected a number > 0 (seconds per reply)")
        self.host, self.port = host, int(port)
        self.uri = f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"
        self.replan_steps, self.image_size, self.timeout_s = replan_steps, image_size, float(timeout_s)
        self.env = getattr(env, "unwrapped", env)
        self.instruction = instruction
        self._queue: deque[np.ndarray] = deque()
        self._new_episode = True
        self.last_reply: dict[str, Any] = {}
        try:
            self._ws = _connect(self.uri, open_timeout=min(self.timeout_s, 30.0))
            self.metadata = self._unpack(self._ws.recv(timeout=self.timeout_s), "the metadata frame")
        except (OSError, TimeoutError, websockets.WebSocketException) as e:
            raise ConnectionError(f"cannot connect to the openpi policy server at {self.uri} "
                                  f"({type(e).__name__}: {e}); is `wvla-gym serve` running there?") from e
        if not isinstance(self.metadata, dict):
            raise ConnectionError(f"{self.uri} sent metadata {self.metadata!r:.80}; expected a msgpack map")

    # ---------------------------------------------------------------- wire
    def _unpack(self, frame: Any, what: str) -> Any:
        if isinstance(frame, str):
            raise OpenpiServerError(f"the policy server at {self.uri} reported an error:\n{frame}")
        try:
            return msgpack_numpy.unpackb(frame)
        except Exception as e:
            raise ConnectionError(f"{what} from {self.uri} is not msgpack-numpy ({type(e).__name__}: {e})") from e

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        """One round trip: send ``request``, return the server's reply (a dict with ``"actions"``)."""
        if self._ws is None:
            raise ConnectionError(f"lost the connection to the policy server at {self.uri}: this policy was closed")
        try:
            self._ws.send(msgpack_numpy.packb(request))
            frame = self._ws.recv(timeout=self.timeout_s)
        except TimeoutError as e:
            raise ConnectionError(f"the policy server at {self.uri} sent no reply within {self.timeout_s} s") from e
        except websockets.WebSocketException as e:
            raise ConnectionError(f"lost the connection to the policy server at {self.uri} "
                                  f"({type(e).__name__}: {e})") from e
        reply = self._unpack(frame, "the reply")
        if not isinstance(reply, dict) or "actions" not in reply:
            got = sorted(map(str, reply)) if isinstance(reply, dict) else type(reply).__name__
            raise OpenpiServerError(f"the reply from {self.uri} has no 'actions' (got {got}); expected "
                                    f"{{'actions': (K, {ACTION_DIM}) array}}")
        return reply

    # ---------------------------------------------------------------- the policy protocol
    def reset(self, *, seed: int | None = None) -> None:
        """Start an episode: drop queued actions; the next call tells the server ``reset: true``."""
        self._queue.clear()
        self._new_episode = True

    def _instruction(self, obs: dict[str, Any]) -> str:
        text = obs.get("instruction") if isinstance(obs, dict) else None
        if text is None and self.env is not None:
            text = getattr(self.env, "task_description", None)
        text = text if text is not None else self.instruction
        if not isinstance(text, str) or not text:
            raise ValueError("no instruction for the policy server: pass obs['instruction'], an env with "
                             "task_description, or instruction=...")
        return text

    def _request(self, obs: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(obs, dict) or "image" not in obs:
            got = sorted(map(str, obs)) if isinstance(obs, dict) else type(obs).__name__
            raise ValueError(f"obs must be a dict with 'image' (uint8 HxWx3, as WorldVLA-LIBERO-v0); got {got}")

        def image(x: Any) -> np.ndarray:
            x = np.ascontiguousarray(x)
            if self.image_size is None:
                return x
            from wvla_gym.utils.images import resize_uint8

            return resize_uint8(x, self.image_size)

        req: dict[str, Any] = {"observation/image": image(obs["image"])}
        if "wrist_image" in obs:
            req["observation/wrist_image"] = image(obs["wrist_image"])
        if "state" in obs:
            req["observation/state"] = np.asarray(obs["state"], dtype=np.float32)
        req["prompt"] = self._instruction(obs)
        req["reset"] = self._new_episode
        req["replan_steps"] = self.replan_steps
        return req

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        """One call: the server's whole reply ``(K, 7)`` (float32) for this observation."""
        reply = self.infer(self._request(obs))
        self._new_episode = False
        self.last_reply = {k: v for k, v in reply.items() if k != "actions"}
        actions = np.asarray(reply["actions"], dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
            raise OpenpiServerError(f"the reply's 'actions' from {self.uri} has shape {actions.shape}; "
                                    f"expected (K, {ACTION_DIM}) with K >= 1")
        return actions

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The next action ``(7,)``; calls the server when the queue of ``replan_steps`` actions is empty."""
        if not self._queue:
            self._queue.extend(self.act_chunk(obs)[: self.replan_steps])
        return self._queue.popleft().copy()

    def knobs(self) -> dict[str, Any]:
        """The client options and the server's metadata (for the run identity and the summary)."""
        return {"server": self.uri, "replan_steps": self.replan_steps, "image_size": self.image_size,
                "server_metadata": self.metadata}

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:  # closing a dead socket: nothing left to release
                pass
            self._ws = None

    def __del__(self) -> None:
        self.close()


class OpenpiClientFactory:
    """``factory(env)`` -> a new :class:`OpenpiClientPolicy` (its own connection) for that env slot; pickles
    as plain options (Ray actors and vector workers connect from their own process)."""

    def __init__(self, host: str, port: int, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(CLIENT_KWARGS))
        if unknown:
            raise ValueError(f"--policy-kwargs {unknown} not understood by openpi:HOST:PORT; expected some of "
                             f"{list(CLIENT_KWARGS)}")
        self.host, self.port, self.kwargs = host, int(port), dict(kwargs)

    def __call__(self, env: Any) -> OpenpiClientPolicy:
        return OpenpiClientPolicy(self.host, self.port, env=env, **self.kwargs)
