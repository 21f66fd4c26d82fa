"""U-Net denoisers: the paper's U-Net and a compact one sized for CPUs.

Both are encoder-decoders with stride-2 convolution downsampling, transposed-convolution
upsampling and skip connections by concatenation; every convolution is 3x3 and followed by
instance normalisation and ReLU, except the 1x1 output convolution. :class:`CompactUNet` is an
instance of the configurable :class:`UNet`; :class:`PaperUNet` follows the paper's
layout. Inputs and outputs are (B, 1, H, W) images in network units with H and W multiples of
the model's ``required_multiple`` (``2**depth``); :class:`ctdid.core.adapter.HUAdapter` pads
other sizes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CompactUNet", "PaperUNet", "SafeInstanceNorm2d", "UNet", "count_parameters"]

Upsample = Literal["transpose", "bilinear"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SafeInstanceNorm2d(nn.Module):
    """Instance normalisation that stays informative on tiny feature maps.

    Instance normalisation standardises each channel over its H x W values. On a 1x1 map this
    subtracts the only value from itself and the output is a constant (the bias) whatever the
    input: a U-Net with a 1x1 bottleneck then passes no information through it. This module
    therefore uses instance normalisation when ``H * W >= min_pixels`` and, on smaller maps,
    normalises each sample over all its channels and pixels together (layer normalisation,
    ``GroupNorm`` with one group), which keeps the pattern across channels. The learnable
    per-channel scale and bias are shared by both modes.

    Parameters
    ----------
    channels : int
        Number of channels.
    min_pixels : int, optional
        Smallest H * W normalised per channel. Default 16 (4 x 4).
    eps : float, optional
        Added to the variance. Default 1e-5.
    """

    def __init__(self, channels: int, *, min_pixels: int = 16, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.min_pixels = min_pixels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] * x.shape[-1] >= self.min_pixels:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        return F.group_norm(x, 1, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.channels}, min_pixels={self.min_pixels}, eps={self.eps}"


def _conv_block(
    c_in: int, c_out: int, *, stride: int = 1, min_norm_pixels: int, norm: bool = True
) -> nn.Sequential:
    if not norm:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(inplace=True)
        )
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        SafeInstanceNorm2d(c_out, min_pixels=min_norm_pixels),
        nn.ReLU(inplace=True),
    )


def _check_input(x: Tensor, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(
            f"expected (B, 1, H, W) with H and W multiples of {multiple}, got {tuple(x.shape)}"
        )


class UNet(nn.Module):
    """A configurable U-Net denoiser, (B, 1, H, W) -> (B, 1, H, W) in network units.

    Level 0 works at full resolution with ``base_channels`` channels; each of the ``depth``
    lower levels halves H and W with a stride-2 3x3 convolution and doubles the channels, up to
    ``max_channels``. Each level then has ``convs_per_level - 1`` further 3x3 convolutions. The
    decoder upsamples by 2, concatenates the encoder features of the same level, and applies
    ``convs_per_level`` 3x3 convolutions. A 1x1 convolution gives one output channel.

    Parameters
    ----------
    depth : int, optional
        Number of downsampling steps (>= 1). H and W must be multiples of ``2**depth``.
    base_channels : int, optional
        Channels at full resolution.
    max_channels : int, optional
        Cap on the channels of the deeper levels.
    convs_per_level : int, optional
        3x3 convolutions per encoder level (the first one strided below level 0) and per
        decoder level (>= 1).
    upsample : {"transpose", "bilinear"}, optional
        ``"transpose"``: 2x2 stride-2 transposed convolution; ``"bilinear"``: bilinear
        upsampling then a 3x3 convolution (no checkerboard artefacts).
    residual : bool, optional
        If true (default) the network predicts the noise and returns ``x - noise``, so its
        output is always the denoised image and an untrained network starts near identity.
    min_norm_pixels : int, optional
        Feature maps with fewer pixels than this are layer-normalised instead of
        instance-normalised (see :class:`SafeInstanceNorm2d`). Default 16.
    norm : bool, optional
        Instance-normalise after each convolution (default true, as the paper). Without it the
        network's output at a pixel does not depend on statistics of the whole input, so a
        network trained on patches behaves the same on a whole slice.
    """

    def __init__(
        self,
        *,
        depth: int = 4,
        base_channels: int = 32,
        max_channels: int = 512,
        convs_per_level: int = 2,
        upsample: Upsample = "transpose",
        residual: bool = True,
        min_norm_pixels: int = 16,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_channels < 1 or max_channels < base_channels:
            raise ValueError(
                f"need 1 <= base_channels <= max_channels, got {base_channels}, {max_channels}"
            )
        if convs_per_level < 1:
            raise ValueError(f"convs_per_level must be >= 1, got {convs_per_level}")
        if upsample not in ("transpose", "bilinear"):
            raise ValueError(f"upsample must be 'transpose' or 'bilinear', got {upsample!r}")
        self.depth = depth
        self.residual = residual
        self.channels = [min(base_channels * 2**i, max_channels) for i in range(depth + 1)]
        ch = self.channels
        mp = min_norm_pixels

        def extra(c: int) -> list[nn.Module]:
            return [
                _conv_block(c, c, min_norm_pixels=mp, norm=norm) for _ in range(convs_per_level - 1)
            ]

        self.encoders = nn.ModuleList(
            [nn.Sequential(_conv_block(1, ch[0], min_norm_pixels=mp, norm=norm), *extra(ch[0]))]
        )
        for i in range(1, depth + 1):
            self.encoders.append(
                nn.Sequential(
                    _conv_block(ch[i - 1], ch[i], stride=2, min_norm_pixels=mp, norm=norm),
                    *extra(ch[i]),
                )
            )
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(depth, 0, -1):
            if upsample == "transpose":
                up: nn.Module = nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2)
            else:
                up = nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(ch[i], ch[i - 1], 3, padding=1),
                )
            self.upsamplers.append(up)
            self.decoders.append(
                nn.Sequential(
                    _conv_block(2 * ch[i - 1], ch[i - 1], min_norm_pixels=mp, norm=norm),
                    *extra(ch[i - 1]),
                )
            )
        self.head = nn.Conv2d(ch[0], 1, 1)

    @property
    def required_multiple(self) -> int:
        """H and W of the input must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def forward(self, x: Tensor) -> Tensor:
        """Denoise (B, 1, H, W) images in network units; H, W multiples of ``2**depth``."""
        _check_input(x, self.required_multiple)
        skips = []
        h = x
        for enc in self.encoders:
            h = enc(h)
            skips.append(h)
        skips.pop()  # the bottleneck output is h itself
        for up, dec in zip(self.upsamplers, self.decoders, strict=True):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        out: Tensor = self.head(h)
        return x - out if self.residual else out


