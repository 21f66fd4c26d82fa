"""Noise magnitude and texture: ROI standard deviation and the 2-D noise power spectrum (NPS).

The NPS is normalised so that its integral over spatial frequency equals the pixel variance:
``sum(nps) * dfy * dfx == variance``, with ``nps`` in HU^2 mm^2 and frequencies in cycles/mm.
White noise of standard deviation sigma therefore has a flat NPS of ``sigma^2 * dy * dx``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.metrics._common import as_image, as_mask, pair_spacing, trapezoid

__all__ = [
    "NoisePowerSpectrum",
    "noise_std",
    "nps_2d",
    "nps_from_difference",
    "nps_mean_frequency",
    "nps_peak_frequency",
    "radial_average",
    "tile_patches",
]


@dataclasses.dataclass(frozen=True, eq=False)
class NoisePowerSpectrum:
    """A 2-D noise power spectrum on a centred (fft-shifted) frequency grid.

    Attributes
    ----------
    nps : ndarray, shape (ny, nx)
        Power spectral density in HU^2 mm^2; zero frequency at ``[ny // 2, nx // 2]``.
    fy, fx : ndarray
        Frequencies of the rows and columns in cycles/mm.
    spacing : (float, float)
        Pixel spacing (dy, dx) in mm of the patches it was estimated from.
    n_patches : int
        Number of noise realisations (patches) averaged.
    """

    nps: NDArray[np.float64]
    fy: NDArray[np.float64]
    fx: NDArray[np.float64]
    spacing: tuple[float, float]
    n_patches: int

    @property
    def variance(self) -> float:
        """Integral of the NPS over frequency, in HU^2: the pixel variance of the noise."""
        dfy = 1.0 / (self.nps.shape[0] * self.spacing[0])
        dfx = 1.0 / (self.nps.shape[1] * self.spacing[1])
        return float(self.nps.sum() * dfy * dfx)

    @property
    def radial_frequency(self) -> NDArray[np.float64]:
        """Distance |f| of every NPS sample from zero frequency, in cycles/mm."""
        return np.asarray(np.hypot(self.fy[:, None], self.fx[None, :]))


def noise_std(img: ArrayLike, roi: ArrayLike | None = None) -> float:
    """Standard deviation of an image in an ROI (ddof=1).

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU; the ROI should be uniform so that its spread is noise.
    roi : array_like of bool, optional
        Mask; a 2-D mask applies to every slice. Default: the whole image.

    Returns
    -------
    float
        Standard deviation in HU.
    """
    arr = as_image(img)
    vals = arr[as_mask(roi, arr.shape, name="roi")]
    if vals.size < 2:
        raise ValueError("roi must hold at least 2 pixels")
    return float(vals.std(ddof=1))


def tile_patches(
    img: ArrayLike,
    *,
    size: int,
    mask: ArrayLike | None = None,
    step: int | None = None,
) -> NDArray[np.float64]:
    """Cut square patches, wholly inside a mask, from an image or a stack of slices.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU.
    size : int
        Side of the square patches in pixels.
    mask : array_like of bool, optional
        Region the patches must lie in (e.g. a uniform phantom area); 2-D masks apply to every
        slice. Default: the whole image.
    step : int, optional
        Distance in pixels between patch corners; default ``size`` (no overlap).

    Returns
    -------
    ndarray, shape (n, size, size)
        The patches; ``n`` may be 0.
    """
    arr = as_image(img)
    if arr.ndim == 2:
        arr = arr[None]
    m = as_mask(mask, arr.shape)
    size = int(size)
    step = size if step is None else int(step)
    if size < 2 or step < 1:
        raise ValueError(f"size must be >= 2 and step >= 1 pixels, got {size}, {step}")
    out = []
    for z in range(arr.shape[0]):
        for r in range(0, arr.shape[1] - size + 1, step):
            for c in range(0, arr.shape[2] - size + 1, step):
                if m[z, r : r + size, c : c + size].all():
                    out.append(arr[z, r : r + size, c : c + size])
    if not out:
        return np.zeros((0, size, size))
    return np.stack(out)


def _detrend(patches: NDArray, how: str | None) -> NDArray:
    if how is None:
        return patches
    if how == "mean":
        return patches - patches.mean(axis=(1, 2), keepdims=True)
    if how == "plane":
        ny, nx = patches.shape[1:]
        yy, xx = np.meshgrid(
            np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij"
        )
        basis = np.stack([np.ones(ny * nx), yy.ravel(), xx.ravel()], axis=1)
        coef, *_ = np.linalg.lstsq(basis, patches.reshape(len(patches), -1).T, rcond=None)
        return patches - (basis @ coef).T.reshape(patches.shape)
    raise ValueError(f"detrend must be 'plane', 'mean' or None, got {how!r}")


def nps_2d(
    patches: ArrayLike,
    *,
    spacing: float | ArrayLike,
    detrend: Literal["plane", "mean"] | None = "plane",
    difference: bool = False,
) -> NoisePowerSpectrum:
    """Ensemble 2-D noise power spectrum of flat patches.

    ``NPS(fy, fx) = dy dx / (Ny Nx) * < |DFT(patch - trend)|^2 >``, averaged over patches.

    Parameters
    ----------
    patches : array_like, shape (n, ny, nx) or (ny, nx)
        Noise patches in HU: ROIs of a uniform region over several slices or scans, or of a
        noise-only image (see :func:`tile_patches`).
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    detrend : {'plane', 'mean', None}, optional
        Remove a least-squares plane (default) or the mean from each patch first, so that slow
        background variation does not leak into the low frequencies.
    difference : bool, optional
        The patches come from the difference of two independent realisations of the same
        scan; the NPS is halved to give that of one realisation.

    Returns
    -------
    NoisePowerSpectrum
        ``nps`` in HU^2 mm^2 on a centred grid; its integral equals the variance in HU^2.
    """
    arr = np.asarray(patches, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] < 1 or min(arr.shape[1:]) < 4:
        raise ValueError(f"patches must be (n, ny, nx) with ny, nx >= 4, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("patches hold NaN or Inf values")
    dy, dx = pair_spacing(spacing)
    n, ny, nx = arr.shape
    data = _detrend(arr, detrend)
    power = np.abs(np.fft.fft2(data)) ** 2
    nps = np.fft.fftshift(power.mean(axis=0)) * (dy * dx) / (ny * nx)
    if difference:
        nps = nps / 2.0
    fy = np.fft.fftshift(np.fft.fftfreq(ny, d=dy))
    fx = np.fft.fftshift(np.fft.fftfreq(nx, d=dx))
    return NoisePowerSpectrum(nps, fy, fx, (dy, dx), n)


def nps_from_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    spacing: float | ArrayLike,
    size: int = 64,
    mask: ArrayLike | None = None,
) -> NoisePowerSpectrum:
    """NPS of one realisation from two independent noisy scans of the same object.

    The object cancels in ``a - b``; the difference holds twice the noise variance, which is
    halved. Patches of ``size`` pixels are tiled inside ``mask`` (see :func:`tile_patches`).

    Parameters
    ----------
    a, b : array_like, shape (y, x) or (z, y, x)
        Two repeated scans in HU.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    size : int, optional
        Patch side in pixels.
    mask : array_like of bool, optional
        Region to tile (e.g. the body). Default: the whole image.

    Returns
    -------
    NoisePowerSpectrum
    """
    x = as_image(a, name="a")
    y = as_image(b, name="b")
    if x.shape != y.shape:
        raise ValueError(f"a and b differ in shape: {x.shape} vs {y.shape}")
    patches = tile_patches(x - y, size=size, mask=mask)
    if len(patches) == 0:
        raise ValueError(f"no {size}x{size} patch fits inside the mask")
    return nps_2d(patches, spacing=spacing, detrend="mean", difference=True)


def radial_average(
    nps: NoisePowerSpectrum, *, bin_width: float | None = None, f_max: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Average the 2-D NPS over rings of equal radial frequency.

    Parameters
    ----------
    nps : NoisePowerSpectrum
    bin_width : float, optional
        Ring width in cycles/mm; default the coarser of the two frequency steps.
    f_max : float, optional
        Highest ring in cycles/mm; default the lower Nyquist frequency ``1 / (2 max(dy, dx))``.

    Returns
    -------
    f : ndarray
        Ring centres in cycles/mm (the first is 0).
    nps_r : ndarray
        Mean NPS in each ring in HU^2 mm^2 (NaN for empty rings).
    """
    dy, dx = nps.spacing
    step = max(1.0 / (nps.nps.shape[0] * dy), 1.0 / (nps.nps.shape[1] * dx))
    width = step if bin_width is None else float(bin_width)
    top = 0.5 / max(dy, dx) if f_max is None else float(f_max)
    if not (width > 0 and top > 0):
        raise ValueError("bin_width and f_max must be > 0 cycles/mm")
    idx = np.rint(nps.radial_frequency / width).astype(int).ravel()
    nbins = int(np.floor(top / width + 1e-9)) + 1
    keep = idx < nbins
    sums = np.bincount(idx[keep], weights=nps.nps.ravel()[keep], minlength=nbins)
    counts = np.bincount(idx[keep], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.arange(nbins) * width, values


def _radial_for_texture(
    nps: NoisePowerSpectrum, f_max: float | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    f, p = radial_average(nps, f_max=f_max)
    ok = np.isfinite(p)
    f, p = f[ok], p[ok]
    if f.size < 3:
        raise ValueError("the NPS has too few frequency rings")
    # the zero-frequency sample is removed by detrending: continue the first ring down to f=0
    p = p.copy()
    p[0] = p[1]
    return f, p


def nps_mean_frequency(nps: NoisePowerSpectrum, *, f_max: float | None = None) -> float:
    """Mean frequency of the radial NPS, ``int f NPS(f) df / int NPS(f) df`` (noise texture).

    The zero-frequency sample, which detrending sets to zero, is replaced by the first ring.

    Parameters
    ----------
    nps : NoisePowerSpectrum
    f_max : float, optional
        Upper limit in cycles/mm; default the Nyquist frequency.

    Returns
    -------
    float
        Mean frequency in cycles/mm.
    """
    f, p = _radial_for_texture(nps, f_max)
    return float(trapezoid(f * p, f) / trapezoid(p, f))


def nps_peak_frequency(nps: NoisePowerSpectrum, *, f_max: float | None = None) -> float:
    """Frequency at which the radial NPS peaks (noise texture).

    A quadratic is fitted by least squares to the contiguous rings around the maximum that are
    within 10 % of it (at least three), which steadies the estimate of a broad peak.

    Parameters
    ----------
    nps : NoisePowerSpectrum
    f_max : float, optional
        Upper limit in cycles/mm; default the Nyquist frequency.

    Returns
    -------
    float
        Peak frequency in cycles/mm (0 for low-pass noise).
    """
    f, p = _radial_for_texture(nps, f_max)
    k = int(np.argmax(p))
    if k == 0 or k == len(p) - 1:
        return float(f[k])
    lo, hi = k - 1, k + 1
    while lo > 0 and p[lo - 1] >= 0.9 * p[k]:
        lo -= 1
    while hi < len(p) - 1 and p[hi + 1] >= 0.9 * p[k]:
        hi += 1
    a, b, _ = np.polyfit(f[lo : hi + 1], p[lo : hi + 1], 2)
    if a >= 0:
        return float(f[k])
    return float(np.clip(-b / (2 * a), f[lo], f[hi]))
