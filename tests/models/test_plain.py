"""Tests of ctdid.models.plain.PlainNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctdid.models.plain import PlainNet
from ctdid.models.unet import SafeInstanceNorm2d


def test_layout_is_eight_convolutions_with_norm_and_relu_except_the_last() -> None:
    net = PlainNet()
    layers = list(net.body)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, SafeInstanceNorm2d) for m in layers) == 7
    assert sum(isinstance(m, nn.ReLU) for m in layers) == 7
    assert isinstance(layers[-1], nn.Conv2d) and layers[-1].out_channels == 1
    assert net.required_multiple == 1


@pytest.mark.parametrize(("h", "w"), [(23, 31), (32, 32), (7, 5)])
def test_any_size_in_same_size_out(h: int, w: int) -> None:
    net = PlainNet(channels=8)
    x = torch.randn(2, 1, h, w)
    y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_residual_and_gradients() -> None:
    torch.manual_seed(0)
    direct = PlainNet(n_layers=3, channels=4, residual=False)
    residual = PlainNet(n_layers=3, channels=4, residual=True)
    residual.load_state_dict(direct.state_dict())
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(residual(x), x - direct(x))
    residual(x).square().mean().backward()
    assert all(p.grad is not None for p in residual.parameters())


def test_bad_options_and_shapes() -> None:
    with pytest.raises(ValueError):
        PlainNet(n_layers=1)
    with pytest.raises(ValueError):
        PlainNet(channels=0)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        PlainNet(channels=2)(torch.zeros(1, 3, 8, 8))
