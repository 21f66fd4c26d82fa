import numpy as np
import pytest
from scipy import special, stats

from ctdid.metrics.noise import nps_2d
from ctdid.metrics.task import (
    cho_detectability,
    disk_task_spectrum,
    eye_filter,
    laguerre_gauss_channels,
    npw_detectability,
)


def test_disk_spectrum_integrates_to_the_disk_energy():
    # Parseval: int |W|^2 2 pi f df = C^2 pi R^2; within radius F the fraction 1 - J0^2 - J1^2
    c, d = 10.0, 6.0
    f = np.linspace(0, 2.0, 20001)
    w2 = disk_task_spectrum(f, diameter_mm=d, contrast_hu=c) ** 2
    energy = np.sum(0.5 * (w2[1:] * f[1:] + w2[:-1] * f[:-1]) * np.diff(f)) * 2 * np.pi
    x = 2 * np.pi * 3.0 * 2.0
    assert energy == pytest.approx(c**2 * np.pi * 9 * (1 - special.j0(x) ** 2 - special.j1(x) ** 2))
    assert disk_task_spectrum(0.0, diameter_mm=d, contrast_hu=c) == pytest.approx(c * np.pi * 9)


def test_npw_dprime_for_white_noise_and_a_perfect_system():
    # NPS = sigma^2 dx^2, TTF = 1: d'^2 = int |W|^2 / (sigma^2 dx^2), the prewhitening value
    sigma, dx, c, d = 20.0, 0.5, 10.0, 6.0
    fn = 0.5 / dx
    nps = (np.array([0.0, fn]), np.full(2, sigma**2 * dx * dx))
    x = 2 * np.pi * (d / 2) * fn
    frac = 1 - special.j0(x) ** 2 - special.j1(x) ** 2
    analytic = c * np.sqrt(np.pi * (d / 2) ** 2 * frac / dx**2) / sigma
    assert npw_detectability(nps, diameter_mm=d, contrast_hu=c) == pytest.approx(analytic, rel=1e-4)
    # the same from an NPS measured on white noise, within its estimation error
    rng = np.random.default_rng(0)
    measured = nps_2d(rng.normal(0, sigma, (16, 64, 64)), spacing=dx)
    assert npw_detectability(measured, diameter_mm=d, contrast_hu=c) == pytest.approx(
        analytic, rel=0.03
    )


def test_npw_with_blur_and_eye_filter_lowers_dprime():
    nps = (np.array([0.0, 1.0]), np.full(2, 100.0))
    base = npw_detectability(nps, diameter_mm=3.0, contrast_hu=10.0)
    f = np.linspace(0, 1, 100)
    blurred = npw_detectability(
        nps, diameter_mm=3.0, contrast_hu=10.0, ttf=(f, np.exp(-2 * np.pi**2 * 0.8**2 * f**2))
    )
    assert blurred < base
    # for white noise NPWE <= NPW (Cauchy-Schwarz), equality only for a flat eye
    assert npw_detectability(nps, diameter_mm=3.0, contrast_hu=10.0, eye=True) < base


def test_eye_filter_peaks_at_4_cycles_per_degree():
    d = 500.0
    f = np.linspace(0.001, 2, 20000)
    e = eye_filter(f, viewing_distance_mm=d)
    f_peak = f[np.argmax(e)]
    assert f_peak * np.pi * d / 180 == pytest.approx(4.0, rel=1e-3)
    assert e.max() == pytest.approx(1.0, rel=1e-6)


def test_laguerre_gauss_channels_are_unit_norm_and_start_with_a_gaussian():
    ch = laguerre_gauss_channels((33, 33), n_channels=5, width=8.0)
    assert ch.shape == (5, 33, 33)
    assert np.allclose(np.linalg.norm(ch.reshape(5, -1), axis=1), 1.0)
    yy, xx = np.mgrid[0:33, 0:33] - 16
    g = np.exp(-np.pi * (yy**2 + xx**2) / 64.0)
    assert np.allclose(ch[0], g / np.linalg.norm(g))


def test_cho_dprime_approaches_the_ideal_observer():
    # Gaussian signal in white noise, in the span of the LG channels: ideal d' = ||s|| / sigma
    rng = np.random.default_rng(0)
    n, sigma, s, amp = 64, 20.0, 3.0, 8.0
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    signal = amp * np.exp(-(yy**2 + xx**2) / (2 * s**2))
    ideal = np.linalg.norm(signal) / sigma
    present = signal + rng.normal(0, sigma, (200, n, n))
    absent = rng.normal(0, sigma, (200, n, n))
    res = cho_detectability(present, absent, width=s * np.sqrt(2 * np.pi), n_channels=10)
    assert res.d_prime == pytest.approx(ideal, rel=0.15)
    assert res.auc == pytest.approx(stats.norm.cdf(res.d_prime / np.sqrt(2)))
    assert res.auc_empirical == pytest.approx(res.auc, abs=0.04)
    # no signal: d' near zero (only the small-sample bias), AUC near 1/2
    null = cho_detectability(rng.normal(0, sigma, (200, n, n)), absent, width=7.5)
    assert null.d_prime < 0.5 and null.auc_empirical == pytest.approx(0.5, abs=0.1)
