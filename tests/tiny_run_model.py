"""A tiny residual CNN in HU and a noisy disk slice, for quick runner tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ctdid.volume import CTVolume


class Tiny(nn.Module):
    """Two convolutions, residual, in (HU + 1000) / 1000; seeded, so every copy is the same."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)
        with torch.no_grad():
            self.c2.weight.mul_(0.1)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        z = (hu + 1000.0) / 1000.0
        return (z - self.c2(torch.relu(self.c1(z)))) * 1000.0 - 1000.0


def disk_scan(n: int = 40, *, seed: int = 0) -> CTVolume:
    """One n x n slice: a 40 HU disk in air with 30 HU Gaussian noise, 0.8 mm pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.full((n, n), -1000.0, np.float32)
    img[yy**2 + xx**2 < (0.42 * n) ** 2] = 40.0
    img = img + rng.normal(0.0, 30.0, img.shape).astype(np.float32)
    return CTVolume(img[None].astype(np.float32), spacing=(1.0, 0.8, 0.8))


def disk_volume(n: int = 40, z: int = 5, *, seed: int = 0) -> CTVolume:
    """z noisy n x n slices of a 40 HU disk in air with a 400 HU insert moving along x."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    slices = []
    for i in range(z):
        img = np.full((n, n), -1000.0, np.float32)
        img[yy**2 + xx**2 < (0.42 * n) ** 2] = 40.0
        img[(yy + 6) ** 2 + (xx - 5 + i) ** 2 < 20] = 400.0
        slices.append(img + rng.normal(0.0, 30.0, img.shape).astype(np.float32))
    return CTVolume(np.stack(slices).astype(np.float32), spacing=(2.0, 0.8, 0.8))
