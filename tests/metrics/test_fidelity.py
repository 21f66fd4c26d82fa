import numpy as np
import pytest

from ctdid.metrics.fidelity import psnr, rmse, ssim


def test_rmse_and_psnr_of_a_known_offset():
    a = np.zeros((32, 32), dtype=np.float32)
    b = a + 5.0
    assert rmse(a, b) == pytest.approx(5.0)
    assert psnr(a, b, data_range=500.0) == pytest.approx(20 * np.log10(100.0))
    assert psnr(a, a, data_range=1.0) == float("inf")


def test_rmse_mask_selects_pixels_and_broadcasts_over_slices():
    a = np.zeros((2, 8, 8))
    b = np.zeros((2, 8, 8))
    b[:, :4] = 3.0  # error only in the top half
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4] = True
    assert rmse(a, b, mask=mask) == pytest.approx(3.0)
    assert rmse(a, b, mask=~mask) == pytest.approx(0.0)
    assert rmse(a, b) == pytest.approx(np.sqrt(4.5))


def test_ssim_identity_and_constant_images_match_the_luminance_formula():
    rng = np.random.default_rng(0)
    img = rng.normal(40, 30, (48, 48))
    assert ssim(img, img) == pytest.approx(1.0)
    # constant images: only the luminance term remains, (2 mx my + C1) / (mx^2 + my^2 + C1)
    a, b = np.full((32, 32), 40.0), np.full((32, 32), 140.0)
    mx, my = (40 + 160) / 400, (140 + 160) / 400
    c1 = 0.01**2
    expected = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_uses_the_window_and_decreases_with_noise():
    rng = np.random.default_rng(1)
    img = np.zeros((64, 64))
    img[:, 32:] = 100.0
    noisy = [img + rng.normal(0, s, img.shape) for s in (5, 20, 80)]
    scores = [ssim(img, n) for n in noisy]
    assert scores[0] > scores[1] > scores[2]
    # differences outside the window are invisible: everything below -160 HU clips to 0
    assert ssim(np.full((32, 32), -1000.0), np.full((32, 32), -500.0)) == pytest.approx(1.0)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        rmse(np.zeros((4, 4)), np.zeros((4, 5)))
