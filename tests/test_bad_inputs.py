"""Bad inputs, table by table: each must raise the stated exception type with a message naming the argument
(or the file / field / tensor) and the expected form, before any expensive work.

Tables: checkpoint loading (own format from ``make_tiny_checkpoint``, the released layout from
``tests/model_fixtures.py``, the judge folder), the runtime on the tiny checkpoint, the real LIBERO env (32 px,
wrist off, one reset), one CLI subcommand run as a subprocess, the shared argument validator and start parser,
the imagined env and its vector env (constructor arguments and reset options), and a hypothesis-generated
sweep over those env entry points.
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

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import wvla_gym  # noqa: F401  (registers the env ids)
from envs.imagined import ImaginedEnv
from envs.imagined_vector import ImaginedVectorEnv
from envs.libero import LiberoEnv
from tests.model_fixtures import write_released_checkpoint
from wvla_gym.judge import ClassifierJudge
from wvla_gym.model.image_tokenizer import load_meta_vqgan
from wvla_gym.model.loading import load_checkpoint
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.protocol import SUITE_NUM_TASKS, check_action
from wvla_gym.runtime import WorldVLARuntime
from wvla_gym.starts import IMAGINED_START_KEYS, REAL_START_KEYS, parse_start
from wvla_gym.utils.validation import (
    ArgumentError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_mapping,
    check_str,
)

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


# ---------------------------------------------------------------------------------------------- shared validator
def test_argument_error_is_both_type_and_value_error_and_names_the_form():
    with pytest.raises(TypeError) as t_err:
        check_bool("wrist", "no")
    with pytest.raises(ValueError) as v_err:
        check_int("num_envs", 1.5, lo=1)
    assert isinstance(t_err.value, ArgumentError) and isinstance(v_err.value, ArgumentError)
    assert str(t_err.value) == "wrist='no'; expected a bool (True or False)"
    assert str(v_err.value) == "num_envs=1.5; expected an int >= 1"
    with pytest.raises(ValueError, match=r"temperature='1'; expected a finite float > 0"):
        check_float("temperature", "1", gt=0)
    with pytest.raises(ValueError, match=r"render_mode=1; expected None or one of 'rgb_array'"):
        check_choice("render_mode", 1, ["rgb_array"], optional=True)
    with pytest.raises(ValueError, match=r"options must be None or a dict .* got int 5"):
        check_mapping("options", 5, optional=True)
    with pytest.raises(ValueError, match=r"options keys must be str option names, got 1"):
        check_mapping("options", {1: 0, "a": 1})  # mixed-type keys are never sorted


def test_validator_normalises_valid_values():
    assert check_bool("b", np.bool_(True)) is True
    assert type(check_int("n", np.int64(3), lo=0)) is int
    assert check_float("x", np.float32(0.5), lo=0, hi=1) == 0.5
    assert check_float("x", 1, gt=0) == 1.0 and check_int("n", None, optional=True) is None
    assert check_choice("c", "a", ("a", "b")) == "a" and check_str("s", "x", nonempty=True) == "x"
    assert check_mapping("options", None, optional=True) == {}
    for bad in (True, 1.0, "1", None, [1]):
        with pytest.raises(ValueError, match="n="):
            check_int("n", bad)


# ---------------------------------------------------------------------------------------------- start parser
def test_the_real_env_refuses_the_imagined_env_only_options():
    for key in ("image", "wrist_image", "state", "frame_id"):
        with pytest.raises(ValueError, match=f"unknown keys.*{key}"):
            parse_start({key: 0}, accepted=REAL_START_KEYS)
    req = parse_start({"init_state_id": np.int64(3), "perturb_radius": 0.03}, accepted=REAL_START_KEYS)
    assert (req.source, req.init_state_id, req.perturb_radius, req.libero_start) == ("init_state", 3, 0.03, True)
    assert not parse_start(None, accepted=IMAGINED_START_KEYS).given


# ---------------------------------------------------------------------------------------------- imagined env
FRAMES = np.random.default_rng(0).integers(0, 256, (6, RES, RES, 3), dtype=np.uint8)
INSTR = "pick up the alphabet soup and place it in the basket"


def _imagined(rt, **kw) -> ImaginedEnv:
    return ImaginedEnv(**{"runtime": rt, "instruction": INSTR, "init_frames": FRAMES, **kw})


IMAGINED_CONSTRUCTOR_CASES = [
    # (id, kwargs, patterns); each a ValueError (and, for a wrong type, also a TypeError) naming the argument
    ("wrist-no", {"wrist": "no"}, ["wrist='no'", "bool"]),
    ("wrist-int", {"wrist": 1}, ["wrist=1", "bool"]),
    ("instruction-in-obs-str", {"instruction_in_obs": "yes"}, ["instruction_in_obs", "bool"]),
    ("do-sample-str", {"do_sample": "no"}, ["do_sample", "bool"]),
    ("task-suite-list", {"task_suite": ["libero_object"]}, ["task_suite", "list", "str"]),
    ("task-suite-unknown", {"task_suite": "libero_100"}, ["task_suite", "libero_object"]),
    ("task-id-str", {"task_id": "0"}, ["task_id", "int"]),
    ("render-mode-int", {"render_mode": 1}, ["render_mode=1", "rgb_array"]),
    ("render-mode-human", {"render_mode": "human"}, ["render_mode='human'", "rgb_array"]),
    ("runtime-str", {"runtime": "str"}, ["runtime='str'", "WorldVLARuntime"]),
    ("temperature-str", {"temperature": "1"}, ["temperature='1'", "float > 0"]),
    ("temperature-zero", {"temperature": 0.0}, ["temperature=0.0", "> 0"]),
    ("threshold-high", {"success_threshold": 2}, ["success_threshold=2", "[0, 1]"]),
    ("instruction-int", {"instruction": 5}, ["instruction=5", "str"]),
    ("max-steps-zero", {"max_episode_steps": 0}, ["max_episode_steps=0", ">= 1"]),
    ("resolution-str", {"resolution": "32"}, ["resolution='32'", "int"]),
    ("device-int", {"device": 0}, ["device=0", "'cpu'"]),
    ("judge-without-score", {"success_judge": "yes"}, ["success_judge", "score"]),
]


@pytest.mark.parametrize(
    "kwargs, patterns", [c[1:] for c in IMAGINED_CONSTRUCTOR_CASES], ids=[c[0] for c in IMAGINED_CONSTRUCTOR_CASES]
)
def test_imagined_constructor_bad_inputs(rt, kwargs, patterns):
    with pytest.raises(ValueError) as err:
        _imagined(rt, **kwargs)
    assert all(p in str(err.value) for p in patterns), str(err.value)


def test_gym_make_imagined_refuses_wrist_no_like_the_real_env(rt):
    with pytest.raises(ValueError, match="wrist='no'"):
        gym.make("WorldVLA-Imagined-v0", runtime=rt, instruction=INSTR, wrist="no")
    with pytest.raises(TypeError, match="wrist"):  # the real env refuses it too, before LIBERO is imported
        LiberoEnv(wrist="no")


def test_vector_env_checks_sub_env_arguments_before_loading_the_checkpoint(tmp_path):
    missing = tmp_path / "no-such-checkpoint"  # a load would fail with FileNotFoundError naming it
    for kwargs, name in (({"wrist": "no"}, "wrist"), ({"temperature": "1"}, "temperature"),
                         ({"render_mode": 1}, "render_mode"), ({"task_suite": ["x"]}, "task_suite")):
        with pytest.raises(ValueError, match=name):
            ImaginedVectorEnv(2, checkpoint=missing, **kwargs)
    for kwargs, name in (({"num_envs": 0}, "num_envs=0"), ({"num_envs": 1.5}, "num_envs=1.5"),
                         ({"num_envs": True}, "num_envs=True"), ({"autoreset_mode": "often"}, "autoreset_mode"),
                         ({"device": 1}, "device"), ({"checkpoint": 5}, "checkpoint"), ({"runtime": "str"}, "runtime")):
        with pytest.raises(ValueError, match=name):
            ImaginedVectorEnv(**{"num_envs": 2, **kwargs})
    with pytest.raises(TypeError, match="wrist_camera"):  # an unknown sub-env argument is named too
        ImaginedVectorEnv(2, checkpoint=missing, wrist_camera=True)


IMAGE = np.zeros((RES, RES, 3), np.uint8)
IMAGINED_RESET_CASES = [
    # (id, options, patterns); all refused before the env changes (no frame decoded, no LIBERO import)
    ("int", 5, ["options", "dict", "int"]),
    ("str", "str", ["options", "dict", "str"]),
    ("list", [1, 2], ["options", "dict", "list"]),
    ("bool", True, ["options", "dict", "bool"]),
    ("mixed-type-keys", {1: 0, "a": 1}, ["options keys", "1"]),
    ("unknown-key", {"init_state": 3}, ["unknown keys", "'init_state'", "init_state_id"]),
    ("state-str", {"image": IMAGE, "state": "abc"}, ["options['state']", "<U3", "(8,)"]),
    ("state-ragged", {"image": IMAGE, "state": [[1.0], [1.0, 2.0]]}, ["options['state']", "(8,)"]),
    ("state-nan", {"image": IMAGE, "state": [np.nan] * 8}, ["options['state']", "NaN"]),
    ("image-str", {"image": "abc"}, ["options['image']", "uint8", f"({RES}, {RES}, 3)"]),
    ("image-ragged", {"image": [[1], [1, 2]]}, ["options['image']", "uint8"]),
    ("wrist-image-float", {"image": IMAGE, "wrist_image": IMAGE.astype(float)}, ["options['wrist_image']", "float64"]),
    ("frame-id-float", {"frame_id": 1.5}, ["options['frame_id']=1.5", "[0, 5]"]),
    ("init-state-str", {"init_state_id": "3"}, ["options['init_state_id']='3'", "[0, 49]"]),
    ("placement-int", {"placement": 1}, ["options['placement']=1", "'sampled'"]),
    ("perturb-str", {"perturb_radius": "0.1"}, ["options['perturb_radius']='0.1'", "metres"]),
    ("perturb-nan", {"perturb_radius": float("nan")}, ["options['perturb_radius']=nan", "[0, 0.25]"]),
    ("sim-state-str", {"sim_state": "abc"}, ["options['sim_state']", "1-D float"]),
    ("sim-state-2d", {"sim_state": [[0.0, 1.0]]}, ["options['sim_state']", "shape (1, 2)"]),
    ("placement-with-image", {"placement": "sampled", "image": IMAGE}, ["cannot be combined with ['image']"]),
]


@pytest.mark.parametrize("options, patterns", [c[1:] for c in IMAGINED_RESET_CASES], ids=[c[0] for c in IMAGINED_RESET_CASES])
def test_imagined_reset_bad_options(rt, options, patterns):
    env = _imagined(rt)
    with pytest.raises(ValueError) as err:
        env.reset(seed=0, options=options)
    assert all(p in str(err.value) for p in patterns), str(err.value)
    assert env.frame is None  # nothing started


def test_imagined_reset_bad_seed(rt):
    env = _imagined(rt)
    for seed in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="seed="):
            env.reset(seed=seed)


def test_vector_reset_bad_options_leave_every_sub_env_untouched(rt):
    venv = ImaginedVectorEnv(3, runtime=rt, instruction=INSTR, init_frames=FRAMES)
    cases = [
        (5, "options must be"),
        ({1: 0}, "options keys"),
        ({"bogus": 1}, "unknown keys"),
        ({"frame_id": [0, 1, 9]}, r"options\['frame_id'\]=9"),  # the third sub-env's value is bad
        ({"state": "abc", "image": IMAGE}, r"options\['state'\]"),
        ({"image": [[1], [1, 2]]}, r"options\['image'\]"),
        ({"reset_mask": [1, 0, 1]}, r"options\['reset_mask'\]"),
    ]
    for options, match in cases:
        with pytest.raises(ValueError, match=match):
            venv.reset(seed=0, options=options)
        assert all(e.frame is None for e in venv.envs), options
    for seed, match in ((-1, "seed=-1"), ([0, 1], "seed="), ([0, "1", 2], r"seed\[1\]"), ("0", "seed=")):
        with pytest.raises(ValueError, match=match):
            venv.reset(seed=seed)


# ---------------------------------------------------------------------------------------------- generated sweep
# Generated bad inputs over the public env entry points (constructor keyword arguments and reset options of the
# imagined env and its vector env; the real env shares the parser and the validator). Every case must raise
# ValueError or TypeError whose message names the argument; none may run the world model or import LIBERO.
_SWEEP = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8), st.binary(max_size=4),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_not_bool = _junk.filter(lambda v: not isinstance(v, bool))
_not_int = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=8), st.lists(st.integers(), max_size=2))
_BAD_KWARGS = {
    "wrist": _not_bool,
    "instruction_in_obs": _not_bool,
    "do_sample": _not_bool,
    "task_suite": _junk.filter(lambda v: not isinstance(v, str) or v not in SUITE_NUM_TASKS),
    "task_id": st.one_of(_not_int, st.integers().filter(lambda i: not 0 <= i < 10)),
    "resolution": st.one_of(_not_int.filter(lambda v: v is not None), st.integers().filter(lambda i: i != RES)),
    "max_episode_steps": st.one_of(_not_int.filter(lambda v: v is not None), st.integers(max_value=0)),
    "render_mode": _junk.filter(lambda v: v is not None and v != "rgb_array"),
    "temperature": st.one_of(_junk.filter(lambda v: not isinstance(v, (int, float)) or isinstance(v, bool)),
                             st.floats().filter(lambda x: not 0 < x < float("inf"))),
    "success_threshold": st.one_of(_junk.filter(lambda v: v is not None and (not isinstance(v, (int, float))
                                                                               or isinstance(v, bool))),
                                   st.floats().filter(lambda x: not 0 <= x <= 1)),
    "instruction": _junk.filter(lambda v: v is not None and not isinstance(v, str)),
    "runtime": _junk.filter(lambda v: v is not None),
    "device": _junk.filter(lambda v: not isinstance(v, str)),
    "success_judge": _junk.filter(lambda v: v is not None),
}


@_SWEEP
@given(data=st.data())
def test_sweep_imagined_constructor_kwargs(rt, data):
    name = data.draw(st.sampled_from(sorted(_BAD_KWARGS)), label="argument")
    value = data.draw(_BAD_KWARGS[name], label="value")
    vector = data.draw(st.booleans(), label="vector")
    with pytest.raises((TypeError, ValueError)) as err:
        if vector:  # the vector env takes the runtime itself and hands its sub-envs the rest
            kw = {"runtime": rt, "instruction": INSTR, name: value}
            ImaginedVectorEnv(2, **kw)
        else:
            _imagined(rt, **{name: value})
    assert name in str(err.value), (name, value, str(err.value))


_frame_like = st.one_of(
    _junk,
    st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4))
    .filter(lambda s: s != (RES, RES, 3))
    .map(lambda s: np.zeros(s, np.uint8)),
    st.sampled_from([np.float32, np.int64, np.bool_]).map(lambda t: np.zeros((RES, RES, 3), t)),
)
_bad_vector = st.one_of(
    st.text(max_size=5), st.none(), st.lists(st.lists(st.floats(), min_size=2, max_size=2), min_size=1, max_size=3),
    st.lists(st.floats(allow_nan=False), max_size=10).map(lambda v: [*v, float("nan")]),
    st.lists(st.text(max_size=2), min_size=1, max_size=3),
)
_BAD_OPTIONS = {
    "init_state_id": st.one_of(_not_int, st.integers().filter(lambda i: not 0 <= i < 50)),
    "frame_id": st.one_of(_not_int, st.integers().filter(lambda i: not 0 <= i < len(FRAMES))),
    "placement": _junk.filter(lambda v: v not in ("fixed", "sampled")),
    "perturb_radius": st.one_of(_junk.filter(lambda v: not isinstance(v, (int, float)) or isinstance(v, bool)),
                                st.floats().filter(lambda x: not 0 <= x <= 0.25)),
    "sim_state": _bad_vector,
    "image": _frame_like,
    "wrist_image": _frame_like,  # drawn with a valid image
    "state": st.one_of(_bad_vector, st.lists(st.floats(-1, 1), max_size=12).filter(lambda v: len(v) != 8)),
}


@_SWEEP
@given(data=st.data())
def test_sweep_imagined_reset_options(rt, data):
    kind = data.draw(st.sampled_from(["options", "keys", "unknown", "value", "seed"]), label="kind")
    seed = 0
    if kind == "options":  # not a mapping at all
        options, name = data.draw(_junk.filter(lambda v: v is not None and not isinstance(v, dict))), "options"
    elif kind == "keys":  # a non-str key beside valid ones
        key = data.draw(st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.tuples(st.integers())))
        options, name = {key: 0, "frame_id": 0}, "options keys"
    elif kind == "unknown":
        key = data.draw(st.text(max_size=12).filter(lambda k: k not in IMAGINED_START_KEYS))
        options, name = {key: 0}, "unknown keys"
    elif kind == "value":
        name = data.draw(st.sampled_from(sorted(_BAD_OPTIONS)))
        options = {name: data.draw(_BAD_OPTIONS[name])}
        if name in ("wrist_image", "state"):
            options["image"] = IMAGE
        name = f"options[{name!r}]"
    else:
        options, name = None, "seed"
        seed = data.draw(st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=4), st.booleans()))
    vector = data.draw(st.booleans(), label="vector")
    if vector and kind == "value":
        # The vector env reads a list as one value per sub-env and None as "no value": only a bad value that
        # goes to every sub-env as it is stays bad there.
        assume(all(v is not None and not isinstance(v, (list, tuple)) for v in options.values()))
    env = ImaginedVectorEnv(2, runtime=rt, instruction=INSTR, init_frames=FRAMES) if vector else _imagined(rt)
    with pytest.raises((TypeError, ValueError)) as err:
        env.reset(seed=seed, options=options)
    assert name in str(err.value), (options, seed, str(err.value))
