import numpy as np
import pytest

from ctdid.metrics.rois import circle_roi, cnr, rectangle_roi, roi_stats


def test_rectangle_has_the_requested_pixel_count():
    m = rectangle_roi((40, 50), center=(20, 25), size=(6, 9))
    assert m.sum() == 54
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max()) == (17, 22)
    assert (cols.min(), cols.max()) == (21, 29)
    assert rectangle_roi((40, 50), center=(9.5, 9.5), size=4).sum() == 16


def test_circle_area_approaches_pi_r2():
    m = circle_roi((201, 201), center=(100, 100), radius=60)
    assert m.sum() == pytest.approx(np.pi * 60**2, rel=2e-3)
    assert m[100, 160] and not m[100, 161]


def test_roi_stats_and_cnr_on_known_regions():
    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 10.0, (128, 128))
    lesion = circle_roi(img.shape, center=(64, 40), radius=12)
    img[lesion] = rng.normal(30.0, 20.0, lesion.sum())
    bg = circle_roi(img.shape, center=(64, 95), radius=20)
    s, b = roi_stats(img, lesion), roi_stats(img, bg)
    assert s.n == lesion.sum()
    assert s.mean == pytest.approx(30, abs=3) and s.std == pytest.approx(20, rel=0.1)
    assert b.mean == pytest.approx(0, abs=1.5) and b.std == pytest.approx(10, rel=0.1)
    expected = 2 * abs(s.mean - b.mean) / (s.std + b.std)
    assert cnr(img, lesion, bg) == pytest.approx(expected)
    assert cnr(img, lesion, bg) == pytest.approx(2 * 30 / 30, rel=0.15)


def test_empty_roi_is_rejected():
    with pytest.raises(ValueError, match="no pixel"):
        roi_stats(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool))
