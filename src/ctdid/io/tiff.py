"""Multi-page float32 TIFF of HU (ImageJ hyperstack) with the voxel spacing recorded.

:func:`write_tiff` writes an ImageJ-compatible stack: pixel size as the X/Y resolution (pixels per
mm), slice spacing and unit ``mm`` in the ImageJ description, and the exact geometry as JSON in the
ImageJ ``Info`` property (``{"ctdid": {"spacing": [...], "origin": [...], "direction": [...]}}``)
so :func:`read_tiff` round-trips it. :func:`read_tiff` also reads other greyscale TIFFs (plain,
ImageJ, or tifffile's JSON-described), taking the spacing from what they record (a plain TIFF's
resolution only when its ResolutionUnit tag says inch or centimetre).
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ctdid.errors import InputError
from ctdid.io.atomic import atomic_file
from ctdid.io.raw import apply_hu_mapping, check_input_file, make_volume
from ctdid.volume import CTVolume

__all__ = ["read_tiff", "write_tiff"]

_UNIT_MM = {
    "mm": 1.0,
    "millimeter": 1.0,
    "millimetre": 1.0,
    "micron": 1e-3,
    "um": 1e-3,
    "\u00b5m": 1e-3,
    "\\u00b5m": 1e-3,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
}


def _resolution_mm(page: Any, unit_mm: float | None) -> tuple[float, float] | None:
    """(dy, dx) in mm from X/YResolution, given the size of the unit in mm (None: from the
    ResolutionUnit tag)."""
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    if unit_mm is None:
        ru = tags.get("ResolutionUnit")  # trusted only when present (72 dpi is no pixel size)
        unit_mm = None if ru is None else {2: 25.4, 3: 10.0}.get(int(ru.value))
        if unit_mm is None:
            return None
    out = []
    for name in ("YResolution", "XResolution"):
        num, den = tags[name].value
        if num <= 0 or den <= 0:
            return None
        out.append(unit_mm * den / num)
    return out[0], out[1]


def _ctdid_geometry(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("ctdid"), dict):
        return doc["ctdid"]
    return None


def read_tiff(
    path: str | os.PathLike[str], *, hu_offset: float = 0.0, hu_slope: float = 1.0
) -> CTVolume:
    """Read a greyscale (multi-page) TIFF as a (z, y, x) HU volume.

    Parameters
    ----------
    path : path-like
    hu_offset, hu_slope : float
        ``HU = hu_slope * value + hu_offset``; the defaults suit files from :func:`write_tiff`.

    Returns
    -------
    CTVolume
        ``meta = {"format": "tiff", "path": ..., "dtype": ...}``. Geometry from the ctdid JSON
        if present, else spacing from the ImageJ description and resolution tags (default 1 mm).

    Raises
    ------
    InputError
        For a missing or unreadable file, colour or more-than-3-D images, or bad voxels.
    """
    import tifffile

    p = check_input_file(path)
    try:
        with tifffile.TiffFile(p) as tif:
            if not tif.series:
                raise InputError("is not a readable TIFF file (it holds no images)", path=p)
            series = tif.series[0]
            arr = series.asarray()
            axes = series.axes
            page = series.pages[0] if series.pages else tif.pages[0]
            ij = tif.imagej_metadata if tif.is_imagej else None
            shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"is not a readable TIFF file ({exc})", path=p) from None

    if "S" in axes and arr.shape[axes.index("S")] > 1:
        raise InputError(f"is a colour image (axes {axes}); a CT image is greyscale", path=p)
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim not in (2, 3):
        raise InputError(
            f"image has shape {arr.shape} (axes {axes}); a CT image is 2-D or 3-D", path=p
        )

    geo: dict[str, Any] | None = None
    if ij is not None:
        geo = _ctdid_geometry(ij.get("Info"))
    if geo is None and shaped is not None and isinstance(shaped.get("ctdid"), dict):
        geo = shaped["ctdid"]
    kw: dict[str, Any] = {}
    if geo is not None:
        try:
            kw = {
                "spacing": [float(v) for v in geo["spacing"]],
                "origin": [float(v) for v in geo["origin"]],
                "direction": np.asarray(geo["direction"], dtype=float),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"ctdid geometry in the TIFF description is invalid ({exc})", path=p
            ) from None
    else:
        dz = 1.0
        unit_mm: float | None = None
        if ij is not None:
            unit_mm = _UNIT_MM.get(str(ij.get("unit", "")).strip().lower())
            if unit_mm is not None:
                try:
                    sp = float(ij.get("spacing", math.nan)) * unit_mm
                except (TypeError, ValueError):
                    sp = math.nan
                if math.isfinite(sp) and sp > 0:
                    dz = sp
        res = _resolution_mm(page, unit_mm if ij is not None else None)
        if ij is not None and unit_mm is None:
            res = None  # ImageJ without a length unit: pixels
        dy, dx = res if res is not None else (1.0, 1.0)
        kw = {"spacing": (dz, dy, dx)}
    hu = apply_hu_mapping(arr, hu_slope=hu_slope, hu_offset=hu_offset, path=p)
    meta = {"format": "tiff", "path": str(p), "dtype": arr.dtype.str}
    return make_volume(p, hu, meta=meta, **kw)


def _rational(value: float) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(1_000_000)
    while f.numerator >= 2**32 or f.denominator >= 2**32:
        f = Fraction(f.numerator // 2, max(1, f.denominator // 2))
    return (max(1, f.numerator), max(1, f.denominator))


def write_tiff(volume: CTVolume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``volume`` as a float32 multi-page ImageJ TIFF of HU (one page per slice).

    Pixel size is written as X/YResolution in pixels per mm, slice spacing and unit in the ImageJ
    description, and the exact spacing, origin and direction as JSON in the ImageJ ``Info``.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    import tifffile

    out = Path(path)
    dz, dy, dx = volume.spacing
    geometry = {
        "ctdid": {
            "spacing": list(volume.spacing),
            "origin": list(volume.origin),
            "direction": np.asarray(volume.direction, dtype=float).tolist(),
        }
    }
    metadata = {"axes": "ZYX", "spacing": dz, "unit": "mm", "Info": json.dumps(geometry)}
    data = np.ascontiguousarray(volume.hu, dtype=np.float32)
    with atomic_file(out, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            imagej=True,
            resolution=(_rational(1.0 / dx), _rational(1.0 / dy)),
            metadata=metadata,
        )
    return out.absolute()
