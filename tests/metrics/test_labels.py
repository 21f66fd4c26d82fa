from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ctdid.metrics.labels import (
    find_body_mask,
    find_flat_regions,
    noise_label,
    resolution_label,
    skin_edge_mtf,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def phantom(*, n=384, dx=0.8, blur_mm=0.8, noise=20.0, seed=0, sub=5):
    """Elliptical body (0 HU) in air with inserts and a table, Gaussian-blurred, white noise.

    The blur is applied on a 5x finer grid and the result point-sampled at the pixel centres,
    so the system MTF is exactly the Gaussian's, exp(-2 pi^2 blur^2 f^2).
    """
    fine = dx / sub
    u = (np.arange(n * sub) - sub // 2) * fine
    yy, xx = u[:, None], u[None, :]
    c = (n - 1) / 2 * dx
    img = np.full((n * sub, n * sub), -1000.0)
    img[((yy - c) / 105) ** 2 + ((xx - c) / 140) ** 2 <= 1] = 0.0
    img[np.hypot(yy - c + 20, xx - c - 50) <= 25] = 60.0  # liver-like
    img[np.hypot(yy - c - 30, xx - c + 60) <= 15] = -100.0  # fat
    img[np.hypot(yy - c - 50, xx - c) <= 8] = 700.0  # bone
    img[(yy > c + 112) & (yy < c + 122) & (np.abs(xx - c) < 130)] = -300.0  # table
    img = ndimage.gaussian_filter(img, blur_mm / fine)[sub // 2 :: sub, sub // 2 :: sub]
    return img + np.random.default_rng(seed).normal(0, noise, img.shape)


def gaussian_mtf50(sigma_mm):
    return float(np.sqrt(np.log(2) / (2 * np.pi**2)) / sigma_mm)


@pytest.fixture(scope="module")
def body():
    return phantom()


def test_body_mask_excludes_the_table(body):
    mask = find_body_mask(body)
    area = mask.sum() * 0.8**2
    assert area == pytest.approx(np.pi * 105 * 140, rel=0.01)


def test_flat_regions_lie_in_uniform_tissue_inside_the_body(body):
    regions = find_flat_regions(body, spacing=0.8, roi_mm=10.0, n=8)
    assert len(regions) == 8
    clean = phantom(noise=0.0)
    occupied = np.zeros(body.shape, dtype=int)
    for reg in regions:
        patch = clean[reg]
        assert patch.shape == (12, 12)
        assert np.ptp(patch) < 1.0  # no insert edge or body edge inside
        occupied[reg] += 1
    assert occupied.max() == 1  # no overlap


@pytest.mark.parametrize(("noise", "blur_mm"), [(20.0, 0.8), (40.0, 0.5), (10.0, 1.2)])
def test_labels_recover_the_true_noise_and_mtf50(noise, blur_mm):
    img = phantom(noise=noise, blur_mm=blur_mm, seed=3)
    assert noise_label(img, spacing=0.8) == pytest.approx(noise, rel=0.10)
    assert resolution_label(img, spacing=0.8) == pytest.approx(gaussian_mtf50(blur_mm), rel=0.10)


def test_labels_of_a_volume_and_with_given_regions(body):
    vol = np.stack([body, phantom(seed=7)])
    regions = find_flat_regions(vol, spacing=(2.0, 0.8, 0.8), n=6)
    assert all(len(r) == 3 for r in regions)
    assert noise_label(vol, spacing=0.8, regions=regions) == pytest.approx(20.0, rel=0.1)
    assert resolution_label(vol, spacing=0.8) == pytest.approx(gaussian_mtf50(0.8), rel=0.1)


def test_skin_edge_mtf_curve_follows_the_gaussian(body):
    mtf = skin_edge_mtf(body, spacing=0.8)
    f = mtf.frequencies
    band = f <= 0.4
    assert np.max(np.abs(mtf.mtf[band] - np.exp(-2 * np.pi**2 * 0.64 * f[band] ** 2))) < 0.05


def test_no_body_is_reported():
    air = np.full((64, 64), -1000.0)
    with pytest.raises(ValueError, match="no body"):
        skin_edge_mtf(air, spacing=1.0)
    with pytest.raises(ValueError):
        noise_label(air, spacing=1.0)


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_labels_on_the_mayo_pair_rank_quarter_dose_as_noisier():
    files = sorted((SHARED / "mayo_pair_L506").glob("*"))
    fd = [p for p in files if "_FD_" in p.name]
    qd = [p for p in files if "_QD_" in p.name]
    if not fd or not qd:
        pytest.skip("Mayo pair not found")

    def read(p):
        return np.fromfile(p, dtype="<u2").reshape(512, 512).astype(np.float32) - 1024.0

    full, quarter = read(fd[0]), read(qd[0])
    spacing = 0.7  # about 0.66-0.74 mm, not stored
    n_fd = noise_label(full, spacing=spacing)
    n_qd = noise_label(quarter, spacing=spacing)
    assert n_qd > 1.5 * n_fd  # quarter dose: about twice the noise
    m_fd = resolution_label(full, spacing=spacing)
    assert 0.1 < m_fd < 1.0


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_labels_rank_sharp_above_smooth_kernel_on_adjacent_slices():
    folder = SHARED / "mayo_fd_L067"
    sharp = sorted(folder.glob("*_sh_*.raw"))
    smooth = sorted(folder.glob("*_sm_*.raw"))
    if not sharp or len(sharp) != len(smooth):
        pytest.skip("L067 slices not found")

    def read(p):
        return np.fromfile(p, dtype="<u2").reshape(512, 512).astype(np.float32) - 1024.0

    for p_sh, p_sm in zip(sharp, smooth, strict=True):
        sh, sm = read(p_sh), read(p_sm)
        assert noise_label(sh, spacing=0.7) > 1.5 * noise_label(sm, spacing=0.7)
        assert resolution_label(sh, spacing=0.7) > resolution_label(sm, spacing=0.7)


def test_flat_regions_stay_inside_an_image_the_body_fills():
    """A body cut by the field of view: every region is a whole square inside the image."""
    rng = np.random.default_rng(4)
    img = (40.0 + rng.normal(0.0, 10.0, (96, 96))).astype(np.float32)
    img[:, :30] += np.linspace(0, 60, 30, dtype=np.float32)  # less flat toward the left
    regions = find_flat_regions(img, spacing=1.0, body_mask=np.ones_like(img, bool), n=20)
    assert len(regions) >= 5
    for rows, cols in regions:
        assert rows.start >= 0 and rows.stop <= 96 and cols.start >= 0 and cols.stop <= 96
        assert img[rows, cols].shape == (10, 10)
