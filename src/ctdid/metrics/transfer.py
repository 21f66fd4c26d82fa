"""Spectral transfer of a processed image relative to its input, and its 50 % frequency.

A denoised candidate ``c`` of a noisy input ``r`` passes part of the input's content at each
spatial frequency. :func:`spectral_transfer` measures that part as the radial transfer

    T(f) = sum_bin Re(F(c) conj(F(r))) / sum_bin |F(r)|^2

over the pixels of the body (both images are multiplied by a smooth window over the body mask
before the Fourier transform), and :func:`transfer_label` reduces it to the frequency ``f50``
where it first falls to 0.5. For a linear shift-invariant filter ``c = h * r`` this is the
filter's MTF whatever ``r`` holds (noise or anatomy), so ``f50`` reads "this candidate keeps the
input's content up to ``f50`` cycles/mm". Unlike an edge MTF it is measured on all the patient's
low-contrast content and noise, which is where a DL denoiser trades resolution for noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from ctdid.metrics._common import as_image, pair_spacing
from ctdid.metrics.labels import find_body_mask
from ctdid.metrics.resolution import mtf_frequency

__all__ = ["SpectralTransfer", "body_window", "spectral_transfer", "transfer_label"]


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralTransfer:
    """Radial spectral transfer of a candidate relative to a reference image.

    Attributes
    ----------
    frequencies : ndarray
        Frequency of every radial bin in cycles/mm: the mean of the bin's frequencies
        weighted by the reference's power (so that a steeply falling spectrum is located
        where its power is).
    transfer : ndarray
        ``T`` of every bin (dimensionless, 1 where the candidate equals the reference).
        NaN in bins where the reference has no power.
    power : ndarray
        Windowed reference power summed over each bin, HU^2 (unnormalised FFT units).
    nyquist : float
        Highest frequency analysed, ``0.5 / max(dy, dx)`` cycles/mm.
    """

    frequencies: NDArray[np.float64]
    transfer: NDArray[np.float64]
    power: NDArray[np.float64]
    nyquist: float

    def at(self, level: float) -> float:
        """Frequency in cycles/mm where ``T`` first falls below ``level`` (linear
        interpolation between bins); :attr:`nyquist` if it never does."""
        ok = np.isfinite(self.transfer)
        f = mtf_frequency(self.frequencies[ok], self.transfer[ok], level)
        return f if np.isfinite(f) else float(self.nyquist)

    @property
    def f50(self) -> float:
        """Frequency of 50 % transfer, cycles/mm (see :meth:`at`)."""
        return self.at(0.5)

    def evaluate(self, f: ArrayLike) -> NDArray[np.float64]:
        """``T`` at frequencies ``f`` (cycles/mm), linearly interpolated, 0 beyond Nyquist."""
        ok = np.isfinite(self.transfer)
        return np.interp(
            np.abs(np.asarray(f, dtype=float)),
            self.frequencies[ok],
            self.transfer[ok],
            right=0.0,
        )


def body_window(
    mask: ArrayLike,
    *,
    spacing: float | ArrayLike,
    margin_mm: float = 5.0,
    taper_mm: float = 10.0,
) -> NDArray[np.float64]:
    """Smooth window over a body mask: 0 outside, raised-cosine taper inside the outline, 1 deep.

    With ``d`` the distance in mm of a pixel to the nearest pixel outside the mask (the image
    border counts as outside, so the window also vanishes there), the window is
    ``0.5 - 0.5 cos(pi * clip((d - margin_mm) / taper_mm, 0, 1))``: zero in the outer
    ``margin_mm`` of the body (the skin edge, where DL denoisers overshoot), rising smoothly
    to 1 over the next ``taper_mm``.

    Parameters
    ----------
    mask : array_like of bool, shape (y, x) or (z, y, x)
        Body mask; volumes slice by slice.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    margin_mm : float, optional
        Width in mm of the zero band inside the outline.
    taper_mm : float, optional
        Width in mm of the taper from 0 to 1 (> 0).

    Returns
    -------
    ndarray of float, shape of ``mask``
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 3:
        return np.stack(
            [body_window(s, spacing=spacing, margin_mm=margin_mm, taper_mm=taper_mm) for s in m]
        )
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D or 3-D, got shape {m.shape}")
    if taper_mm <= 0 or margin_mm < 0:
        raise ValueError(f"need taper_mm > 0 and margin_mm >= 0, got {taper_mm}, {margin_mm}")
    dy, dx = pair_spacing(spacing)
    padded = np.pad(m, 1, constant_values=False)
    dist = np.asarray(ndimage.distance_transform_edt(padded, sampling=(dy, dx)))[1:-1, 1:-1]
    t = np.clip((dist - margin_mm) / taper_mm, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def spectral_transfer(
    candidate: ArrayLike,
    reference: ArrayLike,
    *,
    spacing: float | ArrayLike,
    mask: ArrayLike | None = None,
    n_bins: int | None = None,
    margin_mm: float = 5.0,
    taper_mm: float = 10.0,
) -> SpectralTransfer:
    """Radial spectral transfer ``T(f)`` of ``candidate`` relative to ``reference`` in the body.

    Per slice, the window ``w`` of :func:`body_window` (zero outside the body and in its
    outer ``margin_mm``, raised-cosine taper over ``taper_mm``, so that neither the air nor the
    skin edge counts) is built from ``mask``; ``m``, the ``w``-weighted mean of the reference,
    is subtracted from both images (the same constant, so that ``T`` stays exactly 1 for the
    reference itself while the window's own spectrum does not dominate the low frequencies);
    ``C = FFT(w (c - m))`` and ``R = FFT(w (r - m))``. Over every radial frequency bin (and
    over all slices) ``T = sum Re(C conj(R)) / sum |R|^2``: a power-weighted average of the
    per-frequency transfer, which stays stable where single frequencies are noisy.

    Parameters
    ----------
    candidate : array_like, shape (y, x) or (z, y, x)
        Processed image in HU (e.g. a denoised candidate).
    reference : array_like, same shape
        The image it came from in HU (e.g. the noisy input of the denoiser).
    spacing : float or (float, float) or (dz, dy, dx)
        Pixel spacing in mm.
    mask : array_like of bool, optional
        Body mask (2-D masks apply to every slice); default
        :func:`ctdid.metrics.find_body_mask` of the reference.
    n_bins : int, optional
        Number of equal-width radial bins between 0 and the Nyquist frequency
        ``0.5 / max(dy, dx)``; default ``min(y, x) // 4`` clipped to [8, 64].
    margin_mm, taper_mm : float, optional
        Window shape, see :func:`body_window`.

    Returns
    -------
    SpectralTransfer
        Frequencies in cycles/mm.

    Raises
    ------
    ValueError
        For images of different shapes, or when the window is empty (no body far enough
        inside the outline and the image border).
    """
    c = as_image(candidate, name="candidate")
    r = as_image(reference, name="reference")
    if c.shape != r.shape:
        raise ValueError(f"candidate {c.shape} and reference {r.shape} differ in shape")
    dy, dx = pair_spacing(spacing)
    c3 = c[None] if c.ndim == 2 else c
    r3 = r[None] if r.ndim == 2 else r
    if mask is None:
        m3 = find_body_mask(r3)
    else:
        mm = np.asarray(mask, dtype=bool)
        try:
            m3 = np.broadcast_to(mm, r.shape)
        except ValueError:
            raise ValueError(f"mask of shape {mm.shape} does not fit {r.shape}") from None
        m3 = m3[None] if r.ndim == 2 else m3
    ny, nx = r3.shape[1:]
    nyquist = 0.5 / max(dy, dx)
    nb = int(n_bins) if n_bins is not None else int(np.clip(min(ny, nx) // 4, 8, 64))
    if nb < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins!r}")
    fy = np.fft.fftfreq(ny, d=dy)
    fx = np.fft.rfftfreq(nx, d=dx)
    fr = np.hypot(fy[:, None], fx[None, :])
    # rfft keeps the x >= 0 half: columns other than x = 0 (and x = Nyquist for even nx)
    # stand for two frequencies each
    twice = np.full(fx.size, 2.0)
    twice[0] = 1.0
    if nx % 2 == 0:
        twice[-1] = 1.0
    weight = np.broadcast_to(twice[None, :], fr.shape)
    edges = np.linspace(0.0, nyquist, nb + 1)
    idx = np.digitize(fr, edges) - 1
    inside = (idx >= 0) & (idx < nb) & (fr <= nyquist)
    cross = np.zeros(nb)
    power = np.zeros(nb)
    fpow = np.zeros(nb)
    any_window = False
    for cs, rs, ms in zip(c3, r3, m3, strict=True):
        w = body_window(ms, spacing=(dy, dx), margin_mm=margin_mm, taper_mm=taper_mm)
        sw = float(w.sum())
        if sw <= 0:
            continue
        any_window = True
        mean = float(np.sum(w * rs) / sw)
        cf = np.fft.rfft2(w * (cs - mean))
        rf = np.fft.rfft2(w * (rs - mean))
        xs = (cf * np.conj(rf)).real * weight
        ps = (rf.real**2 + rf.imag**2) * weight
        cross += np.bincount(idx[inside], weights=xs[inside], minlength=nb)
        power += np.bincount(idx[inside], weights=ps[inside], minlength=nb)
        fpow += np.bincount(idx[inside], weights=(ps * fr)[inside], minlength=nb)
    if not any_window:
        raise ValueError(
            "the body window is empty: no pixel lies far enough inside the body outline"
        )
    centres = 0.5 * (edges[:-1] + edges[1:])
    ok = power > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        transfer = np.where(ok, cross / np.where(ok, power, 1.0), np.nan)
        freqs = np.where(ok, fpow / np.where(ok, power, 1.0), centres)
    return SpectralTransfer(
        frequencies=freqs, transfer=transfer, power=power, nyquist=float(nyquist)
    )


def transfer_label(
    candidate: ArrayLike,
    reference: ArrayLike,
    *,
    spacing: float | ArrayLike,
    mask: ArrayLike | None = None,
    n_bins: int | None = None,
    level: float = 0.5,
    margin_mm: float = 5.0,
    taper_mm: float = 10.0,
) -> float:
    """Frequency in cycles/mm up to which ``candidate`` keeps ``reference``'s content (f50).

    The lowest frequency where the radial transfer of :func:`spectral_transfer` first falls
    below ``level``, interpolated linearly between bins. If it never falls below ``level``
    (the candidate keeps everything, e.g. the reference itself) the Nyquist frequency
    ``0.5 / max(dy, dx)`` is returned: the label then means "at least up to Nyquist".
    With ``reference`` the noisy input of a denoiser, it falls from Nyquist at the input to
    low values at the low-noise end of the candidates.

    Parameters
    ----------
    candidate, reference : array_like, shape (y, x) or (z, y, x)
        Processed image and the image it came from, HU.
    spacing : float or (float, float) or (dz, dy, dx)
        Pixel spacing in mm.
    mask : array_like of bool, optional
        Body mask; default found on the reference.
    n_bins : int, optional
        Radial bins, see :func:`spectral_transfer`.
    level : float, optional
        Transfer level in (0, 1); 0.5 gives f50.
    margin_mm, taper_mm : float, optional
        Window shape, see :func:`body_window`.

    Returns
    -------
    float
        Frequency in cycles/mm, at most the Nyquist frequency.
    """
    st = spectral_transfer(
        candidate,
        reference,
        spacing=spacing,
        mask=mask,
        n_bins=n_bins,
        margin_mm=margin_mm,
        taper_mm=taper_mm,
    )
    return st.at(level)
