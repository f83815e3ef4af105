"""Bad inputs, table by table: each must raise the stated exception type with a message naming the argument
(or the file / field / tensor) and the expected form, before any expensive work.

Tables: checkpoint loading (own format from ``make_tiny_checkpoint``, the released layout from
``tests/model_fixtures.py``, the judge folder), the runtime on the tiny checkpoint, the real LIBERO env (32 px,
wrist off, one reset), and one CLI subcommand run as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from envs.libero import LiberoEnv
from tests.model_fixtures import write_released_checkpoint
from wvla_gym.judge import ClassifierJudge
from wvla_gym.model.image_tokenizer import load_meta_vqgan
from wvla_gym.model.loading import load_checkpoint
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.protocol import check_action
from wvla_gym.runtime import WorldVLARuntime

RES = 32


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), resolution=RES)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def _edit_config(**fields):
    def edit(d: Path):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(fields)
        (d / "config.json").write_text(json.dumps(cfg))

    return edit


def _truncate(d: Path):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _random_bytes(d: Path):
    (d / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))


def _json_list(d: Path):
    (d / "config.json").write_text("[1, 2, 3]")


def _nan_tensor(d: Path):
    sd = load_file(str(d / "model.safetensors"))
    sd["lm_head.weight"][3, 5] = float("nan")
    save_file(sd, str(d / "model.safetensors"))


def _inf_vq_tensor(d: Path):
    sd = load_file(str(d / "model.safetensors"))
    key = sorted(k for k in sd if k.startswith("model.vqmodel.decoder."))[0]
    sd[key].view(-1)[0] = float("inf")
    save_file(sd, str(d / "model.safetensors"))


OWN_FORMAT_CASES = [
    # (id, corrupt, exception, patterns the message must contain)
    ("truncated-weights", _truncate, ValueError, ["model.safetensors", "truncated or corrupt"]),
    ("random-weights", _random_bytes, ValueError, ["model.safetensors", "not a readable safetensors"]),
    ("config-is-a-list", _json_list, ValueError, ["config.json", "JSON object"]),
    ("model-type-llama", _edit_config(model_type="llama"), ValueError, ["config.json", "'llama'", "not a WorldVLA/Chameleon"]),
    ("history-0", _edit_config(history=0), ValueError, ["config.json", "history=0", "int >= 1"]),
    ("action-chunk-0", _edit_config(action_chunk=0), ValueError, ["config.json", "action_chunk=0", "int >= 1"]),
    ("action-min-3-long", _edit_config(action_min=[0.0, 0.0, 0.0]), ValueError, ["config.json", "action_min", "7 finite floats"]),
    ("action-max-below-min", _edit_config(action_max=[-2.0] * 7), ValueError, ["config.json", "min < max"]),
    ("nan-weight", _nan_tensor, ValueError, ["model.safetensors", "'lm_head.weight'", "NaN or inf"]),
    ("inf-vqgan-weight", _inf_vq_tensor, ValueError, ["model.safetensors", "model.vqmodel.decoder.", "NaN or inf"]),
]


@pytest.mark.parametrize("corrupt, exc, patterns", [c[1:] for c in OWN_FORMAT_CASES], ids=[c[0] for c in OWN_FORMAT_CASES])
def test_own_format_checkpoint_errors(tiny_dir, tmp_path, corrupt, exc, patterns):
    d = _copy(tiny_dir, tmp_path)
    corrupt(d)
    with pytest.raises(exc) as err:
        load_checkpoint(d)
    for p in patterns:
        assert p in str(err.value), (p, str(err.value))


def test_float16_weights_are_cast_to_float32_on_cpu(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, str(d / "model.safetensors"))
    model, _ = load_checkpoint(d)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    rt = WorldVLARuntime(model, _)
    assert rt.imagine(np.zeros((1, RES, RES, 3), np.uint8), np.zeros((1, 7))).shape == (1, RES, RES, 3)


@pytest.mark.parametrize(
    "kwargs, exc, patterns",
    [
        ({"device": "cuda"}, ValueError, ["device='cuda'", "use device='cpu'"]),
        ({"device": "gpu0"}, ValueError, ["device='gpu0'", "not a torch device"]),
        ({"dtype": "float16"}, TypeError, ["dtype", "torch.dtype"]),
        ({"attn_implementation": "flash"}, ValueError, ["attn_implementation"]),
    ],
    ids=["cuda-on-cpu-build", "bad-device", "dtype-str", "attn"],
)
def test_load_arguments(tiny_dir, kwargs, exc, patterns):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    with pytest.raises(exc) as err:
        load_checkpoint(tiny_dir, **kwargs)
    assert all(p in str(err.value) for p in patterns), str(err.value)


# ---- the released layout: a planted pickle must never run ----------------------------------------------------
class _Planted:
    """Unpickling this calls ``open(marker, "w")``: the marker file appearing means code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    ck, ref = write_released_checkpoint(root)
    return root, ck, ref


