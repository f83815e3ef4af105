"""openpi's websocket policy protocol in both directions, with the real ``openpi-client`` package.

A server of the embedded default runs on loopback (127.0.0.1, an ephemeral port) for the module; every loop
is bounded and the server is stopped at the end. Frames come from the committed LIBERO sample (64 px, the
default model's resolution), so the model's actions depend on them.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("typing_extensions")
wcp = pytest.importorskip("openpi_client.websocket_client_policy")

from agents.openpi_client import (  # noqa: E402
    OpenpiClientFactory,
    OpenpiClientPolicy,
    OpenpiServerError,
    parse_openpi_spec,
)
from agents.openpi_server import OpenpiPolicyServer, PolicySession, serve_worldvla  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLE = Path(__file__).parent / "data" / "libero_sample" / "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
PROMPT = "pick up the alphabet soup and place it in the basket"  # libero_object task 0
STEPS = 12


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    from wvla_gym.data.hdf5 import LiberoFile

    with LiberoFile(SAMPLE) as f:
        return {d: f.frames(d, 0, 3 * STEPS)[::3] for d in ("demo_0", "demo_1")}  # (STEPS, 64, 64, 3)


@pytest.fixture(scope="module")
def server(one_torch_thread):
    srv = serve_worldvla(None, host="127.0.0.1", port=0, replan_steps=5)
    srv.start()
    yield srv
    srv.stop()


def _agent(server):
    from agents.worldvla import WorldVLAAgent
    from wvla_gym.runtime_cache import load_runtime

    return WorldVLAAgent(load_runtime(None), instruction=PROMPT)


def _client(server) -> wcp.WebsocketClientPolicy:
    return wcp.WebsocketClientPolicy("127.0.0.1", server.port)


def test_round_trip_metadata_healthz_and_in_process_equality(server, frames):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read() == b"OK\n"
    client = _client(server)
    meta = client.get_server_metadata()
    assert meta["server"] == "wvla-gym" and meta["action_chunk"] == 5 and meta["resolution"] == 64
    assert meta["checkpoint_digest"].startswith("sha256:") and meta["replan_steps"] == 5
    agent = _agent(server)
    agent.reset()
    for t, frame in enumerate(frames["demo_0"]):
        reply = client.infer({"observation/image": frame, "prompt": PROMPT, "replan_steps": 1})
        actions = reply["actions"]
        assert actions.dtype == np.float32 and actions.ndim == 2 and actions.shape[1] == 7
        # the reply: this step's action, then what is left of the chunk (5 - t % 5 actions)
        assert len(actions) == 5 - t % 5
        np.testing.assert_array_equal(actions[0], agent.act({"image": frame}))
        np.testing.assert_array_equal(actions[1:], np.stack(list(agent._queues[0])) if len(actions) > 1 else actions[1:])
        assert set(reply["server_timing"]) == ({"infer_ms"} if t == 0 else {"infer_ms", "prev_total_ms"})


def test_openpi_libero_keys_resized_and_replan_five(server, frames):
    """openpi's LIBERO client: 224² images, 8 floats of state, a call every 5 steps; replies hold >= 5 actions."""
    from wvla_gym.utils.images import resize_uint8

    client = _client(server)
    big = [np.kron(f, np.ones((4, 4, 1), np.uint8))[:224, :224] for f in frames["demo_1"][:4]]  # 256 -> 224 crop
    agent = _agent(server)
    agent.reset()
    for f in big:
        obs = {"observation/image": f, "observation/wrist_image": f, "observation/state": np.zeros(8), "prompt": PROMPT}
        actions = client.infer(obs)["actions"]
        assert len(actions) == 5  # K = 5: every call decodes a fresh chunk
        np.testing.assert_array_equal(actions, agent.act_chunk({"image": resize_uint8(f, 64)}))


