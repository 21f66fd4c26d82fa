"""Shared fixtures: the optional real data folder and small synthetic phantoms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the checkout; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real CT data are optional)")
    return SHARED_DATA


@pytest.fixture
def disk_phantom() -> np.ndarray:
    """A 2-slice 64x64 phantom in HU: air, a water disk, a bone insert and a 10 HU lesion."""
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    r = np.hypot(yy - 32, xx - 32)
    img = np.full((64, 64), -1000.0, dtype=np.float32)
    img[r < 28] = 0.0
    img[np.hypot(yy - 20, xx - 40) < 5] = 700.0
    img[np.hypot(yy - 40, xx - 24) < 4] = 10.0
    return np.stack([img, img + 1.5]).astype(np.float32)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch thread (the CI machine has two cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
