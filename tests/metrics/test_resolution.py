import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erf

from ctdid.metrics.resolution import edge_mtf, mtf_frequency, mtf_from_esf, ttf_from_insert


def gaussian_mtf50(sigma_mm: float) -> float:
    """Analytic MTF50 of a Gaussian blur: exp(-2 pi^2 s^2 f^2) = 1/2."""
    return float(np.sqrt(np.log(2) / (2 * np.pi**2)) / sigma_mm)


def tilted_edge(n, dx, sigma, angle_deg, *, horizontal=False, noise=0.0, seed=0):
    """Point-sampled straight edge, -1000 -> 0 HU, blurred by a Gaussian of sigma mm."""
    y, x = np.mgrid[0:n, 0:n] * dx
    t = np.deg2rad(angle_deg)
    c = n * dx / 2
    d = (x - c) * np.cos(t) - (y - c) * np.sin(t)
    if horizontal:
        d = (y - c) * np.cos(t) + (x - c) * np.sin(t)
    img = -1000 + 500 * (1 + erf(d / (np.sqrt(2) * sigma)))
    return img + np.random.default_rng(seed).normal(0, noise, img.shape)


def test_mtf_frequency_interpolates_linearly():
    f = np.array([0.0, 0.1, 0.2, 0.3])
    m = np.array([1.0, 0.8, 0.4, 0.1])
    assert mtf_frequency(f, m, 0.5) == pytest.approx(0.175)
    assert np.isnan(mtf_frequency(f, m, 0.05))


@pytest.mark.parametrize("sigma", [0.4, 0.7, 1.2])
@pytest.mark.parametrize("angle", [3.0, 7.0])
@pytest.mark.parametrize("horizontal", [False, True])
def test_edge_mtf50_matches_the_gaussian_blur(sigma, angle, horizontal):
    dx = 0.7
    img = tilted_edge(96, dx, sigma, angle, horizontal=horizontal, noise=10.0)
    mtf = edge_mtf(img, spacing=dx)
    assert mtf.mtf[0] == pytest.approx(1.0)
    assert mtf.mtf50 == pytest.approx(gaussian_mtf50(sigma), rel=0.05)
    mtf10 = np.sqrt(np.log(10) / (2 * np.pi**2)) / sigma
    assert mtf.mtf10 == pytest.approx(mtf10, rel=0.08)
    # the whole curve up to Nyquist: within 0.01 without noise, 0.06 with 10 HU noise
    for measured, tol in (
        (edge_mtf(tilted_edge(96, dx, sigma, angle, horizontal=horizontal), spacing=dx), 0.01),
        (mtf, 0.06),
    ):
        f = measured.frequencies
        band = f <= 0.5 / dx
        analytic = np.exp(-2 * np.pi**2 * sigma**2 * f[band] ** 2)
        assert np.max(np.abs(measured.mtf[band] - analytic)) < tol


def test_edge_parallel_to_the_pixel_axis_is_refused():
    img = tilted_edge(64, 0.7, 0.7, 0.0)
    with pytest.raises(ValueError, match="tilt"):
        edge_mtf(img, spacing=0.7)


def test_mtf_from_esf_of_a_sampled_erf():
    sigma = 0.8
    d = np.random.default_rng(0).uniform(-10, 10, 20000)
    v = 100 * (1 + erf(d / (np.sqrt(2) * sigma))) / 2
    mtf = mtf_from_esf(d, v, bin_width=0.1)
    assert mtf.mtf50 == pytest.approx(gaussian_mtf50(sigma), rel=0.02)
    falling = mtf_from_esf(d, -v, bin_width=0.1)  # the polarity does not matter
    assert falling.mtf50 == pytest.approx(mtf.mtf50)


def blurred_disc(n, dx, radius, sigma, contrast, *, sub=7):
    """Disc point-sampled after an (almost) exact Gaussian blur on a 7x finer grid."""
    fine = dx / sub
    u = (np.arange(n * sub) - sub // 2) * fine
    c = (n // 2) * dx
    disc = (np.hypot(u[:, None] - c, u[None, :] - c) <= radius) * float(contrast)
    return ndimage.gaussian_filter(disc, sigma / fine)[sub // 2 :: sub, sub // 2 :: sub]


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_ttf_of_a_circular_insert(sigma):
    dx, n = 0.7, 96
    img = blurred_disc(n, dx, 10.0, sigma, 100.0) + np.random.default_rng(1).normal(0, 3, (n, n))
    # deliberately off centre and radius: refinement recovers them
    ttf = ttf_from_insert(img, spacing=dx, center=(n // 2 - 1.5, n // 2 + 1.0), radius_mm=9.0)
    assert ttf.mtf50 == pytest.approx(gaussian_mtf50(sigma), rel=0.05)