def _released_copy(released, tmp_path) -> tuple[Path, Path]:
    root, ck, _ = released
    dst = tmp_path / "rel"
    shutil.copytree(root, dst)
    return dst, dst / ck.relative_to(root)


def test_planted_pickle_in_vqgan_ckpt_is_refused_and_never_runs(released, tmp_path, monkeypatch):
    monkeypatch.delenv("WVLA_TRUST_PICKLE", raising=False)
    root, ck = _released_copy(released, tmp_path)
    marker = tmp_path / "PWNED"
    vq_sd = released[2]["vq"]
    torch.save({"state_dict": vq_sd, "callbacks": _Planted(marker)}, root / "chameleon/tokenizer/vqgan.ckpt")
    with pytest.raises(ValueError) as err:
        load_checkpoint(ck)
    msg = str(err.value)
    assert "vqgan.ckpt" in msg and "weights_only=True" in msg and "WVLA_TRUST_PICKLE=1" in msg and "trust_pickle=True" in msg
    assert not marker.exists()


def test_legacy_pickle_loads_only_with_the_explicit_opt_in(released, tmp_path, monkeypatch):
    monkeypatch.delenv("WVLA_TRUST_PICKLE", raising=False)
    root, ck = _released_copy(released, tmp_path)
    tok = root / "chameleon/tokenizer"
    vq_sd = released[2]["vq"]
    torch.save({"state_dict": vq_sd, "hyper_parameters": argparse.Namespace(lr=1e-4)}, tok / "vqgan.ckpt")
    with pytest.raises(ValueError, match="vqgan.ckpt"):
        load_meta_vqgan(tok / "vqgan.ckpt", tok / "vqgan.yaml")
    vq = load_meta_vqgan(tok / "vqgan.ckpt", tok / "vqgan.yaml", trust_pickle=True)
    assert all(torch.equal(vq.state_dict()[k], v) for k, v in vq_sd.items())
    monkeypatch.setenv("WVLA_TRUST_PICKLE", "1")
    load_meta_vqgan(tok / "vqgan.ckpt", tok / "vqgan.yaml")
    with pytest.raises(ValueError, match="vqgan.ckpt"):  # an explicit False wins over the environment
        load_meta_vqgan(tok / "vqgan.ckpt", tok / "vqgan.yaml", trust_pickle=False)
    model, _ = load_checkpoint(ck, trust_pickle=True)  # threaded through load_checkpoint
    assert torch.equal(model.model.vqmodel.quantize.embedding.weight, vq_sd["quantize.embedding.weight"])


