"""Comparing (noise, quality) curves at equal noise."""

from __future__ import annotations

import numpy as np
import pytest

from ctdid.metrics import curve_at, difference_at_equal_noise, noise_levels, side_range


def test_curve_at_interpolates_in_noise_and_refuses_extrapolation() -> None:
    noise = [10.0, 2.0, 5.0]  # any order
    quality = [30.0, 14.0, 20.0]
    got = curve_at(noise, quality, [2.0, 3.5, 7.5, 10.0, 1.0, 11.0])
    assert np.allclose(got[:4], [14.0, 17.0, 25.0, 30.0])
    assert np.isnan(got[4]) and np.isnan(got[5])


def test_difference_at_equal_noise_sign_and_overlap() -> None:
    n = np.array([20.0, 10.0, 5.0, 2.0])
    a = np.array([10.0, 8.0, 7.0, 9.0])
    b = a + 1.0  # b is 1 HU worse everywhere
    d, k = difference_at_equal_noise(n, a, n, b, within=(2.0, 20.0))
    assert d == pytest.approx(-1.0) and k == 16
    # Only the shared range counts: b covers 5..20 HU, compared there alone.
    d, k = difference_at_equal_noise(n, a, n[:3], b[:3], within=(2.0, 20.0))
    assert d == pytest.approx(-1.0) and k == 16
    # No shared noise level: NaN.
    d, k = difference_at_equal_noise(n[:2], a[:2], n[2:], b[2:], within=(2.0, 20.0))
    assert np.isnan(d) and k == 0


def test_side_range_and_levels() -> None:
    assert side_range("high", input_noise=40, default_noise=8, low_noise=3) == (8, 40)
    assert side_range("low", input_noise=40, default_noise=8, low_noise=3) == (3, 8)
    with pytest.raises(ValueError):
        side_range("mid", input_noise=40, default_noise=8, low_noise=3)  # type: ignore[arg-type]
    lv = noise_levels(2.0, 32.0, n=5)
    assert np.allclose(lv, [2, 4, 8, 16, 32])
