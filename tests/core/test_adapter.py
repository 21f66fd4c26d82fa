"""Tests of ctdid.core.adapter: HU <-> network units, residual mode, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ctdid.core.adapter import HUAdapter, pad_to_multiple

HU_RANGE = (-1024.0, 3071.0)
UNITS = [(-1000.0, 1000.0), (-1024.0, 4096.0), (0.0, 1.0), (-1024.0, 1.0)]


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class NeedsMultiple(nn.Module):
    """Identity that refuses sizes that are not multiples of ``m`` and records what it saw."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        assert x.shape[-2] % self.m == 0 and x.shape[-1] % self.m == 0, tuple(x.shape)
        self.seen.append(tuple(x.shape))
        return x


def hu_ramp(h: int = 64, w: int = 64) -> Tensor:
    return torch.linspace(*HU_RANGE, h * w, dtype=torch.float32).reshape(1, 1, h, w)


@pytest.mark.parametrize(("offset", "scale"), UNITS)
def test_to_net_and_to_hu_are_inverse(offset: float, scale: float) -> None:
    adapter = HUAdapter(Identity(), hu_offset=offset, hu_scale=scale)
    hu = hu_ramp()
    back = adapter.to_hu(adapter.to_net(hu))
    # Two float32 roundings of values up to 4096 in magnitude.
    tol = 4 * float(np.finfo(np.float32).eps) * (abs(offset) + 3072.0)
    assert float((back - hu).abs().max()) <= tol
    net = adapter.to_net(hu)
    assert float((adapter.to_net(adapter.to_hu(net)) - net).abs().max()) <= 8 * tol / scale


@pytest.mark.parametrize(("offset", "scale"), UNITS)
def test_identity_network_reproduces_hu(offset: float, scale: float) -> None:
    adapter = HUAdapter(Identity(), hu_offset=offset, hu_scale=scale)
    hu = hu_ramp()
    out = adapter(hu)
    assert out.dtype == torch.float32
    assert float((out - hu).abs().max()) < 1e-3


def test_default_units_put_air_at_zero_and_water_at_one() -> None:
    adapter = HUAdapter(Identity())
    values = adapter.to_net(torch.tensor([-1000.0, 0.0, 1000.0]))
    torch.testing.assert_close(values, torch.tensor([0.0, 1.0, 2.0]))


def test_mismatched_offsets_are_detected() -> None:
    # A wrong offset on the way back (the bug the identity test must catch) moves every voxel.
    into = HUAdapter(Identity(), hu_offset=-1024.0, hu_scale=1000.0)
    back = HUAdapter(Identity(), hu_offset=-1000.0, hu_scale=1000.0)
    hu = hu_ramp()
    err = (back.to_hu(into.to_net(hu)) - hu).abs()
    assert float(err.min()) > 23.9


def test_residual_subtracts_the_network_output() -> None:
    hu = hu_ramp(16, 16)
    # Network predicting zero noise: residual mode is the identity.
    residual = HUAdapter(Zero(), hu_offset=-1000.0, hu_scale=1000.0, residual=True)
    assert float((residual(hu) - hu).abs().max()) < 1e-3
    # Non-residual: the zero image in network units is hu_offset.
    direct = HUAdapter(Zero(), hu_offset=-1000.0, hu_scale=1000.0, residual=False)
    torch.testing.assert_close(direct(hu), torch.full_like(hu, -1000.0))

    class Const(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.full_like(x, 0.05)

    # Noise of 0.05 network units = 50 HU is removed.
    out = HUAdapter(Const(), hu_scale=1000.0, residual=True)(hu)
    torch.testing.assert_close(out, hu - 50.0, atol=1e-3, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(37, 50), (16, 16), (5, 3), (1, 1), (33, 16)])
def test_padding_to_a_multiple_crops_back(h: int, w: int) -> None:
    net = NeedsMultiple(16)
    adapter = HUAdapter(net, size_multiple=16)
    hu = torch.randn(2, 1, h, w) * 500.0
    out = adapter(hu)
    assert out.shape == hu.shape
    assert net.seen[-1] == (2, 1, -(-h // 16) * 16, -(-w // 16) * 16)
    assert float((out - hu).abs().max()) < 1e-3


def test_padding_is_reflect_where_possible() -> None:
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    padded, size = pad_to_multiple(x, 4)
    assert size == (3, 3)
    assert padded.shape == (1, 1, 4, 4)
    # Reflection about the last column/row repeats column/row 1.
    torch.testing.assert_close(padded[0, 0, :3, 3], x[0, 0, :, 1])
    torch.testing.assert_close(padded[0, 0, 3, :3], x[0, 0, 1, :])
    # Too short to reflect (padding 2 >= length 2): edge values are repeated.
    short, _ = pad_to_multiple(torch.arange(2.0).reshape(1, 1, 1, 2), 4)
    torch.testing.assert_close(short[0, 0, 0], torch.tensor([0.0, 1.0, 1.0, 1.0]))
    same, _ = pad_to_multiple(x, 1)
    assert same is x


def test_network_that_mixes_pixels_sees_padded_input_and_is_cropped() -> None:
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    adapter = HUAdapter(conv, size_multiple=8, hu_offset=0.0, hu_scale=1.0)
    hu = torch.randn(1, 1, 13, 9)
    out = adapter(hu)
    padded, _ = pad_to_multiple(hu, 8)
    torch.testing.assert_close(out, conv(padded)[..., :13, :9])


def test_gradients_reach_network_parameters() -> None:
    conv = nn.Conv2d(1, 1, 1)
    adapter = HUAdapter(conv, size_multiple=4)
    adapter(hu_ramp(10, 10)).square().mean().backward()
    assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0
    assert [p for p in adapter.parameters()] == [conv.weight, conv.bias]


def test_public_attributes() -> None:
    net = Identity()
    adapter = HUAdapter(net, hu_offset=-1024, hu_scale=4096, residual=True, size_multiple=8)
    assert adapter.net is net
    assert (adapter.hu_offset, adapter.hu_scale) == (-1024.0, 4096.0)
    assert isinstance(adapter.hu_offset, float) and isinstance(adapter.hu_scale, float)
    assert adapter.residual is True and adapter.size_multiple == 8
    assert "hu_scale=4096.0" in repr(adapter)


@pytest.mark.parametrize(
    "kwargs",
    [{"hu_scale": 0.0}, {"hu_scale": -1.0}, {"hu_offset": float("nan")}, {"size_multiple": 0}],
)
def test_bad_options_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HUAdapter(Identity(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(8, 8), (1, 8, 8), (1, 2, 8, 8)])
def test_bad_input_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        HUAdapter(Identity())(torch.zeros(shape))


def test_network_changing_the_shape_is_reported() -> None:
    with pytest.raises(ValueError, match="shaped like its input"):
        HUAdapter(nn.Conv2d(1, 1, 3))(torch.zeros(1, 1, 8, 8))
