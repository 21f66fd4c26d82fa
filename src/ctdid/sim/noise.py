"""Unit conversion and low-dose noise models: HU <-> mu, Poisson + electronic noise, dose
reduction of an image that already carries full-dose noise, and the image-domain shortcut.

Noise model
-----------
A detector bin of a view at dose fraction ``a`` counts ``N = Poisson(a I0 exp(-p)) +
Normal(0, sigma_e^2)`` photons, ``p`` being the line integral of mu. ``I0`` is the number of
unattenuated photons per bin per view at full dose and ``sigma_e`` the electronic noise
standard deviation in photon-count units. The log-domain measurement ``-log(N / (a I0))`` then
has variance about ``1 / (a m) + sigma_e^2 / (a m)^2`` with ``m = I0 exp(-p)``. The model has no
bowtie filter, beam hardening or scatter: ``I0`` is the same for every bin.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "DEFAULT_I0",
    "DEFAULT_SIGMA_E",
    "MU_WATER",
    "dose_noise_scale",
    "hu_to_mu",
    "insertion_noise",
    "insertion_variance",
    "mu_to_hu",
    "poisson_sinogram",
    "rescale_noise",
]

MU_WATER: float = 0.0193
"""Linear attenuation of water in 1/mm at about 70 keV, the effective energy of a 120 kVp
abdominal beam (NIST XCOM: mu/rho = 0.1929 cm^2/g at 70 keV). Allowed values: 0.019-0.0206
(75 to 60 keV)."""

DEFAULT_I0: float = 1.5e5
"""Unattenuated photons per detector bin per view at full dose (order of a 120 kVp,
~200 effective mAs abdominal scan with 1152 views; an approximate, not a calibrated, figure)."""

DEFAULT_SIGMA_E: float = 10.0
"""Electronic noise standard deviation in photon counts per bin per view."""

_ArrayT = TypeVar("_ArrayT", np.ndarray, torch.Tensor)


def _check_mu_water(mu_water: float) -> None:
    if not 0.019 <= mu_water <= 0.0206:
        raise ValueError(f"mu_water must be in [0.019, 0.0206] 1/mm, got {mu_water}")


def hu_to_mu(hu: _ArrayT, *, mu_water: float = MU_WATER) -> _ArrayT:
    """Hounsfield units to linear attenuation: ``mu = mu_water (1 + HU / 1000)``, clipped at 0.

    Parameters
    ----------
    hu : ndarray or Tensor
        Values in HU.
    mu_water : float, optional
        Attenuation of water in 1/mm, in [0.019, 0.0206] (default :data:`MU_WATER`).

    Returns
    -------
    ndarray or Tensor
        Attenuation in 1/mm, same type and shape (float32 for float32 input).
    """
    _check_mu_water(mu_water)
    return (mu_water * (1 + hu / 1000)).clip(min=0)


def mu_to_hu(mu: _ArrayT, *, mu_water: float = MU_WATER) -> _ArrayT:
    """Linear attenuation in 1/mm to Hounsfield units: ``HU = 1000 (mu / mu_water - 1)``."""
    _check_mu_water(mu_water)
    return 1000 * (mu / mu_water - 1)


def _check_dose(dose: float, *, allow_one: bool = True) -> float:
    dose = float(dose)
    if not (0 < dose < 1 or (allow_one and dose == 1)):
        raise ValueError(f"dose must be a fraction of the full dose in (0, 1], got {dose}")
    return dose


def _check_counts(i0: float, sigma_e: float) -> None:
    if not i0 > 0:
        raise ValueError(f"i0 must be > 0 photons, got {i0}")
    if not sigma_e >= 0:
        raise ValueError(f"sigma_e must be >= 0 counts, got {sigma_e}")


def poisson_sinogram(
    sinogram: torch.Tensor,
    *,
    dose: float = 1.0,
    i0: float = DEFAULT_I0,
    sigma_e: float = DEFAULT_SIGMA_E,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noisy line integrals of a noise-free sinogram at a dose fraction.

    Counts are ``Poisson(dose * i0 * exp(-p)) + Normal(0, sigma_e^2)``, clamped at >= 1, and
    returned as ``-log(counts / (dose * i0))``.

    Parameters
    ----------
    sinogram : Tensor
        Noise-free line integrals ``p`` (dimensionless), any shape.
    dose : float, optional
        Dose fraction ``a`` in (0, 1] of the full dose.
    i0 : float, optional
        Unattenuated photons per bin per view at full dose (default :data:`DEFAULT_I0`).
    sigma_e : float, optional
        Electronic noise std in counts (default :data:`DEFAULT_SIGMA_E`).
    generator : torch.Generator, optional
        Random generator (on the sinogram's device) for reproducible noise.

    Returns
    -------
    Tensor
        Noisy line integrals, float32, same shape and device. Not differentiable.
    """
    dose = _check_dose(dose)
    _check_counts(i0, sigma_e)
    blank = dose * i0
    mean = blank * torch.exp(-sinogram.detach().to(torch.float32))
    counts = torch.poisson(mean, generator=generator)
    if sigma_e > 0:
        noise = torch.randn(
            counts.shape, generator=generator, dtype=counts.dtype, device=counts.device
        )
        counts = counts + sigma_e * noise
    return -torch.log(counts.clamp(min=1.0) / blank)


