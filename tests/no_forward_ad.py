"""A wrapper that removes forward-mode derivatives from a network, for the fallback tests."""

from __future__ import annotations

import torch
from torch import nn


class _IdentityWithoutJvp(torch.autograd.Function):
    """Identity with a backward but no forward-mode derivative."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        return g


class WithoutForwardAD(nn.Module):
    """``net`` followed by an identity that ``torch.func.jvp`` cannot differentiate."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return _IdentityWithoutJvp.apply(self.net(hu))
