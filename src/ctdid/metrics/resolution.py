"""Spatial resolution: MTF from a slanted straight edge and TTF from a circular insert.

Both follow the same chain. Pixel centres are projected onto the edge normal to build an
oversampled edge spread function (ESF, bins of ``pixel / oversampling`` mm); its derivative is
the line spread function (LSF), tapered by a Tukey window (flat over the central half); the
modulus of its Fourier transform, normalised to 1 at zero frequency and corrected for the
binning and the finite difference, is the MTF. Frequencies are in cycles/mm.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage, signal

from ctdid.metrics._common import as_image, as_mask, pair_spacing

__all__ = ["MTF", "edge_mtf", "mtf_frequency", "mtf_from_esf", "ttf_from_insert"]


def mtf_frequency(frequencies: ArrayLike, mtf: ArrayLike, level: float) -> float:
    """Lowest frequency at which an MTF falls to ``level`` (linear interpolation).

    Parameters
    ----------
    frequencies : array_like
        Increasing frequencies in cycles/mm.
    mtf : array_like
        MTF values, 1 at zero frequency.
    level : float
        Level in (0, 1), e.g. 0.5 for MTF50.

    Returns
    -------
    float
        Frequency in cycles/mm; NaN if the MTF stays above ``level`` over the range given.
    """
    f = np.asarray(frequencies, dtype=float)
    m = np.asarray(mtf, dtype=float)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    below = np.nonzero(m < level)[0]
    if below.size == 0:
        return float("nan")
    k = int(below[0])
    if k == 0:
        return float(f[0])
    m0, m1 = m[k - 1], m[k]
    return float(f[k - 1] + (m0 - level) / (m0 - m1) * (f[k] - f[k - 1]))


@dataclasses.dataclass(frozen=True, eq=False)
class MTF:
    """A modulation (or task) transfer function and the edge spread function it came from.

    Attributes
    ----------
    frequencies : ndarray
        Frequencies in cycles/mm, from 0.
    mtf : ndarray
        Transfer, 1 at zero frequency.
    esf_positions : ndarray
        Distances of the ESF bins from the edge, in mm.
    esf : ndarray
        Oversampled ESF in HU.
    """

    frequencies: NDArray[np.float64]
    mtf: NDArray[np.float64]
    esf_positions: NDArray[np.float64]
    esf: NDArray[np.float64]

    def at(self, level: float) -> float:
        """Frequency in cycles/mm where the MTF first falls to ``level`` (NaN if never)."""
        return mtf_frequency(self.frequencies, self.mtf, level)

    @property
    def mtf50(self) -> float:
        """Frequency of 50 % transfer, cycles/mm."""
        return self.at(0.5)

    @property
    def mtf10(self) -> float:
        """Frequency of 10 % transfer, cycles/mm."""
        return self.at(0.1)

    def evaluate(self, f: ArrayLike) -> NDArray[np.float64]:
        """Transfer at frequencies ``f`` (cycles/mm), linearly interpolated, 0 beyond range."""
        return np.interp(np.abs(np.asarray(f, dtype=float)), self.frequencies, self.mtf, right=0.0)


def mtf_from_esf(
    positions: ArrayLike,
    values: ArrayLike,
    *,
    bin_width: float,
    half_width: float | None = None,
    f_max: float | None = None,
) -> MTF:
    """MTF from scattered samples of an edge spread function.

    Parameters
    ----------
    positions : array_like
        Signed distance of every sample from the edge, in mm (0 at the edge).
    values : array_like
        Sample values in HU.
    bin_width : float
        ESF bin width in mm (typically a quarter of a pixel).
    half_width : float, optional
        Use samples within ``+- half_width`` mm of the edge; default the largest symmetric
        range the samples cover.
    f_max : float, optional
        Highest frequency returned, cycles/mm; default ``1 / (4 bin_width)`` (twice the pixel
        Nyquist frequency at 4x oversampling).

    Returns
    -------
    MTF

    Raises
    ------
    ValueError
        If a quarter or more of the ESF bins near the edge are empty (edge too close to a pixel
        axis, or too few samples).
    """
    d = np.asarray(positions, dtype=float).ravel()
    v = np.asarray(values, dtype=float).ravel()
    if d.shape != v.shape or d.size < 8:
        raise ValueError("positions and values must be matching arrays of at least 8 samples")
    if not bin_width > 0:
        raise ValueError(f"bin_width must be > 0 mm, got {bin_width!r}")
    h = min(d.max(), -d.min()) if half_width is None else float(half_width)
    k = int(np.floor(h / bin_width))
    if k < 4:
        raise ValueError("the samples do not cover both sides of the edge")
    idx = np.rint(d / bin_width).astype(int) + k
    keep = (idx >= 0) & (idx <= 2 * k)
    counts = np.bincount(idx[keep], minlength=2 * k + 1)
    sums = np.bincount(idx[keep], weights=v[keep], minlength=2 * k + 1)
    x = (np.arange(2 * k + 1) - k) * float(bin_width)
    full = counts > 0
    central = np.abs(x) <= h / 2
    if np.mean(~full[central]) >= 0.25:
        raise ValueError(
            "too many empty ESF bins near the edge: tilt the edge a few degrees off the pixel "
            "axes, or use a larger ROI"
        )
    esf = np.asarray(np.interp(x, x[full], sums[full] / counts[full]), dtype=np.float64)
    lsf = np.gradient(esf, bin_width)
    if esf[-1] < esf[0]:
        lsf = -lsf
    lsf = lsf * signal.windows.tukey(lsf.size, alpha=0.5)
    n_fft = max(4096, 1 << int(np.ceil(np.log2(lsf.size))))
    spec = np.abs(np.fft.rfft(lsf, n_fft))
    freqs = np.fft.rfftfreq(n_fft, d=bin_width)
    if spec[0] <= 0:
        raise ValueError("the ESF has no step: no edge found")
    # central difference -> sin(2 pi f b)/(2 pi f b); bin averaging -> sin(pi f b)/(pi f b)
    correction = np.sinc(2 * freqs * bin_width) * np.sinc(freqs * bin_width)
    top = 1.0 / (4.0 * bin_width) if f_max is None else float(f_max)
    sel = (freqs <= top) & (correction > 0.3)
    mtf = spec[sel] / spec[0] / correction[sel]
    return MTF(freqs[sel], mtf, x.astype(np.float64), esf)


def _edge_crossings(sm: NDArray, mid: float, coord: NDArray) -> NDArray:
    """Sub-pixel position (along axis 1) where each row of ``sm`` crosses ``mid``; NaN if none."""
    out = np.full(sm.shape[0], np.nan)
    diff = np.diff(sm, axis=1)
    above = sm >= mid
    valid = np.isfinite(sm)
    change = (above[:, :-1] != above[:, 1:]) & valid[:, :-1] & valid[:, 1:]
    for r in range(sm.shape[0]):
        cand = np.nonzero(change[r])[0]
        if cand.size == 0:
            continue
        i = int(cand[np.argmax(np.abs(diff[r, cand]))])
        t = (mid - sm[r, i]) / (sm[r, i + 1] - sm[r, i])
        out[r] = coord[i] + t * (coord[i + 1] - coord[i])
    return out


def edge_mtf(
    img: ArrayLike,
    *,
    spacing: float | ArrayLike,
    roi: ArrayLike | None = None,
    oversampling: int = 4,
    half_width_mm: float | None = None,
) -> MTF:
    """MTF from a slightly tilted straight edge (slanted-edge method).

    The edge is located row by row (or column by column for a horizontal edge) where a lightly
    smoothed copy crosses the mid level between the two plateaus, and a straight line is fitted
    to those points. Pixel centres of the original image are projected onto the line's normal.

    Parameters
    ----------
    img : array_like, shape (y, x)
        Image in HU holding one straight edge between two uniform regions, tilted 2-10 degrees
        from the pixel axes.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    roi : array_like of bool, optional
        Pixels to use; default all.
    oversampling : int, optional
        ESF bins per pixel.
    half_width_mm : float, optional
        Use pixels within this distance of the edge; default as far as the ROI allows.

    Returns
    -------
    MTF
        Frequencies up to twice the pixel Nyquist frequency, in cycles/mm.
    """
    arr = as_image(img, ndim=(2,))
    m = as_mask(roi, arr.shape, name="roi")
    dy, dx = pair_spacing(spacing)
    rows, cols = np.nonzero(m)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    sub = arr[r0:r1, c0:c1]
    msub = m[r0:r1, c0:c1]
    sm = ndimage.gaussian_filter(sub, 1.0, mode="nearest")
    gy, gx = np.gradient(sm, dy, dx)
    vertical = np.abs(gx[msub]).sum() >= np.abs(gy[msub]).sum()
    yy = (np.arange(r0, r1) * dy)[:, None] * np.ones((1, c1 - c0))
    xx = np.ones((r1 - r0, 1)) * (np.arange(c0, c1) * dx)[None, :]
    if not vertical:  # work on the transpose: the edge runs along axis 0 there
        sub, sm, msub, yy, xx = sub.T, sm.T, msub.T, xx.T, yy.T
    lo, hi = np.percentile(sm[msub], [5, 95])
    mid = 0.5 * (lo + hi)
    along = xx[0]  # coordinate across the edge (mm)
    pos = _edge_crossings(np.where(msub, sm, np.nan), mid, along)
    ycoord = yy[:, 0]
    ok = np.isfinite(pos)
    if ok.sum() < 4:
        raise ValueError("no straight edge found in the ROI")
    b, a = np.polyfit(ycoord[ok], pos[ok], 1)
    for _ in range(2):  # drop rows far off the line (other structures) and refit
        res = pos - (a + b * ycoord)
        mad = np.nanmedian(np.abs(res[ok])) + 1e-9
        ok = np.isfinite(pos) & (np.abs(res) < 5 * 1.4826 * mad + 0.1 * max(dx, dy))
        b, a = np.polyfit(ycoord[ok], pos[ok], 1)
    dist = (xx - (a + b * yy)) / np.hypot(1.0, b)
    pixel = dx if vertical else dy
    return mtf_from_esf(
        dist[msub],
        sub[msub],
        bin_width=pixel / oversampling,
        half_width=half_width_mm,
        f_max=1.0 / pixel,
    )


def ttf_from_insert(
    img: ArrayLike,
    *,
    spacing: float | ArrayLike,
    center: tuple[float, float],
    radius_mm: float,
    oversampling: int = 4,
    half_width_mm: float | None = None,
    refine: bool = True,
) -> MTF:
    """Task transfer function from the radial ESF of a circular insert.

    Pixels around the insert are binned by their distance from its centre; the edge is at the
    insert's effective radius. With ``refine`` the centre is moved to the contrast-weighted
    centroid and the radius set from the insert's integrated contrast, which makes the result
    insensitive to small errors in ``center`` and ``radius_mm``.

    Parameters
    ----------
    img : array_like, shape (y, x)
        Image in HU with a uniform circular insert in a uniform background.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    center : (float, float)
        Approximate centre (row, col) of the insert, in pixel indices.
    radius_mm : float
        Approximate radius in mm.
    oversampling : int, optional
        ESF bins per pixel.
    half_width_mm : float, optional
        Use pixels within this distance of the insert's edge; default ``min(0.8 R, 15 mm)``,
        limited by the image border.
    refine : bool, optional
        Refine the centre and the radius from the image.

    Returns
    -------
    MTF
        The TTF, frequencies in cycles/mm up to twice the Nyquist frequency.
    """
    arr = as_image(img, ndim=(2,))
    dy, dx = pair_spacing(spacing)
    if not radius_mm > 0:
        raise ValueError(f"radius_mm must be > 0, got {radius_mm!r}")
    cy, cx = float(center[0]) * dy, float(center[1]) * dx
    yy = (np.arange(arr.shape[0]) * dy)[:, None]
    xx = (np.arange(arr.shape[1]) * dx)[None, :]
    big_r = float(radius_mm)
    h = min(0.8 * big_r, 15.0) if half_width_mm is None else float(half_width_mm)
    border = min(cy, cx, (arr.shape[0] - 1) * dy - cy, (arr.shape[1] - 1) * dx - cx)
    h = min(h, border - big_r)
    if h < 2 * max(dx, dy):
        raise ValueError("the insert is too close to the image border")
    for _ in range(3 if refine else 0):
        r = np.hypot(yy - cy, xx - cx)
        bg = float(np.median(arr[(r > big_r + 0.5 * h) & (r <= big_r + h)]))
        ins = float(np.median(arr[r < 0.5 * big_r]))
        if ins == bg:
            raise ValueError("the insert has no contrast against its background")
        frac = (arr - bg) / (ins - bg)
        near = r <= big_r + h
        w = np.where(near, frac, 0.0)
        cy = float((w * yy).sum() / w.sum())
        cx = float((w * xx).sum() / w.sum())
        big_r = float(np.sqrt(max(w.sum(), 0.0) * dy * dx / np.pi))
    r = np.hypot(yy - cy, xx - cx)
    sel = np.abs(r - big_r) <= h
    pixel = max(dx, dy)
    return mtf_from_esf(
        (r - big_r)[sel], arr[sel], bin_width=pixel / oversampling, half_width=h, f_max=1.0 / pixel
    )
