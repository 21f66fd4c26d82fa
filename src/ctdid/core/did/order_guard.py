"""Keep a side's candidates ordered in noise: the guard of the robust and fast modes.

Along the high side (default -> input) the noise must rise, along the low side (default ->
``t_low``) it must fall. A fine-tuned network can break that order: near the low-noise end
the weights sometimes add fine texture of their own, so a later candidate is noisier than an
earlier one. :class:`OrderGuard` measures every new candidate with :func:`noise_proxy` and
lets it through only when it keeps its side ordered; a candidate that does not is dropped
(counted in the stack's ``info``), the trajectory goes on.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["OrderGuard", "noise_proxy"]

_MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian -> its standard deviation


def noise_proxy(image: Tensor, mask: Tensor) -> float:
    """A robust estimate of an image's pixel noise in HU, without a reference.

    The residual of a 3 x 3 mean filter (a high-pass that keeps most of the noise and little
    of the anatomy) is taken inside the body mask eroded by one pixel; its median absolute
    deviation, scaled to a Gaussian's standard deviation, is the estimate. Edges are few
    pixels and barely move the median, so the figure follows the noise of the flat regions.
    It is meant for comparing candidates of one image, not as an absolute noise figure.

    Parameters
    ----------
    image : Tensor, shape (B, 1, H, W)
        HU images.
    mask : Tensor, shape (B, 1, H, W)
        Body weights (0/1).

    Returns
    -------
    float
        The estimate in HU (larger is noisier); NaN when the eroded mask is empty.
    """
    img = image.detach().double()
    local = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    inside = -F.max_pool2d(-(mask.detach().double() > 0.5).double(), 3, stride=1, padding=1)
    r = (img - local)[inside > 0.5]
    if r.numel() == 0:
        return float("nan")
    med = r.median()
    return float(_MAD_TO_SIGMA * (r - med).abs().median())


class OrderGuard:
    """Admits a candidate only if its side stays ordered in noise (:func:`noise_proxy`).

    Parameters
    ----------
    default : Tensor, shape (B, 1, H, W)
        The default output, HU (the start of both sides).
    mask : Tensor
        Body weights of the same shape.
    tol : float, optional
        HU the noise may move the wrong way between neighbours. Default 0.

    Notes
    -----
    High side: a candidate must be at least as noisy as the last admitted one (the default
    first); low side: at most as noisy. ``dropped`` counts the refused ones per side.
    """

    def __init__(self, default: Tensor, mask: Tensor, *, tol: float = 0.0) -> None:
        self.mask = mask
        self.tol = float(tol)
        start = noise_proxy(default, mask)
        self.last = {"high": start, "low": start}
        self.dropped = {"high": 0, "low": 0}

    def admit(self, direction: str, image: Tensor) -> bool:
        """Whether ``image`` (the next candidate of ``direction``) keeps its side ordered."""
        value = noise_proxy(image, self.mask)
        last = self.last[direction]
        if value != value or last != last:  # NaN: nothing to measure, keep it
            return True
        ok = value >= last - self.tol if direction == "high" else value <= last + self.tol
        if ok:
            self.last[direction] = value
        else:
            self.dropped[direction] += 1
        return ok

    def info(self) -> dict[str, object]:
        """What the stack's ``info["order_guard"]`` records."""
        return {
            "dropped": dict(self.dropped),
            "noise_proxy_hu": {k: round(v, 4) for k, v in self.last.items()},
            "tol_hu": self.tol,
        }
