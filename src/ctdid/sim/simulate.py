"""One-call low-dose simulation of HU slices (numpy in, numpy out)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ctdid.sim.fbp import fbp
from ctdid.sim.geometry import FanBeamGeometry, Geometry
from ctdid.sim.noise import (
    DEFAULT_I0,
    DEFAULT_SIGMA_E,
    MU_WATER,
    hu_to_mu,
    insertion_noise,
    mu_to_hu,
    poisson_sinogram,
)
from ctdid.sim.projector import _check_spacing, forward_project
from ctdid.volume import CTVolume

__all__ = ["low_dose_from_sinogram", "simulate_low_dose"]


def low_dose_from_sinogram(
    hu: torch.Tensor,
    sino: torch.Tensor,
    *,
    dose: float,
    mode: Literal["full", "insert"],
    geometry: Geometry,
    spacing: tuple[float, float],
    kernel: str = "hann",
    cutoff: float = 1.0,
    i0: float = DEFAULT_I0,
    sigma_e: float = DEFAULT_SIGMA_E,
    mu_water: float = MU_WATER,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The noise and reconstruction step of :func:`simulate_low_dose`, from a sinogram.

    Parameters
    ----------
    hu : Tensor, shape (B, H, W)
        The slices in HU (``"insert"``: the normal-dose images the noise is added to).
    sino : Tensor
        Their noise-free line integrals (``forward_project(hu_to_mu(hu), geometry, ...)``),
        so that one projection can serve several doses and noise draws.
    dose, mode, geometry, spacing, kernel, cutoff, i0, sigma_e, mu_water, generator
        As :func:`simulate_low_dose` (``spacing`` in mm, (dy, dx)).

    Returns
    -------
    Tensor, shape (B, H, W)
        Float32 HU: the FBP of Poisson + electronic noise at ``dose`` (``"full"``), or ``hu``
        plus the FBP of the insertion noise that takes it to ``dose`` (``"insert"``; ``hu``
        itself at dose 1).
    """
    shape = (hu.shape[-2], hu.shape[-1])
    if mode == "full":
        noisy = poisson_sinogram(sino, dose=dose, i0=i0, sigma_e=sigma_e, generator=generator)
        rec = fbp(noisy, geometry, shape=shape, spacing=spacing, kernel=kernel, cutoff=cutoff)
        return mu_to_hu(rec, mu_water=mu_water)
    if dose == 1:
        return hu
    noise = insertion_noise(sino, dose=dose, i0=i0, sigma_e=sigma_e, generator=generator)
    rec = fbp(noise, geometry, shape=shape, spacing=spacing, kernel=kernel, cutoff=cutoff)
    return hu + rec * (1000.0 / mu_water)


def simulate_low_dose(
    hu: np.ndarray | CTVolume,
    *,
    dose: float,
    spacing: float | tuple[float, float] | None = None,
    geometry: Geometry | None = None,
    i0: float = DEFAULT_I0,
    sigma_e: float = DEFAULT_SIGMA_E,
    mode: Literal["full", "insert"] = "full",
    kernel: str = "hann",
    cutoff: float = 1.0,
    mu_water: float = MU_WATER,
    seed: int | None = None,
    device: torch.device | str | None = None,
    slices_per_batch: int = 4,
) -> np.ndarray:
    """Simulate a lower-dose scan of HU slices.

    Parameters
    ----------
    hu : ndarray, shape (H, W) or (Z, H, W), or CTVolume
        Slices in HU. For ``mode='full'`` a noise-free image (e.g. a phantom); for
        ``mode='insert'`` a real normal-dose image.
    dose : float
        Dose fraction in (0, 1] of the full dose.
    spacing : float or tuple of float, optional
        In-plane pixel size ``(dy, dx)`` in mm (one number for square pixels). Required for an
        array; taken from a :class:`~ctdid.volume.CTVolume` when omitted.
    geometry : ParallelBeamGeometry or FanBeamGeometry, optional
        Scan geometry; default :class:`~ctdid.sim.geometry.FanBeamGeometry()` (clinical
        fan beam, 1152 views, 736 bins).
    i0 : float, optional
        Unattenuated photons per bin per view at full dose.
    sigma_e : float, optional
        Electronic noise std in counts.
    mode : {'full', 'insert'}, optional
        ``'full'``: project, add Poisson and electronic noise at ``dose``, reconstruct; the
        result carries the blur of the projector and kernel. ``'insert'``: project, draw the
        extra log-domain noise that takes full-dose data to ``dose``
        (:func:`~ctdid.sim.noise.insertion_variance`), reconstruct the noise alone and add it
        to the input, which keeps the input's own noise and sharpness.
    kernel, cutoff : optional
        FBP window and its cutoff (fraction of Nyquist). For ``'insert'`` choose them to match
        the kernel of the input image (``'ramp'`` for sharp kernels).
    mu_water : float, optional
        Water attenuation in 1/mm used for HU <-> mu.
    seed : int, optional
        Seed of the torch generator; the same seed gives the same noise.
    device : torch device, optional
        Where to compute (default CPU).
    slices_per_batch : int, optional
        Slices processed together (memory bound).

    Returns
    -------
    ndarray
        Float32 HU, same shape as the input slices.

    Notes
    -----
    The image is centred on the isocentre; anything outside the geometry's field of view
    (:attr:`~ctdid.sim.geometry.FanBeamGeometry.fov_mm`, 502 mm by default) should be air.
    At 512 x 512 with the default geometry (1152 views, 736 bins) one slice takes about 3.5 s
    on one core of a busy 2-core CPU (Joseph projection ~2 s, FBP ~1.3 s; see
    ``benchmarks/bench_sim.py``); a GPU is much faster.
    """
    if mode not in ("full", "insert"):
        raise ValueError(f"mode must be 'full' or 'insert', got {mode!r}")
    if isinstance(hu, CTVolume):
        if spacing is None:
            spacing = (hu.spacing[1], hu.spacing[2])
        arr = hu.hu
    else:
        arr = np.asarray(hu, dtype=np.float32)
    if spacing is None:
        raise ValueError("spacing (mm) is required for an array input")
    pair = (float(spacing), float(spacing)) if isinstance(spacing, int | float) else spacing
    dy, dx = _check_spacing(tuple(pair))  # type: ignore[arg-type]
    squeeze = arr.ndim == 2
    if arr.ndim not in (2, 3):
        raise ValueError(f"hu must be 2-D or 3-D, got shape {arr.shape}")
    stack = arr[None] if squeeze else arr
    geom = FanBeamGeometry() if geometry is None else geometry
    dev = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator(device=dev)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    out = np.empty(stack.shape, dtype=np.float32)
    with torch.inference_mode():
        for first in range(0, stack.shape[0], slices_per_batch):
            x = torch.tensor(stack[first : first + slices_per_batch], device=dev)
            mu = hu_to_mu(x.to(torch.float32), mu_water=mu_water)
            sino = forward_project(mu, geom, spacing=(dy, dx))
            res = low_dose_from_sinogram(
                x, sino, dose=dose, mode=mode, geometry=geom, spacing=(dy, dx), kernel=kernel,
                cutoff=cutoff, i0=i0, sigma_e=sigma_e, mu_water=mu_water, generator=gen,
            )  # fmt: skip
            out[first : first + x.shape[0]] = res.cpu().numpy()
    return out[0] if squeeze else out
