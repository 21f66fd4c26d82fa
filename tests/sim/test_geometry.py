"""Tests of ctdid.sim.geometry: clinical defaults and ray / detector consistency."""

from __future__ import annotations

import math

import pytest
import torch

from ctdid.sim.geometry import FanBeamGeometry, ParallelBeamGeometry, pixel_coordinates

GEOMETRIES = [
    ParallelBeamGeometry(n_views=12, n_cols=64, col_width_mm=2.0, col_offset=0.25),
    FanBeamGeometry(n_views=12, n_cols=64, col_width_mm=6.0, col_offset=0.25),
    FanBeamGeometry(n_views=12, n_cols=64, col_width_mm=6.0, detector="flat", start_deg=7.0),
]


def test_default_fan_beam_is_clinical_and_covers_500_mm() -> None:
    g = FanBeamGeometry()
    assert (g.n_views, g.n_cols, g.arc_deg) == (1152, 736, 360.0)
    assert (g.source_iso_mm, g.source_det_mm) == (595.0, 1085.6)
    assert 1.0 <= g.col_width_mm <= 1.3
    assert g.fov_mm >= 500.0
    # The same bins on a flat detector span a smaller fan (tan(gamma) > gamma).
    assert 450.0 < FanBeamGeometry(detector="flat").fov_mm < g.fov_mm


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["parallel", "curved", "flat"])
def test_points_on_a_ray_map_back_to_its_bin(geometry: ParallelBeamGeometry) -> None:
    angles = geometry.view_angles()
    start, direction = geometry.rays(angles, 150.0)
    assert torch.allclose(direction.norm(dim=-1), torch.ones(()), atol=1e-6)
    for dist in (40.0, 150.0, 260.0):
        points = start + dist * direction  # (V, C, 2)
        v, c = points.shape[:2]
        coord, _ = geometry.to_detector(
            points[..., 0].reshape(-1), points[..., 1].reshape(-1), angles
        )
        # Each view's rays, read back with the same view's angle.
        own = coord.reshape(v, v, c)[torch.arange(v), torch.arange(v)]
        expected = geometry.col_coords().expand(v, -1)
        assert torch.allclose(own, expected, atol=1e-4 * geometry.col_pitch * c)


def test_fan_depth_is_distance_along_central_ray() -> None:
    g = FanBeamGeometry(n_views=4, n_cols=16)
    angles = g.view_angles()
    x, y = torch.tensor([0.0, 10.0]), torch.tensor([0.0, -30.0])
    _, depth = g.to_detector(x, y, angles)
    assert torch.allclose(depth[:, 0], torch.full((4,), 595.0))
    # At view 0 the source is on +x, so a point at x = 10 is 10 mm closer.
    assert depth[0, 1].item() == pytest.approx(585.0)


def test_pixel_coordinates_are_centred() -> None:
    x, y = pixel_coordinates((3, 4), (2.0, 0.5))
    assert x.reshape(3, 4)[0].tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert y.reshape(3, 4)[:, 0].tolist() == [-2.0, 0.0, 2.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"n_views": 0}, {"n_cols": 1}, {"col_width_mm": 0.0}, {"arc_deg": 400.0}],
)
def test_invalid_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ParallelBeamGeometry(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FanBeamGeometry(**kwargs)  # type: ignore[arg-type]


def test_fan_geometry_checks() -> None:
    with pytest.raises(ValueError, match="source_det_mm"):
        FanBeamGeometry(source_det_mm=500.0)
    with pytest.raises(ValueError, match="detector"):
        FanBeamGeometry(detector="round")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="180 degrees"):
        FanBeamGeometry(n_cols=2000, col_width_mm=2.0)
    with pytest.raises(ValueError, match="reaches the source"):
        FanBeamGeometry().rays(torch.zeros(1), 600.0)
    assert math.isclose(FanBeamGeometry(detector="flat").col_pitch, 1.2858 * 595 / 1085.6)
