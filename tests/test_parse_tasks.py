"""The one task-list parser (wvla_gym.protocol.parse_tasks) and its callers."""

from __future__ import annotations

import pytest

from wvla_gym.protocol import parse_tasks


@pytest.mark.parametrize(
    "spec, suite, want",
    [
        ("all", "libero_object", list(range(10))),
        (" ALL ", "libero_90", list(range(90))),
        ("3", "libero_goal", [3]),
        ("0,3,5", "libero_spatial", [0, 3, 5]),
        ("5,3,3", "libero_spatial", [3, 5]),
        ("0-4", "libero_10", [0, 1, 2, 3, 4]),
        ("0-2,5", "libero_object", [0, 1, 2, 5]),
        ("7, 1-2 ,2", "libero_object", [1, 2, 7]),
        ("4-4", "libero_object", [4]),
        ([9, 0, 9], "libero_object", [0, 9]),
    ],
)
def test_accepted_forms(spec, suite, want):
    assert parse_tasks(spec, suite) == want


@pytest.mark.parametrize(
    "spec, match",
    [
        ("x", r"tasks='x'.*'x' is not a task id or range.*'0-4'"),
        ("", r"tasks=''.*malformed"),
        ("1,,2", "malformed"),
        ("-1", "not a task id"),
        ("4-2", "empty"),
        ("1-", "not a task id"),
        ("10", r"task_id 10 is out of range for libero_object; expected ids in \[0, 9\]"),
        ("8-11", "task_id 10 is out of range"),
    ],
)
def test_rejected_forms_name_the_argument_and_the_form(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_tasks(spec, "libero_object")


def test_argument_name_and_suite_in_errors():
    with pytest.raises(ValueError, match="--tasks='a,b'"):
        parse_tasks("a,b", "libero_object", arg="--tasks")
    with pytest.raises(ValueError, match="suite='libero_nope'"):
        parse_tasks("0", "libero_nope")


def test_both_callers_use_it():
    import importlib

    cli_eval = importlib.import_module("wvla_gym.cli.eval")
    record = importlib.import_module("wvla_gym.data.record")
    assert record.parse_tasks is parse_tasks
    assert cli_eval.parse_tasks is parse_tasks
