"""The one in-memory type of ctdid: a CT volume in Hounsfield units.

All of ctdid works on float32 HU arrays ordered (z, y, x) with a voxel spacing in millimetres.
Only model adapters convert to a network's units. Geometry follows DICOM's patient coordinate
system (LPS: +x to the patient's left, +y posterior, +z superior).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["CTVolume"]

_IDENTITY = np.eye(3)


def _as_triple(value: ArrayLike, name: str) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be three finite numbers, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclasses.dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume: float32 HU voxels with geometry and source metadata.

    Parameters
    ----------
    hu : array_like, shape (z, y, x)
        Voxel values in Hounsfield units. Converted to a C-contiguous float32 array; a 2-D
        array is taken as one slice. NaN and Inf are rejected.
    spacing : tuple of float, optional
        Voxel size (dz, dy, dx) in millimetres, all > 0. ``dz`` is the distance between slice
        centres along the slice normal. Default (1, 1, 1).
    origin : tuple of float, optional
        Patient position (x, y, z) in mm (LPS) of the centre of voxel (0, 0, 0), as DICOM's
        ImagePositionPatient of the first slice. Default (0, 0, 0).
    direction : array_like, shape (3, 3), optional
        Rows are unit vectors in patient coordinates (LPS): row 0 the direction of increasing x
        index (DICOM's row cosines), row 1 increasing y index (column cosines), row 2 increasing
        z index (slice normal). Default identity (axial, head-first supine).
    meta : mapping, optional
        Free description of the source (format, path, series UID, ...). JSON-serialisable.
    dicom_headers : tuple, optional
        One pydicom ``Dataset`` per slice, without pixel data, in z order, when the volume was
        read from DICOM. Used to write derived series that keep the study and geometry.

    Notes
    -----
    The arrays are set read-only so a volume can be shared without copies; use
    :meth:`with_hu` to make a new volume with other voxel values and the same geometry.
    """

    hu: NDArray[np.float32]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: NDArray[np.float64] = dataclasses.field(default_factory=lambda: _IDENTITY.copy())
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dicom_headers: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu)
        if hu.dtype.kind not in "fiub":
            raise ValueError(f"HU array must be numeric, got dtype {hu.dtype}")
        if hu.ndim == 2:
            hu = hu[np.newaxis]
        if hu.ndim != 3:
            raise ValueError(f"HU array must be 2-D or 3-D (z, y, x), got shape {hu.shape}")
        if 0 in hu.shape:
            raise ValueError(f"HU array is empty, shape {hu.shape}")
        hu = np.ascontiguousarray(hu, dtype=np.float32)
        if not np.all(np.isfinite(hu)):
            n_bad = int(np.count_nonzero(~np.isfinite(hu)))
            raise ValueError(f"HU array holds {n_bad} NaN or Inf voxel(s)")
        spacing = _as_triple(self.spacing, "spacing")
        if min(spacing) <= 0:
            raise ValueError(f"spacing must be > 0 mm, got {spacing}")
        origin = _as_triple(self.origin, "origin")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise ValueError(f"direction must be a finite 3x3 matrix, got {direction!r}")
        norms = np.linalg.norm(direction, axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError(f"direction rows must be unit vectors, norms {norms}")
        if self.dicom_headers is not None and len(self.dicom_headers) != hu.shape[0]:
            raise ValueError(f"{len(self.dicom_headers)} DICOM headers for {hu.shape[0]} slices")
        hu.flags.writeable = False
        direction = direction.copy()
        direction.flags.writeable = False
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "meta", dict(self.meta))
        if self.dicom_headers is not None:
            object.__setattr__(self, "dicom_headers", tuple(self.dicom_headers))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of voxels (z, y, x)."""
        z, y, x = self.hu.shape
        return (z, y, x)

    @property
    def affine(self) -> NDArray[np.float64]:
        """4x4 matrix from voxel index (x, y, z, 1) to patient position in mm (LPS)."""
        a = np.eye(4)
        dz, dy, dx = self.spacing
        a[:3, 0] = self.direction[0] * dx
        a[:3, 1] = self.direction[1] * dy
        a[:3, 2] = self.direction[2] * dz
        a[:3, 3] = self.origin
        return a

    def slice_position(self, k: int) -> tuple[float, float, float]:
        """Patient position (x, y, z) in mm (LPS) of the first voxel of slice ``k``."""
        p = np.asarray(self.origin) + self.direction[2] * self.spacing[0] * k
        return (float(p[0]), float(p[1]), float(p[2]))

    def with_hu(self, hu: ArrayLike, **meta: Any) -> CTVolume:
        """A new volume with other HU values, the same geometry and DICOM headers.

        Parameters
        ----------
        hu : array_like, shape (z, y, x)
            New voxel values in HU; must have this volume's shape.
        **meta
            Entries added to (or replacing those of) a copy of :attr:`meta`.
        """
        arr = np.asarray(hu)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.shape != self.hu.shape:
            raise ValueError(f"new HU shape {arr.shape} differs from {self.hu.shape}")
        return dataclasses.replace(self, hu=arr, meta={**self.meta, **meta})

    def describe(self) -> dict[str, Any]:
        """Summary for display: shape, spacing, extent and HU statistics."""
        hu = self.hu
        return {
            "shape_zyx": list(self.shape),
            "spacing_mm_zyx": [round(s, 6) for s in self.spacing],
            "extent_mm_zyx": [
                round(s * n, 3) for s, n in zip(self.spacing, self.shape, strict=True)
            ],
            "origin_mm_lps": [round(o, 4) for o in self.origin],
            "hu_min": float(hu.min()),
            "hu_max": float(hu.max()),
            "hu_mean": float(hu.mean(dtype=np.float64)),
            "hu_p01": float(np.percentile(hu, 1)),
            "hu_p99": float(np.percentile(hu, 99)),
            "source": dict(self.meta),
        }
