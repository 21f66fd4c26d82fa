"""A plain (non-U-Net) convolutional denoiser, as the DID paper's second architecture."""

from __future__ import annotations

from torch import Tensor, nn

from ctdid.models.unet import SafeInstanceNorm2d

__all__ = ["PlainNet"]


class PlainNet(nn.Module):
    """A stack of 3x3 convolutions at full resolution, (B, 1, H, W) -> (B, 1, H, W).

    ``n_layers - 1`` blocks of 3x3 convolution + instance norm + ReLU with ``channels``
    channels, then a 3x3 convolution to one channel. Padding keeps the size, so any H and W
    work (:attr:`required_multiple` is 1).

    Parameters
    ----------
    n_layers : int, optional
        Number of convolutions (>= 2). Default 8.
    channels : int, optional
        Width of the hidden layers. Default 64.
    residual : bool, optional
        If true (default) the network predicts the noise and returns ``x - noise``; otherwise
        it returns the last convolution's output.
    """

    def __init__(self, *, n_layers: int = 8, channels: int = 64, residual: bool = True) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers must be >= 2, got {n_layers}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.residual = residual
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(n_layers - 1):
            layers += [
                nn.Conv2d(c_in, channels, 3, padding=1),
                SafeInstanceNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    @property
    def required_multiple(self) -> int:
        """Any size works: 1."""
        return 1

    def forward(self, x: Tensor) -> Tensor:
        """Denoise (B, 1, H, W) images in network units."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W), got {tuple(x.shape)}")
        out: Tensor = self.body(x)
        return x - out if self.residual else out