class PaperUNet(nn.Module):
    """The U-Net of the DID paper (Bai et al., arXiv 2011.14873), sized for 512 x 512 slices.

    Encoder: ``depth`` stride-2 3x3 convolutions, each followed by instance norm and ReLU; the
    first maps the 1-channel image to ``base_channels``, and each next one doubles the
    channels up to ``max_channels``. Nine of them take a 512 x 512 slice to a 1 x 1
    bottleneck. Decoder: 3x3 stride-2 transposed convolutions + instance norm + ReLU, each
    taking the previous decoder output concatenated with the encoder features of the same
    size (the deepest takes the bottleneck alone); the last one returns to full resolution
    with ``base_channels`` channels, and a 1x1 convolution gives the output. The network
    predicts the noise and returns ``x - noise`` when ``residual`` is true (default).

    With the defaults (depth 9, 32 channels doubling, capped at 256) it has 9.45 M
    parameters. Instance norm of a 1 x 1 map is constant whatever the input, so maps smaller
    than ``min_norm_pixels`` (at 512 x 512: the 2 x 2 and 1 x 1 levels) are layer-normalised
    instead (see :class:`SafeInstanceNorm2d`), and information flows through the bottleneck.

    Parameters
    ----------
    depth : int, optional
        Number of downsamplings (>= 1). Default 9: H and W multiples of 512.
    base_channels : int, optional
        Channels after the first downsampling and before the output convolution. Default 32.
    max_channels : int, optional
        Channel cap. Default 256.
    residual : bool, optional
        Return ``x - net(x)`` (true, default) or the network output directly.
    min_norm_pixels : int, optional
        Default 16 (4 x 4).
    """

    def __init__(
        self,
        *,
        depth: int = 9,
        base_channels: int = 32,
        max_channels: int = 256,
        residual: bool = True,
        min_norm_pixels: int = 16,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_channels < 1 or max_channels < base_channels:
            raise ValueError(
                f"need 1 <= base_channels <= max_channels, got {base_channels}, {max_channels}"
            )
        self.depth = depth
        self.residual = residual
        # channels[k] is the output of downsampling k (k = 1..depth); channels[0] the image.
        self.channels = [1] + [min(base_channels * 2**k, max_channels) for k in range(depth)]
        ch = self.channels
        mp = min_norm_pixels
        self.downs = nn.ModuleList(
            [
                _conv_block(ch[k - 1], ch[k], stride=2, min_norm_pixels=mp)
                for k in range(1, depth + 1)
            ]
        )
        self.ups = nn.ModuleList()
        for k in range(depth, 0, -1):
            c_in = ch[k] if k == depth else 2 * ch[k]
            c_out = ch[k - 1] if k > 1 else base_channels
            self.ups.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                    SafeInstanceNorm2d(c_out, min_pixels=mp),
                    nn.ReLU(inplace=True),
                )
            )
        self.head = nn.Conv2d(base_channels, 1, 1)

    @property
    def required_multiple(self) -> int:
        """H and W of the input must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def forward(self, x: Tensor) -> Tensor:
        """Denoise (B, 1, H, W) images in network units; H, W multiples of ``2**depth``."""
        _check_input(x, self.required_multiple)
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        skips.pop()  # the bottleneck is h itself
        for i, up in enumerate(self.ups):
            if i > 0:
                h = torch.cat([h, skips.pop()], dim=1)
            h = up(h)
        out: Tensor = self.head(h)
        return x - out if self.residual else out


class CompactUNet(UNet):
    """A small U-Net for CPUs: ctdid's default shipped denoiser.

    Four downsamplings, 8 channels at full resolution doubling to 128 at 1/16 resolution, one
    3x3 convolution (+ instance norm + ReLU) per encoder and decoder level, 2x2
    transposed-convolution upsampling and a global residual; see :class:`UNet` for the
    layers. With the defaults it has 0.24 M parameters and one forward + backward pass on a
    512 x 512 slice takes about 0.2 s on two CPU threads. Full-resolution convolutions
    dominate the cost, which is why the full-resolution level is kept narrow.

    Parameters
    ----------
    depth : int, optional
        Default 4 (H and W multiples of 16).
    base_channels : int, optional
        Default 8.
    max_channels : int, optional
        Default 128.
    convs_per_level : int, optional
        Default 1.
    upsample : {"transpose", "bilinear"}, optional
        Default ``"transpose"``.
    residual : bool, optional
        Default true.
    min_norm_pixels : int, optional
        Default 16.
    norm : bool, optional
        Instance norm after each convolution. Default true (as the paper's networks). The
        shipped ``unet-*`` weights use ``norm=False``: instance norm takes its statistics over
        the whole image, so a network trained on 128 x 128 patches saw other statistics on a
        whole 512 x 512 slice and shifted soft tissue by up to +35 HU there; without it the
        output on a crop equals the crop of the output (away from the crop's border).
    """

    def __init__(
        self,
        *,
        depth: int = 4,
        base_channels: int = 8,
        max_channels: int = 128,
        convs_per_level: int = 1,
        upsample: Upsample = "transpose",
        residual: bool = True,
        min_norm_pixels: int = 16,
        norm: bool = True,
    ) -> None:
        super().__init__(
            depth=depth,
            base_channels=base_channels,
            max_channels=max_channels,
            convs_per_level=convs_per_level,
            upsample=upsample,
            residual=residual,
            min_norm_pixels=min_norm_pixels,
            norm=norm,
        )
