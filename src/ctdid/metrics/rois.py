"""Regions of interest: rectangular and circular masks, their statistics, and CNR.

ROI geometry is given in pixel indices: a centre (row, col) and a size or radius in pixels.
A 2-D mask applies to every slice of a volume.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.metrics._common import as_image, as_mask

__all__ = ["RoiStats", "circle_roi", "cnr", "rectangle_roi", "roi_stats"]


class RoiStats(NamedTuple):
    """Statistics of the pixels inside an ROI.

    Attributes
    ----------
    mean : float
        Mean in HU.
    std : float
        Sample standard deviation (ddof=1) in HU.
    n : int
        Number of pixels.
    """

    mean: float
    std: float
    n: int


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (rows, cols) of a slice, got {shape!r}")
    return int(shape[0]), int(shape[1])


def rectangle_roi(
    shape: tuple[int, int], *, center: tuple[float, float], size: tuple[float, float] | float
) -> NDArray[np.bool_]:
    """Boolean mask of an axis-aligned rectangle.

    Parameters
    ----------
    shape : (int, int)
        Shape (rows, cols) of the slice.
    center : (float, float)
        Centre (row, col) in pixel indices.
    size : float or (float, float)
        Height and width in pixels (one number for a square). Pixels whose centres satisfy
        ``-size/2 <= index - center < size/2`` are selected, so an integer size selects exactly
        ``size`` rows (and columns) away from the borders.

    Returns
    -------
    ndarray of bool, shape ``shape``
    """
    rows, cols = _check_shape(shape)
    hw = np.broadcast_to(np.asarray(size, dtype=float).reshape(-1), (2,))
    h, w = float(hw[0]), float(hw[1])
    if not (h > 0 and w > 0):
        raise ValueError(f"size must be > 0 pixels, got {size!r}")
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    eps = 1e-9
    mask = (r - center[0] >= -h / 2 - eps) & (r - center[0] < h / 2 - eps)
    mask = mask & (c - center[1] >= -w / 2 - eps) & (c - center[1] < w / 2 - eps)
    return mask


def circle_roi(
    shape: tuple[int, int], *, center: tuple[float, float], radius: float
) -> NDArray[np.bool_]:
    """Boolean mask of a disc.

    Parameters
    ----------
    shape : (int, int)
        Shape (rows, cols) of the slice.
    center : (float, float)
        Centre (row, col) in pixel indices.
    radius : float
        Radius in pixels; pixels whose centres are at a distance <= ``radius`` are selected.

    Returns
    -------
    ndarray of bool, shape ``shape``
    """
    rows, cols = _check_shape(shape)
    if not radius > 0:
        raise ValueError(f"radius must be > 0 pixels, got {radius!r}")
    r = np.arange(rows)[:, None] - center[0]
    c = np.arange(cols)[None, :] - center[1]
    return np.asarray(r * r + c * c <= radius * radius)


def roi_stats(img: ArrayLike, roi: ArrayLike) -> RoiStats:
    """Mean, standard deviation and pixel count of an image inside an ROI.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU.
    roi : array_like of bool
        Mask of the image's shape, or a 2-D mask applied to every slice.

    Returns
    -------
    RoiStats
        ``(mean, std, n)``: mean and sample standard deviation (ddof=1) in HU, pixel count.
    """
    arr = as_image(img)
    vals = arr[as_mask(roi, arr.shape, name="roi")]
    std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return RoiStats(float(vals.mean()), std, int(vals.size))


def cnr(img: ArrayLike, lesion_roi: ArrayLike, background_roi: ArrayLike) -> float:
    """Contrast-to-noise ratio ``2 |S - S_b| / (sigma + sigma_b)``.

    This is the definition used by Bai et al. (arXiv 2011.14873): the lesion-background mean
    difference over the average of the two standard deviations.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU.
    lesion_roi, background_roi : array_like of bool
        Masks of the lesion and of the background.

    Returns
    -------
    float
        CNR (dimensionless); ``inf`` when both ROIs are noiseless and differ.
    """
    s = roi_stats(img, lesion_roi)
    b = roi_stats(img, background_roi)
    num = 2.0 * abs(s.mean - b.mean)
    den = s.std + b.std
    if den == 0:
        return float("inf") if num > 0 else 0.0
    return float(num / den)
