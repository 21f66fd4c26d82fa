"""A small noisy phantom and a fixed smoothing denoiser (HU in, HU out) for the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ctdid.core import HUAdapter
from smoother_model import Smoother

torch.set_num_threads(1)

SIZE = 96


@pytest.fixture
def model() -> HUAdapter:
    return HUAdapter(Smoother(), meta={"name": "smoother-test"})


@pytest.fixture(scope="session")
def phantom() -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(noisy, clean, spacing): a water disk with two inserts, 40 HU white noise, 0.8 mm."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    clean = np.full((SIZE, SIZE), -1000.0, dtype=np.float32)
    clean[np.hypot(yy - 48, xx - 48) < 44] = 0.0
    clean[np.hypot(yy - 30, xx - 30) < 8] = 300.0
    clean[np.hypot(yy - 62, xx - 60) < 10] = 60.0
    rng = np.random.default_rng(0)
    noisy = (clean + rng.normal(0.0, 40.0, clean.shape)).astype(np.float32)
    return noisy, clean, (0.8, 0.8)


def _flat_noise(img: np.ndarray, clean: np.ndarray) -> float:
    gy, gx = np.gradient(clean.astype(np.float64))
    flat = (np.hypot(gy, gx) < 1e-3) & (clean > -200)
    flat = ndimage.binary_erosion(flat, iterations=6)  # away from edges the blur moved
    assert flat.sum() > 100
    return float((img - clean)[flat].std())


@pytest.fixture
def flat_noise():
    """``flat_noise(img, clean)``: STD of ``img - clean`` where the clean phantom is flat.

    Pixels at least 6 pixels away from any edge of the clean phantom are used.
    """
    return _flat_noise


@pytest.fixture
def falls():
    """``falls(noise)``: noise never rises by more than 0.1 HU along a list and falls overall."""

    def check(noise: list[float]) -> bool:
        steps = np.diff(np.asarray(noise, dtype=np.float64))
        return bool(np.all(steps <= 0.1) and noise[-1] < 0.5 * noise[0])

    return check
