"""MetaImage (ITK ``.mhd`` + ``.raw``/``.zraw``, and single-file ``.mha``) reading and writing.

MetaImage geometry is already in LPS patient coordinates: ``Offset`` (or ``Position``/``Origin``)
is the position of voxel (0, 0, 0), ``ElementSpacing`` is listed x first, and the triplets of
``TransformMatrix`` (or ``Rotation``/``Orientation``) are the directions of increasing x, y and z
index, the rows of :attr:`CTVolume.direction`. ``AnatomicalOrientation`` is informative only and
is not used.

MetaImage has no rescale fields, so the mapping from stored values to HU is the caller's:
``HU = hu_slope * value + hu_offset``. For the FDA's MITA-LCD (CCT189) data, for example, the FBP
images need ``hu_offset=-1000``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import CTDIDWarning, InputError, OutputExistsError
from ctdid.io.atomic import atomic_file, check_output
from ctdid.io.raw import apply_hu_mapping, check_input_file, make_volume, parse_dtype
from ctdid.volume import CTVolume

__all__ = ["ELEMENT_TYPES", "read_metaimage", "write_metaimage"]

#: MetaImage element types and their numpy codes (byte order is added from the header).
ELEMENT_TYPES: dict[str, str] = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}

_MAX_HEADER_BYTES = 1 << 20
_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f"}


class _Header:
    """Parsed header fields, looked up case-insensitively; remembers the original spelling."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: dict[str, tuple[str, str]] = {}  # lower key -> (key, value)
        self.data_offset = 0  # byte after the ElementDataFile line
        self.list_files: list[str] = []

    def get(self, *keys: str) -> str | None:
        for k in keys:
            if k.lower() in self.fields:
                return self.fields[k.lower()][1]
        return None

    def key_of(self, *keys: str) -> str:
        for k in keys:
            if k.lower() in self.fields:
                return self.fields[k.lower()][0]
        return keys[0]

    def numbers(
        self, keys: tuple[str, ...], n: int, *, integer: bool = False
    ) -> list[float] | None:
        text = self.get(*keys)
        if text is None:
            return None
        name = self.key_of(*keys)
        try:
            vals = [float(t) for t in text.split()]
        except ValueError:
            raise InputError(
                f"{name} = {text!r} is not a list of numbers", path=self.path
            ) from None
        if len(vals) != n:
            raise InputError(
                f"{name} = {text!r} has {len(vals)} value(s); NDims asks for {n}", path=self.path
            )
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"{name} = {text!r} is not finite", path=self.path)
        if integer and not all(v == int(v) for v in vals):
            raise InputError(f"{name} = {text!r} must be whole numbers", path=self.path)
        return vals

    def flag(self, *keys: str) -> bool | None:
        text = self.get(*keys)
        if text is None:
            return None
        t = text.strip().lower()
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
        raise InputError(f"{self.key_of(*keys)} = {text!r} must be True or False", path=self.path)


def _parse_header(path: Path) -> _Header:
    hdr = _Header(path)
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline()
            if not raw:
                break
            lineno += 1
            if f.tell() > _MAX_HEADER_BYTES:
                raise InputError(
                    "no ElementDataFile line in the first MiB; not a MetaImage header", path=path
                )
            line = raw.decode("latin-1").strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise InputError(
                    f"line {lineno} is not 'Key = Value' ({line[:40]!r}); not a MetaImage header",
                    path=path,
                )
            hdr.fields[key.lower()] = (key, value.strip())
            if key.lower() == "elementdatafile":
                hdr.data_offset = f.tell()
                if value.strip().upper().startswith("LIST"):
                    rest = f.read().decode("latin-1")
                    hdr.list_files = [ln.strip() for ln in rest.splitlines() if ln.strip()]
                return hdr
    raise InputError("has no ElementDataFile line; not a MetaImage header", path=path)


