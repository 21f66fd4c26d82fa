"""spectral_transfer / transfer_label: against Gaussian filters of known MTF50."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from ctdid.metrics import (
    CandidateLabels,
    SpectralTransfer,
    body_window,
    pick_candidate,
    spectral_transfer,
    transfer_label,
)
from ctdid.sim import abdomen_phantom


def gaussian_mtf50(sigma_mm: float) -> float:
    return float(np.sqrt(np.log(2) / (2 * np.pi**2 * sigma_mm**2)))


@pytest.fixture(scope="module")
def clean() -> tuple[np.ndarray, tuple[float, float]]:
    """Noise-free 256x256 abdomen phantom (1.48 mm pixels), HU."""
    p = abdomen_phantom(seed=0, shape=256)
    return p.hu.astype(np.float64), p.spacing


def blur(img: np.ndarray, sigma_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    return ndimage.gaussian_filter(img, (sigma_mm / spacing[0], sigma_mm / spacing[1]))


@pytest.mark.parametrize("sigma_mm", [1.5, 3.0, 6.0])
def test_blurred_phantom_gives_gaussian_mtf50(clean, sigma_mm: float) -> None:
    img, sp = clean
    f50 = transfer_label(blur(img, sigma_mm, sp), img, spacing=sp)
    assert f50 == pytest.approx(gaussian_mtf50(sigma_mm), rel=0.05)


@pytest.mark.parametrize("sigma_mm", [1.5, 3.0])
def test_filtered_noisy_input_gives_filter_mtf50(clean, sigma_mm: float) -> None:
    img, sp = clean
    noisy = img + np.random.default_rng(1).normal(0.0, 40.0, img.shape)
    f50 = transfer_label(blur(noisy, sigma_mm, sp), noisy, spacing=sp)
    assert f50 == pytest.approx(gaussian_mtf50(sigma_mm), rel=0.05)


def test_transfer_curve_follows_the_gaussian(clean) -> None:
    img, sp = clean
    sigma = 3.0
    st = spectral_transfer(blur(img, sigma, sp), img, spacing=sp)
    f = st.frequencies
    expected = np.exp(-2 * np.pi**2 * sigma**2 * f**2)
    low = f < 2 * gaussian_mtf50(sigma)
    np.testing.assert_allclose(st.transfer[low], expected[low], atol=0.05)


def test_input_itself_transfers_one_up_to_nyquist(clean) -> None:
    img, sp = clean
    noisy = img + np.random.default_rng(2).normal(0.0, 40.0, img.shape)
    st = spectral_transfer(noisy, noisy, spacing=sp)
    assert isinstance(st, SpectralTransfer)
    np.testing.assert_allclose(st.transfer, 1.0, rtol=1e-9)
    assert st.nyquist == pytest.approx(0.5 / sp[0])
    assert transfer_label(noisy, noisy, spacing=sp) == pytest.approx(0.5 / sp[0])
    assert st.frequencies[0] >= 0 and np.all(np.diff(st.frequencies) > 0)
    assert st.frequencies[-1] <= st.nyquist


def test_f50_falls_monotonically_with_blur(clean) -> None:
    img, sp = clean
    noisy = img + np.random.default_rng(3).normal(0.0, 20.0, img.shape)
    f50 = [transfer_label(blur(noisy, s, sp), noisy, spacing=sp) for s in (1.5, 2.0, 3.0, 4.5, 6.0)]
    assert all(a > b for a, b in itertools.pairwise(f50))


def test_air_outside_the_body_does_not_count(clean) -> None:
    """Blurring only the air (outside the body) leaves the transfer at 1."""
    img, sp = clean
    body = img > -500
    noisy = img + np.random.default_rng(4).normal(0.0, 40.0, img.shape)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(body, iterations=2))
    changed = np.where(mask, noisy, blur(noisy, 4.0, sp))
    st = spectral_transfer(changed, noisy, spacing=sp, mask=mask)
    np.testing.assert_allclose(st.transfer, 1.0, rtol=1e-9)


def test_volume_and_broadcast_mask(clean) -> None:
    img, sp = clean
    vol = np.stack([img, img + 5.0])
    mask = img > -500
    f2 = transfer_label(blur(img, 3.0, sp), img, spacing=sp, mask=mask)
    f3 = transfer_label(
        np.stack([blur(s, 3.0, sp) for s in vol]), vol, spacing=(2.0, *sp), mask=mask
    )
    assert f3 == pytest.approx(f2, rel=0.02)


def test_body_window_shape() -> None:
    yy, xx = np.mgrid[:100, :100]
    mask = np.hypot(yy - 50, xx - 50) < 40
    w = body_window(mask, spacing=1.0, margin_mm=5.0, taper_mm=10.0)
    assert w[~mask].max() == 0.0
    assert w[50, 50] == pytest.approx(1.0)
    assert w[50, 50 + 40 - 5 + 1] == 0.0 or w[50, 50 + 40 - 5 + 1] < 0.05  # in the margin
    assert 0.0 < w[50, 50 + 40 - 5 - 5] < 1.0  # in the taper
    # the image border counts as outside
    assert (
        body_window(np.ones((20, 20), bool), spacing=1.0, margin_mm=0.0, taper_mm=3.0)[0, 5] < 0.5
    )


def test_errors(clean) -> None:
    img, sp = clean
    with pytest.raises(ValueError, match="shape"):
        spectral_transfer(img[:-1], img, spacing=sp)
    with pytest.raises(ValueError, match="empty"):
        spectral_transfer(img, img, spacing=sp, mask=np.zeros(img.shape, bool))


def test_candidate_labels_from_transfer_cascade_the_input(clean) -> None:
    """The input blurred by sigma0, a candidate by sigma0 and sigma1: the cascade of the
    input's MTF50 and the measured transfer f50 is the candidate's own MTF50."""
    img, sp = clean
    s0, s1 = 2.0, 3.0
    inp = blur(img, s0, sp)
    cand = blur(inp, s1, sp)
    t50 = transfer_label(cand, inp, spacing=sp)
    lab = CandidateLabels.from_transfer(10.0, t50, input_mtf50=gaussian_mtf50(s0))
    assert lab.mtf50 == pytest.approx(gaussian_mtf50(np.hypot(s0, s1)), rel=0.05)
    assert CandidateLabels.from_transfer(10.0, t50).mtf50 == t50
    # sharpest-below ranks by the transfer f50
    labs = [CandidateLabels.from_transfer(n, t) for n, t in [(30, 0.6), (20, 0.3), (12, 0.2)]]
    assert pick_candidate(labs, task="sharpest-below", noise_ceiling=25.0) == 1
    with pytest.raises(ValueError, match="transfer50"):
        CandidateLabels.from_transfer(10.0, 0.0)