def test_reset_field_and_prompt_change_start_episodes(server, frames):
    client = _client(server)
    seq = frames["demo_0"][:3]
    first = [client.infer({"image": f, "prompt": PROMPT, "replan_steps": 1})["actions"] for f in seq]
    again = [client.infer({"image": f, "prompt": PROMPT, "replan_steps": 1, "reset": i == 0})["actions"]
             for i, f in enumerate(seq)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = client.infer({"image": seq[0], "prompt": "pick up the butter and place it in the basket",
                          "replan_steps": 1})["actions"]
    assert len(other) == 5  # a new prompt is a new episode: a fresh chunk, not the old queue


@pytest.mark.parametrize(
    ("obs", "needle"),
    [
        ({"prompt": PROMPT}, "'observation/image' or 'image'"),
        ({"image": np.zeros((64, 64, 3), np.float32), "prompt": PROMPT}, "observation['image'] must be uint8"),
        ({"observation/image": np.zeros((64, 32, 3), np.uint8), "prompt": PROMPT}, "observation['observation/image']"),
        ({"image": [[1, 2, 3]], "prompt": PROMPT}, "got a list"),
        ({"image": np.zeros((64, 64, 3), np.uint8)}, "'prompt' or 'instruction'"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "prompt": 3}, "observation['prompt'] must be a non-empty str"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "prompt": PROMPT, "observation/state": np.zeros(3)},
         "observation['observation/state'] must be 8 finite numbers"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "prompt": PROMPT, "reset": "yes"}, "observation['reset']"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "prompt": PROMPT, "replan_steps": 6}, "exceeds the model's chunk"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "observation/image": np.zeros((64, 64, 3), np.uint8),
          "prompt": PROMPT}, "has both"),
        (["not", "a", "map"], "must be a map"),
    ],
)
def test_malformed_observation_is_an_error_frame_and_the_server_survives(server, frames, obs, needle):
    client = _client(server)
    ok = {"image": frames["demo_0"][0], "prompt": PROMPT, "replan_steps": 1}
    with pytest.raises(RuntimeError, match="Error in inference server") as info:
        client.infer(obs)
    assert "RequestError" in str(info.value) and needle in str(info.value)
    # the same connection keeps serving (its episode state untouched), and so does a new one
    assert len(client.infer(ok)["actions"]) == 5
    assert len(_client(server).infer(ok)["actions"]) == 5


def test_text_frame_and_garbage_are_request_errors(server):
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server.port}", proxy=None) as ws:
        ws.recv(timeout=10)  # metadata
        ws.send("hello")
        assert ws.recv(timeout=10).startswith("RequestError: the request is a text frame")
        ws.send(b"\xc1")  # never valid msgpack
        assert ws.recv(timeout=10).startswith("RequestError: the request is not msgpack-numpy")


