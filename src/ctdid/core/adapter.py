"""Wrap a denoising network so that it takes and returns Hounsfield units.

Networks work in their own units (for example ``(HU + 1000) / 1000``) and often need image
sizes that are multiples of some power of two. :class:`HUAdapter` hides both: the rest of ctdid
only ever hands it HU slices of any size and gets HU slices of the same size back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HUAdapter", "pad_to_multiple"]


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad the last two axes of ``x`` at the bottom/right up to a multiple of ``multiple``.

    Reflect padding is used where the axis is long enough (padding < axis length); otherwise the
    edge values are repeated (``replicate``), so every size is accepted.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W)
        Images.
    multiple : int
        Wanted multiple (>= 1) of H and W.

    Returns
    -------
    padded : Tensor, shape (B, C, H', W')
        ``x`` padded so that H' and W' are multiples of ``multiple``.
    size : tuple of int
        The original (H, W), for cropping back.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    pad_h = -h % multiple
    pad_w = -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    # F.pad takes (left, right, top, bottom) for the last two axes.
    if pad_h < h and pad_w < w:
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    else:
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return padded, (h, w)


class HUAdapter(nn.Module):
    """A denoiser that maps HU images to HU images.

    The wrapped network ``net`` maps (B, 1, H, W) images in its own units to images of the same
    shape. The adapter converts HU to network units, pads to the size the network needs, runs
    it, crops back and converts the result back to HU.

    Parameters
    ----------
    net : nn.Module
        Network mapping (B, 1, H, W) -> (B, 1, H, W) in network units.
    hu_offset : float, optional
        HU value that maps to 0 in network units. Default -1000 (air).
    hu_scale : float, optional
        HU per network unit, > 0: ``net_value = (HU - hu_offset) / hu_scale``. Default 1000,
        so water (0 HU) is 1 and air (-1000 HU) is 0.
    residual : bool, optional
        If true the network predicts the noise and the adapter returns ``x - net(x)`` (in
        network units); if false (default) the network output is the denoised image.
    size_multiple : int, optional
        Height and width are padded (reflect, bottom/right) up to a multiple of this before the
        network and the output is cropped back. Default 1 (no padding).
    meta : mapping, optional
        Free description of the model (its card, as a dict), kept as :attr:`meta`.

    Attributes
    ----------
    net : nn.Module
        The wrapped network; its parameters are the ones DID fine-tunes.
    hu_offset, hu_scale : float
        Unit conversion; ``hu_scale`` is the size of one network unit in HU, used to express
        losses in network units.
    residual : bool
        Whether the network predicts the noise.
    size_multiple : int
        Padding multiple.

    Notes
    -----
    The conversion is done in the input's dtype; float32 round trips :meth:`to_net` then
    :meth:`to_hu` to within a few float32 ulps of the HU value (< 1e-3 HU over [-1024, 3071]).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        hu_offset: float = -1000.0,
        hu_scale: float = 1000.0,
        residual: bool = False,
        size_multiple: int = 1,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        hu_offset = float(hu_offset)
        hu_scale = float(hu_scale)
        if not math.isfinite(hu_offset):
            raise ValueError(f"hu_offset must be finite, got {hu_offset}")
        if not (math.isfinite(hu_scale) and hu_scale > 0):
            raise ValueError(f"hu_scale must be finite and > 0, got {hu_scale}")
        if isinstance(size_multiple, bool) or int(size_multiple) != size_multiple:
            raise ValueError(f"size_multiple must be an integer >= 1, got {size_multiple!r}")
        if size_multiple < 1:
            raise ValueError(f"size_multiple must be an integer >= 1, got {size_multiple!r}")
        self.net = net
        self.hu_offset = hu_offset
        self.hu_scale = hu_scale
        self.residual = bool(residual)
        self.size_multiple = int(size_multiple)
        self.meta: dict[str, Any] = dict(meta or {})

    def to_net(self, hu: Tensor) -> Tensor:
        """Convert HU to network units: ``(hu - hu_offset) / hu_scale``."""
        return (hu - self.hu_offset) / self.hu_scale

    def to_hu(self, net: Tensor) -> Tensor:
        """Convert network units to HU: ``net * hu_scale + hu_offset`` (inverts :meth:`to_net`)."""
        return net * self.hu_scale + self.hu_offset

    def forward_net(self, x: Tensor) -> Tensor:
        """Denoise images already in network units (pads, runs, crops, applies ``residual``).

        Parameters
        ----------
        x : Tensor, shape (B, 1, H, W)
            Images in network units.

        Returns
        -------
        Tensor, shape (B, 1, H, W)
            Denoised images in network units.
        """
        _check_shape(x)
        padded, (h, w) = pad_to_multiple(x, self.size_multiple)
        out = self.net(padded)
        if not isinstance(out, Tensor) or out.shape != padded.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the network must return a tensor shaped like its input {tuple(padded.shape)}, "
                f"got {got}"
            )
        if self.residual:
            out = padded - out
        return out[..., :h, :w]

    def forward(self, hu: Tensor) -> Tensor:
        """Denoise HU images.

        Parameters
        ----------
        hu : Tensor, shape (B, 1, H, W)
            Images in HU, any H and W.

        Returns
        -------
        Tensor, shape (B, 1, H, W)
            Denoised images in HU.
        """
        return self.to_hu(self.forward_net(self.to_net(hu)))

    def extra_repr(self) -> str:
        return (
            f"hu_offset={self.hu_offset}, hu_scale={self.hu_scale}, residual={self.residual}, "
            f"size_multiple={self.size_multiple}"
        )


def _check_shape(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images shaped (B, 1, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected floating-point images, got dtype {x.dtype}")
