"""Tests of ctdid.sim.simulate_low_dose (and the real-data check against Mayo's pair)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sim_testing import SMALL

from ctdid.sim import (
    DEFAULT_I0,
    FanBeamGeometry,
    ParallelBeamGeometry,
    rescale_noise,
    simulate_low_dose,
    water_cylinder,
)
from ctdid.volume import CTVolume

# Enough views and bins for noise statistics of a 200 mm cylinder, and fast.
PARALLEL = ParallelBeamGeometry(n_views=90, n_cols=112, col_width_mm=2.0)


@pytest.fixture(scope="module")
def water() -> object:
    return water_cylinder(shape=128, fov_mm=256.0, diameter_mm=200.0)


def _roi_std(image: np.ndarray) -> float:
    return float(image[40:88, 40:88].std())


def test_full_simulation_noise_follows_dose(water: object) -> None:
    hu, spacing = water.hu, water.spacing  # type: ignore[attr-defined]
    kw = {"spacing": spacing, "geometry": PARALLEL, "sigma_e": 0.0, "i0": 2e4}
    full = simulate_low_dose(hu, dose=1.0, seed=0, **kw)
    quarter = simulate_low_dose(hu, dose=0.25, seed=1, **kw)
    assert full.dtype == np.float32 and full.shape == hu.shape
    assert abs(full[40:88, 40:88].mean()) < 5 and abs(quarter[40:88, 40:88].mean()) < 10
    assert _roi_std(full) > 3.0
    # Quantum noise: a quarter of the dose doubles the std.
    assert _roi_std(quarter) / _roi_std(full) == pytest.approx(2.0, rel=0.1)
    again = simulate_low_dose(hu, dose=1.0, seed=0, **kw)
    assert np.array_equal(full, again)


def test_insert_mode_keeps_the_image_and_adds_noise(water: object) -> None:
    hu, spacing = water.hu, water.spacing  # type: ignore[attr-defined]
    same = simulate_low_dose(hu, dose=1.0, spacing=spacing, geometry=PARALLEL, mode="insert")
    assert np.array_equal(same, hu)
    low = simulate_low_dose(
        hu, dose=0.25, spacing=spacing, geometry=PARALLEL, mode="insert", seed=3
    )
    added = low - hu
    assert abs(added[40:88, 40:88].mean()) < 3
    assert _roi_std(added) > 3.0


def test_image_domain_shortcut_matches_direct_insertion(water: object) -> None:
    """Rescaling a 25 % dose pair to 10 % gives the noise of a direct 10 % insertion."""
    hu, spacing = water.hu, water.spacing  # type: ignore[attr-defined]
    kw = {"spacing": spacing, "geometry": PARALLEL, "mode": "insert", "sigma_e": 0.0}
    ratios = []
    for seed in range(3):
        low = simulate_low_dose(hu, dose=0.25, seed=seed, **kw)
        direct = simulate_low_dose(hu, dose=0.1, seed=seed + 10, **kw)
        shortcut = rescale_noise(hu, low, pair_dose=0.25, dose=0.1)
        ratios.append(_roi_std(shortcut - hu) / _roi_std(direct - hu))
    assert np.mean(ratios) == pytest.approx(1.0, rel=0.1)


def test_stack_volume_and_argument_checks(water: object) -> None:
    hu, spacing = water.hu, water.spacing  # type: ignore[attr-defined]
    stack = np.stack([hu, hu])
    out = simulate_low_dose(stack, dose=0.5, spacing=spacing, geometry=SMALL, seed=0)
    assert out.shape == (2, 128, 128)
    assert not np.array_equal(out[0], out[1])  # independent noise per slice
    vol = CTVolume(stack, spacing=(5.0, *spacing))
    out_vol = simulate_low_dose(vol, dose=0.5, geometry=SMALL, seed=0, slices_per_batch=1)
    assert out_vol.shape == (2, 128, 128)
    assert abs(out_vol[:, 40:88, 40:88].mean()) < 20
    with pytest.raises(ValueError, match="spacing"):
        simulate_low_dose(hu, dose=0.5)
    with pytest.raises(ValueError, match="mode"):
        simulate_low_dose(hu, dose=0.5, spacing=1.0, mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dose"):
        simulate_low_dose(hu, dose=0.0, spacing=1.0, geometry=SMALL)


@pytest.mark.shared
def test_insertion_into_mayo_slice_is_near_real_quarter_dose(shared_data: Path) -> None:
    """Insert 25 % dose noise into a real full-dose slice (sharp kernel: ramp filter) and
    compare with Mayo's own quarter-minus-full difference of the same slice (L506).

    Only the order of magnitude is checked: the default I0 is not calibrated to this scanner
    (no bowtie, no flying focal spot). Half the default views with twice the photons per view
    keep the dose and the noise and halve the run time.
    """

    def load(path: Path) -> np.ndarray:
        return np.fromfile(path, "<u2").reshape(512, 512).astype(np.float32) - 1024

    pair = shared_data / "mayo_pair_L506"
    fd = load(pair / "L506_FD_3mm_D45_slice32.raw")
    qd = load(pair / "L506_QD_3mm_D45_slice32.raw")
    centre = (slice(206, 306), slice(206, 306))
    real = float((qd - fd)[centre].std())
    geometry = FanBeamGeometry(n_views=576)
    sim = simulate_low_dose(
        fd,
        dose=0.25,
        spacing=0.7,
        geometry=geometry,
        i0=2 * DEFAULT_I0,
        mode="insert",
        kernel="ramp",
        seed=0,
    )
    simulated = float((sim - fd)[centre].std())
    assert 95 < real < 125
    assert 0.6 < simulated / real < 2.0
