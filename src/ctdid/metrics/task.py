"""Task-based image quality: detectability index d' of a low-contrast disk.

Two observers are provided:

* the non-prewhitening matched filter (NPW), optionally with an eye filter (NPWE), computed in
  the frequency domain from a noise power spectrum and a task transfer function (TTF), both
  assumed radially symmetric;
* the channelized Hotelling observer (CHO) with Laguerre-Gauss channels, computed from
  ensembles of signal-present and signal-absent images.

The NPW(E) figure of merit is (ICRU Report 54; Richard & Samei 2012)::

    d'^2 = ( int |W|^2 TTF^2 E^2 df )^2 / int |W|^2 TTF^2 NPS E^4 df

with ``W`` the Fourier transform of the disk task (HU mm^2), ``NPS`` in HU^2 mm^2 and the
integrals over the 2-D frequency plane (cycles/mm).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from ctdid.metrics._common import pair_spacing
from ctdid.metrics.noise import NoisePowerSpectrum, radial_average
from ctdid.metrics.resolution import MTF

__all__ = [
    "CHOResult",
    "cho_detectability",
    "disk_task_spectrum",
    "eye_filter",
    "laguerre_gauss_channels",
    "npw_detectability",
]


def disk_task_spectrum(f: ArrayLike, *, diameter_mm: float, contrast_hu: float) -> NDArray:
    """Fourier transform of a uniform disk, ``C pi R^2 2 J1(2 pi R f) / (2 pi R f)``.

    Parameters
    ----------
    f : array_like
        Radial frequencies in cycles/mm.
    diameter_mm : float
        Disk diameter in mm.
    contrast_hu : float
        Disk contrast against the background in HU.

    Returns
    -------
    ndarray
        W(f) in HU mm^2.
    """
    if not diameter_mm > 0:
        raise ValueError(f"diameter_mm must be > 0, got {diameter_mm!r}")
    radius = 0.5 * float(diameter_mm)
    x = 2.0 * np.pi * radius * np.abs(np.asarray(f, dtype=float))
    safe = np.where(x > 0, x, 1.0)
    jinc = np.where(x > 0, 2.0 * special.j1(safe) / safe, 1.0)
    return np.asarray(float(contrast_hu) * np.pi * radius**2 * jinc)


def eye_filter(
    f: ArrayLike,
    *,
    viewing_distance_mm: float = 500.0,
    display_scale: float = 1.0,
    peak_cpd: float = 4.0,
    exponent: float = 1.3,
) -> NDArray:
    """Visual response ``E(rho) = rho^n exp(-c rho^2)``, normalised to a peak of 1.

    The form is that of Burgess and of Eckstein et al.; with ``n = 1.3`` and ``c`` set so the
    peak lies at ``peak_cpd`` cycles/degree (4 by default). Object frequencies are converted to
    visual frequencies with ``rho = f / display_scale * pi * viewing_distance_mm / 180``: one
    degree spans ``pi D / 180`` mm of screen at viewing distance ``D``.

    Parameters
    ----------
    f : array_like
        Frequencies in the object, cycles/mm.
    viewing_distance_mm : float, optional
        Distance from the eye to the display in mm (500 by default).
    display_scale : float, optional
        Screen millimetres per object millimetre (display magnification); 1 by default.
    peak_cpd : float, optional
        Visual frequency of peak response in cycles/degree.
    exponent : float, optional
        Power ``n`` of the low-frequency rise.

    Returns
    -------
    ndarray
        E(f), dimensionless, in [0, 1].
    """
    if not (viewing_distance_mm > 0 and display_scale > 0 and peak_cpd > 0 and exponent > 0):
        raise ValueError("viewing_distance_mm, display_scale, peak_cpd and exponent must be > 0")
    rho = np.abs(np.asarray(f, dtype=float)) / display_scale * np.pi * viewing_distance_mm / 180.0
    c = exponent / (2.0 * peak_cpd**2)
    return np.asarray((rho / peak_cpd) ** exponent * np.exp(-c * (rho**2 - peak_cpd**2)))


def _radial(
    curve: NoisePowerSpectrum | MTF | tuple[ArrayLike, ArrayLike], name: str
) -> tuple[NDArray, NDArray]:
    if isinstance(curve, NoisePowerSpectrum):
        f, v = radial_average(curve)
    elif isinstance(curve, MTF):
        f, v = curve.frequencies, curve.mtf
    else:
        f, v = (np.asarray(c, dtype=float) for c in curve)
    ok = np.isfinite(v)
    f, v = np.asarray(f, dtype=float)[ok], np.asarray(v, dtype=float)[ok]
    if f.ndim != 1 or f.size < 2 or np.any(np.diff(f) <= 0):
        raise ValueError(f"{name} must give increasing radial frequencies with finite values")
    return f, v


def npw_detectability(
    nps: NoisePowerSpectrum | tuple[ArrayLike, ArrayLike],
    *,
    diameter_mm: float,
    contrast_hu: float,
    ttf: MTF | tuple[ArrayLike, ArrayLike] | None = None,
    eye: bool = False,
    viewing_distance_mm: float = 500.0,
    display_scale: float = 1.0,
    f_max: float | None = None,
    n_samples: int = 4096,
) -> float:
    """Detectability d' of a disk for the non-prewhitening observer (NPW, or NPWE with eye).

    Parameters
    ----------
    nps : NoisePowerSpectrum or (f, nps_r)
        Noise power spectrum: a 2-D estimate (radially averaged here) or radial frequencies in
        cycles/mm with values in HU^2 mm^2.
    diameter_mm : float
        Lesion diameter in mm.
    contrast_hu : float
        Lesion contrast in HU.
    ttf : MTF or (f, ttf_r), optional
        Task transfer function; default a perfect system (TTF = 1).
    eye : bool, optional
        Include the eye filter :func:`eye_filter` (NPWE).
    viewing_distance_mm, display_scale : float, optional
        Passed to :func:`eye_filter`.
    f_max : float, optional
        Upper integration limit in cycles/mm; default the highest frequency of the NPS (the
        Nyquist frequency for a :class:`NoisePowerSpectrum`).
    n_samples : int, optional
        Number of radial frequency samples for the integrals.

    Returns
    -------
    float
        d' (dimensionless).
    """
    fn, pn = _radial(nps, "nps")
    top = fn[-1] if f_max is None else float(f_max)
    f = np.linspace(0.0, top, int(n_samples))
    w2 = disk_task_spectrum(f, diameter_mm=diameter_mm, contrast_hu=contrast_hu) ** 2
    if ttf is None:
        t2 = np.ones_like(f)
    else:
        ft, tt = _radial(ttf, "ttf")
        t2 = np.interp(f, ft, tt, right=0.0) ** 2
    e2 = (
        eye_filter(f, viewing_distance_mm=viewing_distance_mm, display_scale=display_scale) ** 2
        if eye
        else np.ones_like(f)
    )
    p = np.interp(f, fn, pn)
    ring = 2.0 * np.pi * f
    num = _trap(w2 * t2 * e2 * ring, f)
    den = _trap(w2 * t2 * p * e2 * e2 * ring, f)
    if den <= 0:
        raise ValueError("the noise power is zero over the task's frequencies")
    return float(num / np.sqrt(den))


def _trap(y: NDArray, x: NDArray) -> float:
    return float(0.5 * np.sum((y[1:] + y[:-1]) * np.diff(x)))


def laguerre_gauss_channels(
    shape: tuple[int, int],
    *,
    n_channels: int = 10,
    width: float,
    spacing: float | ArrayLike = 1.0,
    center: tuple[float, float] | None = None,
) -> NDArray[np.float64]:
    """Laguerre-Gauss channel profiles ``exp(-pi r^2 / a^2) L_p(2 pi r^2 / a^2)``.

    Parameters
    ----------
    shape : (int, int)
        Image shape (rows, cols).
    n_channels : int, optional
        Number of channels ``p = 0 .. n_channels - 1``.
    width : float
        Gaussian width ``a`` in mm (in pixels with the default ``spacing`` of 1). A Gaussian
        signal ``exp(-r^2 / (2 s^2))`` lies in the first channel when ``a = s sqrt(2 pi)``.
    spacing : float or (float, float), optional
        Pixel spacing (dy, dx) in mm.
    center : (float, float), optional
        Centre (row, col) in pixel indices; default the image centre ``((ny-1)/2, (nx-1)/2)``.

    Returns
    -------
    ndarray, shape (n_channels, rows, cols)
        Channels, each with unit Euclidean norm.
    """
    if n_channels < 1 or not width > 0:
        raise ValueError("n_channels must be >= 1 and width > 0")
    dy, dx = pair_spacing(spacing)
    ny, nx = int(shape[0]), int(shape[1])
    cy, cx = ((ny - 1) / 2, (nx - 1) / 2) if center is None else center
    yy = ((np.arange(ny) - cy) * dy)[:, None]
    xx = ((np.arange(nx) - cx) * dx)[None, :]
    q = 2.0 * np.pi * (yy * yy + xx * xx) / width**2
    gauss = np.exp(-0.5 * q)
    chans = np.stack([gauss * special.eval_laguerre(p, q) for p in range(n_channels)])
    return chans / np.linalg.norm(chans.reshape(n_channels, -1), axis=1)[:, None, None]


@dataclasses.dataclass(frozen=True)
class CHOResult:
    """Result of a channelized Hotelling observer study.

    Attributes
    ----------
    d_prime : float
        Detectability index from the channel-output means and pooled covariance.
    auc : float
        ``Phi(d' / sqrt(2))``, the AUC of a Gaussian equal-variance observer with that d'.
    auc_empirical : float
        Area under the empirical ROC of the template's test statistics (Mann-Whitney).
    template : ndarray, shape (rows, cols)
        The observer's image-domain template ``U S^-1 (v1 - v0)``.
    """

    d_prime: float
    auc: float
    auc_empirical: float
    template: NDArray[np.float64]


def cho_detectability(
    signal_present: ArrayLike,
    signal_absent: ArrayLike,
    *,
    width: float,
    n_channels: int = 10,
    spacing: float | ArrayLike = 1.0,
    center: tuple[float, float] | None = None,
) -> CHOResult:
    """Channelized Hotelling observer with Laguerre-Gauss channels.

    ``d'^2 = dv^T S^-1 dv`` with ``dv`` the difference of the mean channel outputs and ``S``
    the average of the two classes' channel covariances; both come from the same images
    (resubstitution), which biases d' slightly upwards for few images per channel.

    Parameters
    ----------
    signal_present, signal_absent : array_like, shape (n, rows, cols)
        Image ensembles in HU, each with at least ``n_channels + 2`` images.
    width : float
        Laguerre-Gauss width ``a`` in mm (pixels with ``spacing`` 1); see
        :func:`laguerre_gauss_channels`.
    n_channels : int, optional
        Number of channels.
    spacing : float or (float, float), optional
        Pixel spacing in mm.
    center : (float, float), optional
        Signal centre (row, col) in pixel indices; default the image centre.

    Returns
    -------
    CHOResult
    """
    g1 = np.asarray(signal_present, dtype=np.float64)
    g0 = np.asarray(signal_absent, dtype=np.float64)
    if g1.ndim != 3 or g0.ndim != 3 or g1.shape[1:] != g0.shape[1:]:
        raise ValueError("signal_present and signal_absent must be (n, rows, cols) of one size")
    if min(len(g1), len(g0)) < n_channels + 2:
        raise ValueError(f"need at least {n_channels + 2} images per class")
    u = laguerre_gauss_channels(
        (g1.shape[1], g1.shape[2]),
        n_channels=n_channels,
        width=width,
        spacing=spacing,
        center=center,
    ).reshape(n_channels, -1)
    v1 = g1.reshape(len(g1), -1) @ u.T
    v0 = g0.reshape(len(g0), -1) @ u.T
    dv = v1.mean(axis=0) - v0.mean(axis=0)
    s = 0.5 * (np.cov(v1, rowvar=False) + np.cov(v0, rowvar=False))
    s = np.atleast_2d(s)
    w = np.linalg.solve(s, dv)
    d2 = float(dv @ w)
    d = float(np.sqrt(max(d2, 0.0)))
    t1, t0 = v1 @ w, v0 @ w
    ranks = stats.rankdata(np.concatenate([t1, t0]))
    auc_emp = (ranks[: len(t1)].sum() - len(t1) * (len(t1) + 1) / 2) / (len(t1) * len(t0))
    template = (w @ u).reshape(g1.shape[1:])
    return CHOResult(d, float(stats.norm.cdf(d / np.sqrt(2))), float(auc_emp), template)
