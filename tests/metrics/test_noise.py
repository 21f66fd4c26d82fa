import numpy as np
import pytest
from scipy import ndimage

from ctdid.metrics.noise import (
    noise_std,
    nps_2d,
    nps_from_difference,
    nps_mean_frequency,
    nps_peak_frequency,
    radial_average,
    tile_patches,
)


def test_noise_std_in_roi():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 12.0, (100, 100))
    roi = np.zeros(img.shape, dtype=bool)
    roi[20:80, 20:80] = True
    assert noise_std(img, roi) == pytest.approx(12.0, rel=0.05)


def test_white_noise_nps_is_flat_and_integrates_to_the_variance():
    rng = np.random.default_rng(1)
    sigma, dy, dx = 15.0, 0.5, 0.6
    nps = nps_2d(rng.normal(0, sigma, (32, 64, 64)), spacing=(dy, dx))
    level = sigma**2 * dy * dx
    assert nps.variance == pytest.approx(sigma**2, rel=0.03)
    _, p = radial_average(nps)
    assert np.all(np.abs(p[1:] / level - 1) < 0.1)  # flat within 10 % in every ring
    assert np.mean(p[1:]) == pytest.approx(level, rel=0.03)
    assert nps.fx[nps.nps.shape[1] // 2] == 0 and nps.fy.max() == pytest.approx(0.5 / dy, rel=0.05)


def test_gaussian_filtered_noise_matches_the_analytic_nps():
    # white noise sigma filtered by a Gaussian of s mm: NPS(f) = sigma^2 dx dy exp(-4 pi^2 s^2 f^2)
    rng = np.random.default_rng(2)
    sigma, dx, s = 15.0, 0.5, 0.6
    field = ndimage.gaussian_filter(
        rng.normal(0, sigma, (4, 512, 512)), (0, s / dx, s / dx), mode="wrap"
    )
    nps = nps_2d(tile_patches(field, size=128), spacing=dx, detrend="mean")
    f, p = radial_average(nps)
    analytic = sigma**2 * dx * dx * np.exp(-4 * np.pi**2 * s**2 * f**2)
    band = (f > 0) & (analytic > 0.05 * analytic[0])
    ratio = p[band] / analytic[band]
    assert np.all(np.abs(ratio - 1) < 0.15)
    assert np.mean(ratio) == pytest.approx(1.0, abs=0.05)
    assert nps.variance == pytest.approx(sigma**2 / (4 * np.pi * (s / dx) ** 2), rel=0.05)
    # radial NPS ~ exp(-f^2 / 2 tau^2): mean frequency tau sqrt(2 / pi), peak near 0
    tau = 1 / (np.sqrt(8) * np.pi * s)
    assert nps_mean_frequency(nps) == pytest.approx(tau * np.sqrt(2 / np.pi), rel=0.05)
    assert nps_peak_frequency(nps) < 0.2 * tau  # low-pass: peak at (about) zero


def test_band_pass_noise_texture_peak_and_mean_frequency():
    # NPS ~ f exp(-f^2 / 2 tau^2) (FBP-like): peak at tau, mean frequency tau sqrt(pi / 2)
    rng = np.random.default_rng(3)
    n, dx, tau = 512, 0.5, 0.25
    fy = np.fft.fftfreq(n, dx)
    fr = np.hypot(fy[:, None], fy[None, :])
    h = np.sqrt(fr) * np.exp(-(fr**2) / (4 * tau**2))
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(0, 1, (6, n, n))) * h))
    nps = nps_2d(tile_patches(field, size=64), spacing=dx)
    assert nps_peak_frequency(nps) == pytest.approx(tau, rel=0.1)
    assert nps_mean_frequency(nps) == pytest.approx(tau * np.sqrt(np.pi / 2), rel=0.05)


def test_difference_image_nps_is_halved_to_one_realisation():
    rng = np.random.default_rng(4)
    sigma, dx = 20.0, 0.7
    obj = 200 * np.sin(np.arange(256) / 9.0)[None, :] * np.ones((256, 1))
    a = obj + rng.normal(0, sigma, obj.shape)
    b = obj + rng.normal(0, sigma, obj.shape)
    nps = nps_from_difference(a, b, spacing=dx, size=64)
    assert nps.n_patches == 16
    assert nps.variance == pytest.approx(sigma**2, rel=0.05)
    assert np.mean(nps.nps) == pytest.approx(sigma**2 * dx * dx, rel=0.05)
    raw = nps_2d(tile_patches(a - b, size=64), spacing=dx, detrend="mean")
    assert raw.variance == pytest.approx(2 * nps.variance)


def test_plane_detrend_removes_a_ramp():
    yy, xx = np.mgrid[0:32, 0:32]
    ramp = 3.0 * yy - 2.0 * xx + 7.0
    assert nps_2d(ramp, spacing=1.0).variance == pytest.approx(0.0, abs=1e-12)
    assert nps_2d(ramp, spacing=1.0, detrend="mean").variance > 10


def test_tile_patches_respects_the_mask():
    img = np.zeros((2, 40, 40))
    mask = np.zeros((40, 40), dtype=bool)
    mask[:20, :] = True
    patches = tile_patches(img, size=10, mask=mask)
    assert patches.shape == (2 * 2 * 4, 10, 10)
