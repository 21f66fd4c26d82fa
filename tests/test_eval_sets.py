"""The evaluation slices (benchmarks/eval_sets.py) on small synthetic images."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import ndimage

from benchmark_loading import BENCHMARKS, benchmark_module

pytestmark = pytest.mark.usefixtures("one_thread")

SPACING = (0.7, 0.7)


@pytest.fixture(scope="module")
def es() -> Iterator[ModuleType]:
    with benchmark_module("eval_sets") as module:
        yield module


def _grid(n: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    return yy, xx, np.hypot(yy - n / 2, xx - n / 2)


def _tilted(n: int = 128) -> np.ndarray:
    """A body disc holding a tilted plane (2 and 3 HU per pixel), air outside."""
    yy, xx, r = _grid(n)
    img = np.where(r < 0.43 * n, 2.0 * (yy - n / 2) + 3.0 * (xx - n / 2), -1000.0)
    return img.astype(np.float32)


def _textured(n: int = 128, seed: int = 0) -> np.ndarray:
    """A body disc with smooth random texture and two inserts: no flat plateaus."""
    rng = np.random.default_rng(seed)
    _, _, r = _grid(n)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (n, n)), 4.0) * 200.0
    img = np.where(r < 0.43 * n, 40.0 + texture, -1000.0)
    img[np.hypot(*(np.mgrid[:n, :n] - np.array([40, 50])[:, None, None])) < 6] += 300.0
    return img.astype(np.float32)


def test_flat_noise_removes_a_plane(es: ModuleType) -> None:
    ref = _tilted()
    noise = np.random.default_rng(1).normal(0.0, 10.0, ref.shape).astype(np.float32)
    s = es.make_slice(
        "tilt", "sim", dose=0.25, kernel="sharp", low=ref + noise, reference=ref,
        spacing=SPACING, edge_sigma_px=0.0,
    )  # fmt: skip
    assert s.flat_regions
    assert es.flat_noise(s.reference, s) < 1e-3
    assert es.flat_noise(s.low, s) == pytest.approx(10.0, rel=0.06)
    naive = float(np.median([(ref + noise)[r].std() for r in s.flat_regions]))
    assert naive > 15.0  # without removing the plane the tilt would count as noise


def test_edges_are_ten_percent_of_the_body(es: ModuleType) -> None:
    ref = _textured()
    for sigma in (0.0, 1.0):
        edges = es.edge_mask(ref, ref > -500, spacing=SPACING, sigma_px=sigma)
        assert not (edges & ~(ref > -500)).any()
        assert edges.sum() / (ref > -500).sum() == pytest.approx(0.10, abs=0.002)
    s = es.make_slice(
        "tex", "real", dose=0.25, kernel="sharp", low=ref, reference=ref, spacing=SPACING,
        edge_sigma_px=1.0,
    )  # fmt: skip
    assert s.edges.sum() / s.body.sum() == pytest.approx(0.10, abs=0.002)
    # the skin edge and the insert's rim are the strongest gradients
    rim = s.body & ~ndimage.binary_erosion(s.body)
    assert s.edges[rim].mean() > 0.9


def test_edges_of_a_flat_image_skip_zero_gradient(es: ModuleType) -> None:
    ref = np.where(_grid(64)[2] < 20, 0.0, -1000.0).astype(np.float32)
    edges = es.edge_mask(ref, ref > -500, spacing=SPACING)
    assert 0 < edges.sum() <= round(0.1 * (ref > -500).sum())


def test_rmse_functions(es: ModuleType) -> None:
    ref = _textured()
    s = es.make_slice(
        "tex", "sim", dose=0.5, kernel="smooth", low=ref, reference=ref, spacing=SPACING,
        edge_sigma_px=0.0,
    )  # fmt: skip
    img = ref.copy()
    img[s.edges] += 7.0
    img[s.body & ~s.edges] += 1.0
    img[~s.body] += 100.0  # outside the body: never counted
    n_edge, n_body = int(s.edges.sum()), int(s.body.sum())
    assert es.edge_rmse(img, s) == pytest.approx(7.0)
    assert es.rmse_body(img, s) == pytest.approx(
        math.sqrt((49.0 * n_edge + n_body - n_edge) / n_body)
    )
    assert es.rmse_body(s.reference, s) == 0.0


def test_paint_insert_adds_the_disc_area(es: ModuleType) -> None:
    img = np.zeros((40, 40), np.float32)
    out = es.paint_insert(img, (19.3, 20.6), 6.5, 200.0)
    assert img.sum() == 0  # a copy
    assert out.sum() == pytest.approx(200.0 * math.pi * 6.5**2, rel=0.01)
    assert out.max() == pytest.approx(200.0)


def test_tiny_simulated_slice_is_cached_and_deterministic(es: ModuleType, tmp_path: Path) -> None:
    spec = [("abdomen", 9001, "ramp", 0.5)]
    msgs: list[str] = []
    (s,) = es.simulated_slices(tmp_path / "a", slices=spec, shape=64, log=msgs.append)
    assert (s.name, s.group, s.kernel, s.dose) == (
        "sim-abdomen-9001-ramp-d0.5",
        "sim",
        "sharp",
        0.5,
    )
    assert s.low.shape == s.reference.shape == (64, 64)
    assert s.spacing == pytest.approx((380 / 64, 380 / 64))
    assert s.insert is not None
    row, col, radius_mm = s.insert
    assert radius_mm == es.INSERT_RADIUS_MM and s.body[round(row), round(col)]
    assert s.reference[round(row), round(col)] > 150.0  # the +200 HU insert in the liver
    assert es.flat_noise(s.low, s) > 3 * es.flat_noise(s.reference, s)
    (again,) = es.simulated_slices(tmp_path / "a", slices=spec, shape=64, log=msgs.append)
    assert "simulated" in msgs[0] and "cached" in msgs[1]
    np.testing.assert_array_equal(again.low, s.low)
    (other,) = es.simulated_slices(tmp_path / "b", slices=spec, shape=64, log=msgs.append)
    np.testing.assert_array_equal(other.low, s.low)  # the noise is seeded


def test_cache_must_be_outside_the_checkout(es: ModuleType) -> None:
    with pytest.raises(ValueError, match="inside the checkout"):
        es.simulated_slices(BENCHMARKS / "cache", slices=[])


def test_sim_slices_cover_every_dose_and_kernel(es: ModuleType) -> None:
    combos = {(w, d) for _, _, w, d in es.SIM_SLICES}
    assert combos == {(w, d) for w in ("ramp", "hann") for d in (0.5, 0.25, 0.125)}
    assert {w for _, _, w, _ in es.SIM_SLICES_QUICK} == {"ramp", "hann"}
    assert set(es.SIM_SLICES_QUICK) <= set(es.SIM_SLICES)


def test_lcd_measures_on_synthetic_images(es: ModuleType) -> None:
    rng = np.random.default_rng(2)
    n, center = 96, (48.0, 48.0)
    disc_px = np.hypot(*(np.mgrid[:n, :n] - np.array(center)[:, None, None])) <= 4.0
    absent = rng.normal(0.0, 10.0, (10, n, n)).astype(np.float32)
    present = rng.normal(0.0, 10.0, (10, n, n)).astype(np.float32) + 20.0 * disc_px
    ring = [(48 + 24 * math.sin(a), 48 + 24 * math.cos(a)) for a in np.arange(8) * math.pi / 4]
    disc = {"center": center, "width_px": 8.0, "absent_centers": ring, "contrast_hu": 20.0}
    regions = [(slice(2, 14), slice(2, 14)), (slice(48, 60), slice(2, 14))]
    lcd = {"truth": np.zeros((n, n), np.float32), "spacing": SPACING, "flat_regions": regions}
    assert es.lcd_dprime(present, absent, disc, lcd) > 3.0
    assert es.lcd_dprime(absent[:5], absent[5:], {**disc, "absent_centers": ring[1:]}) < 2.0
    yy, xx = np.mgrid[:n, :n]
    assert es.lcd_flat_noise(absent + 4.0 * yy - 2.0 * xx, lcd) == pytest.approx(10.0, rel=0.1)
    with pytest.raises(ValueError, match="do not match"):
        es.lcd_dprime(present[:, :80], absent[:, :80], disc, lcd)


@pytest.mark.shared
def test_l506_slice(es: ModuleType, shared_data: Path) -> None:
    s = es.l506_slice(shared_data)
    if s is None:
        pytest.skip("../shared/data/mayo_pair_L506 is absent")
    assert (s.name, s.group, s.dose, s.kernel, s.insert) == ("L506", "real", 0.25, "sharp", None)
    assert s.low.shape == s.reference.shape == (512, 512) and s.spacing == (0.7, 0.7)
    assert len(s.flat_regions) == es.N_FLAT_REGIONS
    assert s.edges.sum() / s.body.sum() == pytest.approx(0.10, abs=0.002)
    assert es.flat_noise(s.low, s) > 1.5 * es.flat_noise(s.reference, s)
    assert es.rmse_body(s.low, s) > 50.0


def test_l506_slice_absent(es: ModuleType, tmp_path: Path) -> None:
    msgs: list[str] = []
    assert es.l506_slice(tmp_path, log=msgs.append) is None
    assert msgs and "skipping" in msgs[0]
    assert es.l067_slices(tmp_path, log=msgs.append) == []
    assert es.lcd_sets(tmp_path, log=msgs.append) is None
