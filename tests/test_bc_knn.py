"""The bc and knn policy families: hand-checkable kNN lookups, a tiny BC training run (loss falls, reload acts
identically, resume equals an uninterrupted run), both families through every eval backend with per-slot state,
and clear errors on bad input."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.bc import BCFactory
from agents.knn import KNNIndex, KNNPolicy, build_index, load_vq_tokenizer
from agents.registry import resolve_policy
from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.training.bc import BCNet, load_bc, save_bc, train_bc
from wvla_gym.training.config import BCTrainConfig

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import eval_fakes  # noqa: E402

SAMPLE = TESTS / "data" / "libero_sample"
RES = 32
INSTR = "pick up the alphabet soup and place it in the basket"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ kNN by hand
class PixelTokenizer:
    """Stands in for the VQ: the codes of a (4, 4) image are its red channel, so keys are written by hand."""

    def encode_codes(self, images: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(images)[..., 0].astype(np.int64))


def _hand_index(keys, chunk=2, history=1, **cfg) -> KNNIndex:
    keys = np.asarray(keys, np.uint16)
    n = len(keys)
    chunks = np.zeros((n, chunk, 7), np.float32)
    chunks[:, :, 0] = np.arange(n)[:, None] / 10  # row i's actions carry i / 10
    chunks[:, :, 1] = np.arange(chunk)[None] / 10  # and the step inside the chunk
    config = {"chunk": chunk, "history": history, "k": 1, "temperature": 0.0, "noise": 0.0, "resolution": 4,
              "episodes": ["e"], **cfg}
    return KNNIndex(keys, chunks, np.zeros(n, np.int32), np.arange(n, dtype=np.int32), config)


def _img(value_codes) -> dict:
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = np.asarray(value_codes, np.uint8).reshape(4, 4)
    return {"image": img}


def test_knn_finds_the_known_neighbour_and_plays_its_chunk_open_loop():
    base = np.zeros(16, np.uint16)
    keys = [base.copy() for _ in range(3)]
    keys[1][:5] = 1  # 5 codes away from an all-zero frame
    keys[2][:2] = 1  # 2 codes away: the nearest to the query below
    index = _hand_index(keys)
    query = base.copy()
    query[:1] = 1  # distances: row 0 -> 1, row 1 -> 4, row 2 -> 1 (tie of rows 0 and 2), see below
    rows, dist = index.nearest(query, 3)
    assert rows.tolist() == [0, 2, 1] and dist.tolist() == [1, 1, 4]  # tie -> the lower row first
    q2 = base.copy()
    q2[:2] = 1
    assert index.nearest(q2, 1)[0].tolist() == [2]

    p = KNNPolicy(index, PixelTokenizer())
    p.reset()
    a0, a1 = p.act(_img(q2)), p.act(_img(base))  # second step comes from the queue: no new lookup
    assert a0[0] == pytest.approx(0.2) and a0[1] == 0 and a1[0] == pytest.approx(0.2) and a1[1] == pytest.approx(0.1)
    assert p.act(_img(base))[0] == 0.0  # the queue ran out: a new lookup finds row 0
    # k = 2 averages rows 2 and 0 (distance 0 and 2 from q2); k = 3 all three
    p2 = KNNPolicy(index, PixelTokenizer(), k=2)
    p2.reset()
    assert p2.act(_img(q2))[0] == pytest.approx(0.1)


def test_knn_history_two_keys_the_previous_frame():
    a, b = np.zeros(16, np.uint16), np.full(16, 2, np.uint16)
    # rows: (current, previous) = (a, a), (a, b): the same current frame, different pasts
    index = _hand_index([np.concatenate([a, a]), np.concatenate([a, b])], chunk=1, history=2)
    p = KNNPolicy(index, PixelTokenizer())
    p.reset()
    assert p.act(_img(a))[0] == 0.0  # episode start: the past repeats the first frame -> (a, a)
    p.reset()
    p.act(_img(b))
    assert p.act(_img(a))[0] == pytest.approx(0.1)  # (a, b) -> row 1


def test_knn_temperature_and_noise_reproduce_with_the_reset_seed():
    index = _hand_index([np.zeros(16), np.ones(16), np.full(16, 2)], chunk=1, k=3, temperature=50.0, noise=0.05)
    p = KNNPolicy(index, PixelTokenizer())
    runs = []
    for seed in (1, 1, 2):
        p.reset(seed=seed)
        runs.append(np.stack([p.act(_img(np.zeros(16))) for _ in range(8)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert np.all(np.abs(runs[0]) <= 1)


def test_knn_bad_input_names_the_argument(tmp_path):
    index = _hand_index([np.zeros(16)])
    with pytest.raises(ValueError, match="k="):
        KNNPolicy(index, PixelTokenizer(), k=0)
    with pytest.raises(ValueError, match="k="):
        KNNPolicy(index, PixelTokenizer(), k=5)  # more neighbours than rows
    p = KNNPolicy(index, PixelTokenizer())
    p.reset()
    with pytest.raises(ValueError, match=r"obs\['image'\].*\(4, 4, 3\)"):
        p.act({"image": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"--policy 'knn:.*missing'.*does not exist"):
        resolve_policy(f"knn:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="knn:PATH"):
        resolve_policy("knn:")
    with pytest.raises(ValueError, match="temperature="):
        KNNPolicy(index, PixelTokenizer(), temperature=-1)


# ------------------------------------------------------------------------------------------------ shared models
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), resolution=RES, action_chunk=3, history=2))


@pytest.fixture(scope="module")
def knn_folder(tmp_path_factory, checkpoint) -> str:
    """A knn index on the tiny checkpoint's VQ, built by build_index from a small HDF5 file of random frames."""
    from wvla_gym.data.hdf5 import Episode, write_demo

    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    src = tmp_path_factory.mktemp("knn_data") / "demo.hdf5"
    with h5py.File(src, "w") as f:
        data = f.create_group("data")
        data.attrs["images_rotated_180"] = True
        for e in range(2):
            t = 12
            frames = rng.integers(0, 256, (t, RES, RES, 3), dtype=np.uint8)
            ep = Episode(rng.uniform(-1, 1, (t, 7)), np.zeros((t, 4)), np.zeros((t, 9)), frames, None,
                         np.zeros((t, 6)), np.zeros((t, 2)), np.zeros((t, 7)), {})
            write_demo(data.create_group(f"demo_{e}"), ep)
    index = build_index([src], vq=checkpoint, chunk=3, history=2, k=2, noise=0.05)
    assert len(index) == 24 and index.keys.shape[1] == 2 * (RES // 8) ** 2
    return str(index.save(tmp_path_factory.mktemp("knn") / "idx"))


@pytest.fixture(scope="module")
def bc_folder(tmp_path_factory) -> str:
    """An untrained tiny BC policy at RES px (its actions depend on the image and the state)."""
    torch.manual_seed(0)
    cfg = {"format": "wvla-gym.bc/1", "resolution": RES, "chunk": 3, "channels": [4, 8], "blocks": 1, "hidden": 16,
           "use_state": True, "action_min": [-1.0] * 7, "action_max": [1.0] * 7, "state_min": [0.0] * 8,
           "state_max": [5.0] * 8, "train_episodes": 0}
    return str(save_bc(tmp_path_factory.mktemp("bc") / "policy", BCNet(cfg).eval(), cfg))


# ------------------------------------------------------------------------------------------------ BC training
def _bc_cfg(out: Path, **kw) -> BCTrainConfig:
    base = dict(data=[str(SAMPLE)], out=str(out), resolution=32, chunk=4, channels=(8, 16), hidden=32, epochs=2,
                batch_size=32, lr=3e-3, warmup_steps=1, log_every=1, checkpoint_every=4, progress=False,
                max_episodes=3)
    base.update(kw)
    return BCTrainConfig(**base)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_bc(folder)[0].state_dict()


def test_bc_trains_reloads_and_resumes_exactly(tmp_path):
    full = _bc_cfg(tmp_path / "full")
    report = train_bc(full)
    per_epoch = report["steps_per_epoch"]
    assert report["steps_done"] == 2 * per_epoch and len(report["episodes"]) == 3
    losses = [float(line.split('"loss": ')[1].split(",")[0]) for line in
              (tmp_path / "full" / "bc_log.jsonl").read_text().splitlines()]
    assert len(losses) == report["steps_done"] and np.mean(losses[-3:]) < losses[0]
    assert sorted(p.name for p in (tmp_path / "full" / "epochs").iterdir()) == ["epoch_001", "epoch_002"]

    # the saved folder reloads to identical actions (through the registry's factory)
    obs = {"image": np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8),
           "state": np.linspace(-0.2, 1.0, 8).astype(np.float32)}
    model, cfg = load_bc(tmp_path / "full")
    from agents.bc import BCPolicy

    direct = BCPolicy(model, cfg)
    direct.reset()
    via = resolve_policy(f"bc:{tmp_path / 'full'}").factory(None)
    via.reset()
    np.testing.assert_array_equal(direct.act_chunk(obs), via.act_chunk(obs))
    assert via.act_chunk(obs).shape == (4, 7) and np.all(np.abs(via.act_chunk(obs)) <= 1)

    # stop mid-epoch, then rerun the same command: the weights equal the uninterrupted run's
    part = _bc_cfg(tmp_path / "part", stop_at=per_epoch + 1)
    assert train_bc(part)["steps_done"] == per_epoch + 1
    train_bc(_bc_cfg(tmp_path / "part"))
    ref, got = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert (tmp_path / "part" / "bc_log.jsonl").read_text() == (tmp_path / "full" / "bc_log.jsonl").read_text()
    # other settings on the same folder are refused, naming the setting
    with pytest.raises(ValueError, match="max_episodes"):
        train_bc(_bc_cfg(tmp_path / "part", max_episodes=2))


