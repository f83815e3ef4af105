"""pyproject's dependency minimums are real: installed versions meet them, and what our code imports exists.

The second part is what catches a too-low minimum: transformers 5.17-5.23 lack
``transformers.modeling_utils.slice_logits_to_keep`` or the ``cache`` field of the model outputs that
``wvla_gym.model.modeling_worldvla`` uses (checked by installing each release; 5.24 is the first that works).
"""

from __future__ import annotations

import ast
import importlib
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _dependencies() -> list[Requirement]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(r) for r in data["project"]["dependencies"]]


def _minimum(req: Requirement) -> Version | None:
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else None


def test_installed_versions_meet_the_minimums():
    reqs = _dependencies()
    assert {r.name.lower().replace("_", "-") for r in reqs} >= {"torch", "transformers", "huggingface-hub", "safetensors"}
    for req in reqs:
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is a dependency in pyproject.toml but is not installed")
        assert installed.release >= (_minimum(req) or Version("0")).release, f"{req.name} {installed} < {req}"
        # local tags (2.13.0+cpu) are not part of the comparison above; the upper bounds are
        assert req.specifier.contains(Version(installed.base_version), prereleases=True), f"{req.name} {installed} !~ {req}"


def _transformers_imports() -> set[tuple[str, str]]:
    """(module, name) of every ``from transformers... import name`` in our packages."""
    out = set()
    for pkg in ("wvla_gym", "agents", "envs"):
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and re.match(r"transformers(\.|$)", node.module):
                    out |= {(node.module, a.name) for a in node.names}
    return out


def test_transformers_symbols_we_import_exist():
    symbols = _transformers_imports()
    # the ones whose absence made 5.5-5.23 fail must be seen by the scan
    assert ("transformers.modeling_utils", "slice_logits_to_keep") in symbols
    missing = [f"{m}.{n}" for m, n in sorted(symbols) if not hasattr(importlib.import_module(m), n)]
    assert not missing, f"transformers {version('transformers')} lacks {missing}; raise the minimum in pyproject.toml"


def test_transformers_output_api_we_use():
    """``CausalLMOutputWithPast(cache=...)`` and ``outputs.cache`` (5.24; earlier: ``past_key_values``)."""
    from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

    for cls in (BaseModelOutputWithPast, CausalLMOutputWithPast):
        assert "cache" in cls.__dataclass_fields__, f"{cls.__name__} has no 'cache' field in transformers {version('transformers')}"


def test_huggingface_hub_strict_dataclasses():
    from huggingface_hub.dataclasses import strict  # noqa: F401  (WorldVLAConfig is a strict dataclass)
