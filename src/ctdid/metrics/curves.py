"""Comparing noise-resolution curves at equal noise.

Two ways of trading noise for resolution are compared fairly only at the same noise: any
smoother lowers the RMSE of a noisy image. A *curve* here is a set of (noise, quality) points,
one per candidate image (e.g. flat-region STD in HU and RMSE vs a reference in HU).
:func:`curve_at` reads a curve at given noise levels by linear interpolation, and
:func:`difference_at_equal_noise` averages the difference of two curves over the noise range
they share, on one side of the default or the other.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["curve_at", "difference_at_equal_noise", "noise_levels", "side_range"]

Side = Literal["high", "low"]


def curve_at(noise: ArrayLike, quality: ArrayLike, levels: ArrayLike) -> NDArray[np.float64]:
    """Quality of a curve at the given noise levels (linear interpolation in noise).

    Parameters
    ----------
    noise, quality : array_like, shape (n,)
        The curve's points, in any order (they are sorted by noise; points of equal noise are
        averaged). A curve whose noise is not monotone along its candidates is read as the
        set of its points.
    levels : array_like
        Noise levels, in the units of ``noise``. Levels outside the curve's range give NaN.

    Returns
    -------
    ndarray of float64
    """
    n = np.asarray(noise, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if n.shape != q.shape or n.size == 0:
        raise ValueError(f"noise {n.shape} and quality {q.shape} must be equal, non-empty 1-D")
    ok = np.isfinite(n) & np.isfinite(q)
    n, q = n[ok], q[ok]
    lv = np.asarray(levels, dtype=np.float64)
    if n.size == 0:
        return np.full(lv.shape, np.nan)
    un, inv = np.unique(n, return_inverse=True)
    uq = np.bincount(inv, weights=q) / np.bincount(inv)
    out = np.interp(lv, un, uq)
    out[(lv < un[0]) | (lv > un[-1])] = np.nan
    if un.size == 1:
        out[lv == un[0]] = uq[0]
    return out


def side_range(
    side: Side, *, input_noise: float, default_noise: float, low_noise: float
) -> tuple[float, float]:
    """Noise interval of one side of the default: ``high`` (default .. input), ``low``
    (t_low .. default), in HU."""
    if side == "high":
        return (min(default_noise, input_noise), max(default_noise, input_noise))
    if side == "low":
        return (min(low_noise, default_noise), max(low_noise, default_noise))
    raise ValueError(f"side must be 'high' or 'low', got {side!r}")


def noise_levels(lo: float, hi: float, *, n: int = 16) -> NDArray[np.float64]:
    """``n`` noise levels spaced evenly in log(noise) over [lo, hi] (lo, hi > 0)."""
    if not (0 < lo <= hi):
        raise ValueError(f"need 0 < lo <= hi, got {lo}, {hi}")
    levels = np.exp(np.linspace(np.log(lo), np.log(hi), int(n)))
    levels[0], levels[-1] = lo, hi  # exactly, not rounded through log/exp
    return levels


def difference_at_equal_noise(
    noise_a: ArrayLike,
    quality_a: ArrayLike,
    noise_b: ArrayLike,
    quality_b: ArrayLike,
    *,
    within: tuple[float, float],
    n: int = 16,
) -> tuple[float, int]:
    """Mean of ``quality_a - quality_b`` at equal noise, over the range both curves cover.

    Parameters
    ----------
    noise_a, quality_a, noise_b, quality_b : array_like
        Two curves (e.g. a DID stack and the blend of the same image).
    within : (float, float)
        Noise interval to compare in (e.g. :func:`side_range`), HU.
    n : int, optional
        Noise levels, log-spaced over the interval both curves cover within ``within``.

    Returns
    -------
    (float, int)
        The mean difference (NaN when the curves share no noise level in ``within``) and the
        number of levels it was averaged over. Negative means ``a`` has the lower value
        (better for RMSE-like measures).
    """
    na = np.asarray(noise_a, dtype=np.float64)
    nb = np.asarray(noise_b, dtype=np.float64)
    lo = max(float(within[0]), float(np.nanmin(na)), float(np.nanmin(nb)))
    hi = min(float(within[1]), float(np.nanmax(na)), float(np.nanmax(nb)))
    if not (lo > 0 and hi > lo):
        return float("nan"), 0
    levels = noise_levels(lo, hi, n=n)
    d = curve_at(na, quality_a, levels) - curve_at(nb, quality_b, levels)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), 0
    return float(d.mean()), int(d.size)
