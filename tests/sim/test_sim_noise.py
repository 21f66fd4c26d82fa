"""Tests of ctdid.sim.noise: unit conversion, Poisson statistics and dose-reduction noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sim_testing import PARALLEL, PIXEL, N, ellipse_image

from ctdid.sim.fbp import fbp
from ctdid.sim.noise import (
    MU_WATER,
    dose_noise_scale,
    hu_to_mu,
    insertion_noise,
    insertion_variance,
    mu_to_hu,
    poisson_sinogram,
    rescale_noise,
)
from ctdid.sim.projector import forward_project


def test_hu_mu_round_trip_and_clipping() -> None:
    hu = np.array([-1500.0, -1000.0, 0.0, 1000.0], dtype=np.float32)
    mu = hu_to_mu(hu)
    assert isinstance(mu, np.ndarray)
    assert mu.dtype == np.float32
    np.testing.assert_allclose(mu, [0, 0, MU_WATER, 2 * MU_WATER], rtol=1e-6)
    np.testing.assert_allclose(mu_to_hu(mu)[1:], hu[1:], atol=1e-3)
    t = hu_to_mu(torch.tensor(hu), mu_water=0.02)
    assert isinstance(t, torch.Tensor)
    assert t[2].item() == pytest.approx(0.02)
    with pytest.raises(ValueError, match="mu_water"):
        hu_to_mu(hu, mu_water=0.03)


def _constant_sinogram(value: float, n: int = 400) -> torch.Tensor:
    return torch.full((n, n), value)


@pytest.mark.parametrize("sigma_e", [0.0, 10.0])
def test_poisson_sinogram_statistics(sigma_e: float) -> None:
    p, i0, dose = 3.0, 1e4, 0.5
    noisy = poisson_sinogram(
        _constant_sinogram(p),
        dose=dose,
        i0=i0,
        sigma_e=sigma_e,
        generator=torch.Generator().manual_seed(0),
    )
    am = dose * i0 * np.exp(-p)
    expected_var = 1 / am + sigma_e**2 / am**2
    assert noisy.dtype == torch.float32
    assert noisy.mean().item() == pytest.approx(p, abs=0.01)
    assert noisy.var().item() == pytest.approx(expected_var, rel=0.05)


def test_poisson_sinogram_is_seeded_and_clamped() -> None:
    sino = _constant_sinogram(2.0, 50)
    a = poisson_sinogram(sino, generator=torch.Generator().manual_seed(3))
    b = poisson_sinogram(sino, generator=torch.Generator().manual_seed(3))
    c = poisson_sinogram(sino, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Hardly any photons: counts clamp at 1, so the line integral stays finite.
    starved = poisson_sinogram(_constant_sinogram(30.0, 50), generator=torch.Generator())
    assert torch.isfinite(starved).all()
    assert starved.max().item() <= np.log(1.5e5) + 1e-4
    with pytest.raises(ValueError, match="dose"):
        poisson_sinogram(sino, dose=1.5)
    with pytest.raises(ValueError, match="i0"):
        poisson_sinogram(sino, i0=0.0)


def test_insertion_variance_is_the_low_minus_full_dose_variance() -> None:
    """Yu et al. 2012: added variance = var(dose a) - var(full dose), checked empirically."""
    p, i0, sigma_e, dose = 3.0, 1e4, 10.0, 0.3
    sino = _constant_sinogram(p)
    gen = torch.Generator().manual_seed(1)
    low = poisson_sinogram(sino, dose=dose, i0=i0, sigma_e=sigma_e, generator=gen)
    full = poisson_sinogram(sino, dose=1.0, i0=i0, sigma_e=sigma_e, generator=gen)
    predicted = insertion_variance(sino, dose=dose, i0=i0, sigma_e=sigma_e)
    assert predicted[0, 0].item() == pytest.approx(low.var().item() - full.var().item(), rel=0.05)
    drawn = insertion_noise(sino, dose=dose, i0=i0, sigma_e=sigma_e, generator=gen)
    assert drawn.mean().item() == pytest.approx(0.0, abs=0.002)
    assert drawn.var().item() == pytest.approx(predicted[0, 0].item(), rel=0.03)
    assert insertion_variance(sino, dose=1.0, i0=i0).abs().max().item() == 0.0


def test_added_image_noise_scales_with_dose() -> None:
    """The FBP of inserted noise has variance ratio (1 - a) / a between doses: 3 : 1."""
    water = (-1000 + 1000 * ellipse_image(0, 0, 100, 100)).astype(np.float32)
    sino = forward_project(hu_to_mu(torch.tensor(water)), PARALLEL, spacing=(PIXEL, PIXEL))
    idx = (np.arange(N) - (N - 1) / 2) * PIXEL
    roi = np.hypot(idx[:, None], idx[None, :]) < 80
    variances = {}
    for first_seed, dose in [(10, 0.25), (20, 0.5)]:
        draws = []
        for seed in range(first_seed, first_seed + 3):  # three realisations per dose
            gen = torch.Generator().manual_seed(seed)
            noise = insertion_noise(sino, dose=dose, sigma_e=0.0, generator=gen)
            rec = fbp(noise, PARALLEL, shape=(N, N), spacing=(PIXEL, PIXEL)) * 1000 / MU_WATER
            draws.append(float(rec.numpy()[roi].var()))
        variances[dose] = float(np.mean(draws))
    assert variances[0.25] / variances[0.5] == pytest.approx(3.0, rel=0.1)


def test_dose_noise_scale() -> None:
    assert dose_noise_scale(0.25, 0.25) == pytest.approx(1.0)
    assert dose_noise_scale(0.25, 1.0) == 0.0
    assert dose_noise_scale(0.25, 0.1) == pytest.approx(np.sqrt(9 / 3))
    with pytest.raises(ValueError):
        dose_noise_scale(1.0, 0.5)
    with pytest.raises(ValueError):
        dose_noise_scale(0.25, 0.0)


def test_rescale_noise_gives_variance_inverse_to_dose() -> None:
    """Quantum-limited model: normal-dose noise var 1, pair at a0 adds 1/a0 - 1."""
    rng = np.random.default_rng(0)
    clean = np.zeros((256, 256), dtype=np.float32)
    a0 = 0.25
    normal = clean + rng.normal(0, 1.0, clean.shape)
    low = normal + rng.normal(0, np.sqrt(1 / a0 - 1), clean.shape)
    for dose in (1.0, 0.5, 0.25, 0.1):
        out = rescale_noise(normal, low, pair_dose=a0, dose=dose)
        assert out.dtype == np.float32
        assert (out - clean).var() == pytest.approx(1 / dose, rel=0.03)
    with pytest.raises(ValueError, match="shape"):
        rescale_noise(normal, low[:10], pair_dose=a0, dose=0.5)