def test_bc_bad_input_names_the_argument(tmp_path, bc_folder):
    with pytest.raises(ValueError, match=r"--policy 'bc:.*nope'.*does not exist"):
        resolve_policy(f"bc:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="replan_steps"):
        resolve_policy(f"bc:{bc_folder}", policy_kwargs={"replan_steps": 9})
    p = BCFactory(bc_folder)(None)
    p.reset()
    with pytest.raises(ValueError, match=r"obs\['image'\].*\(32, 32, 3\)"):
        p.act({"image": np.zeros((64, 64, 3), np.uint8), "state": np.zeros(8, np.float32)})
    with pytest.raises(ValueError, match=r"obs\['state'\]"):
        p.act({"image": np.zeros((32, 32, 3), np.uint8)})
    with pytest.raises(ValueError, match="--max-episodes"):
        train_bc(_bc_cfg(tmp_path / "bad", max_episodes=0))


def test_train_cli_builds_a_knn_index_from_the_committed_code_file(tmp_path):
    """`wvla-gym train knn` on the committed expert code file (the embedded default's VQ); --max-episodes grades."""
    from wvla_gym.cli.train import main

    data = TESTS.parent / "datasets" / "libero_object_t0" / "expert"
    assert main(["knn", "--data", str(data), "--out", str(tmp_path / "k"), "--max-episodes", "2", "--chunk", "4"]) == 0
    index = KNNIndex.load(tmp_path / "k")
    assert len(index.config["episodes"]) == 2 and index.chunk == 4 and index.keys.dtype == np.uint16
    # a recorded step's codes find a step with the same codes; each row's chunk is the recorded actions from it
    from wvla_gym.data.codes import CodeFile

    cf = CodeFile(next(data.glob("*.codes.npz")))
    rows, dist = index.nearest(cf.array("codes", 0)[5].reshape(-1), 1)
    assert dist[0] == 0 and np.array_equal(index.keys[rows[0]], index.keys[5])
    np.testing.assert_allclose(index.chunks[5], np.clip(cf.array("actions", 0)[5:9], -1, 1), atol=1e-6)
    p = resolve_policy(f"knn:{tmp_path / 'k'}").factory(None)
    frame = load_vq_tokenizer(None).decode_codes(torch.as_tensor(index.keys[5].astype(np.int64).reshape(1, 8, 8)))[0]
    p.reset()
    assert p.act({"image": frame}).shape == (7,)


# ------------------------------------------------------------------------------------------------ eval backends
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    cache = tmp_path_factory.mktemp("ray_cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
                                       "WVLA_GYM_CACHE": str(cache), "OMP_NUM_THREADS": "1"}})
    with eval_fakes.init_frame_cache(cache, tasks=(0,), n_init=3, resolution=RES):
        yield
    ray.shutdown()