def _released_truncated_shard(root: Path, ck: Path):
    shard = sorted(ck.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    return shard.name


def _released_config_list(root: Path, ck: Path):
    (ck / "config.json").write_text('["not", "an", "object"]')
    return "config.json"


def _released_index_garbage(root: Path, ck: Path):
    (ck / "model.safetensors.index.json").write_text("{not json")
    return "model.safetensors.index.json"


def _released_nan_shard(root: Path, ck: Path):
    shard = sorted(ck.glob("model-*.safetensors"))[-1]
    sd = load_file(str(shard))
    key = sorted(sd)[0]
    sd[key].view(-1)[0] = float("nan")
    save_file(sd, str(shard))
    return key


@pytest.mark.parametrize(
    "corrupt", [_released_truncated_shard, _released_config_list, _released_index_garbage, _released_nan_shard],
    ids=["truncated-shard", "config-list", "index-garbage", "nan-shard"],
)
def test_released_layout_errors_name_the_file(released, tmp_path, corrupt):
    root, ck = _released_copy(released, tmp_path)
    name = corrupt(root, ck)
    with pytest.raises(ValueError) as err:
        load_checkpoint(ck)
    assert name in str(err.value), str(err.value)


# ---- the judge folder ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return ClassifierJudge(input_size=16, channels=(4,)).save_pretrained(tmp_path_factory.mktemp("judge") / "judge")


def _judge_bad_json(d):
    (d / "judge_config.json").write_text("{oops")


def _judge_list_json(d):
    (d / "judge_config.json").write_text("[16]")


def _judge_unknown_field(d):
    (d / "judge_config.json").write_text(json.dumps({"judge_type": "classifier", "input_size": 16, "channels": [4], "depth": 3}))


def _judge_bad_channels(d):
    (d / "judge_config.json").write_text(json.dumps({"input_size": 16, "channels": "four"}))


def _judge_truncated_weights(d):
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:40])


def _judge_mismatched_weights(d):
    (d / "judge_config.json").write_text(json.dumps({"input_size": 16, "channels": [8]}))


def _judge_nan_weights(d):
    sd = load_file(str(d / "model.safetensors"))
    sd["net.head.bias"][0] = float("nan")
    save_file(sd, str(d / "model.safetensors"))


JUDGE_CASES = [
    ("bad-json", _judge_bad_json, ["judge_config.json", "not valid JSON"]),
    ("json-list", _judge_list_json, ["judge_config.json", "JSON object"]),
    ("unknown-field", _judge_unknown_field, ["judge_config.json", "depth"]),
    ("bad-channels", _judge_bad_channels, ["judge_config.json", "channels"]),
    ("truncated-weights", _judge_truncated_weights, ["model.safetensors", "not a readable safetensors"]),
    ("mismatched-weights", _judge_mismatched_weights, ["model.safetensors", "do not match"]),
    ("nan-weights", _judge_nan_weights, ["model.safetensors", "'net.head.bias'", "NaN or inf"]),
]


@pytest.mark.parametrize("corrupt, patterns", [c[1:] for c in JUDGE_CASES], ids=[c[0] for c in JUDGE_CASES])
def test_corrupt_judge_folder_fails_at_load(judge_dir, tmp_path, corrupt, patterns):
    d = tmp_path / "judge"
    shutil.copytree(judge_dir, d)
    corrupt(d)
    with pytest.raises(ValueError) as err:
        ClassifierJudge.from_pretrained(d)
    assert all(p in str(err.value) for p in patterns), str(err.value)


# ---------------------------------------------------------------------------------------------- runtime
@pytest.fixture(scope="module")
def rt(tiny_dir) -> WorldVLARuntime:
    return WorldVLARuntime.from_pretrained(tiny_dir)


FRAME = np.zeros((1, RES, RES, 3), np.uint8)
HIST = np.zeros((1, 2, RES, RES, 3), np.uint8)
ZERO = np.zeros((1, 7))

