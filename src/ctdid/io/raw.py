"""Headerless raw images: a block of numbers with the shape and type given by the caller.

The Mayo Low Dose CT Grand Challenge slices, for example, are 512 x 512 little-endian uint16 with
``HU = value - 1024``::

    vol = read_raw("L506_FD_3mm_D45_slice32.raw", shape=(512, 512), dtype="uint16",
                   hu_offset=-1024.0)

This module also holds the small helpers that the other non-DICOM readers share: checking that an
input file exists, mapping stored values to HU, and building a :class:`~ctdid.volume.CTVolume`
whose complaints name the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.errors import InputError
from ctdid.volume import CTVolume

__all__ = [
    "apply_hu_mapping",
    "check_input_file",
    "make_volume",
    "parse_dtype",
    "read_raw",
]

# Names accepted by parse_dtype besides numpy's own ("u2", "<i2", ...).
_DTYPE_ALIASES = {
    "uint8": "u1",
    "int8": "i1",
    "uint16": "u2",
    "int16": "i2",
    "uint32": "u4",
    "int32": "i4",
    "uint64": "u8",
    "int64": "i8",
    "float16": "f2",
    "float32": "f4",
    "float64": "f8",
    "ubyte": "u1",
    "byte": "i1",
    "ushort": "u2",
    "short": "i2",
    "uint": "u4",
    "int": "i4",
    "float": "f4",
    "single": "f4",
    "double": "f8",
}
_DTYPE_RE = re.compile(r"^([<>=|]?)([uif])([1248])$")
_BYTE_ORDERS = {
    "little": "<",
    "le": "<",
    "<": "<",
    "big": ">",
    "be": ">",
    ">": ">",
}


def check_input_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a :class:`Path` after checking that it is an existing, non-empty file.

    Raises
    ------
    InputError
        If it does not exist, is a folder, or is empty.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("does not exist", path=p)
    if p.is_dir():
        raise InputError("is a folder, not a file", path=p)
    if p.stat().st_size == 0:
        raise InputError("is empty (0 bytes)", path=p)
    return p


def apply_hu_mapping(
    values: NDArray[Any], *, hu_slope: float, hu_offset: float, path: str | os.PathLike[str]
) -> NDArray[Any]:
    """Map stored values to HU: ``hu_slope * values + hu_offset``.

    With slope 1 and offset 0 the array is returned unchanged (so float data round-trip exactly);
    otherwise the arithmetic is done in float64 and the result is float32.

    Raises
    ------
    InputError
        If the array is not numeric (complex, object, string, ...) or the mapping is not finite.
    """
    if values.dtype.kind not in "fiub":
        raise InputError(f"holds {values.dtype} values; a CT image needs real numbers", path=path)
    if not (math.isfinite(hu_slope) and math.isfinite(hu_offset)):
        raise InputError(
            f"HU mapping must be finite, got slope {hu_slope!r}, offset {hu_offset!r}", path=path
        )
    if hu_slope == 0:
        raise InputError("HU slope must not be 0", path=path)
    if hu_slope == 1.0 and hu_offset == 0.0:
        return values
    out = values.astype(np.float64) * float(hu_slope)
    out += float(hu_offset)
    return out.astype(np.float32)


def make_volume(
    path: str | os.PathLike[str],
    hu: ArrayLike,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: ArrayLike | None = None,
    meta: dict[str, Any] | None = None,
) -> CTVolume:
    """Build a :class:`CTVolume`, turning its ``ValueError`` (NaN voxels, bad spacing, ...) into
    an :class:`InputError` that names ``path``."""
    try:
        return CTVolume(
            hu=hu,  # type: ignore[arg-type]
            spacing=tuple(spacing),  # type: ignore[arg-type]
            origin=tuple(origin),  # type: ignore[arg-type]
            direction=np.eye(3) if direction is None else np.asarray(direction, dtype=float),
            meta=meta or {},
        )
    except ValueError as exc:
        raise InputError(str(exc), path=path) from exc


def _split_byte_order(text: str) -> tuple[str, str]:
    """(explicit byte-order character or "", normalised numpy code without it)."""
    t = text.strip().lower()
    t = _DTYPE_ALIASES.get(t, t)
    m = _DTYPE_RE.match(t)
    if m is None:
        raise InputError(
            f"unknown data type {text!r}; use e.g. uint16, int16, float32, u2, <i2, >f4"
        )
    order, kind, size = m.groups()
    if kind == "f" and size == "1":
        raise InputError(f"unknown data type {text!r}: there is no 1-byte float")
    return ("" if order in ("", "=", "|") else order), kind + size


def parse_dtype(text: str) -> np.dtype[Any]:
    """Parse a pixel data type as a user writes it.

    Accepts numpy's names (``"uint16"``, ``"int16"``, ``"float32"``, ``"float64"``, ...), their
    short codes (``"u2"``, ``"i2"``, ``"f4"``) with an optional byte-order character (``"<u2"``
    little-endian, ``">i2"`` big-endian), and C names (``"ushort"``, ``"short"``, ``"float"``,
    ``"double"``). Without a byte-order character the result is little-endian.

    Raises
    ------
    InputError
        If ``text`` is not one of these.
    """
    order, code = _split_byte_order(text)
    return np.dtype((order or "<") + code)


def _byte_order_char(byte_order: str) -> str:
    try:
        return _BYTE_ORDERS[byte_order.strip().lower()]
    except KeyError:
        raise InputError(f"byte order must be 'little' or 'big', got {byte_order!r}") from None


def _norm_spacing(spacing: Sequence[float] | None, path: Path) -> tuple[float, float, float]:
    if spacing is None:
        return (1.0, 1.0, 1.0)
    s = [float(v) for v in spacing]
    if len(s) == 2:
        s = [1.0, *s]
    if len(s) != 3 or not all(math.isfinite(v) and v > 0 for v in s):
        raise InputError(
            f"spacing must be (dz, dy, dx) or (dy, dx) positive mm, got {tuple(spacing)}",
            path=path,
        )
    return (s[0], s[1], s[2])


def read_raw(
    path: str | os.PathLike[str],
    *,
    shape: Sequence[int],
    dtype: str | np.dtype[Any],
    hu_offset: float = 0.0,
    hu_slope: float = 1.0,
    byte_order: str = "little",
    spacing: Sequence[float] | None = None,
    offset_bytes: int = 0,
) -> CTVolume:
    """Read a headerless raw image.

    Parameters
    ----------
    path : path-like
        The file.
    shape : sequence of int
        ``(y, x)`` or ``(z, y, x)``, fastest-varying last (x). With ``(y, x)`` the number of
        slices is the number of whole slices the file holds.
    dtype : str or numpy dtype
        Stored type, see :func:`parse_dtype`. A byte-order character in it must agree with
        ``byte_order``.
    hu_offset, hu_slope : float
        ``HU = hu_slope * value + hu_offset``.
    byte_order : {"little", "big"}
        Byte order of multi-byte values.
    spacing : sequence of float, optional
        ``(dz, dy, dx)`` or ``(dy, dx)`` in mm; default 1 mm.
    offset_bytes : int
        Bytes to skip at the start of the file (a header).

    Returns
    -------
    CTVolume
        With ``meta = {"format": "raw", "path": ..., "dtype": ..., "hu_offset": ...,
        "hu_slope": ...}``; origin 0 and identity direction (a raw file has no geometry).

    Raises
    ------
    InputError
        If the file is missing or empty, the options are invalid, or the file size does not
        match the shape (the message gives the expected and found byte counts).
    """
    p = check_input_file(path)
    order = _byte_order_char(byte_order)
    explicit: str
    if isinstance(dtype, np.dtype):
        dt = dtype
        if dt.kind not in "uif" or dt.itemsize not in (1, 2, 4, 8):
            raise InputError(f"unsupported data type {dt}", path=p)
        explicit = dt.byteorder if dt.byteorder in ("<", ">") else ""
        code = dt.kind + str(dt.itemsize)
    else:
        try:
            explicit, code = _split_byte_order(str(dtype))
        except InputError as exc:
            raise InputError(exc.problem, path=p) from None
    if explicit and np.dtype(code).itemsize > 1 and explicit != order:
        raise InputError(
            f"data type {dtype!s} says {'big' if explicit == '>' else 'little'}-endian but "
            f"byte_order={byte_order!r}; give the same byte order in both (or none in the type)",
            path=p,
        )
    dt = np.dtype(order + code)

    try:
        dims = [int(n) for n in shape]
    except (TypeError, ValueError):
        raise InputError(
            f"shape must be (y, x) or (z, y, x) integers, got {shape!r}", path=p
        ) from None
    if len(dims) not in (2, 3) or any(n <= 0 for n in dims):
        raise InputError(
            f"shape must be (y, x) or (z, y, x) positive integers, got {tuple(shape)}", path=p
        )
    offset_bytes = int(offset_bytes)
    size = p.stat().st_size
    if offset_bytes < 0 or offset_bytes >= size:
        raise InputError(
            f"offset_bytes={offset_bytes} is outside the file, which holds {size} bytes", path=p
        )
    payload = size - offset_bytes
    slice_bytes = dims[-1] * dims[-2] * dt.itemsize
    if len(dims) == 2:
        if payload % slice_bytes:
            raise InputError(
                f"holds {payload} bytes after an offset of {offset_bytes}, not a whole number of "
                f"{dims[0]}x{dims[1]} {dt.name} slices ({slice_bytes} bytes each)",
                path=p,
            )
        dims = [payload // slice_bytes, *dims]
    else:
        expected = dims[0] * slice_bytes
        if payload != expected:
            raise InputError(
                f"expected {expected} bytes for shape {tuple(dims)} of {dt.name} after an offset "
                f"of {offset_bytes}, found {payload} bytes",
                path=p,
            )
    sp = _norm_spacing(spacing, p)
    values = np.fromfile(p, dtype=dt, count=int(np.prod(dims)), offset=offset_bytes)
    values = values.reshape(dims)
    hu = apply_hu_mapping(values, hu_slope=hu_slope, hu_offset=hu_offset, path=p)
    meta = {
        "format": "raw",
        "path": str(p),
        "dtype": dt.str,
        "hu_offset": float(hu_offset),
        "hu_slope": float(hu_slope),
    }
    return make_volume(p, hu, spacing=sp, meta=meta)
