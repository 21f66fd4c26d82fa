"""Recognise a CT file format from a path (and, for files without a telling suffix, its bytes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ctdid.errors import InputError

__all__ = ["READ_FORMATS", "WRITE_FORMATS", "Format", "detect_read_format", "detect_write_format"]

Format = Literal["dicom", "nifti", "metaimage", "numpy", "raw", "tiff", "png"]

READ_FORMATS: tuple[str, ...] = ("dicom", "nifti", "metaimage", "numpy", "raw", "tiff")
WRITE_FORMATS: tuple[str, ...] = ("dicom", "nifti", "metaimage", "numpy", "tiff", "png")

_SUFFIXES: dict[str, Format] = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mhd": "metaimage",
    ".mha": "metaimage",
    ".npy": "numpy",
    ".npz": "numpy",
    ".raw": "raw",
    ".img": "raw",
    ".bin": "raw",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def detect_read_format(path: str | os.PathLike[str]) -> Format:
    """Guess the format of an input from its suffix, or its contents.

    A folder is read as a DICOM series. A file with the ``DICM`` preamble is DICOM whatever
    its name. Files with no known suffix and no preamble are refused with a hint to give
    ``--format`` (or ``--shape``/``--dtype`` for headerless raw data).

    Raises
    ------
    InputError
        If the path does not exist or the format cannot be told.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    if p.is_dir():
        return "dicom"
    if _has_dicom_preamble(p):
        return "dicom"
    fmt = _SUFFIXES.get(_suffix(p))
    if fmt is None:
        raise InputError(
            "cannot tell the format from the name or contents; give --format "
            f"({', '.join(READ_FORMATS)}), or --shape and --dtype for headerless raw data",
            path=p,
        )
    if fmt == "png":
        raise InputError(
            "PNG is an 8-bit display format and does not hold HU; read the original data",
            path=p,
        )
    return fmt


def detect_write_format(path: str | os.PathLike[str]) -> Format:
    """Guess the output format from the path: a name with no suffix means a DICOM folder."""
    p = Path(path)
    suffix = _suffix(p)
    if suffix == "":
        return "dicom"
    fmt = _SUFFIXES.get(suffix)
    if fmt == "dicom":
        raise InputError(
            "DICOM output is a folder of files, one per slice; give a folder name without a suffix",
            path=p,
        )
    if fmt is None or fmt == "raw":
        raise InputError(
            f"cannot tell the output format from the suffix {suffix!r}; use one of "
            ".nii, .nii.gz, .mhd, .npy, .tif, .png, or a folder name for DICOM",
            path=p,
        )
    return fmt