RUNTIME_CASES = [
    # (id, call, exception, patterns)
    ("imagine-actions-100", lambda rt: rt.imagine(FRAME, np.full((1, 7), 100.0)), ValueError, ["actions", "[-1, 1]"]),
    ("imagine-actions-minus-100", lambda rt: rt.imagine(FRAME, np.full((1, 7), -100.0)), ValueError, ["actions", "[-1, 1]"]),
    ("imagine-actions-nan", lambda rt: rt.imagine(FRAME, np.full((1, 7), np.nan)), ValueError, ["actions", "NaN"]),
    ("imagine-actions-str", lambda rt: rt.imagine(FRAME, [["0.1"] * 7]), ValueError, ["actions", "strings"]),
    ("imagine-actions-complex", lambda rt: rt.imagine(FRAME, np.zeros((1, 7), complex)), ValueError, ["actions", "complex"]),
    ("imagine-actions-object", lambda rt: rt.imagine(FRAME, np.zeros((1, 7), object)), ValueError, ["actions", "objects"]),
    ("imagine-actions-masked", lambda rt: rt.imagine(FRAME, np.ma.zeros((1, 7))), ValueError, ["actions", "masked"]),
    ("imagine-actions-shape", lambda rt: rt.imagine(FRAME, np.zeros((1, 6))), ValueError, ["actions", "(B, 7)"]),
    ("imagine-empty-batch", lambda rt: rt.imagine(FRAME[:0], ZERO[:0]), ValueError, ["images", "empty batch"]),
    ("imagine-instruction-int", lambda rt: rt.imagine(FRAME, ZERO, instruction=5), TypeError, ["instruction", "str"]),
    ("imagine-temperature", lambda rt: rt.imagine(FRAME, ZERO, do_sample=True, temperature=0), ValueError, ["temperature"]),
    ("predict-instruction-int", lambda rt: rt.predict_action_chunk(HIST, 5), TypeError, ["instruction", "str"]),
    ("predict-instruction-bytes", lambda rt: rt.predict_action_chunk(HIST, b"go"), TypeError, ["instruction", "str"]),
    ("predict-instruction-list-int", lambda rt: rt.predict_action_chunk(HIST, [1]), TypeError, ["instruction", "[0]: int"]),
    ("predict-empty-list", lambda rt: rt.predict_action_chunk([], "go"), ValueError, ["image_history", "empty batch"]),
    ("predict-empty-array", lambda rt: rt.predict_action_chunk(HIST[:0], "go"), ValueError, ["image_history", "empty batch"]),
    ("predict-constrain-str", lambda rt: rt.predict_action_chunk(HIST, "go", constrain_actions="yes"), TypeError, ["constrain_actions"]),
    ("predict-n-actions-bool", lambda rt: rt.predict_action_chunk(HIST, "go", n_actions=True), ValueError, ["n_actions"]),
]


@pytest.mark.parametrize("call, exc, patterns", [c[1:] for c in RUNTIME_CASES], ids=[c[0] for c in RUNTIME_CASES])
def test_runtime_bad_inputs(rt, call, exc, patterns):
    with pytest.raises(exc) as err:
        call(rt)
    assert all(p in str(err.value) for p in patterns), str(err.value)


def test_instruction_longer_than_the_model_fails_fast(rt):
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as err:
        rt.predict_action_chunk(HIST, "x" * 10_000)
    msg = str(err.value)
    assert "max_position_embeddings=4096" in msg and "instruction" in msg and "checkpoint" not in msg
    assert time.perf_counter() - t0 < 2.0  # refused before any forward pass
    # an instruction that fits still runs
    rt.predict_action_chunk(HIST, "x" * 100, constrain_actions=True)


# ---------------------------------------------------------------------------------------------- real env
ACTION_CASES = [
    # (id, action, patterns); every one a ValueError naming `action` and the expected form
    ("numeric-strings", ["0.1"] * 7, ["action", "strings", "real numeric"]),
    ("bytes", [b"0"] * 7, ["action", "bytes"]),
    ("one-string", "0.1", ["action", "str"]),
    ("complex", np.zeros(7, complex), ["action", "complex"]),
    ("masked", np.ma.zeros(7), ["action", "masked"]),
    ("object", np.zeros(7, object), ["action", "objects"]),
    ("bools", [False] * 7, ["action", "booleans"]),
    ("ragged", [[0.0] * 7, [0.0]], ["action", "real numeric"]),
    ("shape", np.zeros(6), ["action", "shape (7,)"]),
    ("nan", [0, 0, 0, 0, 0, 0, np.nan], ["action", "NaN"]),
    ("out-of-range", [0, 0, 1.5, 0, 0, 0, 0], ["action", "[-1, 1]"]),
    ("huge-float64", [1e300] * 7, ["action", "[-1, 1]"]),
]


