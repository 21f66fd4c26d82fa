"""Tests of ctdid.sim.fbp: HU accuracy, geometry agreement, filters and differentiability."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from sim_testing import GEOMETRIES, PARALLEL, PIXEL, SMALL, N, ellipse_image

from ctdid.sim.fbp import KERNELS, backproject, fbp, ramp_kernel
from ctdid.sim.geometry import FanBeamGeometry, ParallelBeamGeometry, pixel_coordinates
from ctdid.sim.noise import MU_WATER, hu_to_mu, mu_to_hu
from ctdid.sim.projector import forward_project

fbp_module = importlib.import_module("ctdid.sim.fbp")
SPACING = (PIXEL, PIXEL)
_idx = (np.arange(N) - (N - 1) / 2) * PIXEL
RADIUS = np.hypot(_idx[:, None], _idx[None, :])  # mm from the isocentre


def _reconstruct(hu: np.ndarray, geometry: object, **kwargs: object) -> np.ndarray:
    mu = hu_to_mu(torch.tensor(hu, dtype=torch.float32))
    sino = forward_project(mu, geometry, spacing=SPACING)  # type: ignore[arg-type]
    rec = fbp(sino, geometry, shape=(N, N), spacing=SPACING, **kwargs)  # type: ignore[arg-type]
    return mu_to_hu(rec).numpy()


def _phantom() -> np.ndarray:
    """A 220 mm water cylinder in air with a bone disk and a 200 HU ellipse off-centre."""
    hu = -1000 + 1000 * ellipse_image(0, 0, 110, 110)
    hu += 1000 * ellipse_image(50, -30, 15, 15) + 200 * ellipse_image(-45, 50, 20, 8, 0.5)
    return hu.astype(np.float32)


@pytest.fixture(scope="module")
def recons() -> dict[str, np.ndarray]:
    hu = _phantom()
    return {name: _reconstruct(hu, g, kernel="hann") for name, g in GEOMETRIES.items()}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_water_cylinder_hu(name: str, recons: dict[str, np.ndarray]) -> None:
    rec = recons[name]
    centre = rec[RADIUS < 40]
    air = rec[(RADIUS > 120) & (RADIUS < 127)]
    assert abs(centre.mean()) < 5.0
    assert centre.std() < 5.0
    assert abs(air.mean() + 1000) < 10.0
    # No cupping: water near the rim agrees with the centre.
    rim = (RADIUS > 90) & (RADIUS < 100) & (_phantom() == 0)
    assert abs(rec[rim].mean() - centre.mean()) < 5.0


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_off_centre_inserts_land_in_place(name: str, recons: dict[str, np.ndarray]) -> None:
    """Asymmetric inserts catch sign errors in the fan angle or the rotation direction."""
    rec = recons[name]
    bone = ellipse_image(50, -30, 9, 9) == 1  # core of the 1000 HU disk
    assert abs(rec[bone].mean() - 1000) < 20.0
    ellipse = ellipse_image(-45, 50, 12, 3, 0.5) == 1
    assert abs(rec[ellipse].mean() - 200) < 20.0
    # The mirror images of the inserts hold water.
    assert abs(rec[np.flip(bone, 1)].mean()) < 20.0
    assert abs(rec[np.flip(bone, 0)].mean()) < 20.0


def test_fan_and_parallel_agree(recons: dict[str, np.ndarray]) -> None:
    inside = RADIUS < 125
    for name in ("curved", "flat"):
        diff = recons[name][inside] - recons["parallel"][inside]
        assert np.sqrt(np.mean(diff**2)) < 10.0  # HU, edges included


def test_ramp_response_and_dc() -> None:
    tau, n_pad = 0.7, 1024
    h = ramp_kernel(n_pad, tau, kernel="ramp").double()
    freq = torch.fft.fftfreq(n_pad, d=tau).abs().double()
    mid = (freq > 0.05 / tau) & (freq < 0.45 / tau)
    assert torch.allclose(h[mid], freq[mid], rtol=0.01)
    # The spatial construction keeps a small positive DC term instead of zero.
    assert 0 < h[0].item() < freq[1].item()
    for kernel in KERNELS:
        k = ramp_kernel(n_pad, tau, kernel=kernel, cutoff=0.5)
        assert torch.all(k[freq.float() > 0.5 / (2 * tau) + 1e-6].abs() < 1e-6)
    with pytest.raises(ValueError):
        ramp_kernel(n_pad, tau, kernel="sharp")
    with pytest.raises(ValueError):
        ramp_kernel(n_pad, tau, cutoff=0.0)


def test_smoother_kernels_lower_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(PARALLEL.n_views, PARALLEL.n_cols, generator=gen)
    stds = {}
    for kernel, cutoff in [("ramp", 1.0), ("hann", 1.0), ("hann", 0.5)]:
        rec = fbp(noise, PARALLEL, shape=(N, N), spacing=SPACING, kernel=kernel, cutoff=cutoff)
        stds[kernel, cutoff] = rec[RADIUS < 80].std().item()
    assert stds["ramp", 1.0] > 1.3 * stds["hann", 1.0] > 1.3 * stds["hann", 0.5]


def test_batched_and_differentiable() -> None:
    sino = torch.rand(2, SMALL.n_views, SMALL.n_cols, requires_grad=True)
    rec = fbp(sino, SMALL, shape=(32, 32), spacing=(4.0, 4.0))
    assert rec.shape == (2, 32, 32)
    assert rec.dtype == torch.float32
    single = fbp(sino[1], SMALL, shape=(32, 32), spacing=(4.0, 4.0))
    assert torch.allclose(rec[1], single, atol=1e-6)
    rec[0, 16, 16].backward()
    assert sino.grad is not None
    assert sino.grad[0].abs().sum() > 0 and sino.grad[1].abs().sum() == 0


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_quarter_turn_backprojection_is_exact(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-projecting a quarter of the views on turned grids equals the plain loop."""
    geometry = GEOMETRIES[name]
    q = torch.randn(
        2, geometry.n_views, geometry.n_cols, generator=torch.Generator().manual_seed(2)
    )
    fast = backproject(q, geometry, shape=(N, N), spacing=SPACING, views_per_chunk=5)
    monkeypatch.setattr(fbp_module, "_quarter_turns", lambda *args: 1)
    slow = backproject(q, geometry, shape=(N, N), spacing=SPACING)
    assert torch.allclose(fast, slow, atol=1e-4 * slow.abs().max().item())
    # The gradient path (fresh grids per chunk) gives the same values.
    grad_q = q.clone().requires_grad_()
    assert torch.allclose(
        backproject(grad_q, geometry, shape=(N, N), spacing=SPACING),
        slow,
        atol=1e-4 * slow.abs().max().item(),
    )