def _strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("wall_time_s", "video")}


def _records(out: Path) -> dict:
    recs = read_records(out / "episodes.jsonl")
    return {(r["task_id"], r["init_state_id"]): _strip(r) for r in recs}


class PairPolicy:
    """A bc and a knn policy acting together (the mean of their actions): one evaluation per backend checks the
    per-slot state of both families (bc: its chunk queue; knn: its queue, frame history and noise generator)."""

    def __init__(self, a, b) -> None:
        self.a, self.b = a, b

    def reset(self, *, seed=None) -> None:
        self.a.reset(seed=seed)
        self.b.reset(seed=seed)

    def act(self, obs):
        return np.clip((self.a.act(obs) + self.b.act(obs)) / 2, -1, 1)


class PairFactory:
    def __init__(self, a, b) -> None:
        self.a, self.b = a, b

    def __call__(self, env) -> PairPolicy:
        return PairPolicy(self.a(env), self.b(env))


def test_families_act_through_every_backend_with_per_slot_state(tmp_path, checkpoint, knn_folder, bc_folder,
                                                                ray_cluster):
    """Records (actions included) on the batched, vector and ray backends equal sync (imagined env): a policy
    shared between slots would mix queues / frame histories and change them. The fake real env runs them too."""
    bc, knn = resolve_policy(f"bc:{bc_folder}"), resolve_policy(f"knn:{knn_folder}")
    assert bc.knobs["K"] == knn.knobs["K"] == 3 and knn.knobs["history"] == 2
    factory = PairFactory(bc.factory, knn.factory)
    imagined = dict(suite="libero_object", tasks=[0], trials=3, env="imagined", resolution=RES, max_episode_steps=5,
                    policy_name="bc+knn", progress=False, record_actions=True,
                    imagined_env_kwargs={"checkpoint": checkpoint, "instruction": INSTR})
    runs = {}
    for backend, n in [("sync", 1), ("batched", 3), ("vector", 2), ("ray", 2)]:
        cfg = EvalConfig(out=tmp_path / backend, backend=backend, num_envs=n, vector_context="spawn", **imagined)
        evaluate(factory, cfg)
        runs[backend] = _records(cfg.out)
    ref = runs["sync"]
    assert len(ref) == 3 and all(r["error"] is None for r in ref.values()), [r["error"] for r in ref.values()]
    assert len({str(r["actions"]) for r in ref.values()}) == 3  # the episodes differ, so mixed slots would show
    for backend, got in runs.items():
        assert got == ref, backend
    # the real-kind fake env (rendered at RES: the policies refuse other sizes); multi-process backends on it are
    # left to tests/test_eval_stateful.py (each costs a worker start-up, and the policies are the same objects)
    real = dict(suite="libero_object", tasks=[0], trials=2, real_env_id="eval_fakes:EvalFake-v0", resolution=RES,
                max_episode_steps=5, policy_name="bc+knn", progress=False, record_actions=True)
    evaluate(factory, EvalConfig(out=tmp_path / "real_sync", **real))
    got = _records(tmp_path / "real_sync")
    assert len(got) == 2 and all(r["error"] is None and 1 <= r["steps"] <= 5 for r in got.values())

def test_factories_make_a_new_policy_per_slot_on_shared_weights(knn_folder, bc_folder):
    for spec in (f"knn:{knn_folder}", f"bc:{bc_folder}"):
        factory = resolve_policy(spec).factory
        a, b = factory(SimpleNamespace()), factory(SimpleNamespace())
        assert a is not b
        shared = "index" if spec.startswith("knn") else "model"
        assert getattr(a, shared) is getattr(b, shared)
        import pickle

        assert pickle.loads(pickle.dumps(factory))._loaded is None  # workers load their own copy


def test_train_cli_runs_bc(tmp_path, capsys):
    from wvla_gym.cli.train import main

    args = ["bc", "--data", str(SAMPLE), "--out", str(tmp_path / "bc"), "--epochs", "1", "--stop-at", "2",
            "--max-episodes", "1", "--resolution", "32", "--channels", "4", "8", "--hidden", "16", "--no-progress"]
    assert main(args) == 0
    assert '"steps_done": 2' in capsys.readouterr().out
    assert load_bc(tmp_path / "bc")[1]["train_episodes"] == 1
    assert main(["bc", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2  # clear error, no trace
