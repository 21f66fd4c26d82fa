"""Reading and writing CT volumes.

Every reader returns a :class:`ctdid.CTVolume` (float32 HU, (z, y, x), spacing in mm); every
writer takes one. Inputs are never modified; outputs are written atomically and never replace an
existing file or folder unless ``overwrite=True``.

Examples
--------
>>> from ctdid.io import read_volume, write_volume
>>> vol = read_volume("series_folder/")                      # doctest: +SKIP
>>> write_volume(vol, "out.nii.gz")                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctdid.errors import CTDIDError, InputError
from ctdid.io.formats import READ_FORMATS, WRITE_FORMATS, detect_read_format, detect_write_format
from ctdid.volume import CTVolume

__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "list_series",
    "read_volume",
    "write_volume",
]

_READ_ERRORS = (OSError, ValueError, EOFError, zlib.error, struct.error, MemoryError)


def list_series(path: str | os.PathLike[str]) -> list[Any]:
    """List the DICOM image series found in a folder (recursively) or one file.

    Returns
    -------
    list of DicomSeriesInfo
        One entry per series, in the order ``--series N`` (1-based) refers to.
    """
    from ctdid.io.dicom_read import list_dicom_series

    return list(list_dicom_series(path))


def read_volume(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    series: str | int | None = None,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    hu_offset: float | None = None,
    hu_slope: float | None = None,
    byte_order: str = "little",
    spacing: Sequence[float] | None = None,
    key: str | None = None,
) -> CTVolume:
    """Read a CT volume in HU from a file or a DICOM folder.

    Parameters
    ----------
    path : str or path-like
        A DICOM series folder or file, NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mhd``,
        ``.mha``), NumPy (``.npy``, ``.npz`` with optional ``<name>.json`` sidecar), TIFF written
        by ctdid, or headerless raw data (with ``shape`` and ``dtype``).
    format : str, optional
        Force a format (one of :data:`READ_FORMATS`) instead of guessing from the name.
    series : str or int, optional
        DICOM only: which series of a folder holding several (SeriesInstanceUID, SeriesNumber
        or 1-based index as listed by :func:`list_series`).
    shape : sequence of int, optional
        Raw only: (y, x) or (z, y, x). With (y, x), z is the number of whole slices in the file.
    dtype : str, optional
        Raw only: stored type such as ``uint16``, ``<i2``, ``float32``.
    hu_offset, hu_slope : float, optional
        Raw and MetaImage (which carry no rescale): HU = hu_slope * stored + hu_offset.
        Defaults 0 and 1. The Mayo ``.raw`` files in ``../shared/data`` need
        ``hu_offset=-1024``.
    byte_order : {"little", "big"}
        Raw only.
    spacing : sequence of float, optional
        Raw only: voxel size (dz, dy, dx) or (dy, dx) in mm; default 1 mm.
    key : str, optional
        ``.npz`` only: the array to read when the archive holds several.

    Returns
    -------
    CTVolume

    Raises
    ------
    InputError
        For any file that cannot be read as a CT volume; the message names the file.
    """
    p = Path(path)
    raw_given = shape is not None or dtype is not None
    if format is not None:
        fmt = format
    else:
        fmt = detect_read_format(p) if p.exists() else "raw"
        if raw_given and fmt not in ("raw", "metaimage"):
            fmt = "raw"  # --shape/--dtype: headerless data, whatever the suffix
    if fmt not in READ_FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(READ_FORMATS)}")
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    if fmt not in ("raw", "metaimage") and raw_given:
        raise InputError(f"--shape/--dtype apply to raw data, not to {fmt}", path=p)
    if fmt == "metaimage" and shape is not None:
        raise InputError("--shape does not apply to MetaImage (its header has DimSize)", path=p)
    try:
        return _read(
            p,
            fmt,
            series=series,
            shape=shape,
            dtype=dtype,
            hu_offset=hu_offset,
            hu_slope=hu_slope,
            byte_order=byte_order,
            spacing=spacing,
            key=key,
        )
    except CTDIDError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read as {fmt}: {exc}", path=p) from exc


def _read(
    p: Path,
    fmt: str,
    *,
    series: str | int | None,
    shape: Sequence[int] | None,
    dtype: str | None,
    hu_offset: float | None,
    hu_slope: float | None,
    byte_order: str,
    spacing: Sequence[float] | None,
    key: str | None,
) -> CTVolume:
    offset = 0.0 if hu_offset is None else float(hu_offset)
    slope = 1.0 if hu_slope is None else float(hu_slope)
    if fmt == "dicom":
        from ctdid.io.dicom_read import read_dicom

        return read_dicom(p, series=series)
    if fmt == "nifti":
        from ctdid.io.nifti import read_nifti

        return read_nifti(p)
    if fmt == "metaimage":
        from ctdid.io.metaimage import read_metaimage

        return read_metaimage(p, hu_offset=offset, hu_slope=slope, dtype=dtype)
    if fmt == "numpy":
        from ctdid.io.numpy_io import read_numpy

        return read_numpy(p, key=key)
    if fmt == "tiff":
        from ctdid.io.tiff import read_tiff

        return read_tiff(p)
    from ctdid.io.raw import read_raw

    if shape is None or dtype is None:
        raise InputError("headerless raw data needs --shape and --dtype", path=p)
    return read_raw(
        p,
        shape=tuple(shape),
        dtype=dtype,
        hu_offset=offset,
        hu_slope=slope,
        byte_order=byte_order,
        spacing=None if spacing is None else tuple(spacing),
    )


def write_volume(
    volume: CTVolume,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    overwrite: bool = False,
    window: tuple[float, float] = (-160.0, 240.0),
    description: str = "ctdid output",
    derivation: str = "written by ctdid",
    params: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write a CT volume; return the files written.

    Parameters
    ----------
    volume : CTVolume
    path : str or path-like
        The output. A name without a suffix is a DICOM series folder (one file per slice);
        otherwise the suffix picks the format: ``.nii``/``.nii.gz``, ``.mhd``, ``.npy`` (plus a
        JSON sidecar), ``.tif``/``.tiff`` (float32 HU), ``.png`` (8-bit, windowed; a folder of
        PNGs for several slices).
    format : str, optional
        Force a format (one of :data:`WRITE_FORMATS`).
    overwrite : bool
        Replace an existing output. Without it an existing output is an error.
    window : (float, float)
        Display window (low, high) in HU for PNG output and for the DICOM WindowCenter/Width.
        Default [-160, 240] HU (abdomen W400/L40, the paper's display window).
    description, derivation : str
        DICOM only: SeriesDescription (cut to 64 characters) and DerivationDescription.
    params : mapping, optional
        DICOM only: what made this output; it enters the derived UIDs so that reruns with the
        same parameters give the same UIDs and other parameters give other UIDs.
    """
    p = Path(path)
    fmt = format or detect_write_format(p)
    if fmt not in WRITE_FORMATS:
        raise InputError(f"unknown output format {fmt!r}; use one of {', '.join(WRITE_FORMATS)}")
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise InputError(f"window high must exceed low, got [{low}, {high}] HU")
    if fmt == "dicom":
        from ctdid.io.dicom_write import write_dicom_series

        center, width = (low + high) / 2.0, high - low
        return list(
            write_dicom_series(
                volume,
                p,
                description=description,
                derivation=derivation,
                params=params,
                window=(center, width),
                overwrite=overwrite,
            )
        )
    if fmt == "nifti":
        from ctdid.io.nifti import write_nifti

        return _as_paths(write_nifti(volume, p, overwrite=overwrite), p)
    if fmt == "metaimage":
        from ctdid.io.metaimage import write_metaimage

        return _as_paths(write_metaimage(volume, p, overwrite=overwrite), p)
    if fmt == "numpy":
        from ctdid.io.numpy_io import write_numpy

        return _as_paths(write_numpy(volume, p, overwrite=overwrite), p)
    if fmt == "tiff":
        from ctdid.io.tiff import write_tiff

        return _as_paths(write_tiff(volume, p, overwrite=overwrite), p)
    from ctdid.io.png import write_png

    return _as_paths(write_png(volume, p, window=(low, high), overwrite=overwrite), p)


def _as_paths(result: object, default: Path) -> list[Path]:
    if result is None:
        return [default]
    if isinstance(result, (str, os.PathLike)):
        return [Path(result)]
    if isinstance(result, (list, tuple)):
        return [Path(r) for r in result]
    return [default]
