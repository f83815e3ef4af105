"""``wvla-gym serve``: a WorldVLA agent behind openpi's websocket policy protocol.

Example::

    wvla-gym serve                                  # the embedded default on ws://127.0.0.1:8000
    wvla-gym serve --checkpoint ckpt/ --host 0.0.0.0 --port 8000
    curl http://127.0.0.1:8000/healthz             # "OK" once the model is warm and the socket listens

Clients: openpi's ``examples/libero/main.py`` (``--args.host 127.0.0.1 --args.port 8000``) and
``wvla-gym eval --policy openpi:127.0.0.1:8000``. Protocol, observation keys and the episode/queue rules are in
:mod:`agents.openpi_server`.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

import tyro


@dataclass
class ServeArgs:
    """Serve a WorldVLA checkpoint over openpi's websocket policy protocol (one agent state per connection)."""

    checkpoint: str | None = None
    """WorldVLA checkpoint (folder or Hub id); default: the embedded default model."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 for every interface)."""
    port: int = 8000
    """TCP port (0 picks a free one, printed at start)."""
    replan_steps: int = 5
    """Actions of each reply a client executes before its next call, when the client does not send
    'replan_steps' itself (5: openpi's LIBERO client; `wvla-gym eval --policy openpi:...` always sends it)."""
    policy_kwargs: str = "{}"
    """JSON dict as for `wvla-gym eval --policy worldvla` (e.g. {"n_action_steps": 5, "device": "cuda"})."""
    threads: int = 1
    """torch intra-op threads (greedy actions can differ between thread counts)."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.cli(ServeArgs, args=argv, prog="wvla-gym serve")
    if isinstance(args.threads, bool) or args.threads < 1:
        print(f"error: --threads {args.threads!r}; expected an int >= 1", file=sys.stderr)
        return 2
    try:
        policy_kwargs = json.loads(args.policy_kwargs)
    except json.JSONDecodeError as e:
        print(f"error: --policy-kwargs {args.policy_kwargs!r} is not JSON ({e})", file=sys.stderr)
        return 2
    if not isinstance(policy_kwargs, dict):
        print(f"error: --policy-kwargs {args.policy_kwargs!r}; expected a JSON object", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    from agents.openpi_server import serve_worldvla

    try:
        server = serve_worldvla(args.checkpoint, host=args.host, port=args.port, replan_steps=args.replan_steps,
                                policy_kwargs=policy_kwargs)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
