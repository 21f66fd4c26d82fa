"""The one-sample fine-tuning problem: bounds, progress, body weights and training crops."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

__all__ = [
    "Problem",
    "TrainingSet",
    "crop_windows",
    "edge_emphasis",
    "progress",
    "training_set",
    "whitening_filter",
]


def progress(
    y: ArrayLike | Tensor,
    default: ArrayLike | Tensor,
    bound: ArrayLike | Tensor,
    mask: ArrayLike | Tensor | None = None,
) -> float:
    """Progress of an image from the default toward a bound, inside a mask.

    Parameters
    ----------
    y, default, bound : array_like or Tensor
        Images in HU, all the same shape.
    mask : array_like or Tensor of bool, optional
        Where to measure (the body); default everywhere.

    Returns
    -------
    float
        ``<y - default, bound - default>_mask / ||bound - default||^2_mask``, not clipped:
        0 at the default, 1 at the bound (or its projection), negative when moving away.
        0 when the bound equals the default inside the mask.
    """
    yt, y0, t = (
        torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a).double()
        for a in (y, default, bound)
    )
    w = torch.ones_like(y0) if mask is None else torch.as_tensor(np.asarray(mask)).to(y0)
    dt = (t - y0) * w
    denom = float((dt * dt).sum())
    if denom <= 0.0:
        return 0.0
    return float(((yt - y0) * dt).sum()) / denom


def edge_emphasis(y0: Tensor, mask: Tensor, *, gain: float) -> Tensor:
    """Per-pixel loss factor ``1 + gain * g / mean_body(g)`` that weighs edges up.

    Parameters
    ----------
    y0 : Tensor
        (B, 1, H, W) default output in HU; its gradient magnitude ``g`` (central
        differences, HU/pixel) marks the edges. The default is used rather than the input
        because its gradient is not dominated by noise.
    mask : Tensor
        (B, 1, H, W) 0/1 body mask; ``g`` is normalised by its mean inside the body.
    gain : float
        >= 0; 0 gives ones (no emphasis).

    Returns
    -------
    Tensor
        (B, 1, H, W) factors >= 1, same dtype as ``y0``.
    """
    y = torch.nn.functional.pad(y0.detach(), (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (y[..., 1:-1, 2:] - y[..., 1:-1, :-2])
    gy = 0.5 * (y[..., 2:, 1:-1] - y[..., :-2, 1:-1])
    g = torch.sqrt(gx * gx + gy * gy)
    m = mask.to(g.dtype)
    mean = float((g * m).sum() / m.sum().clamp_min(1.0))
    if gain <= 0.0 or not mean > 0.0:
        return torch.ones_like(g)
    return 1.0 + gain * g / mean


def whitening_filter(residual: Tensor, mask: Tensor, *, cap: float = 10.0) -> Tensor:
    """Gain per 2-D frequency that whitens the noise the model removed, for the loss.

    Parameters
    ----------
    residual : Tensor
        (B, 1, H, W) input minus default output in HU: mostly the noise the model removed.
    mask : Tensor
        (B, 1, H, W) 0/1 body mask; the residual is measured inside it.
    cap : float
        The gain stays within ``[1 / cap, cap]`` of its root-mean-square value.

    Returns
    -------
    Tensor
        (H, W // 2 + 1) real gains on the ``rfft2`` grid, ``(P / mean P) ** -0.5`` of the
        residual's power spectrum ``P`` (averaged over the batch, smoothed over 5 x 5
        frequencies), clipped to ``cap`` and scaled to a root-mean-square of 1. Filtering an
        image with it weighs each frequency down by the noise power there.
    """
    e = (residual * mask).detach().float()
    power = (torch.fft.rfft2(e).abs() ** 2).mean(dim=(0, 1))
    power = torch.nn.functional.avg_pool2d(
        power[None, None], 5, stride=1, padding=2, count_include_pad=False
    )[0, 0]
    power = power / power.mean().clamp_min(1e-30)
    gain = power.clamp_min(1e-12).rsqrt().clamp(1.0 / cap, cap)
    return gain / torch.sqrt((gain * gain).mean())


@dataclasses.dataclass
class Problem:
    """Fine-tuning data for one direction: input, bound, default output and body weights.

    All images are (B, 1, H, W) HU tensors; ``mask`` is 0/1 (float64), ``loss_weight`` the
    per-pixel loss weight (``None``: all pixels equal), ``loss_filter`` optional gains on the
    ``rfft2`` grid (:func:`whitening_filter`) applied to the error before it is squared.
    """

    x: Tensor
    target: Tensor
    y0: Tensor
    mask: Tensor
    loss_weight: Tensor | None = None
    loss_filter: Tensor | None = None

    def __post_init__(self) -> None:
        diff = (self.target - self.y0).double() * self.mask
        self.dt = diff
        self.denom = float((diff * diff).sum())

    def filtered(self, v: Tensor) -> Tensor:
        """``v`` filtered with ``loss_filter`` (unchanged without one)."""
        if self.loss_filter is None:
            return v
        spec = torch.fft.rfft2(v) * self.loss_filter.to(v.device)
        return torch.fft.irfft2(spec, s=tuple(v.shape[-2:]))

    def loss(self, y: Tensor) -> Tensor:
        """Mean squared error to the bound in HU^2, weighted by ``loss_weight`` if given (and
        of the filtered error, with ``loss_filter``)."""
        sq = self.filtered(y - self.target) ** 2
        if self.loss_weight is None:
            return sq.mean()
        return (sq * self.loss_weight).sum() / self.loss_weight.sum()

    @property
    def degenerate(self) -> bool:
        """True when the bound equals the default inside the mask (nothing to move toward)."""
        return not self.denom > 0.0

    def progress(self, y: Tensor) -> float:
        """:func:`progress` of ``y`` toward this problem's bound (0 when degenerate)."""
        if self.degenerate:
            return 0.0
        return float(((y.detach().double() - self.y0) * self.dt).sum()) / self.denom


