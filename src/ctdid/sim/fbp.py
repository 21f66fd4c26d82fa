"""Filtered back-projection for parallel- and fan-beam (curved or flat) 2-D data in torch.

The ramp filter is the band-limited Ram-Lak kernel built in the spatial domain (Kak & Slaney,
*Principles of Computerized Tomographic Imaging*, 1988, eq. 3.61), zero-padded to at least
twice the detector length before the FFT. Sampling ``|f|`` directly in the frequency domain
would set the DC term to zero and shift every reconstruction by a constant; the spatial kernel
does not. An apodisation window with a cutoff (fraction of the Nyquist frequency) then trades
noise for resolution.

Fan-beam reconstruction follows Kak & Slaney section 3.4: projections are pre-weighted by
``D cos(gamma)`` (curved) or ``D / sqrt(D^2 + s^2)`` (flat, virtual detector at the isocentre),
filtered (with the ``(gamma / sin gamma)^2`` kernel correction for a curved detector) and
back-projected with ``1 / L^2`` (curved, ``L`` the source-to-pixel distance) or ``1 / U^2``
(flat, ``U`` the source-to-pixel depth along the central ray over ``D``) and a weight of one
half for the redundant 360 degree scan.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from ctdid.sim.geometry import FanBeamGeometry, Geometry, pixel_coordinates
from ctdid.sim.projector import _check_spacing

__all__ = ["KERNELS", "Kernel", "backproject", "fbp", "filter_sinogram", "ramp_kernel"]

Kernel = Literal["ramp", "shepp-logan", "cosine", "hamming", "hann"]
KERNELS: tuple[str, ...] = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
"""Names of the apodisation windows; ``ramp`` is the plain Ram-Lak (rectangular window)."""


def _window(nu: torch.Tensor, kernel: str, cutoff: float) -> torch.Tensor:
    x = nu.abs() / cutoff
    if kernel == "ramp":
        w = torch.ones_like(x)
    elif kernel == "shepp-logan":
        w = torch.sinc(x / 2)
    elif kernel == "cosine":
        w = torch.cos(math.pi * x / 2)
    elif kernel == "hamming":
        w = 0.54 + 0.46 * torch.cos(math.pi * x)
    elif kernel == "hann":
        w = 0.5 * (1 + torch.cos(math.pi * x))
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return torch.where(x <= 1, w, torch.zeros_like(w))


def ramp_kernel(
    n_pad: int,
    pitch: float,
    *,
    kernel: str = "hann",
    cutoff: float = 1.0,
    equiangular: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frequency response of the discrete filter applied along the detector.

    Parameters
    ----------
    n_pad : int
        FFT length (even).
    pitch : float
        Detector sample spacing ``tau`` (mm, or radians for ``equiangular``).
    kernel : str, optional
        Apodisation window, one of :data:`KERNELS`.
    cutoff : float, optional
        Frequency (fraction of the Nyquist frequency, in (0, 1]) where the window reaches zero.
    equiangular : bool, optional
        Multiply the spatial kernel by ``(gamma / sin gamma)^2`` for a curved fan-beam detector.
    device : torch device, optional
        Where to allocate the result.

    Returns
    -------
    Tensor, shape (n_pad,)
        Real frequency response, including the sample spacing ``tau`` of the convolution sum,
        so that ``ifft(fft(p) * H)`` approximates the filtered projection in units of 1/mm
        (or 1/rad).
    """
    if n_pad < 2 or n_pad % 2:
        raise ValueError(f"n_pad must be even and >= 2, got {n_pad}")
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff}")
    n = torch.fft.fftfreq(n_pad, 1 / n_pad, dtype=torch.float64).round()
    h = torch.zeros(n_pad, dtype=torch.float64)
    h[0] = 1 / (4 * pitch)
    odd = n.remainder(2) == 1
    h[odd] = -1 / (math.pi**2 * n[odd] ** 2 * pitch)
    nu = torch.fft.fftfreq(n_pad, dtype=torch.float64) * 2
    response = torch.fft.fft(h).real * _window(nu, kernel, cutoff)
    if equiangular:
        spatial = torch.fft.ifft(response).real
        gamma = n * pitch
        factor = torch.ones_like(gamma)
        nz = n != 0
        factor[nz] = (gamma[nz] / torch.sin(gamma[nz])) ** 2
        response = torch.fft.fft(spatial * factor).real
    return response.to(device=device, dtype=torch.float32)


