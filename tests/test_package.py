"""Package foundation: light import, registration, import-linter contracts, pinned versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light():
    code = (
        "import sys, wvla_gym, gymnasium as gym;"
        "heavy=[m for m in ('torch','mujoco','libero','robosuite','transformers') if m in sys.modules];"
        "assert not heavy, heavy;"
        "assert 'WorldVLA-LIBERO-v0' in gym.registry and 'WorldVLA-Imagined-v0' in gym.registry"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registration_entry_points():
    import wvla_gym  # noqa: F401

    spec = gym.spec("WorldVLA-LIBERO-v0")
    assert spec.entry_point == "envs.libero:LiberoEnv"
    im = gym.spec("WorldVLA-Imagined-v0")
    assert im.entry_point == "envs.imagined:ImaginedEnv"
    assert im.vector_entry_point == "envs.imagined_vector:ImaginedVectorEnv"


def test_module_prefixed_id_imports_package():
    # gym.make imports the module before ':'; our own argument check fires, proving the id resolved.
    code = (
        "import gymnasium as gym\n"
        "try:\n    gym.make('wvla_gym:WorldVLA-LIBERO-v0', task_suite='nope')\n"
        "except ValueError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "task_suite='nope' is not a LIBERO suite" in out


def test_import_linter_contracts():
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_pins_match_pyproject():
    import tomllib

    from wvla_gym.utils.libero_setup import PINNED_VERSIONS

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["libero"]
    pins = dict(r.split("==") for r in extra if "==" in r)
    for name, version in PINNED_VERSIONS.items():
        assert pins[name] == version, name


def test_version_drift_warns(monkeypatch):
    import importlib.metadata as md
    import warnings

    from wvla_gym.utils import libero_setup

    real = md.version
    monkeypatch.setattr(libero_setup.md, "version", lambda n: "9.9.9" if n == "mujoco" else real(n))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        drift = libero_setup.check_versions()
    assert drift == ["mujoco==9.9.9 (pinned 3.3.2)"]
    assert any("mujoco==9.9.9" in str(x.message) for x in w)


def test_bad_gl_backend():
    import pytest

    from wvla_gym.utils.libero_setup import select_gl_backend

    with pytest.raises(ValueError, match="gl_backend"):
        select_gl_backend("glfw")