def _data_files(hdr: _Header) -> list[Path] | None:
    """The external data files, in order, or None for LOCAL (data after the header)."""
    value = hdr.get("ElementDataFile") or ""
    folder = hdr.path.parent
    if value.upper() == "LOCAL":
        return None
    if value.upper().startswith("LIST"):
        if not hdr.list_files:
            raise InputError("ElementDataFile = LIST names no files", path=hdr.path)
        return [folder / name for name in hdr.list_files]
    tokens = value.split()
    if len(tokens) >= 4 and "%" in tokens[0]:
        try:
            start, stop, step = (int(t) for t in tokens[1:4])
        except ValueError:
            raise InputError(
                f"ElementDataFile = {value!r}: expected 'pattern first last step'", path=hdr.path
            ) from None
        if step == 0:
            raise InputError(f"ElementDataFile = {value!r}: step is 0", path=hdr.path)
        stop_incl = stop + (1 if step > 0 else -1)
        try:
            names = [tokens[0] % i for i in range(start, stop_incl, step)]
        except (TypeError, ValueError):
            raise InputError(
                f"ElementDataFile = {value!r}: bad file name pattern", path=hdr.path
            ) from None
        if not names:
            raise InputError(f"ElementDataFile = {value!r} names no files", path=hdr.path)
        return [folder / n for n in names]
    if not value:
        raise InputError("ElementDataFile is empty", path=hdr.path)
    return [folder / value]


