"""Private helpers shared by the metrics modules: input checks and pixel spacing."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["as_image", "as_mask", "pair_spacing", "trapezoid"]


def as_image(img: ArrayLike, *, name: str = "image", ndim: tuple[int, ...] = (2, 3)) -> NDArray:
    """Return ``img`` as a float64 array, checking its dimensions and finiteness."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim not in ndim:
        dims = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {dims}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or Inf values")
    return arr


def as_mask(mask: ArrayLike | None, shape: tuple[int, ...], *, name: str = "mask") -> NDArray:
    """Return a boolean mask broadcast to ``shape`` (a 2-D mask applies to every slice)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise ValueError(f"{name} must be a boolean array, got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {m.shape} does not fit an image of {shape}") from None
    if not m.any():
        raise ValueError(f"{name} selects no pixel")
    return m


def pair_spacing(spacing: float | ArrayLike) -> tuple[float, float]:
    """Return the in-plane pixel spacing (dy, dx) in mm from a number, a pair or a triple.

    A triple is read as (dz, dy, dx), the order of :class:`ctdid.CTVolume`.
    """
    arr = np.asarray(spacing, dtype=float).reshape(-1)
    if arr.size == 1:
        arr = np.array([arr[0], arr[0]])
    elif arr.size == 3:
        arr = arr[1:]
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(
            f"spacing must be one, two or three positive numbers (mm), got {spacing!r}"
        )
    return float(arr[0]), float(arr[1])


def trapezoid(y: ArrayLike, x: ArrayLike) -> float:
    """Trapezoidal integral of samples ``y`` at abscissae ``x`` (numpy < 2 has no trapezoid)."""
    yy = np.asarray(y, dtype=float)
    xx = np.asarray(x, dtype=float)
    return float(0.5 * np.sum((yy[1:] + yy[:-1]) * np.diff(xx)))
