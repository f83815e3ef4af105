"""Every HDF5 file committed to the repository reads in LIBERO's own ``get_dataset_info`` (official attributes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest.importorskip("h5py")

REPO = Path(__file__).resolve().parents[1]


def _committed_hdf5() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.hdf5"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        files = [REPO / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file in the tree
        files = [p for p in REPO.rglob("*.hdf5") if ".venv" not in p.parts]
    return sorted(files)


def test_there_are_committed_hdf5_files():
    assert any(p.parent.name == "libero_sample" for p in _committed_hdf5())


@pytest.mark.parametrize("path", _committed_hdf5(), ids=lambda p: p.name)
def test_libero_get_dataset_info_reads_it(path, capsys):
    from wvla_gym.utils.libero_setup import prepare_libero

    prepare_libero()  # before importing libero: it would otherwise prompt for a config
    dataset_utils = pytest.importorskip("libero.libero.utils.dataset_utils")
    dataset_utils.get_dataset_info(str(path), verbose=False)
    assert "language instruction:" in capsys.readouterr().out
