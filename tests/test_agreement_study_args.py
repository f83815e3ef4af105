"""``benchmarks/agreement_study.py``: its policy list is checked before any episode runs (bad input names the
argument and the expected form), and ``--policies NAME=SPEC`` entries resolve through the policy registry."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("agreement_study", ROOT / "benchmarks" / "agreement_study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


BASE = ["--noise-levels", "--baselines", "--tasks", "0", "--trials", "1"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--policies", "knn_e3"], ["--policies", "NAME=SPEC"]),
        (["--policies", "=knn:x"], ["--policies", "NAME=SPEC"]),
        (["--policies", "a=nonsense"], ["nonsense"]),
        (["--policies", "a=zero", "--policy-kwargs", "a=[1]"], ["--policy-kwargs", "JSON object"]),
        (["--policies", "a=zero", "--policy-kwargs", "a={oops"], ["--policy-kwargs", "JSON object"]),
        (["--policies", "a=zero", "--policy-kwargs", "b={}"], ["--policy-kwargs", "['b']", "not in --policies"]),
        (["--sides", "sim"], ["sides", "real", "imagined"]),
    ],
)
def test_bad_policy_lists_are_refused_before_any_episode(tmp_path, extra, words):
    with pytest.raises(ValueError) as e:
        _study().main([*BASE, "--out", str(tmp_path / "out"), *extra])
    for w in words:
        assert w in str(e.value)
    assert not (tmp_path / "out" / "episodes.jsonl").exists()  # nothing ran
