"""Small geometries and analytic objects shared by the sim tests."""

from __future__ import annotations

import numpy as np
import torch

from ctdid.sim.geometry import FanBeamGeometry, ParallelBeamGeometry

N = 128  # image size (pixels)
PIXEL = 2.0  # mm, so the image is 256 mm wide

PARALLEL = ParallelBeamGeometry(n_views=120, n_cols=192, col_width_mm=2.0)
CURVED = FanBeamGeometry(n_views=144, n_cols=192, col_width_mm=3.5)
FLAT = FanBeamGeometry(n_views=144, n_cols=192, col_width_mm=3.5, detector="flat")
# Few views and bins for tests that only need linearity or shapes.
SMALL = FanBeamGeometry(n_views=24, n_cols=96, col_width_mm=7.0)
GEOMETRIES = {"parallel": PARALLEL, "curved": CURVED, "flat": FLAT}


def ellipse_image(
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    angle: float = 0.0,
    *,
    n: int = N,
    pixel: float = PIXEL,
    ss: int = 4,
) -> np.ndarray:
    """Area fraction of each pixel inside an ellipse (mm, angle in radians), float64."""
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    idx = np.arange(n) - (n - 1) / 2
    x = (idx[None, :, None, None] + sub[None, None, None, :]) * pixel - cx
    y = (idx[:, None, None, None] + sub[None, None, :, None]) * pixel - cy
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    return ((u / ax) ** 2 + (v / ay) ** 2 <= 1).mean(axis=(2, 3))


def ellipse_chords(
    start: torch.Tensor,
    direction: torch.Tensor,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    angle: float = 0.0,
) -> torch.Tensor:
    """Exact length (mm) of each ray (start, unit direction) inside an ellipse."""
    c, s = np.cos(angle), np.sin(angle)
    px, py = start[..., 0].double() - cx, start[..., 1].double() - cy
    dx, dy = direction[..., 0].double(), direction[..., 1].double()
    pu, pv = (px * c + py * s) / ax, (-px * s + py * c) / ay
    du, dv = (dx * c + dy * s) / ax, (-dx * s + dy * c) / ay
    qa = du * du + dv * dv
    qb = pu * du + pv * dv
    qc = pu * pu + pv * pv - 1
    disc = (qb * qb - qa * qc).clamp(min=0)
    return 2 * torch.sqrt(disc) / qa
