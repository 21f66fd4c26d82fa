"""Tests of ctdid.models.unet: shapes, sizes, residual output and the 1x1 bottleneck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ctdid.models.unet import CompactUNet, PaperUNet, SafeInstanceNorm2d, UNet, count_parameters


def test_paper_unet_has_the_paper_size() -> None:
    net = PaperUNet()
    assert net.required_multiple == 512
    assert net.channels == [1, 32, 64, 128, 256, 256, 256, 256, 256, 256]
    # The issue measured 9.45 M parameters for the paper's network.
    assert count_parameters(net) == 9_447_393


def test_compact_unet_is_compact() -> None:
    net = CompactUNet()
    assert net.required_multiple == 16
    assert 200_000 <= count_parameters(net) <= 500_000


@pytest.mark.parametrize(
    "net",
    [
        PaperUNet(depth=5),
        PaperUNet(depth=3, base_channels=4, max_channels=8),
        CompactUNet(),
        UNet(depth=2, base_channels=4, convs_per_level=2, upsample="bilinear"),
        UNet(depth=1, base_channels=2, max_channels=2),
    ],
    ids=["paper-d5", "paper-small", "compact", "unet-bilinear", "unet-d1"],
)
def test_output_has_the_input_shape_and_all_parameters_learn(net: torch.nn.Module) -> None:
    torch.manual_seed(0)
    m = net.required_multiple
    x = torch.randn(2, 1, 2 * m if m < 32 else m, m)
    y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    without_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert without_grad == []


@pytest.mark.parametrize("shape", [(1, 1, 24, 32), (1, 1, 32, 20), (1, 2, 32, 32), (32, 32)])
def test_sizes_that_are_not_multiples_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        CompactUNet()(torch.zeros(shape))


def test_bottleneck_of_1x1_passes_information() -> None:
    # depth 5 at 32 x 32: the bottleneck is 1 x 1, where plain instance norm outputs a constant
    # and no gradient would reach the deepest convolution.
    torch.manual_seed(0)
    net = PaperUNet(depth=5)
    seen: list[Tensor] = []
    net.downs[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    a, b = torch.randn(2, 1, 1, 32, 32)
    net(a)
    net(b)
    assert seen[0].shape[-2:] == (1, 1)
    assert float((seen[0] - seen[1]).abs().max()) > 1e-3
    assert float(seen[0].std()) > 0.1  # not constant across channels
    net(a).square().mean().backward()
    deepest = net.downs[-1][0].weight.grad
    assert deepest is not None and float(deepest.abs().max()) > 0


def test_plain_instance_norm_at_the_bottleneck_fails() -> None:
    # The failure SafeInstanceNorm2d avoids: with instance norm at every size (min_norm_pixels
    # 1) torch refuses per-channel statistics of a single value.
    net = PaperUNet(depth=5, min_norm_pixels=1)
    with pytest.raises(ValueError, match="spatial element"):
        net(torch.randn(1, 1, 32, 32))


def test_safe_instance_norm_modes() -> None:
    norm = SafeInstanceNorm2d(4, min_pixels=16)
    x = torch.randn(2, 4, 4, 4) * 3 + 1
    torch.testing.assert_close(norm(x), F.instance_norm(x))
    small = torch.randn(2, 4, 1, 1)
    out = norm(small)
    torch.testing.assert_close(out, F.group_norm(small, 1))
    assert float(out.detach().std()) > 0.5


def test_residual_output_is_input_minus_the_noise_estimate() -> None:
    torch.manual_seed(1)
    direct = CompactUNet(depth=2, base_channels=4, residual=False)
    residual = CompactUNet(depth=2, base_channels=4, residual=True)
    residual.load_state_dict(direct.state_dict())
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(residual(x), x - direct(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 0}, {"base_channels": 0}, {"base_channels": 64, "max_channels": 32}],
)
def test_bad_configs_raise(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PaperUNet(**kwargs)
    with pytest.raises(ValueError):
        UNet(**kwargs)


def test_unet_rejects_bad_upsample_and_convs() -> None:
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="convs_per_level"):
        UNet(convs_per_level=0)


def test_norm_free_unet_is_local_and_instance_norm_is_not() -> None:
    """Without instance norm a pixel's output depends only on its neighbourhood, so a network
    trained on patches behaves the same on a whole slice; with it, the whole input matters."""
    from ctdid.models.unet import CompactUNet, SafeInstanceNorm2d

    torch.manual_seed(0)
    x = torch.randn(1, 1, 256, 256)
    x[..., :, :64] += 3.0  # content far from the centre changes the global statistics
    free = CompactUNet(norm=False).eval()
    assert not any(isinstance(m, SafeInstanceNorm2d) for m in free.modules())
    normed = CompactUNet().eval()
    with torch.no_grad():
        for net, same in ((free, True), (normed, False)):
            whole = net(x)[..., 112:144, 112:144]
            crop = net(x[..., 48:208, 48:208])[..., 64:96, 64:96]
            assert torch.allclose(whole, crop, atol=1e-5) is same
