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

from ctdid.sim.geometry import FanBeamGeometry, Geometry
from ctdid.sim.projector import _check_spacing, _quarter_turns

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


def _detector_grid(
    geometry: Geometry,
    angles: torch.Tensor,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    grid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """grid_sample coordinates on the detector of every pixel, and the fan-beam weight.

    Parameters
    ----------
    grid : Tensor, shape (>= V, 1, H * W, 2)
        Zeros; the detector coordinate is written into ``grid[:V, ..., 0]``.

    Returns
    -------
    grid : Tensor, shape (V, 1, H * W, 2)
        Detector position mapped to [-1, 1] over the bin centres (``align_corners=True``).
    weight : Tensor, shape (V, 1, H * W), or None
        ``1 / L^2`` (curved) or ``(D / U)^2`` (flat); None for parallel beam.
    """
    h, w = shape
    dy, dx = spacing
    n_cols = geometry.n_cols
    n = angles.numel()
    dev = angles.device
    xs = (torch.arange(w, dtype=torch.float64, device=dev) - (w - 1) / 2) * dx
    ys = (torch.arange(h, dtype=torch.float64, device=dev) - (h - 1) / 2) * dy
    xs, ys = xs.to(torch.float32)[None, None, :], ys.to(torch.float32)[None, :, None]
    c, s = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    scale = 2 / (n_cols - 1) / geometry.col_pitch
    offset = ((n_cols - 1) / 2 + geometry.col_offset) * 2 / (n_cols - 1) - 1
    # Every coordinate is a per-view sum of a column term and a row term (one pass each).
    weight = None
    if isinstance(geometry, FanBeamGeometry):
        d = geometry.source_iso_mm
        depth = (d - xs * c) + (-ys * s)  # D - r . e, (V, H, W)
        lateral = xs * s + (-ys * c)
        if geometry.detector == "curved":
            u = torch.atan2(lateral, depth)
            weight = (depth * depth).addcmul_(lateral, lateral).reciprocal_()  # 1 / L^2
        else:
            u = lateral.div_(depth).mul_(d)
            weight = depth.reciprocal_().mul_(d).square_()  # (D / U)^2
        weight = weight.reshape(n, 1, h * w)
    else:
        u = xs * c + ys * s
    u = u.mul_(scale).add_(offset)
    out = grid[:n]
    out[:, 0, :, 0] = u.reshape(n, h * w)
    return out, weight


def backproject(
    filtered: torch.Tensor,
    geometry: Geometry,
    *,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    views_per_chunk: int = 8,
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
        Detector grids computed at once; bounds memory (about ``views_per_chunk * H * W *
        (16 + 4 * r * B)`` bytes, ``r`` up to 4 quarter-turn groups, ``B`` the batch).

    Returns
    -------
    Tensor, shape (H, W) or (B, H, W)
        Sum over views of the detector values linearly interpolated at each pixel, times the
        fan-beam distance weight, times ``pi / n_views`` (the angular step with the redundancy
        weight of a 360 degree scan, or of a 180 degree parallel scan). The detector reads zero
        beyond its end bins (linear fall-off over one bin).

    Notes
    -----
    For a square image with square pixels and views that repeat every quarter turn, the
    detector grid of view ``k`` serves views ``k + j V / 4`` too: their contributions are
    summed on the grid turned by ``j`` quarter turns and turned back at the end
    (:func:`torch.rot90`, exact). Views ride in ``grid_sample``'s batch axis (parallel over
    CPU threads) and the quarter-turn groups and slices in its channel axis.
    """
    if filtered.ndim not in (2, 3):
        raise ValueError(f"filtered must be (V, C) or (B, V, C), got {tuple(filtered.shape)}")
    if views_per_chunk < 1:
        raise ValueError(f"views_per_chunk must be >= 1, got {views_per_chunk}")
    dy, dx = _check_spacing(spacing)
    squeeze = filtered.ndim == 2
    q = (filtered[None] if squeeze else filtered).to(torch.float32)
    b, n_views, n_cols = q.shape
    if n_views != geometry.n_views or n_cols != geometry.n_cols:
        raise ValueError(
            f"filtered shape {tuple(q.shape)} does not match the geometry "
            f"({geometry.n_views} views, {geometry.n_cols} columns)"
        )
    h, w = shape
    groups = _quarter_turns(geometry, (h, w), (dy, dx))
    per_group = n_views // groups
    angles = geometry.view_angles(device=q.device)[:per_group]
    # rows[k, j * B + b] is slice b's view k + j * per_group, read along the detector as a
    # one-row image by grid_sample (linear interpolation, zero outside the detector).
    rows = q.reshape(b, groups, per_group, n_cols).permute(2, 1, 0, 3)
    rows = rows.reshape(per_group, groups * b, 1, n_cols)
    acc = torch.zeros(groups * b, h * w, dtype=torch.float32, device=q.device)
    # One zeroed grid buffer serves every chunk, unless autograd must keep each chunk's grid.
    reuse = not (torch.is_grad_enabled() and q.requires_grad)
    buffer = torch.zeros(
        min(views_per_chunk, per_group) if reuse else 0, 1, h * w, 2, device=q.device
    )
    for first in range(0, per_group, views_per_chunk):
        ang = angles[first : first + views_per_chunk]
        with torch.no_grad():
            if not reuse:
                buffer = torch.zeros(ang.numel(), 1, h * w, 2, device=q.device)
            grid, weight = _detector_grid(geometry, ang, (h, w), (dy, dx), buffer)
        values = F.grid_sample(
            rows[first : first + ang.numel()],
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[:, :, 0]  # (Vc, groups * B, H * W)
        if weight is None:
            acc = acc + values.sum(dim=0)
        elif reuse:
            for k in range(ang.numel()):  # in place: no (Vc, groups * B, H * W) temporary
                acc.addcmul_(values[k], weight[k])
        else:
            acc = acc + (values * weight).sum(dim=0)
    parts = acc.reshape(groups, b, h, w)
    # Group j was accumulated on the grid turned by j quarter turns: turn it back.
    image = parts[0]
    for j in range(1, groups):
        image = image + torch.rot90(parts[j], -j, dims=(-2, -1))
    image = image * (math.pi / n_views)
    return image[0] if squeeze else image


def fbp(
    sinogram: torch.Tensor,
    geometry: Geometry,
    *,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    kernel: str = "hann",
    cutoff: float = 1.0,
    views_per_chunk: int = 8,
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