def test_two_concurrent_connections_keep_separate_histories(server, frames):
    a_frames, b_frames = frames["demo_0"], frames["demo_1"]
    results: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def run(name: str, seq: np.ndarray, barrier: threading.Barrier) -> None:
        try:
            c = _client(server)
            for f in seq:
                barrier.wait(timeout=60)  # interleave the two streams step by step
                results[name].append(c.infer({"image": f, "prompt": PROMPT, "replan_steps": 1})["actions"][0])
        except BaseException as e:  # reported below
            errors.append(e)
            barrier.abort()

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=run, args=(n, s, barrier)) for n, s in (("a", a_frames), ("b", b_frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and all(not t.is_alive() for t in threads)
    for name, seq in (("a", a_frames), ("b", b_frames)):
        agent = _agent(server)
        agent.reset()
        expected = [agent.act({"image": f}) for f in seq]
        np.testing.assert_array_equal(np.stack(results[name]), np.stack(expected))
    assert not np.array_equal(np.stack(results["a"]), np.stack(results["b"]))  # the histories matter here


def test_our_client_policy_equals_the_in_process_agent(server, frames):
    class Env:
        task_description = PROMPT

    factory = OpenpiClientFactory("127.0.0.1", server.port, replan_steps=1)
    policy = factory(Env())
    assert policy.knobs()["server_metadata"]["policy"] == "worldvla"
    agent = _agent(server)
    for episode in ("demo_0", "demo_1"):
        policy.reset(seed=0)
        agent.reset()
        got = [policy.act({"image": f, "state": np.zeros(8, np.float32)}) for f in frames[episode]]
        want = [agent.act({"image": f}) for f in frames[episode]]
        np.testing.assert_array_equal(np.stack(got), np.stack(want))
    # replan_steps 5: one call per 5 steps, the server's fresh chunks executed whole
    policy5 = OpenpiClientPolicy("127.0.0.1", server.port, env=Env(), replan_steps=5)
    policy5.reset()
    acts = [policy5.act({"image": f}) for f in frames["demo_0"][:10]]
    assert len(acts) == 10 and policy5.last_reply["server_timing"]["infer_ms"] > 0
    policy.close()
    policy5.close()


def test_client_errors_and_spec_parsing(server):
    assert parse_openpi_spec("openpi:127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert parse_openpi_spec("openpi:[::1]:9") == ("::1", 9)
    for bad in ("openpi:", "openpi:host", "openpi:host:x", "openpi:host:0", "sb3:x"):
        with pytest.raises(ValueError, match="openpi:HOST:PORT"):
            parse_openpi_spec(bad)
    with pytest.raises(ValueError, match="not understood"):
        OpenpiClientFactory("127.0.0.1", 1, replan=1)
    policy = OpenpiClientPolicy("127.0.0.1", server.port, instruction=PROMPT, replan_steps=1)
    policy.reset()
    with pytest.raises(OpenpiServerError, match="observation\\['observation/image'\\] must be uint8"):
        policy.act({"image": np.zeros((64, 64, 3), np.float32)})
    policy.close()
    with pytest.raises(ConnectionError, match="lost the connection"):
        policy.infer({})
    # nothing listens on a port we just closed
    probe = OpenpiPolicyServer(lambda: None, port=0)
    port = probe.start()
    probe.stop()
    with pytest.raises(ConnectionError, match="cannot connect"):
        OpenpiClientPolicy("127.0.0.1", port)


def test_policy_session_serves_any_policy():
    """What examples/openpi_policy_server.py does: a plain Policy class behind the protocol."""
    from wvla_gym.evaluation.policies import RandomPolicy

    srv = OpenpiPolicyServer(lambda: PolicySession(lambda: RandomPolicy(seed=3)), metadata={"policy": "random"},
                             port=0)
    with srv:
        client = wcp.WebsocketClientPolicy("127.0.0.1", srv.port)
        assert client.get_server_metadata() == {"policy": "random"}
        obs = {"observation/image": np.zeros((32, 32, 3), np.uint8), "prompt": PROMPT}
        a = client.infer(obs)["actions"]
        assert a.shape == (1, 7) and np.all(np.abs(a) <= 1)


def test_registry_resolves_openpi_spec(server):
    from agents.registry import resolve_policy

    resolved = resolve_policy(f"openpi:127.0.0.1:{server.port}", policy_kwargs={"replan_steps": 1})
    assert resolved.name == f"openpi:127.0.0.1:{server.port}"
    assert resolved.knobs["replan_steps"] == 1 and resolved.knobs["image_size"] is None
    assert resolved.knobs["server_metadata"]["checkpoint_digest"].startswith("sha256:")
    json.dumps(resolved.knobs)  # goes into the run identity
    with pytest.raises(ValueError, match="cannot connect"):
        probe = OpenpiPolicyServer(lambda: None, port=0)
        port = probe.start()
        probe.stop()
        resolve_policy(f"openpi:127.0.0.1:{port}")


# --------------------------------------------------------------------------- real LIBERO and the eval CLI
def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.libero
def test_eval_through_the_protocol_equals_in_process(server, tmp_path):
    """`wvla-gym eval --policy openpi:... replan_steps=1 --record-actions` == `--policy worldvla`, real and
    imagined (short episodes at 64 px, no wrist camera, the embedded default on libero_object task 0)."""
    from wvla_gym.cli.eval import main as eval_main
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    common = ["--suite", "libero_object", "--tasks", "0", "--trials", "1", "--resolution", "64",
              "--max-episode-steps", "24", "--record-actions", "--no-progress", "--env", "both",
              "--world-model", str(DEFAULT_ASSET_DIR)]
    assert eval_main(["--policy", "worldvla", "--out", str(tmp_path / "local"), *common]) == 0
    assert eval_main(["--policy", f"openpi:127.0.0.1:{server.port}", "--policy-kwargs", '{"replan_steps": 1}',
                      "--out", str(tmp_path / "remote"), *common]) == 0
    local, remote = _records(tmp_path / "local"), _records(tmp_path / "remote")
    assert [r["env"] for r in local] == [r["env"] for r in remote] == ["real", "imagined"]
    for a, b in zip(local, remote, strict=True):
        assert a["error"] is None and b["error"] is None
        assert len(a["actions"]) == 24
        assert (a["actions"], a["success"], a["steps"]) == (b["actions"], b["success"], b["steps"])
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    knobs = summary["runs"][f"openpi:127.0.0.1:{server.port}"]["config"]["knobs"]
    assert knobs["replan_steps"] == 1 and knobs["server_metadata"]["policy"] == "worldvla"


def test_example_server_tiny():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "examples" / "openpi_policy_server.py"), "--tiny"],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tiny: ok" in out.stdout and "actions (1, 7)" in out.stdout


def test_example_server_serves_a_registry_policy_like_in_process():
    """examples/openpi_policy_server.py --policy knn:PATH: each connection's chunks equal an in-process kNN
    policy's on the same frames (the committed kNN index over 3 demos, the embedded default's VQ)."""
    import importlib.util
    import sys

    from agents.registry import resolve_policy

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("openpi_policy_server", root / "examples" / "openpi_policy_server.py")
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)
    index = str(root / "policies" / "libero_object_t0" / "knn_e3")
    make = example.load_policy_maker(f"knn:{index}", {})
    local = resolve_policy(f"knn:{index}").factory(None)
    srv = OpenpiPolicyServer(lambda: PolicySession(make), port=0)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    with srv:
        client = wcp.WebsocketClientPolicy("127.0.0.1", srv.port)
        for f in frames:
            got = client.infer({"observation/image": f, "prompt": PROMPT})["actions"]
            want = local.act_chunk({"image": f, "instruction": PROMPT})
            np.testing.assert_array_equal(got, np.asarray(want, np.float32))
    assert got.shape == (8, 7)