def crop_windows(
    mask: Tensor, n: int, size: int, seed: int
) -> list[tuple[int, int, int, int, int]]:
    """``n`` (slice, y0, y1, x0, x1) windows of side ``size`` centred on random body pixels.

    The positions come from a generator seeded with ``seed`` (no global random state); a
    window is shifted inside the image where it would cross the border.
    """
    gen = torch.Generator().manual_seed(seed)
    _, _, h, w = mask.shape
    ch, cw = min(size, h), min(size, w)
    inside = torch.nonzero(mask[:, 0].cpu() > 0)
    out = []
    for _ in range(n):
        i = int(torch.randint(len(inside), (1,), generator=gen))
        s, cy, cx = (int(v) for v in inside[i])
        y0 = min(max(cy - ch // 2, 0), h - ch)
        x0 = min(max(cx - cw // 2, 0), w - cw)
        out.append((s, y0, y0 + ch, x0, x0 + cw))
    return out


def crop_count(
    shape: tuple[int, ...], *, faithful: bool, crop_size: int, n_crops: int | None, pools: bool
) -> tuple[int, str]:
    """Crops to fine-tune on for a (B, 1, H, W) training batch, and why (for ``info``)."""
    if faithful or crop_size == 0:
        return 0, "whole image (the faithful mode)" if crop_size else "crop_size 0"
    if n_crops is not None:
        return n_crops, "n_crops given"
    if pools:
        return 0, "whole image: the network normalises over the image (crops would change it)"
    b, _, h, w = shape
    n = 4 * b
    if n * min(crop_size, h) * min(crop_size, w) * 2 > b * h * w:
        return 0, "whole image: the crops would cover half of it or more"
    return n, "4 crops per training slice (the network has no image-wide normalisation)"


@dataclasses.dataclass
class TrainingSet:
    """What the weights are fine-tuned on: some slices and/or crops of the input.

    ``x``, ``y0``, ``mask`` and ``bounds["high"|"low"]`` are (N, 1, h, w) tensors;
    ``full`` is true when they are the whole input (the training output is then the
    rendered candidate itself).
    """

    x: Tensor
    y0: Tensor
    mask: Tensor
    bounds: dict[str, Tensor]
    n_crops: int
    why: str
    crop_size: int
    full: bool


def training_set(
    xb: Tensor,
    y0: Tensor,
    mask: Tensor,
    bounds: dict[str, Tensor],
    *,
    train_index: NDArray[np.int_] | None,
    crops: tuple[int, str],
    crop_size: int,
    seed: int,
) -> tuple[TrainingSet, list[tuple[int, int, int, int, int]]]:
    """Select the training slices (``train_index``) and crops; the crops' ``y0`` is not set.

    Returns the set and the crop windows; with crops, the caller recomputes ``y0`` on them
    (the model's output on a crop is not the crop of its output near the border).
    """
    n_crops, why = crops
    all_slices = train_index is None or len(train_index) == xb.shape[0]
    x_tr, y0_tr, mask_tr, bounds_tr = xb, y0, mask, dict(bounds)
    if not all_slices:
        ti = torch.as_tensor(train_index, device=xb.device)
        x_tr, y0_tr, mask_tr = xb[ti], y0[ti], mask[ti]
        bounds_tr = {key: v[ti] for key, v in bounds.items()}
    wins: list[tuple[int, int, int, int, int]] = []
    if n_crops > 0:
        wins = crop_windows(mask_tr, n_crops, crop_size, seed)

        def crop(t: Tensor) -> Tensor:
            return torch.cat([t[s : s + 1, :, a:b, c:d] for s, a, b, c, d in wins])

        x_tr, mask_tr = crop(x_tr), crop(mask_tr)
        bounds_tr = {key: crop(v) for key, v in bounds_tr.items()}
    full = all_slices and n_crops == 0
    size = crop_size if n_crops > 0 else 0
    return TrainingSet(x_tr, y0_tr, mask_tr, bounds_tr, n_crops, why, size, full), wins
