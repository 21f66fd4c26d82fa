"""A fixed 5x5 Gaussian smoothing network (trainable), for tests that need a simple denoiser."""

from __future__ import annotations

import torch
from torch import nn


class Smoother(nn.Module):
    """A 5x5 Gaussian convolution with replicate padding, in network units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, padding=2, padding_mode="replicate")
        g = torch.exp(-((torch.arange(5.0) - 2) ** 2) / 2.0)
        k = torch.outer(g, g)
        with torch.no_grad():
            self.conv.weight.copy_((k / k.sum())[None, None])
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def build() -> Smoother:
    """Factory for ``--model path/to/smoother_model.py:build`` (a model file the CLI imports)."""
    return Smoother()
