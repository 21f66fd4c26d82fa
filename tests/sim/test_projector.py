"""Tests of ctdid.sim.projector against analytic line integrals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sim_testing import GEOMETRIES, PARALLEL, PIXEL, SMALL, N, ellipse_chords, ellipse_image

from ctdid.sim import projector
from ctdid.sim.geometry import FanBeamGeometry, ParallelBeamGeometry
from ctdid.sim.projector import forward_project

MU = 0.02  # 1/mm


@pytest.mark.parametrize("method", ["joseph", "ray"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_matches_analytic_ellipse_integrals(name: str, method: str) -> None:
    geometry = GEOMETRIES[name]
    obj = (25.0, -15.0, 80.0, 50.0, 0.4)  # off-centre, rotated ellipse (mm, rad)
    image = torch.tensor(MU * ellipse_image(*obj), dtype=torch.float32)
    sino = forward_project(image, geometry, spacing=(PIXEL, PIXEL), method=method)  # type: ignore[arg-type]
    start, direction = geometry.rays(geometry.view_angles(), 1.0)
    exact = MU * ellipse_chords(start, direction, *obj)
    err = (sino.double() - exact).abs()
    peak = exact.max().item()
    assert sino.shape == (geometry.n_views, geometry.n_cols)
    assert sino.dtype == torch.float32
    # The error comes from the 2 mm pixel grid (partial volume + bilinear reading), not from
    # the ray sampling: rays through the object are within 1 % of the peak value, ...
    inner = exact > 0.5 * peak
    assert err[inner].max().item() < 0.01 * peak
    # ... and all rays within 0.5 % RMS, 10 % at worst for rays grazing the edge.
    assert err.pow(2).mean().sqrt().item() < 0.005 * peak
    assert err.max().item() < 0.1 * peak


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_quarter_turn_symmetry_is_exact(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (image turned by rot90 for views a quarter turn apart) equals computing
    every view's rays, for both methods and a batch."""
    geometry = GEOMETRIES[name]
    rng = np.random.default_rng(1)
    image = torch.tensor(rng.uniform(0, MU, (2, N, N)), dtype=torch.float32)
    assert projector._quarter_turns(geometry, (N, N), (PIXEL, PIXEL)) > 1
    fast = {
        m: forward_project(image, geometry, spacing=(PIXEL, PIXEL), method=m)
        for m in ("joseph", "ray")
    }
    monkeypatch.setattr(projector, "_quarter_turns", lambda *args: 1)
    for method, sino in fast.items():
        slow = forward_project(image, geometry, spacing=(PIXEL, PIXEL), method=method)  # type: ignore[arg-type]
        assert torch.allclose(sino, slow, atol=1e-5 * slow.abs().max().item())


def test_symmetry_needs_square_pixels_and_whole_quarter_turns() -> None:
    q = projector._quarter_turns
    assert q(SMALL, (64, 64), (1.0, 1.0)) == 4
    assert q(PARALLEL, (64, 64), (1.0, 1.0)) == 2  # 180 degrees
    assert q(SMALL, (64, 32), (1.0, 1.0)) == 1
    assert q(SMALL, (64, 64), (1.0, 0.5)) == 1
    assert q(FanBeamGeometry(n_views=30, n_cols=64), (64, 64), (1.0, 1.0)) == 1  # 30 % 4
    assert q(ParallelBeamGeometry(n_views=30, n_cols=64, arc_deg=200.0), (8, 8), (1.0, 1.0)) == 1


def test_parallel_projection_conserves_mass() -> None:
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.uniform(0, MU, (N, N)) * ellipse_image(0, 0, 120, 120))
    sino = forward_project(image, PARALLEL, spacing=(PIXEL, PIXEL))
    mass = image.sum().item() * PIXEL * PIXEL
    per_view = sino.sum(dim=1) * PARALLEL.col_width_mm
    assert torch.allclose(per_view, torch.full_like(per_view, mass), rtol=0.01)


def test_batch_and_anisotropic_spacing() -> None:
    a = torch.tensor(MU * ellipse_image(0, 0, 60, 40), dtype=torch.float32)
    b = torch.tensor(MU * ellipse_image(20, 10, 30, 30), dtype=torch.float32)
    batch = forward_project(torch.stack([a, b]), PARALLEL, spacing=(PIXEL, PIXEL))
    assert batch.shape == (2, PARALLEL.n_views, PARALLEL.n_cols)
    single = forward_project(b, PARALLEL, spacing=(PIXEL, PIXEL))
    assert torch.allclose(batch[1], single, atol=1e-6)
    # The same disk on a grid with half the row spacing and twice the rows.
    tall = torch.tensor(MU * ellipse_image(0, 0, 50, 50, n=N), dtype=torch.float32)
    rows = np.arange(2 * N) - (2 * N - 1) / 2
    cols = np.arange(N) - (N - 1) / 2
    yy, xx = np.meshgrid(rows * PIXEL / 2, cols * PIXEL, indexing="ij")
    fine = torch.tensor(MU * (np.hypot(xx, yy) <= 50), dtype=torch.float32)
    s1 = forward_project(tall, PARALLEL, spacing=(PIXEL, PIXEL))
    s2 = forward_project(fine, PARALLEL, spacing=(PIXEL / 2, PIXEL))
    assert (s1 - s2).abs().max().item() < 0.03 * s1.max().item()


def test_gradient_matches_linear_response() -> None:
    """The projector is linear, so d<Ax, w>/dx_k equals <A e_k, w>."""
    geometry = SMALL
    n = 64
    image = torch.zeros(n, n, requires_grad=True)
    weights = torch.rand(
        geometry.n_views, geometry.n_cols, generator=torch.Generator().manual_seed(0)
    )
    (forward_project(image, geometry, spacing=(PIXEL, PIXEL)) * weights).sum().backward()
    assert image.grad is not None
    for k in [(32, 32), (15, 45), (50, 10)]:
        unit = torch.zeros(n, n)
        unit[k] = 1.0
        response = (forward_project(unit, geometry, spacing=(PIXEL, PIXEL)) * weights).sum()
        assert image.grad[k].item() == pytest.approx(response.item(), rel=1e-4)


def test_invalid_arguments() -> None:
    image = torch.zeros(8, 8)
    with pytest.raises(ValueError):
        forward_project(torch.zeros(8), PARALLEL, spacing=(1.0, 1.0))
    with pytest.raises(ValueError):
        forward_project(image, PARALLEL, spacing=(0.0, 1.0))
    with pytest.raises(ValueError):
        forward_project(image, PARALLEL, spacing=(1.0, 1.0), step=2.0)
    with pytest.raises(ValueError, match="method"):
        forward_project(image, PARALLEL, spacing=(1.0, 1.0), method="siddon")  # type: ignore[arg-type]
    assert math.isfinite(forward_project(image, PARALLEL, spacing=(1.0, 1.0)).sum().item())
