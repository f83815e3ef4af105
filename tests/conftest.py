"""Fixtures shared by several test modules (opt-in per module, so no module's thread setting leaks)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are latency-bound: one torch thread avoids oversubscribing a shared CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
