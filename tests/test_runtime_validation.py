"""WorldVLARuntime checks its arguments at the seam: errors name the argument, the value and the expected form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime
from wvla_gym.utils.validation import ArgumentError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAME = np.zeros((1, 32, 32, 3), np.uint8)
ACTION = np.zeros((1, 7))
HIST = np.zeros((1, 2, 32, 32, 3), np.uint8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), action_chunk=2)


@pytest.fixture(scope="module")
def rt(ckpt):
    return WorldVLARuntime.from_pretrained(ckpt)


CASES = [
    ("temperature-str", lambda rt: rt.imagine(FRAME, ACTION, do_sample=True, temperature="1"),
     ["temperature='1'", "> 0"]),
    ("temperature-str-greedy", lambda rt: rt.imagine(FRAME, ACTION, temperature="1"), ["temperature='1'"]),
    ("temperature-nan", lambda rt: rt.imagine(FRAME, ACTION, do_sample=True, temperature=float("nan")),
     ["temperature=nan"]),
    ("generator-int", lambda rt: rt.imagine(FRAME, ACTION, do_sample=True, generator=42),
     ["generator=42", "torch.Generator"]),
    ("do-sample-str", lambda rt: rt.imagine(FRAME, ACTION, do_sample="yes"), ["do_sample='yes'", "bool"]),
    ("imagine-return-info-int", lambda rt: rt.imagine(FRAME, ACTION, return_info=1), ["return_info=1", "bool"]),
    ("images-requires-grad", lambda rt: rt.imagine(torch.zeros(1, 32, 32, 3, requires_grad=True), ACTION),
     ["images", "requires grad", "detach"]),
    ("actions-requires-grad", lambda rt: rt.imagine(FRAME, torch.zeros(1, 7, requires_grad=True)),
     ["actions", "requires grad"]),
    ("actions-list-requires-grad", lambda rt: rt.imagine(FRAME, [torch.zeros(7, requires_grad=True)]),
     ["actions[0]", "requires grad"]),
    ("history-requires-grad", lambda rt: rt.predict_action_chunk(torch.zeros(1, 2, 32, 32, 3, requires_grad=True), "go"),
     ["image_history", "requires grad"]),
    ("history-frame-requires-grad",
     lambda rt: rt.predict_action_chunk([[torch.zeros(32, 32, 3, requires_grad=True)]], "go"),
     ["image_history[0][0]", "requires grad"]),
    ("decode-int", lambda rt: rt.predict_action_chunk(HIST, "go", decode=1), ["decode=1", "'parallel'"]),
    ("n-actions-float", lambda rt: rt.predict_action_chunk(HIST, "go", n_actions=2.0), ["n_actions=2.0", "int"]),
    ("predict-return-info-str", lambda rt: rt.predict_action_chunk(HIST, "go", return_info="yes"),
     ["return_info='yes'"]),
]


@pytest.mark.parametrize("name, call, parts", CASES, ids=[c[0] for c in CASES])
def test_bad_runtime_arguments_are_named(rt, name, call, parts):
    with pytest.raises((TypeError, ValueError)) as e:
        call(rt)
    for part in parts:
        assert part in str(e.value), (part, str(e.value))


@pytest.mark.parametrize(
    "kwargs, parts",
    [
        ({"path_or_hub_id": 5}, ["path_or_hub_id=5", "checkpoint folder"]),
        ({"path_or_hub_id": ["a"]}, ["path_or_hub_id=['a']"]),
        ({"path_or_hub_id": ""}, ["path_or_hub_id=''"]),
        ({"dtype": 5}, ["dtype=5", "torch.dtype"]),
        ({"dtype": "int"}, ["dtype='int'"]),
        ({"device": 0.5}, ["device=0.5"]),
        ({"attn_implementation": "flash"}, ["attn_implementation='flash'", "'sdpa'"]),
        ({"decode_backend": "fast"}, ["decode_backend='fast'"]),
        ({"vq_batch": "yes"}, ["vq_batch", "'yes'"]),
    ],
)
def test_from_pretrained_arguments_are_named(ckpt, kwargs, parts):
    kwargs = {"path_or_hub_id": ckpt, **kwargs}
    path = kwargs.pop("path_or_hub_id")
    with pytest.raises((TypeError, ValueError)) as e:
        WorldVLARuntime.from_pretrained(path, **kwargs)
    for part in parts:
        assert part in str(e.value), (part, str(e.value))


def test_constructor_arguments_are_named():
    with pytest.raises(ArgumentError, match="model='str'"):
        WorldVLARuntime("str", None)


def test_tensors_without_grad_are_accepted_like_arrays(rt):
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
    a = rt.predict_action_chunk(hist, "go", constrain_actions=True)
    b = rt.predict_action_chunk(torch.from_numpy(hist), "go", constrain_actions=True)
    np.testing.assert_array_equal(a, b)
    acts = rng.uniform(-1, 1, (2, 7))
    np.testing.assert_array_equal(rt.imagine(hist[:, 0], acts), rt.imagine(torch.from_numpy(hist[:, 0]),
                                                                             torch.from_numpy(acts)))


def test_decode_info_is_returned_not_stored(rt):
    res = rt.predict_action_chunk(HIST, "go", constrain_actions=True, return_info=True)
    assert res.actions.shape == (1, 2, 7) and res.info.mode == "parallel" and res.info.backend == "dynamic"
    assert len(res.info.tokens[0]) == 18 and res.info.passes == 8 and res.info.fallback == [False]
    assert res.info.prefill_s >= 0 and res.info.decode_s >= 0
    img = rt.imagine(FRAME, ACTION, return_info=True)
    assert img.frames.shape == (1, 32, 32, 3) and img.info.codes.shape == (1, 4, 4) and img.info.mode == "image"
    assert not [k for k in vars(rt) if k.startswith("last_")]
