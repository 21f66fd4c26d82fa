"""Classical denoisers swept over their strength: total variation and BM3D.

A learned denoiser and DID's fine-tuning are worth their cost only if they beat what a
classical method gives at the same noise. Two well-kept implementations are used, not
hand-written ones:

* total variation: :func:`skimage.restoration.denoise_tv_chambolle` (Chambolle's projection
  algorithm for the ROF model); its ``weight`` is in HU (the image is passed in HU);
* BM3D: the ``bm3d`` package (Mäkinen, Azzari and Foi, 2020) with a *correlated* noise power
  spectrum: CT noise after filtered back-projection is not white, so its PSD is estimated from
  flat regions of the image (:func:`estimate_noise_psd`) and scaled by a strength factor.

Each sweep is returned as a candidate stack (high resolution -> low noise) whose high-side end
is the noisy input itself. TV's default is the TV image whose flat-region noise matches the
learned default's, its low-side end the one matching ``t_low``'s noise; BM3D's default is BM3D
at the estimated noise (factor 1), its low-side end at ``max_factor`` times that noise STD.
Their strengths are the position along the sweep (``i / n`` of the parameter's way), not a
measured progress.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.baselines.stack import check_image, make_stack, resolve_body
from ctdid.core.candidates import CandidateStack
from ctdid.metrics.baselines import match_noise
from ctdid.metrics.labels import find_flat_regions, noise_label

__all__ = ["bm3d_denoise", "bm3d_stack", "estimate_noise_psd", "tv_denoise", "tv_stack"]

Region = tuple[slice, slice]


def tv_denoise(hu: ArrayLike, *, weight: float) -> NDArray[np.float32]:
    """Total-variation denoising of one slice in HU (scikit-image, Chambolle).

    Parameters
    ----------
    hu : array_like, shape (H, W)
        Image in HU.
    weight : float
        TV weight in HU, >= 0; larger is smoother, 0 returns the input.

    Returns
    -------
    ndarray of float32

    Notes
    -----
    scikit-image stops when the energy changes by less than ``eps`` times its first value;
    on HU images (air at -1000 HU makes that value large) its default ``eps = 2e-4`` stopped
    early enough that the noise was not monotone in the weight, so ``eps = 1e-6`` and at most
    300 iterations are used (about 0.25 s per 512 x 512 slice).
    """
    from skimage.restoration import denoise_tv_chambolle

    img = check_image(hu, "hu")
    w = float(weight)
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"weight must be a finite number >= 0 (HU), got {weight}")
    if w == 0:
        return img.copy()
    out = denoise_tv_chambolle(img, weight=w, eps=1e-6, max_num_iter=300)
    return np.asarray(out, dtype=np.float32)


def _detrended(patch: NDArray[np.float64]) -> NDArray[np.float64]:
    ny, nx = patch.shape
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    basis = np.stack([np.ones(ny * nx), yy.ravel(), xx.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(basis, patch.ravel(), rcond=None)
    return (patch.ravel() - basis @ coef).reshape(ny, nx)


def estimate_noise_psd(
    hu: ArrayLike,
    regions: Sequence[Region],
    *,
    shape: tuple[int, int] | None = None,
    max_lag: int | None = None,
) -> NDArray[np.float64]:
    """Noise power spectrum of an image, estimated from flat regions, in bm3d's convention.

    The noise autocovariance is estimated from the regions (a least-squares plane removed from
    each), for lags up to ``max_lag`` pixels, tapered with a 2-D Bartlett window (which keeps
    the spectrum non-negative), placed circularly in an array of ``shape`` and Fourier
    transformed.

    Parameters
    ----------
    hu : array_like, shape (H, W)
        Noisy image in HU.
    regions : sequence of (slice, slice)
        Flat regions (e.g. :func:`ctdid.metrics.find_flat_regions`).
    shape : (int, int), optional
        Size of the PSD (the image to denoise). Default the image's.
    max_lag : int, optional
        Largest lag in pixels. Default half the smallest region side (at least 2).

    Returns
    -------
    ndarray of float64, shape ``shape``
        ``E|FFT(noise)|^2`` (unnormalised FFT): its mean over frequencies is
        ``H * W * variance`` (HU^2), as :func:`bm3d.bm3d` expects for ``sigma_psd``.

    Raises
    ------
    ValueError
        If no region has at least 4 x 4 pixels.
    """
    img = np.asarray(hu, dtype=np.float64)
    out_shape = img.shape if shape is None else (int(shape[0]), int(shape[1]))
    patches = [img[r] for r in regions if img[r].shape[0] >= 4 and img[r].shape[1] >= 4]
    if not patches:
        raise ValueError("estimate_noise_psd needs at least one flat region of 4 x 4 pixels")
    side = min(min(p.shape) for p in patches)
    lag = max(2, side // 2) if max_lag is None else int(max_lag)
    size = (2 * max(p.shape[0] for p in patches), 2 * max(p.shape[1] for p in patches))
    num = np.zeros(size)
    cnt = np.zeros(size)
    for p in patches:
        r = _detrended(p)
        f = np.fft.fft2(r, s=size)
        num += np.fft.ifft2(np.abs(f) ** 2).real
        o = np.fft.fft2(np.ones_like(r), s=size)
        cnt += np.fft.ifft2(np.abs(o) ** 2).real
    lags = np.arange(-lag, lag + 1)
    acov = num[np.ix_(lags % size[0], lags % size[1])] / np.maximum(
        cnt[np.ix_(lags % size[0], lags % size[1])], 1.0
    )
    taper = 1.0 - np.abs(lags) / (lag + 1.0)
    acov *= taper[:, None] * taper[None, :]
    kernel = np.zeros(out_shape)
    kernel[np.ix_(lags % out_shape[0], lags % out_shape[1])] = acov
    psd = np.fft.fft2(kernel).real
    np.maximum(psd, 0.0, out=psd)
    return psd * (out_shape[0] * out_shape[1])


def bm3d_denoise(
    hu: ArrayLike, *, psd: NDArray[np.float64], factor: float = 1.0, profile: str = "np"
) -> NDArray[np.float32]:
    """BM3D of one slice in HU with a correlated noise PSD scaled by ``factor**2``.

    Parameters
    ----------
    hu : array_like, shape (H, W)
        Image in HU.
    psd : ndarray, shape (H, W)
        Noise PSD from :func:`estimate_noise_psd`.
    factor : float, optional
        Noise STD multiplier, >= 0: 1 denoises at the estimated noise, larger is smoother,
        0 returns the input.
    profile : str, optional
        bm3d profile (``"np"``, ``"refilter"``, ...). Default ``"np"``.

    Returns
    -------
    ndarray of float32
    """
    import bm3d

    img = check_image(hu, "hu")
    f = float(factor)
    if not (math.isfinite(f) and f >= 0):
        raise ValueError(f"factor must be a finite number >= 0, got {factor}")
    if psd.shape != img.shape:
        raise ValueError(f"psd shape {psd.shape} differs from the image's {img.shape}")
    if f == 0:
        return img.copy()
    with _numpy_trapz():
        out = bm3d.bm3d(img.astype(np.float64), psd * f * f, profile=profile)
    return np.asarray(out, dtype=np.float32)


@contextlib.contextmanager
def _numpy_trapz() -> Iterator[None]:
    """Lend ``numpy.trapz`` (removed in numpy 2.4) to bm4d 4.2.5 for one call, then remove it.

    bm4d (under bm3d) integrates correlated-noise PSDs with ``np.trapz``; its successor
    ``np.trapezoid`` computes the same.
    """
    missing = not hasattr(np, "trapz")
    if missing:
        setattr(np, "trapz", np.trapezoid)  # noqa: B010
    try:
        yield
    finally:
        if missing:
            delattr(np, "trapz")


def _regions(
    default: NDArray[np.float32], spacing: tuple[float, float], body: NDArray[np.bool_],
    regions: Sequence[Region] | None,
) -> list[Region]:  # fmt: skip
    if regions is not None:
        return [tuple(r) for r in regions]  # type: ignore[misc]
    found = find_flat_regions(default, spacing=spacing, body_mask=body)
    if not found:
        raise ValueError("no flat region found inside the body to measure the noise")
    return [tuple(r) for r in found]  # type: ignore[misc]


def _spacing(spacing: float | Sequence[float]) -> tuple[float, float]:
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise ValueError(f"spacing must be positive (mm), got {spacing!r}")
    return float(sp[0]), float(sp[1])


def tv_stack(
    x: ArrayLike,
    *,
    default: ArrayLike,
    t_low: ArrayLike,
    spacing: float | Sequence[float],
    n_candidates: int = 8,
    body: ArrayLike | None = None,
    regions: Sequence[Region] | None = None,
) -> CandidateStack:
    """A total-variation sweep of the input, as a candidate stack.

    Parameters
    ----------
    x : array_like, shape (H, W)
        Noisy image, HU.
    default, t_low : array_like
        The learned denoiser's output and its ``k``-fold application, HU: their flat-region
        noise (plane removed, median over regions) sets the TV weights of the sweep's default
        and low-side end.
    spacing : float or (float, float)
        Pixel size (dy, dx) in mm (to find flat regions).
    n_candidates : int, optional
        Candidates per side. Default 8. High side: weights ``w_d (1 - i/n)`` (the last is the
        input); low side: ``w_d + (w_l - w_d) i / n``.
    body : array_like of bool, optional
        Body mask; default the automatic one of ``x``.
    regions : sequence of (slice, slice), optional
        Flat regions for the noise; default found on ``default``.

    Returns
    -------
    CandidateStack
        ``mode="tv"``; ``info`` holds the weights (HU) and the matched noise.
    """
    t0 = time.perf_counter()
    xi, y0, tl = check_image(x), check_image(default, "default"), check_image(t_low, "t_low")
    mask = resolve_body(xi, body)
    regs = _regions(y0, _spacing(spacing), mask, regions)
    n = int(n_candidates)

    def noise(img: NDArray[np.float32]) -> float:
        return noise_label(img, spacing=_spacing(spacing), regions=list(regs))

    def fn(hu: Any, *, weight: float) -> NDArray[np.float32]:
        return tv_denoise(hu, weight=weight)

    targets = {"default": noise(y0), "low": noise(tl)}
    matched = {}
    for key, std in targets.items():
        res = match_noise(fn, xi, target_std=max(std, 1e-3), roi=list(regs), detrend=True,
                          weight_range=(1.0, 100.0), weight_limits=(1e-2, 1e5))  # fmt: skip
        matched[key] = res
    w_d, w_l = float(matched["default"].weight), float(matched["low"].weight)
    w_l = max(w_l, w_d)
    grid = [i / n for i in range(1, n + 1)]
    high_w = [w_d * (1.0 - a) for a in grid]
    low_w = [w_d + (w_l - w_d) * a for a in grid]
    return make_stack(
        high=[tv_denoise(xi, weight=w) for w in high_w],
        default=matched["default"].image.astype(np.float32),
        low=[tv_denoise(xi, weight=w) for w in low_w],
        t_high=xi,
        t_low=tl,
        body=mask,
        method="tv",
        started=t0,
        info={
            "implementation": "skimage.restoration.denoise_tv_chambolle",
            "weights_hu": {"high": high_w, "default": w_d, "low": low_w},
            "matched_noise_hu": {k: float(v.std) for k, v in matched.items()},
            "target_noise_hu": targets,
        },
    )


def bm3d_stack(
    x: ArrayLike,
    *,
    t_low: ArrayLike,
    spacing: float | Sequence[float],
    n_candidates: int = 4,
    n_low: int | None = None,
    max_factor: float = 2.0,
    default: ArrayLike | None = None,
    body: ArrayLike | None = None,
    regions: Sequence[Region] | None = None,
    profile: str = "np",
) -> CandidateStack:
    """A BM3D sweep of the input with a correlated-noise PSD, as a candidate stack.

    Parameters
    ----------
    x : array_like, shape (H, W)
        Noisy image, HU.
    t_low : array_like
        The learned denoiser's low-noise bound (kept as the stack's ``t_low``).
    spacing : float or (float, float)
        Pixel size (dy, dx) in mm (to find flat regions).
    n_candidates : int, optional
        Candidates per side. Default 4 (BM3D takes several seconds per 512 x 512 slice).
        High side: noise factors ``1 - i/n`` (the last is the input); low side:
        ``1 + (max_factor - 1) i / n_low``.
    n_low : int, optional
        Candidates on the low side, if not ``n_candidates`` (BM3D at its estimated noise is
        often already about as smooth as ``t_low``, so fewer are needed there).
    max_factor : float, optional
        Noise STD factor of the low-side end, > 1. Default 2.
    default : array_like, optional
        Where to find flat regions when ``regions`` is not given (e.g. the learned default,
        whose noise is low); default ``x``.
    body : array_like of bool, optional
        Body mask; default the automatic one of ``x``.
    regions : sequence of (slice, slice), optional
        Flat regions from which the noise PSD is estimated on ``x``.
    profile : str, optional
        bm3d profile. Default ``"np"``.

    Returns
    -------
    CandidateStack
        ``mode="bm3d"``; ``info`` holds the factors and the estimated noise STD.
    """
    t0 = time.perf_counter()
    xi, tl = check_image(x), check_image(t_low, "t_low")
    if not (math.isfinite(max_factor) and max_factor > 1.0):
        raise ValueError(f"max_factor must be > 1, got {max_factor}")
    mask = resolve_body(xi, body)
    where = xi if default is None else check_image(default, "default")
    regs = _regions(where, _spacing(spacing), mask, regions)
    psd = estimate_noise_psd(xi, regs)
    n = int(n_candidates)
    nl = n if n_low is None else int(n_low)
    high_f = [1.0 - i / n for i in range(1, n + 1)]
    low_f = [1.0 + (max_factor - 1.0) * i / nl for i in range(1, nl + 1)]
    return make_stack(
        high=[bm3d_denoise(xi, psd=psd, factor=f, profile=profile) for f in high_f],
        default=bm3d_denoise(xi, psd=psd, factor=1.0, profile=profile),
        low=[bm3d_denoise(xi, psd=psd, factor=f, profile=profile) for f in low_f],
        t_high=xi,
        t_low=tl,
        body=mask,
        method="bm3d",
        started=t0,
        info={
            "implementation": "bm3d (correlated-noise PSD from flat regions)",
            "profile": profile,
            "factors": {"high": high_f, "default": 1.0, "low": low_f},
            "estimated_noise_hu": float(math.sqrt(psd.mean() / psd.size)),
        },
    )