@pytest.mark.parametrize("action, patterns", [c[1:] for c in ACTION_CASES], ids=[c[0] for c in ACTION_CASES])
def test_check_action_table(action, patterns):
    with pytest.raises(ValueError) as err:
        check_action(action)
    assert all(p in str(err.value) for p in patterns), str(err.value)


def test_check_action_accepts_real_numbers():
    for ok in ([0, 0, 0, 0, 0, 0, -1], np.zeros(7, np.int64), np.zeros(7, np.float16), torch.zeros(7), (0.5,) * 7):
        out = check_action(ok)
        assert out.dtype == np.float32 and out.shape == (7,)


CONSTRUCTOR_CASES = [
    # (id, kwargs, exception, patterns); all refused before LIBERO is imported
    ("wrist-str", {"wrist": "False"}, TypeError, ["wrist", "bool"]),
    ("instruction-in-obs-int", {"instruction_in_obs": 1}, TypeError, ["instruction_in_obs", "bool"]),
    ("task-suite-list", {"task_suite": ["libero_object"]}, TypeError, ["task_suite", "str"]),
    ("task-suite-unknown", {"task_suite": "libero_100"}, ValueError, ["task_suite", "libero_object"]),
    ("resolution-huge", {"resolution": 10**6}, ValueError, ["resolution", "[16, 1024]", "3*R^2 bytes"]),
    ("resolution-float", {"resolution": 64.0}, ValueError, ["resolution", "int"]),
    ("max-episode-steps-bool", {"max_episode_steps": True}, ValueError, ["max_episode_steps"]),
    ("gl-backend-int", {"gl_backend": 1}, TypeError, ["gl_backend"]),
]


@pytest.mark.parametrize("kwargs, exc, patterns", [c[1:] for c in CONSTRUCTOR_CASES], ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_libero_constructor_bad_inputs(kwargs, exc, patterns):
    with pytest.raises(exc) as err:
        LiberoEnv(**{"task_suite": "libero_object", "task_id": 0, "resolution": RES, "wrist": False, **kwargs})
    assert all(p in str(err.value) for p in patterns), str(err.value)


@pytest.fixture(scope="module")
def env():
    e = LiberoEnv(task_suite="libero_object", task_id=0, resolution=RES, wrist=False, num_steps_wait=1)
    e.reset(seed=0, options={"init_state_id": 0})
    yield e
    e.close()


@pytest.mark.libero
@pytest.mark.parametrize("action, patterns", [c[1:] for c in ACTION_CASES], ids=[c[0] for c in ACTION_CASES])
def test_libero_step_bad_actions(env, action, patterns):
    with pytest.raises(ValueError) as err:
        env.step(action)
    assert all(p in str(err.value) for p in patterns), str(err.value)


@pytest.mark.libero
@pytest.mark.parametrize(
    "options, exc, patterns",
    [
        (5, TypeError, ["options", "dict", "int"]),
        ([("init_state_id", 0)], TypeError, ["options", "dict", "list"]),
        ({1: 0, "a": 1}, TypeError, ["options keys", "1"]),
        ({"init_state_id": 50}, ValueError, ["init_state_id", "[0, 49]"]),
    ],
    ids=["int", "list-of-pairs", "mixed-type-keys", "init-state-out-of-range"],
)
def test_libero_reset_bad_options(env, options, exc, patterns):
    with pytest.raises(exc) as err:
        env.reset(options=options)
    assert all(p in str(err.value) for p in patterns), str(err.value)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_errors_go_to_stderr_with_a_nonzero_exit(tmp_path):
    missing = tmp_path / "no-such-results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "wvla_gym.cli.main", "agreement", str(missing)],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert p.returncode == 2
    assert p.stdout == ""
    assert "error:" in p.stderr and str(missing) in p.stderr
