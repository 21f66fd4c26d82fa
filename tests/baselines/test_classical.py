"""TV (scikit-image) and BM3D (correlated-noise PSD) strength sweeps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctdid.baselines import bm3d_denoise, bm3d_stack, estimate_noise_psd, tv_denoise, tv_stack
from ctdid.baselines.iterate import iterate_images
from ctdid.core import InteractiveDenoiser

REGIONS = [(slice(r, r + 16), slice(c, c + 16)) for r in range(0, 128, 16) for c in (0, 16, 32)]


def test_tv_noise_falls_with_weight(phantom, flat_noise, falls) -> None:
    noisy, clean, _ = phantom
    assert np.array_equal(tv_denoise(noisy, weight=0.0), noisy)
    noise = [flat_noise(tv_denoise(noisy, weight=w), clean) for w in (0, 5, 10, 20, 40, 80)]
    assert falls(noise), noise
    with pytest.raises(ValueError, match="weight"):
        tv_denoise(noisy, weight=-1.0)


def test_psd_of_white_and_correlated_noise() -> None:
    rng = np.random.default_rng(1)
    white = rng.normal(0, 10.0, (128, 48))
    psd = estimate_noise_psd(white, REGIONS, shape=(64, 64))
    assert psd.shape == (64, 64) and (psd >= 0).all()
    assert psd.mean() / psd.size == pytest.approx(100.0, rel=0.1)  # bm3d: mean = H W var
    # Smoothed noise: the estimate carries its power at low frequencies.
    smooth = ndimage.gaussian_filter(rng.normal(0, 30.0, (128, 48)), 1.5)
    p2 = estimate_noise_psd(smooth, REGIONS, shape=(64, 64))
    assert p2[0, 0] > 5 * p2[32, 32]
    assert p2.mean() / p2.size == pytest.approx(smooth.var(), rel=0.25)


def test_bm3d_noise_falls_with_factor(phantom, flat_noise, falls) -> None:
    noisy, clean, _ = phantom
    gy, gx = np.gradient(clean)
    # Flat 8 x 8 squares of the clean phantom inside the body, for the PSD.
    regions = [
        (slice(r, r + 8), slice(c, c + 8))
        for r in range(0, 88, 8)
        for c in range(0, 88, 8)
        if (np.hypot(gy, gx)[r : r + 8, c : c + 8] < 1e-3).all() and clean[r, c] > -200
    ]
    assert len(regions) >= 3
    psd = estimate_noise_psd(noisy, regions)
    assert np.array_equal(bm3d_denoise(noisy, psd=psd, factor=0.0), noisy)
    noise = [flat_noise(bm3d_denoise(noisy, psd=psd, factor=f), clean) for f in (0, 0.5, 1, 2)]
    assert falls(noise), noise


def test_tv_stack_matches_the_default_noise(phantom, model, flat_noise, falls) -> None:
    noisy, clean, spacing = phantom
    _, y0, _, t_low = iterate_images(InteractiveDenoiser(model).apply, noisy, k=3)
    st = tv_stack(noisy, default=y0, t_low=t_low, spacing=spacing, n_candidates=3)
    assert st.mode == "tv" and len(st) == 7
    assert np.array_equal(st.candidates[0].image, noisy)
    m = st.info["matched_noise_hu"]
    t = st.info["target_noise_hu"]
    assert m["default"] == pytest.approx(t["default"], rel=0.05)
    noise = [flat_noise(c.image, clean) for c in st]
    assert falls(noise), noise


def test_bm3d_stack_runs_small(phantom, model, flat_noise, falls) -> None:
    noisy, clean, spacing = phantom
    _, y0, _, t_low = iterate_images(InteractiveDenoiser(model).apply, noisy, k=3)
    st = bm3d_stack(noisy, t_low=t_low, spacing=spacing, default=y0, n_candidates=2)
    assert st.mode == "bm3d" and len(st) == 5
    assert np.array_equal(st.candidates[0].image, noisy)
    noise = [flat_noise(c.image, clean) for c in st]
    assert falls(noise), noise