def test_scan_range_checks() -> None:
    sino = torch.zeros(10, 16)
    with pytest.raises(ValueError, match="360"):
        fbp(
            sino, FanBeamGeometry(n_views=10, n_cols=16, arc_deg=200), shape=(8, 8), spacing=SPACING
        )
    with pytest.raises(ValueError, match="180 or 360"):
        geometry = ParallelBeamGeometry(n_views=10, n_cols=16, arc_deg=90)
        fbp(sino, geometry, shape=(8, 8), spacing=SPACING)
    with pytest.raises(ValueError, match="does not match"):
        fbp(
            torch.zeros(9, 16),
            ParallelBeamGeometry(n_views=10, n_cols=16),
            shape=(8, 8),
            spacing=SPACING,
        )
    assert pytest.approx(0.0193) == MU_WATER


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_backprojection_grid_matches_geometry(name: str) -> None:
    """The separable detector grid of the back-projector equals Geometry.to_detector."""
    geometry = GEOMETRIES[name]
    angles = geometry.view_angles()[:7]
    shape, spacing = (12, 10), (2.0, 3.0)
    buffer = torch.zeros(7, 1, 120, 2)
    grid, weight = fbp_module._detector_grid(geometry, angles, shape, spacing, buffer)
    x, y = pixel_coordinates(shape, spacing)
    coord, depth = geometry.to_detector(x, y, angles)
    n = geometry.n_cols
    expected = (coord / geometry.col_pitch + (n - 1) / 2 + geometry.col_offset) * 2 / (n - 1) - 1
    assert torch.allclose(grid[:, 0, :, 0], expected, atol=1e-5)
    assert torch.all(grid[..., 1] == 0)
    if isinstance(geometry, FanBeamGeometry):
        assert weight is not None and depth is not None
        d = geometry.source_iso_mm
        if geometry.detector == "curved":
            sx, sy = d * torch.cos(angles)[:, None], d * torch.sin(angles)[:, None]
            ref = 1 / ((x[None] - sx) ** 2 + (y[None] - sy) ** 2)
        else:
            ref = (d / depth) ** 2
        assert torch.allclose(weight[:, 0], ref, rtol=1e-5)
    else:
        assert weight is None
