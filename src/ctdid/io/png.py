"""8-bit greyscale PNG export of windowed CT slices (for viewing and reports, not for analysis).

HU are mapped linearly from the window ``(low, high)`` onto 0..255 and clipped. The window, the
voxel spacing and the slice are recorded in PNG text chunks (``ctdid:window_low``,
``ctdid:window_high``, ``ctdid:spacing``, ``ctdid:slice_index``, ``ctdid:slice_position``); the
pixel size is also written as the PNG physical pixel size (pHYs).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.io.atomic import atomic_dir, atomic_file
from ctdid.volume import CTVolume

__all__ = ["DEFAULT_WINDOW", "slice_file_name", "window_to_uint8", "write_png"]

#: Soft-tissue window (low, high) in HU: level 40, width 400.
DEFAULT_WINDOW: tuple[float, float] = (-160.0, 240.0)


def _check_window(low: float, high: float) -> tuple[float, float]:
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"window must be finite (low, high) with high > low, got ({low}, {high})")
    return lo, hi


def window_to_uint8(hu: ArrayLike, low: float, high: float) -> NDArray[np.uint8]:
    """Map HU to 0..255 linearly: ``low`` -> 0, ``high`` -> 255, clipped outside.

    ``value = clip(floor((hu - low) * 255 / (high - low) + 0.5), 0, 255)``, i.e. rounded half
    up; so ``low + k * (high - low) / 255`` maps to ``k``.

    Raises
    ------
    ValueError
        If ``low``/``high`` are not finite or ``high <= low``.
    """
    lo, hi = _check_window(low, high)
    x = (np.asarray(hu, dtype=np.float64) - lo) * 255.0 / (hi - lo)
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def slice_file_name(k: int, n_slices: int) -> str:
    """File name of slice ``k`` in a PNG folder: ``slice_0000.png`` (at least 4 digits)."""
    return f"slice_{k:0{max(4, len(str(n_slices - 1)))}d}.png"


def _save_slice(volume: CTVolume, k: int, target: Path, window: tuple[float, float]) -> None:
    from PIL import Image, PngImagePlugin

    dz, dy, dx = volume.spacing
    info = PngImagePlugin.PngInfo()
    info.add_text("ctdid:window_low", repr(window[0]))
    info.add_text("ctdid:window_high", repr(window[1]))
    info.add_text("ctdid:spacing", json.dumps([dz, dy, dx]))
    info.add_text("ctdid:slice_index", str(k))
    info.add_text("ctdid:slice_position", json.dumps(list(volume.slice_position(k))))
    img = Image.fromarray(window_to_uint8(volume.hu[k], *window), mode="L")
    # pHYs in dots per inch; Pillow converts to pixels per metre.
    img.save(target, format="PNG", pnginfo=info, dpi=(25.4 / dx, 25.4 / dy))


def write_png(
    volume: CTVolume,
    path: str | os.PathLike[str],
    *,
    window: Sequence[float] = DEFAULT_WINDOW,
    slice_index: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write windowed 8-bit greyscale PNG(s).

    Parameters
    ----------
    volume : CTVolume
    path : path-like
        The PNG file for one slice; for a multi-slice volume without ``slice_index`` a folder,
        written under a temporary name and renamed when complete, holding one
        :func:`slice_file_name` per slice.
    window : (low, high)
        HU window; default soft tissue (-160, 240).
    slice_index : int, optional
        Write only this slice (negative counts from the end) to the file ``path``.
    overwrite : bool
        Replace an existing file or folder.

    Returns
    -------
    Path
        The file or folder written.

    Raises
    ------
    ValueError
        For a bad window.
    IndexError
        If ``slice_index`` is outside the volume.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    if len(window) != 2:
        raise ValueError(f"window must be (low, high), got {window!r}")
    win = _check_window(window[0], window[1])
    n = volume.shape[0]
    out = Path(path)
    if slice_index is not None or n == 1:
        k = 0 if slice_index is None else int(slice_index)
        if not -n <= k < n:
            raise IndexError(f"slice_index {slice_index} is outside 0..{n - 1}")
        k %= n
        with atomic_file(out, overwrite=overwrite) as tmp:
            _save_slice(volume, k, tmp, win)
        return out.absolute()
    with atomic_dir(out, overwrite=overwrite) as tmp_dir:
        for k in range(n):
            _save_slice(volume, k, tmp_dir / slice_file_name(k, n), win)
    return out.absolute()
