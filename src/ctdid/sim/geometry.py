"""2-D CT scan geometries: parallel beam and fan beam (curved or flat detector).

Coordinates are in millimetres in the image plane with the isocentre at the origin: ``x`` runs
along the image columns (increasing column index) and ``y`` along the image rows (increasing row
index). A pixel ``(i, j)`` of an ``(H, W)`` image with spacing ``(dy, dx)`` has its centre at
``x = (j - (W - 1) / 2) * dx`` and ``y = (i - (H - 1) / 2) * dy``.

Every geometry has two views of the same rays, and the projector and the back-projector both use
them, so their sign conventions agree by construction:

* :meth:`rays` gives each detector bin's ray (start point and unit direction) for given view
  angles, used by the ray-driven projector;
* :meth:`to_detector` maps image points to the detector coordinate of the ray through them
  (and, for fan beam, their distance from the source along the central ray); the pixel-driven
  back-projector evaluates the same formulas in a separable (row + column) form, and a test
  checks that they agree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

__all__ = ["FanBeamGeometry", "Geometry", "ParallelBeamGeometry", "pixel_coordinates"]


def _check_common(n_views: int, n_cols: int, col_width_mm: float, arc_deg: float) -> None:
    if n_views < 1 or n_cols < 2:
        raise ValueError(f"need n_views >= 1 and n_cols >= 2, got {n_views} and {n_cols}")
    if not col_width_mm > 0:
        raise ValueError(f"col_width_mm must be > 0, got {col_width_mm}")
    if not 0 < arc_deg <= 360:
        raise ValueError(f"arc_deg must be in (0, 360], got {arc_deg}")


def _view_angles(
    n_views: int, arc_deg: float, start_deg: float, device: torch.device | str | None
) -> torch.Tensor:
    step = math.radians(arc_deg) / n_views
    ang = math.radians(start_deg) + step * torch.arange(n_views, dtype=torch.float64)
    return ang.to(device=device, dtype=torch.float32)


def _col_coords(
    n_cols: int, pitch: float, col_offset: float, device: torch.device | str | None
) -> torch.Tensor:
    idx = torch.arange(n_cols, dtype=torch.float64)
    return ((idx - (n_cols - 1) / 2 - col_offset) * pitch).to(device=device, dtype=torch.float32)


@dataclasses.dataclass(frozen=True)
class ParallelBeamGeometry:
    """Parallel-beam geometry.

    Parameters
    ----------
    n_views : int
        Number of projection angles, equally spaced over ``arc_deg``.
    n_cols : int
        Number of detector bins.
    col_width_mm : float
        Detector bin pitch in mm (at the isocentre; parallel rays have no magnification).
    arc_deg : float
        Angular range in degrees; 180 (default) or 360 for full data.
    start_deg : float
        Angle of the first view in degrees.
    col_offset : float
        Shift of the detector centre in bins (e.g. 0.25 for a quarter-bin offset).

    Notes
    -----
    View ``theta`` measures ``t = x cos(theta) + y sin(theta)`` along rays of direction
    ``(-sin(theta), cos(theta))``.
    """

    n_views: int = 720
    n_cols: int = 736
    col_width_mm: float = 0.7
    arc_deg: float = 180.0
    start_deg: float = 0.0
    col_offset: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self.n_views, self.n_cols, self.col_width_mm, self.arc_deg)

    @property
    def col_pitch(self) -> float:
        """Spacing of :meth:`col_coords` (mm)."""
        return self.col_width_mm

    @property
    def fov_mm(self) -> float:
        """Diameter in mm of the circle seen by every view."""
        return self.n_cols * self.col_width_mm - 2 * abs(self.col_offset) * self.col_width_mm

    def view_angles(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """View angles in radians, shape ``(n_views,)``, float32."""
        return _view_angles(self.n_views, self.arc_deg, self.start_deg, device)

    def col_coords(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Detector coordinate ``t`` (mm) of each bin centre, shape ``(n_cols,)``."""
        return _col_coords(self.n_cols, self.col_pitch, self.col_offset, device)

    def rays(self, angles: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Start points and unit directions of every ray, shape ``(V, C, 2)`` each as (x, y).

        Each ray starts ``radius`` mm before its closest approach to the isocentre, so a
        segment of length ``2 * radius`` covers the disk of that radius.
        """
        t = self.col_coords(device=angles.device)
        c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
        direction = torch.stack(torch.broadcast_tensors(-s, c), dim=-1).expand(-1, t.numel(), -1)
        centre = torch.stack([t * c, t * s], dim=-1)
        return centre - radius * direction, direction

    def to_detector(
        self, x: torch.Tensor, y: torch.Tensor, angles: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        """Detector coordinate ``t`` (mm) of points ``(x, y)`` for each view, shape (V, N)."""
        c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
        return x[None] * c + y[None] * s, None


@dataclasses.dataclass(frozen=True)
class FanBeamGeometry:
    """Fan-beam geometry with a curved (equiangular) or flat (equispaced) detector.

    The defaults describe a clinical third-generation scanner (Siemens Definition-like):
    source to isocentre 595 mm, source to detector 1085.6 mm, 736 bins of 1.2858 mm at the
    detector (1.184 mrad, 0.705 mm at the isocentre), 1152 views over 360 degrees. The fan is
    49.9 degrees wide and covers a 505 mm field of view; a 1.2 mm bin would cover only 470 mm.

    Parameters
    ----------
    n_views : int
        Number of source positions, equally spaced over ``arc_deg``.
    n_cols : int
        Number of detector bins.
    source_iso_mm : float
        Source to isocentre distance ``D`` in mm.
    source_det_mm : float
        Source to detector distance in mm (> ``source_iso_mm``).
    col_width_mm : float
        Bin pitch in mm measured on the detector (arc length for a curved detector).
    detector : {'curved', 'flat'}
        Curved: bins equally spaced in fan angle. Flat: bins equally spaced on a line.
    arc_deg : float
        Angular range in degrees. FBP supports full scans (360) only.
    start_deg : float
        Source angle of the first view in degrees.
    col_offset : float
        Shift of the detector centre in bins.

    Notes
    -----
    The source of view ``beta`` sits at ``D (cos beta, sin beta)``. With ``e = (cos beta,
    sin beta)`` and ``e_perp = (sin beta, -cos beta)``, the ray of fan angle ``gamma`` has
    direction ``-cos(gamma) e + sin(gamma) e_perp``; a flat-detector bin is described by its
    coordinate ``s`` on a virtual detector through the isocentre, ``tan(gamma) = s / D``.
    """

    n_views: int = 1152
    n_cols: int = 736
    source_iso_mm: float = 595.0
    source_det_mm: float = 1085.6
    col_width_mm: float = 1.2858
    detector: Literal["curved", "flat"] = "curved"
    arc_deg: float = 360.0
    start_deg: float = 0.0
    col_offset: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self.n_views, self.n_cols, self.col_width_mm, self.arc_deg)
        if not 0 < self.source_iso_mm < self.source_det_mm:
            raise ValueError(
                "need 0 < source_iso_mm < source_det_mm, got "
                f"{self.source_iso_mm} and {self.source_det_mm}"
            )
        if self.detector not in ("curved", "flat"):
            raise ValueError(f"detector must be 'curved' or 'flat', got {self.detector!r}")
        if self._max_fan_angle() >= math.pi / 2:
            raise ValueError("the fan is wider than 180 degrees; use fewer or narrower bins")

    @property
    def col_pitch(self) -> float:
        """Spacing of :meth:`col_coords`: radians (curved) or mm at the isocentre (flat)."""
        if self.detector == "curved":
            return self.col_width_mm / self.source_det_mm
        return self.col_width_mm * self.source_iso_mm / self.source_det_mm

    def _max_fan_angle(self) -> float:
        half = (self.n_cols / 2 - abs(self.col_offset)) * self.col_pitch
        return half if self.detector == "curved" else math.atan(half / self.source_iso_mm)

    @property
    def fov_mm(self) -> float:
        """Diameter in mm of the circle that every view sees completely."""
        return 2 * self.source_iso_mm * math.sin(self._max_fan_angle())

    def view_angles(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Source angles in radians, shape ``(n_views,)``, float32."""
        return _view_angles(self.n_views, self.arc_deg, self.start_deg, device)

    def col_coords(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Bin coordinates, shape ``(n_cols,)``: fan angle (rad) or virtual ``s`` (mm)."""
        return _col_coords(self.n_cols, self.col_pitch, self.col_offset, device)

    def fan_angles(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Fan angle ``gamma`` (rad) of each bin, shape ``(n_cols,)``."""
        u = self.col_coords(device=device)
        return u if self.detector == "curved" else torch.atan(u / self.source_iso_mm)

    def rays(self, angles: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Start points and unit directions of every ray, shape ``(V, C, 2)`` each as (x, y).

        Rays start ``source_iso_mm - radius`` mm from the source, so a segment of length
        ``2 * radius`` covers the disk of that radius about the isocentre.
        """
        if radius >= self.source_iso_mm:
            raise ValueError(f"the image (radius {radius:.1f} mm) reaches the source")
        gamma = self.fan_angles(device=angles.device)[None]
        c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
        cg, sg = torch.cos(gamma), torch.sin(gamma)
        direction = torch.stack([-cg * c + sg * s, -cg * s - sg * c], dim=-1)
        source = self.source_iso_mm * torch.stack([c, s], dim=-1)
        return source + (self.source_iso_mm - radius) * direction, direction

    def to_detector(
        self, x: torch.Tensor, y: torch.Tensor, angles: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Detector coordinate of points ``(x, y)`` for each view, shape ``(V, N)``.

        Returns
        -------
        coord : Tensor
            Fan angle in radians (curved) or virtual-detector ``s`` in mm (flat).
        depth : Tensor
            Distance in mm from the source to the point measured along the central ray
            (``D - r . e``).
        """
        c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
        depth = self.source_iso_mm - (x[None] * c + y[None] * s)
        lateral = x[None] * s - y[None] * c
        if self.detector == "curved":
            return torch.atan2(lateral, depth), depth
        return self.source_iso_mm * lateral / depth, depth


Geometry = ParallelBeamGeometry | FanBeamGeometry
"""Any supported 2-D geometry."""


def pixel_coordinates(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of the pixels of an ``(H, W)`` image in mm, each of shape ``(H * W,)``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``.
    spacing : tuple of float
        Pixel size ``(dy, dx)`` in mm.
    device : torch device, optional
        Where to allocate the result.

    Returns
    -------
    x, y : Tensor
        Flattened coordinates (row-major) in mm, float32.
    """
    h, w = shape
    dy, dx = spacing
    ys = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) * dy
    xs = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) * dx
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return (
        xx.reshape(-1).to(device=device, dtype=torch.float32),
        yy.reshape(-1).to(device=device, dtype=torch.float32),
    )
