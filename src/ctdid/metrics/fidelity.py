"""Fidelity of an image to a reference: RMSE and PSNR in HU, SSIM on a display window."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from ctdid.metrics._common import as_image, as_mask

__all__ = ["psnr", "rmse", "ssim"]


def _checked_pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = as_image(a, name="a")
    y = as_image(b, name="b")
    if x.shape != y.shape:
        raise ValueError(f"a and b differ in shape: {x.shape} vs {y.shape}")
    return x, y


def rmse(a: ArrayLike, b: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Root-mean-square error between two images.

    Parameters
    ----------
    a, b : array_like, shape (y, x) or (z, y, x)
        Images in HU, of the same shape.
    mask : array_like of bool, optional
        Pixels to compare; a 2-D mask applies to every slice. Default: all pixels.

    Returns
    -------
    float
        RMSE in HU.
    """
    x, y = _checked_pair(a, b)
    m = as_mask(mask, x.shape)
    d = (x - y)[m]
    return float(np.sqrt(np.mean(d * d)))


def psnr(a: ArrayLike, b: ArrayLike, *, data_range: float, mask: ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio, ``20 log10(data_range / RMSE)``.

    Parameters
    ----------
    a, b : array_like, shape (y, x) or (z, y, x)
        Images in HU, of the same shape.
    data_range : float
        The peak-to-peak range the PSNR refers to, in HU (e.g. 4095 for 12-bit CT, or the
        width of a display window). Must be > 0.
    mask : array_like of bool, optional
        Pixels to compare. Default: all pixels.

    Returns
    -------
    float
        PSNR in dB; ``inf`` for identical images.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0 HU, got {data_range!r}")
    err = rmse(a, b, mask=mask)
    if err == 0:
        return float("inf")
    return float(20.0 * np.log10(data_range / err))


def ssim(
    a: ArrayLike,
    b: ArrayLike,
    *,
    window: tuple[float, float] = (-160.0, 240.0),
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004) on display-windowed images.

    Both images are clipped to the HU ``window`` and scaled to [0, 1] before SSIM is computed,
    so the score measures what a reader sees in that window. The default window (-160, 240) HU
    is the usual abdominal soft-tissue window (level 40, width 400).

    Parameters
    ----------
    a, b : array_like, shape (y, x) or (z, y, x)
        Reference and test images in HU. Volumes are compared slice by slice (2-D SSIM) and
        the slice maps averaged.
    window : (float, float), optional
        Lower and upper HU of the display window.
    sigma : float, optional
        Standard deviation, in pixels, of the Gaussian weighting window (11x11 for 1.5).
    k1, k2 : float, optional
        Stabilising constants; C1 = (k1 L)^2, C2 = (k2 L)^2 with L = 1 the windowed range.

    Returns
    -------
    float
        Mean SSIM over the image, excluding a border of half the window, in [-1, 1].
    """
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise ValueError(f"window must be (low, high) HU with high > low, got {window!r}")
    x, y = _checked_pair(a, b)
    x = (np.clip(x, lo, hi) - lo) / (hi - lo)
    y = (np.clip(y, lo, hi) - lo) / (hi - lo)
    truncate = 3.5
    pad = int(truncate * sigma + 0.5)
    if min(x.shape[-2:]) <= 2 * pad:
        raise ValueError(f"images of {x.shape} are too small for SSIM with sigma={sigma}")
    sig = (0.0,) * (x.ndim - 2) + (sigma, sigma)

    def smooth(u: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(u, sig, truncate=truncate, mode="reflect")

    mx, my = smooth(x), smooth(y)
    vx = smooth(x * x) - mx * mx
    vy = smooth(y * y) - my * my
    cxy = smooth(x * y) - mx * my
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(smap[..., pad:-pad, pad:-pad].mean())