def filter_sinogram(
    sinogram: torch.Tensor,
    geometry: Geometry,
    *,
    kernel: str = "hann",
    cutoff: float = 1.0,
) -> torch.Tensor:
    """Pre-weight (fan beam) and ramp-filter a sinogram along the detector.

    Parameters
    ----------
    sinogram : Tensor, shape (..., n_views, n_cols)
        Line integrals (dimensionless).
    geometry : ParallelBeamGeometry or FanBeamGeometry
        Geometry of the sinogram.
    kernel, cutoff
        See :func:`ramp_kernel`.

    Returns
    -------
    Tensor, same shape
        Filtered projections, ready for :func:`backproject`.
    """
    n_cols = sinogram.shape[-1]
    if n_cols != geometry.n_cols or sinogram.shape[-2] != geometry.n_views:
        raise ValueError(
            f"sinogram shape {tuple(sinogram.shape)} does not match the geometry "
            f"({geometry.n_views} views, {geometry.n_cols} columns)"
        )
    p = sinogram.to(torch.float32)
    equiangular = False
    if isinstance(geometry, FanBeamGeometry):
        d = geometry.source_iso_mm
        u = geometry.col_coords(device=p.device)
        if geometry.detector == "curved":
            p = p * (d * torch.cos(u))
            equiangular = True
        else:
            p = p * (d / torch.sqrt(d * d + u * u))
    n_pad = max(64, 2 ** math.ceil(math.log2(2 * n_cols)))
    response = ramp_kernel(
        n_pad,
        geometry.col_pitch,
        kernel=kernel,
        cutoff=cutoff,
        equiangular=equiangular,
        device=p.device,
    )
    spectrum = torch.fft.rfft(p, n=n_pad, dim=-1) * response[: n_pad // 2 + 1]
    return torch.fft.irfft(spectrum, n=n_pad, dim=-1)[..., :n_cols]


def backproject(
    filtered: torch.Tensor,
    geometry: Geometry,
    *,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    views_per_chunk: int = 16,
) -> torch.Tensor:
    """Weighted pixel-driven back-projection of filtered projections.

    Parameters
    ----------
    filtered : Tensor, shape (n_views, n_cols) or (B, n_views, n_cols)
        Output of :func:`filter_sinogram`.
    geometry : ParallelBeamGeometry or FanBeamGeometry
        Geometry of the data.
    shape : tuple of int
        Output image shape ``(H, W)``.
    spacing : tuple of float
        Output pixel size ``(dy, dx)`` in mm.
    views_per_chunk : int, optional
        Views back-projected at once; bounds memory (about ``30 * views_per_chunk * H * W``
        bytes).

    Returns
    -------
    Tensor, shape (H, W) or (B, H, W)
        Sum over views of the detector values linearly interpolated at each pixel, times the
        fan-beam distance weight, times ``pi / n_views`` (the angular step with the redundancy
        weight of a 360 degree scan, or of a 180 degree parallel scan). The detector reads zero
        beyond its end bins (linear fall-off over one bin).
    """
    if filtered.ndim not in (2, 3):
        raise ValueError(f"filtered must be (V, C) or (B, V, C), got {tuple(filtered.shape)}")
    dy, dx = _check_spacing(spacing)
    squeeze = filtered.ndim == 2
    q = (filtered[None] if squeeze else filtered).to(torch.float32)
    b, n_views, n_cols = q.shape
    h, w = shape
    x, y = pixel_coordinates((h, w), (dy, dx), device=q.device)
    angles = geometry.view_angles(device=q.device)
    centre = (n_cols - 1) / 2 + geometry.col_offset
    image = torch.zeros(b, h * w, dtype=torch.float32, device=q.device)
    # Linear interpolation along the detector by grid_sample: views ride in its batch axis,
    # slices in its channel axis; outside the detector it reads zeros.
    rows = q.permute(1, 0, 2)[:, :, None, :]  # (V, B, 1, C)
    for first in range(0, n_views, views_per_chunk):
        ang = angles[first : first + views_per_chunk]
        coord, depth = geometry.to_detector(x, y, ang)
        u = (coord / geometry.col_pitch + centre) * (2 / (n_cols - 1)) - 1
        grid = torch.stack([u, torch.zeros_like(u)], dim=-1)[:, None]  # (Vc, 1, N, 2)
        values = F.grid_sample(
            rows[first : first + ang.numel()],
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[:, :, 0]  # (Vc, B, N)
        if isinstance(geometry, FanBeamGeometry):
            assert depth is not None
            if geometry.detector == "curved":  # 1 / L^2, L the source-to-pixel distance
                d = geometry.source_iso_mm
                sx, sy = d * torch.cos(ang)[:, None], d * torch.sin(ang)[:, None]
                weight = 1 / ((x[None] - sx) ** 2 + (y[None] - sy) ** 2)
            else:
                weight = (geometry.source_iso_mm / depth) ** 2
            values = values * weight[:, None]
        image += values.sum(dim=0)
    image = image * (math.pi / n_views)
    image = image.reshape(b, h, w)
    return image[0] if squeeze else image


def fbp(
    sinogram: torch.Tensor,
    geometry: Geometry,
    *,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    kernel: str = "hann",
    cutoff: float = 1.0,
    views_per_chunk: int = 16,
) -> torch.Tensor:
    """Filtered back-projection of a parallel- or fan-beam sinogram.

    Parameters
    ----------
    sinogram : Tensor, shape (n_views, n_cols) or (B, n_views, n_cols)
        Line integrals of mu (dimensionless), e.g. from
        :func:`~ctdid.sim.projector.forward_project`.
    geometry : ParallelBeamGeometry or FanBeamGeometry
        Geometry of the sinogram. Parallel beam needs 180 or 360 degrees; fan beam 360.
    shape : tuple of int
        Output image shape ``(H, W)``.
    spacing : tuple of float
        Output pixel size ``(dy, dx)`` in mm.
    kernel : str, optional
        Apodisation window of the ramp filter, one of :data:`KERNELS` (default ``'hann'``,
        a smooth kernel; ``'ramp'`` is the sharpest).
    cutoff : float, optional
        Window cutoff as a fraction of the Nyquist frequency, in (0, 1]; lower is smoother.
    views_per_chunk : int, optional
        Views back-projected at once (memory bound).

    Returns
    -------
    Tensor, shape (H, W) or (B, H, W)
        Attenuation in 1/mm, float32. Differentiable with respect to the sinogram.
    """
    arc = geometry.arc_deg
    if isinstance(geometry, FanBeamGeometry):
        if not math.isclose(arc, 360.0):
            raise ValueError(f"fan-beam FBP needs a full 360 degree scan, got {arc} degrees")
    elif not (math.isclose(arc, 180.0) or math.isclose(arc, 360.0)):
        raise ValueError(f"parallel-beam FBP needs 180 or 360 degrees, got {arc} degrees")
    filtered = filter_sinogram(sinogram, geometry, kernel=kernel, cutoff=cutoff)
    return backproject(
        filtered, geometry, shape=shape, spacing=spacing, views_per_chunk=views_per_chunk
    )