def insertion_variance(
    sinogram: torch.Tensor,
    *,
    dose: float,
    i0: float = DEFAULT_I0,
    sigma_e: float = DEFAULT_SIGMA_E,
) -> torch.Tensor:
    """Log-domain variance to add to full-dose data to reach a lower dose.

    ``var = (1 - a) / (a m) * [1 + (1 + a) sigma_e^2 / (a m)]`` with ``m = i0 exp(-p)``: the
    difference between the variances ``1 / (a m) + sigma_e^2 / (a m)^2`` at dose ``a`` and at
    full dose (Yu et al. 2012, J Comput Assist Tomogr 36:477; Zeng et al. 2015, IEEE TNS
    62:2226).

    Parameters
    ----------
    sinogram : Tensor
        Line integrals ``p`` of the full-dose image.
    dose : float
        Target dose fraction ``a`` in (0, 1].
    i0, sigma_e : float, optional
        Full-dose photons per bin per view and electronic noise std (counts).

    Returns
    -------
    Tensor
        Variance of the log-domain noise to add, same shape.
    """
    a = _check_dose(dose)
    _check_counts(i0, sigma_e)
    m = i0 * torch.exp(-sinogram.detach().to(torch.float32))
    return (1 - a) / (a * m) * (1 + (1 + a) * sigma_e**2 / (a * m))


def insertion_noise(
    sinogram: torch.Tensor,
    *,
    dose: float,
    i0: float = DEFAULT_I0,
    sigma_e: float = DEFAULT_SIGMA_E,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian log-domain noise of :func:`insertion_variance` (zero mean, float32)."""
    var = insertion_variance(sinogram, dose=dose, i0=i0, sigma_e=sigma_e)
    noise = torch.randn(var.shape, generator=generator, dtype=var.dtype, device=var.device)
    return noise * var.sqrt()


def dose_noise_scale(pair_dose: float, dose: float) -> float:
    """Factor that turns the noise difference of a low/normal pair into that of another dose.

    ``sqrt((1 / dose - 1) / (1 / pair_dose - 1))``. It assumes quantum-limited noise (variance
    inversely proportional to dose, no electronic noise), that the pair's difference
    ``low - normal`` is independent of the normal-dose noise (as in projection-domain noise
    insertion), and the same reconstruction kernel.

    Parameters
    ----------
    pair_dose : float
        Dose fraction of the low-dose image of the pair, in (0, 1).
    dose : float
        Wanted dose fraction in (0, 1].

    Returns
    -------
    float
        The scale; 0 at full dose, 1 at ``pair_dose``.
    """
    a0 = _check_dose(pair_dose, allow_one=False)
    a = _check_dose(dose)
    return math.sqrt((1 / a - 1) / (1 / a0 - 1))


def rescale_noise(
    normal: np.ndarray,
    low: np.ndarray,
    *,
    pair_dose: float,
    dose: float,
) -> np.ndarray:
    """Image-domain shortcut: an image at ``dose`` from one low/normal-dose pair.

    Returns ``normal + (low - normal) * dose_noise_scale(pair_dose, dose)``. The added noise has
    variance ``(1 / dose - 1) / (1 / pair_dose - 1)`` times that of ``low - normal``, so the
    total noise variance is proportional to ``1 / dose`` under the assumptions of
    :func:`dose_noise_scale`. Doses below ``pair_dose`` amplify the pair's noise, which keeps its
    texture (and any structure in ``low - normal``).

    Parameters
    ----------
    normal, low : ndarray
        Normal-dose and low-dose images in HU, same shape.
    pair_dose : float
        Dose fraction of ``low``, in (0, 1).
    dose : float
        Wanted dose fraction in (0, 1].

    Returns
    -------
    ndarray
        Float32 image in HU.
    """
    normal = np.asarray(normal, dtype=np.float32)
    low = np.asarray(low, dtype=np.float32)
    if normal.shape != low.shape:
        raise ValueError(f"normal {normal.shape} and low {low.shape} differ in shape")
    scale = np.float32(dose_noise_scale(pair_dose, dose))
    return normal + (low - normal) * scale