def _read_block(
    hdr: _Header,
    source: Path,
    offset: int,
    count: int,
    dtype: np.dtype[Any],
    *,
    compressed: bool,
    binary: bool,
    header_size: int,
) -> NDArray[Any]:
    """Read ``count`` elements from ``source`` starting at byte ``offset``."""
    if not source.exists():
        raise InputError(
            f"data file {source.name} named by the header does not exist", path=hdr.path
        )
    if source.is_dir():
        raise InputError(f"data file {source.name} is a folder", path=hdr.path)
    size = source.stat().st_size
    needed = count * dtype.itemsize
    where = source
    if compressed:
        with open(source, "rb") as f:
            f.seek(offset + max(header_size, 0))
            packed = f.read()
        try:
            data = zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(packed)
        except zlib.error as exc:
            raise InputError(
                f"CompressedData: zlib stream is corrupt ({exc})", path=where
            ) from None
        if len(data) < needed:
            raise InputError(
                f"truncated: expected {needed} bytes of {dtype.name} after decompression, "
                f"found {len(data)}",
                path=where,
            )
        return np.frombuffer(data, dtype=dtype, count=count)
    if not binary:
        with open(source, "rb") as f:
            f.seek(offset)
            text = f.read().decode("latin-1")
        try:
            vals = np.array(text.split(), dtype=np.float64)
        except ValueError:
            raise InputError(
                "ASCII data (BinaryData = False) are not all numbers", path=where
            ) from None
        if vals.size < count:
            raise InputError(
                f"truncated: expected {count} ASCII values, found {vals.size}", path=where
            )
        return vals[:count]
    if header_size == -1:
        start = size - needed
        if start < offset:
            raise InputError(
                f"truncated: expected {needed} bytes, found {size - offset}", path=where
            )
    else:
        start = offset + header_size
    available = size - start
    if available < needed:
        raise InputError(
            f"truncated: expected {needed} bytes ({count} x {dtype.name}), "
            f"found {max(available, 0)}",
            path=where,
        )
    if available > needed:
        warnings.warn(
            f"{where}: holds {available} bytes of data, {available - needed} more than the "
            f"{needed} the header describes; the extra bytes are ignored",
            CTDIDWarning,
            stacklevel=5,  # frames: here, _read_values, read_metaimage, its caller, theirs
        )
    return np.fromfile(source, dtype=dtype, count=count, offset=start)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How the header says the voxels are stored."""

    ndims: int
    dims: list[int]  # x first
    element_type: str  # MetaImage name, e.g. "MET_SHORT"
    msb: bool  # big-endian
    stored: np.dtype[Any]
    compressed: bool
    binary: bool
    header_size: int  # -1: the data are the last bytes of the file


def _dims(hdr: _Header) -> tuple[int, list[int]]:
    """(NDims, DimSize) of a single-channel 2-D or 3-D image (a 4-D one of one volume is 3-D)."""
    p = hdr.path
    ndims_text = hdr.get("NDims")
    if ndims_text is None:
        raise InputError("header has no NDims", path=p)
    try:
        ndims = int(ndims_text)
    except ValueError:
        raise InputError(f"NDims = {ndims_text!r} is not a whole number", path=p) from None
    dims_f = hdr.numbers(("DimSize",), ndims, integer=True)
    if dims_f is None:
        raise InputError("header has no DimSize", path=p)
    dims = [int(v) for v in dims_f]
    if ndims == 4 and dims[3] == 1:
        ndims, dims = 3, dims[:3]
    if ndims not in (2, 3):
        raise InputError(f"NDims = {ndims_text}: only 2-D and 3-D images are CT volumes", path=p)
    if any(d <= 0 for d in dims):
        raise InputError(f"DimSize {dims} must be positive", path=p)
    nch = hdr.get("ElementNumberOfChannels")
    if nch is not None and nch.strip() != "1":
        raise InputError(
            f"ElementNumberOfChannels = {nch}: only single-channel (greyscale) images", path=p
        )
    return ndims, dims


def _element_type(hdr: _Header, dtype: str | None) -> tuple[str, str]:
    """(MetaImage element type, numpy code without byte order), ``dtype`` overriding the header."""
    p = hdr.path
    et_text = dtype if dtype is not None else hdr.get("ElementType")
    if et_text is None:
        raise InputError("header has no ElementType", path=p)
    et = et_text.strip().upper()
    if et in ELEMENT_TYPES:
        return et, ELEMENT_TYPES[et]
    if dtype is None:
        raise InputError(
            f"ElementType = {et_text!r} is not supported; expected one of "
            + ", ".join(ELEMENT_TYPES),
            path=p,
        )
    try:
        code = parse_dtype(dtype).str[1:]
    except InputError as exc:
        raise InputError(f"dtype: {exc.problem}", path=p) from None
    et = next((k for k, v in ELEMENT_TYPES.items() if v == code), "")
    if not et:
        raise InputError(f"dtype {dtype!r} has no MetaImage element type", path=p)
    return et, code


def _big_endian(hdr: _Header) -> bool:
    """Whether the data are big-endian (ElementByteOrderMSB or BinaryDataByteOrderMSB)."""
    msb_elem = hdr.flag("ElementByteOrderMSB")
    msb_bin = hdr.flag("BinaryDataByteOrderMSB")
    if msb_elem is not None and msb_bin is not None and msb_elem != msb_bin:
        raise InputError(
            "ElementByteOrderMSB and BinaryDataByteOrderMSB disagree; which byte order is it?",
            path=hdr.path,
        )
    return bool(msb_elem if msb_elem is not None else msb_bin)


def _header_size(hdr: _Header) -> int:
    """HeaderSize: bytes to skip in each data file (0 if absent; -1 for "the last bytes")."""
    header_size_text = hdr.get("HeaderSize")
    try:
        header_size = int(header_size_text) if header_size_text is not None else 0
    except ValueError:
        raise InputError(
            f"HeaderSize = {header_size_text!r} is not a whole number", path=hdr.path
        ) from None
    if header_size < -1:
        raise InputError(f"HeaderSize = {header_size} is negative", path=hdr.path)
    return header_size


def _layout(hdr: _Header, dtype: str | None) -> _Layout:
    """The storage layout of the voxels, checked; ``dtype`` overrides ElementType."""
    ndims, dims = _dims(hdr)
    et, code = _element_type(hdr, dtype)
    msb = _big_endian(hdr)
    compressed = bool(hdr.flag("CompressedData"))
    binary = hdr.flag("BinaryData")
    return _Layout(
        ndims=ndims,
        dims=dims,
        element_type=et,
        msb=msb,
        stored=np.dtype((">" if msb else "<") + code),
        compressed=compressed,
        binary=True if binary is None else binary,
        header_size=_header_size(hdr),
    )


def _read_values(hdr: _Header, layout: _Layout) -> NDArray[Any]:
    """All voxel values in file order (x fastest), from the data file(s) or after the header."""
    total = int(np.prod(layout.dims))
    files = _data_files(hdr)
    stored, header_size = layout.stored, layout.header_size
    kw: dict[str, Any] = {"compressed": layout.compressed, "binary": layout.binary}
    if files is None:
        return _read_block(hdr, hdr.path, hdr.data_offset, total, stored, header_size=0, **kw)
    if len(files) == 1:
        return _read_block(hdr, files[0], 0, total, stored, header_size=header_size, **kw)
    if total % len(files):
        raise InputError(
            f"{len(files)} data files do not split DimSize {layout.dims} evenly", path=hdr.path
        )
    per = total // len(files)
    return np.concatenate(
        [_read_block(hdr, f, 0, per, stored, header_size=header_size, **kw) for f in files]
    )


def _lps_geometry(hdr: _Header, ndims: int) -> tuple[list[float], list[float], NDArray[np.float64]]:
    """(spacing, origin) x first and padded to 3-D, and the direction rows, made proper."""
    spacing = hdr.numbers(("ElementSpacing",), ndims) or hdr.numbers(("ElementSize",), ndims)
    spacing = spacing or [1.0] * ndims
    origin = hdr.numbers(("Offset", "Position", "Origin"), ndims) or [0.0] * ndims
    matrix = hdr.numbers(("TransformMatrix", "Rotation", "Orientation"), ndims * ndims)
    rot = np.eye(ndims) if matrix is None else np.asarray(matrix).reshape(ndims, ndims)
    direction = np.eye(3)
    direction[:ndims, :ndims] = rot
    if ndims == 2:
        spacing = [*spacing, 1.0]
        origin = [*origin, 0.0]
    norms = np.linalg.norm(direction, axis=1)
    if np.any(norms == 0):
        name = hdr.key_of("TransformMatrix", "Rotation", "Orientation")
        raise InputError(f"{name} has a zero row", path=hdr.path)
    if np.any(np.abs(norms - 1.0) > 1e-3):  # tolerate unnormalised matrices
        direction = direction / norms[:, None]
    for axis, step in enumerate(spacing):  # a negative spacing is a flipped axis
        if step < 0:
            spacing[axis] = -step
            direction[axis] = -direction[axis]
    return spacing, origin, direction


def read_metaimage(
    path: str | os.PathLike[str],
    *,
    hu_offset: float = 0.0,
    hu_slope: float = 1.0,
    dtype: str | None = None,
) -> CTVolume:
    """Read a MetaImage (``.mhd`` header with its data file(s), or a single-file ``.mha``).

    Parameters
    ----------
    path : path-like
        The ``.mhd`` or ``.mha`` file.
    hu_offset, hu_slope : float
        ``HU = hu_slope * value + hu_offset`` (MetaImage has no rescale fields).
    dtype : str, optional
        Override a wrong ``ElementType`` in the header: a MetaImage name (``"MET_USHORT"``) or a
        numpy type (``"uint16"``, ``"u2"``). The byte order always comes from the header. The FDA
        MITA-LCD ``DL_denoised`` headers say ``MET_SHORT`` for data that are unsigned
        (``dtype="uint16", hu_offset=-33768``).

    Supported: ``ElementType`` MET_(U)CHAR, (U)SHORT, (U)INT, (U)LONG, (U)LONG_LONG, FLOAT,
    DOUBLE; ``ElementByteOrderMSB``/``BinaryDataByteOrderMSB``; ``CompressedData`` (zlib or
    gzip); ``HeaderSize``; ``ElementDataFile`` as a file name relative to the header, ``LOCAL``,
    a ``pattern first last step`` series (one slice per file) or ``LIST``; ``NDims`` 2 or 3.

    Returns
    -------
    CTVolume
        ``meta = {"format": "metaimage", "path": ..., "element_type": ..., "byte_order": ...,
        "hu_offset": ..., "hu_slope": ...}``.

    Raises
    ------
    InputError
        For a missing or malformed header, a missing or truncated data file (the message gives
        expected and found bytes), an unsupported element type or dimension, or bad voxels.
    """
    p = check_input_file(path)
    hdr = _parse_header(p)
    layout = _layout(hdr, dtype)
    values = _read_values(hdr, layout)
    values = values.reshape(layout.dims[::-1])  # x fastest -> (z, y, x) or (y, x)
    hu = apply_hu_mapping(values, hu_slope=hu_slope, hu_offset=hu_offset, path=p)
    spacing, origin, direction = _lps_geometry(hdr, layout.ndims)  # LPS already
    meta = {
        "format": "metaimage",
        "path": str(p),
        "element_type": layout.element_type,
        "byte_order": "big" if layout.msb else "little",
        "hu_offset": float(hu_offset),
        "hu_slope": float(hu_slope),
    }
    return make_volume(
        p,
        hu,
        spacing=(spacing[2], spacing[1], spacing[0]),
        origin=origin,
        direction=direction,
        meta=meta,
    )


def _fmt(values: Any) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=float).reshape(-1))


def write_metaimage(
    volume: CTVolume, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``volume`` as float32 little-endian HU in MetaImage format.

    ``path`` ending in ``.mhd`` writes the header there and the voxels to the ``.raw`` file of
    the same stem; ``.mha`` writes one file with the voxels after the header. Each file is
    written under a temporary name and renamed when complete (the data file before the header),
    and nothing that exists is replaced unless ``overwrite``.

    Returns
    -------
    Path
        The header (``.mhd``) or single (``.mha``) file.

    Raises
    ------
    OutputExistsError
        If the header or data file exists and ``overwrite`` is false; nothing is written.
    ValueError
        If ``path`` does not end in ``.mhd`` or ``.mha``.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".mhd", ".mha"):
        raise ValueError(f"{out}: a MetaImage file name ends in .mhd or .mha")
    nz, ny, nx = volume.shape
    dz, dy, dx = volume.spacing
    data_name = "LOCAL" if suffix == ".mha" else out.with_suffix(".raw").name
    header = "\n".join(
        [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            "CompressedData = False",
            f"TransformMatrix = {_fmt(volume.direction)}",
            f"Offset = {_fmt(volume.origin)}",
            "CenterOfRotation = 0 0 0",
            f"ElementSpacing = {_fmt((dx, dy, dz))}",
            f"DimSize = {nx} {ny} {nz}",
            "ElementType = MET_FLOAT",
            f"ElementDataFile = {data_name}",
            "",
        ]
    ).encode("ascii")
    data = np.ascontiguousarray(volume.hu, dtype="<f4")

    if suffix == ".mha":
        with atomic_file(out, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
            f.write(header)
            data.tofile(f)
        return out.absolute()

    raw = out.with_suffix(".raw")
    if not overwrite:
        for target in (out, raw):
            if target.exists():
                raise OutputExistsError(
                    "exists; pass --overwrite to replace it", path=target.absolute()
                )
    check_output(out, overwrite=overwrite)
    with atomic_file(out, overwrite=overwrite) as tmp_header:
        with atomic_file(raw, overwrite=overwrite) as tmp_raw:
            data.tofile(tmp_raw)
        tmp_header.write_bytes(header)
    return out.absolute()
