"""Serve ANY Python policy over openpi's websocket protocol, so `wvla-gym eval` can test it from another process.

Run this in the policy's own virtualenv (LeRobot, openvla-oft, ...), then evaluate from wvla-gym's::

    # policy venv: the protocol needs only numpy, websockets and openpi-client (plus this package, no deps)
    pip install --no-deps openpi-client==0.1.2 /path/to/wvla-gym && pip install msgpack websockets
    python examples/openpi_policy_server.py --policy my_pkg.my_module:MyPolicy --kwargs '{"ckpt": "..."}' --port 8001

    # wvla-gym venv
    wvla-gym eval --policy openpi:127.0.0.1:8001 --policy-kwargs '{"replan_steps": 5}' --tasks 0 --trials 10

    python examples/openpi_policy_server.py --tiny     # smoke path: a random policy, one client, a few calls

``MyPolicy(**kwargs)`` is made once per connection (one per env slot of the evaluation) and follows
:mod:`wvla_gym.policy`: ``reset(*, seed=None)``, ``act(obs) -> (7,)`` and optionally ``act_chunk(obs) -> (K, 7)``.
It gets ``obs`` in our keys: ``image`` (uint8 (H, H, 3), rotated 180° like WorldVLA-LIBERO-v0 and openpi's
LIBERO client; resized to ``--resolution`` if given), ``wrist_image`` and ``state`` when the client sends them,
and ``instruction``. ``reset`` is called on each new episode (the client's ``reset: true`` or a new prompt).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from agents.openpi_server import OpenpiPolicyServer, PolicySession  # noqa: E402


@dataclass
class Args:
    policy: str = "wvla_gym.evaluation.policies:RandomPolicy"
    """module:Class (or module:function) returning a policy with reset() and act(obs); or a policy spec of
    wvla-gym's registry (``bc:PATH``, ``knn:PATH``, ``worldvla``, ``random``, ``zero``; ``--kwargs`` are its
    options), which makes one policy per connection on a model loaded once."""
    kwargs: str = "{}"
    """JSON dict of keyword arguments for the policy class."""
    host: str = "127.0.0.1"
    port: int = 8000
    resolution: int | None = None
    """Resize incoming images to this side (None: as the client sends them)."""
    tiny: bool = False
    """Smoke path: serve on a free port, call it a few times with openpi-client's own client, stop."""


def load_class(spec: str):
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise SystemExit(f"--policy {spec!r}; expected module:Class")
    return getattr(importlib.import_module(mod), attr)


#: ``--policy`` prefixes that name a family of wvla-gym's policy registry rather than a module.
REGISTRY_FAMILIES = ("bc", "knn", "worldvla", "random", "zero")


def load_policy_maker(spec: str, kwargs: dict):
    """``spec`` -> a zero-argument callable making a fresh policy (one per connection)."""
    if spec.partition(":")[0] in REGISTRY_FAMILIES:
        from agents.registry import resolve_policy

        factory = resolve_policy(spec, policy_kwargs=kwargs).factory  # loads the weights once, now
        return lambda: factory(None)
    cls = load_class(spec)
    return lambda: cls(**kwargs)


def main(args: Args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kwargs = json.loads(args.kwargs)
    make_policy = load_policy_maker(args.policy, kwargs)
    server = OpenpiPolicyServer(
        lambda: PolicySession(make_policy, resolution=args.resolution),
        metadata={"policy": args.policy, "kwargs": kwargs, "resolution": args.resolution},
        host=args.host, port=0 if args.tiny else args.port,
    )
    if not args.tiny:
        server.serve_forever()
        return 0
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    with server:
        client = WebsocketClientPolicy(args.host, server.port)
        print("metadata:", client.get_server_metadata())
        rng = np.random.default_rng(0)
        for t in range(3):
            obs = {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
                   "observation/state": np.zeros(8), "prompt": "pick up the alphabet soup and place it in the basket"}
            reply = client.infer(obs)
            print(f"call {t}: actions {reply['actions'].shape}, server {reply['server_timing']['infer_ms']:.1f} ms")
    print("tiny: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(tyro.cli(Args)))
