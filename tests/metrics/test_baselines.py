"""Total-variation baseline and noise matching on small synthetic HU images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ctdid.metrics.baselines import MatchedNoise, match_noise, roi_noise_std, tv_denoise

FLAT = (slice(20, 44), slice(8, 28))


@pytest.fixture
def step_image() -> np.ndarray:
    """64x64: 0 HU on the left half, 100 HU on the right half."""
    img = np.zeros((64, 64), dtype=np.float32)
    img[:, 32:] = 100.0
    return img


@pytest.fixture
def noisy_step(step_image: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (step_image + rng.normal(0.0, 20.0, step_image.shape)).astype(np.float32)


def _tv_energy(u: np.ndarray, f: np.ndarray, weight: float) -> float:
    gy = np.zeros_like(u, dtype=np.float64)
    gx = np.zeros_like(u, dtype=np.float64)
    gy[:-1] = np.diff(u.astype(np.float64), axis=0)
    gx[:, :-1] = np.diff(u.astype(np.float64), axis=1)
    return float(0.5 * np.sum((u - f) ** 2.0) + weight * np.sum(np.hypot(gy, gx)))


def test_tv_noise_falls_monotonically_with_weight(noisy_step: np.ndarray) -> None:
    stds = [roi_noise_std(tv_denoise(noisy_step, weight=w), FLAT) for w in (0, 2, 5, 10, 20, 40)]
    assert stds[0] == pytest.approx(roi_noise_std(noisy_step, FLAT))
    assert all(b < a for a, b in itertools.pairwise(stds)), stds
    assert stds[-1] < 0.2 * stds[0]


def test_tv_keeps_step_height_for_small_weights(step_image: np.ndarray) -> None:
    out = tv_denoise(step_image, weight=5.0)
    height = out[:, 40:].mean() - out[:, :24].mean()
    assert height == pytest.approx(100.0, rel=0.02)
    # The edge stays sharp: one pixel on each side of it keeps most of the step.
    assert out[:, 32].mean() - out[:, 31].mean() > 90.0


def test_tv_preserves_mean_and_zero_weight_is_identity(noisy_step: np.ndarray) -> None:
    out = tv_denoise(noisy_step, weight=15.0)
    assert out.dtype == np.float32
    assert out.mean() == pytest.approx(noisy_step.mean(), abs=0.05)
    np.testing.assert_array_equal(tv_denoise(noisy_step, weight=0.0), noisy_step)


def test_tv_lowers_the_rof_energy_below_simple_alternatives(noisy_step: np.ndarray) -> None:
    w = 10.0
    out = tv_denoise(noisy_step, weight=w)
    e_out = _tv_energy(out, noisy_step, w)
    assert e_out < _tv_energy(noisy_step, noisy_step, w)
    assert e_out < _tv_energy(tv_denoise(noisy_step, weight=w, n_iter=3), noisy_step, w)
    flat = np.full_like(noisy_step, noisy_step.mean())
    assert e_out < _tv_energy(flat, noisy_step, w)


def test_tv_denoises_a_stack_slice_by_slice(noisy_step: np.ndarray) -> None:
    stack = np.stack([noisy_step, noisy_step[::-1] + 50.0])
    out = tv_denoise(stack, weight=8.0)
    np.testing.assert_allclose(out[0], tv_denoise(noisy_step, weight=8.0), atol=1e-3)
    np.testing.assert_allclose(out[1], tv_denoise(noisy_step[::-1] + 50.0, weight=8.0), atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": -1.0}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": 1.0, "n_iter": 0}, "n_iter"),
    ],
)
def test_tv_rejects_bad_parameters(noisy_step: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tv_denoise(noisy_step, **kwargs)


def test_tv_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="shape"):
        tv_denoise(np.zeros(8), weight=1.0)
    bad = np.zeros((8, 8))
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tv_denoise(bad, weight=1.0)


@pytest.mark.parametrize("target", [3.0, 8.0, 15.0])
def test_match_noise_hits_target_within_2_percent(noisy_step: np.ndarray, target: float) -> None:
    res = match_noise(tv_denoise, noisy_step, target_std=target, roi=FLAT)
    assert isinstance(res, MatchedNoise)
    assert res.converged
    assert abs(res.std - target) <= 0.02 * target
    assert res.std == pytest.approx(roi_noise_std(res.image, FLAT))
    np.testing.assert_allclose(res.image, tv_denoise(noisy_step, weight=res.weight), atol=1e-4)


def test_match_noise_on_whole_image_and_several_regions(noisy_step: np.ndarray) -> None:
    regions = [FLAT, (slice(20, 44), slice(38, 58))]
    res = match_noise(
        tv_denoise, noisy_step, target_std=6.0, roi=regions, detrend=True, crop_margin=None
    )
    assert abs(res.std - 6.0) <= 0.02 * 6.0
    assert res.std == pytest.approx(roi_noise_std(res.image, regions, detrend=True))


def test_match_noise_stronger_target_needs_larger_weight(noisy_step: np.ndarray) -> None:
    weak = match_noise(tv_denoise, noisy_step, target_std=12.0, roi=FLAT)
    strong = match_noise(tv_denoise, noisy_step, target_std=4.0, roi=FLAT)
    assert strong.weight > weak.weight


def test_match_noise_reports_unreachable_target(noisy_step: np.ndarray) -> None:
    above_input = 2.0 * roi_noise_std(noisy_step, FLAT)
    res = match_noise(tv_denoise, noisy_step, target_std=above_input, roi=FLAT)
    assert not res.converged
    assert res.weight == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="target_std"):
        match_noise(tv_denoise, noisy_step, target_std=0.0, roi=FLAT)


def test_roi_noise_std_masks_slices_and_detrend() -> None:
    yy, xx = np.mgrid[:32, :32].astype(np.float32)
    ramp = 3.0 * yy + 2.0 * xx
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:20, 4:20] = True
    region = (slice(4, 20), slice(4, 20))
    assert roi_noise_std(ramp, mask) == pytest.approx(roi_noise_std(ramp, region))
    assert roi_noise_std(ramp, region) > 10.0
    assert roi_noise_std(ramp, region, detrend=True) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="fewer than 4"):
        roi_noise_std(ramp, (slice(0, 1), slice(0, 1)))
    with pytest.raises(ValueError, match="shape"):
        roi_noise_std(ramp, np.ones((4, 4), dtype=bool))
