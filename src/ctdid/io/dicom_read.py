"""Read a CT series from DICOM files into a :class:`~ctdid.volume.CTVolume`.

The reader takes a folder (searched recursively) or one file. Files that are not DICOM
(``README``, ``LICENSE``, ...) and DICOM objects that are not images (``DICOMDIR``, RT structure
sets, reports, ...) are skipped. The image files are grouped by SeriesInstanceUID; when a folder
holds several image series the caller must choose one.

Slices are ordered by their position along the slice normal (the cross product of the row and
column direction cosines of ImageOrientationPatient, dotted with ImagePositionPatient), never by
InstanceNumber or file name. Stored values are rescaled to float32 Hounsfield units with each
slice's own RescaleSlope and RescaleIntercept.

Compressed pixel data (JPEG 2000, JPEG lossless, JPEG-LS, RLE) are decoded by pydicom's plug-ins
(pylibjpeg-openjpeg, pylibjpeg-libjpeg, pylibjpeg-rle); when none is installed for a transfer
syntax, :class:`~ctdid.errors.MissingDecoderError` names the package to install.

Anything unusual but readable (missing or duplicate slices, uneven spacing, gantry tilt, a
modality other than CT, missing positions) is reported as a :class:`~ctdid.errors.CTDIDWarning`
that names the file or slice; anything that cannot be read raises
:class:`~ctdid.errors.InputError` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ctdid.errors import CTDIDWarning, InputError, MissingDecoderError, SeriesSelectionError
from ctdid.volume import CTVolume

__all__ = ["DicomSeriesInfo", "list_dicom_series", "read_dicom"]

PathLike = str | os.PathLike[str]

#: Modalities of DICOM objects that are never a volume to denoise; skipped when scanning.
_SKIPPED_MODALITIES = frozenset(
    {
        "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "RTIMAGE", "RTION", "RTTREAT",
        "SEG", "SR", "KO", "PR", "REG", "DOC", "FID", "PLAN", "RWV", "AU", "ECG", "HD",
    }
)  # fmt: skip
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: Where the decoder for each compressed transfer syntax comes from: (pip package, install hint).
_OPENJPEG = ("pylibjpeg-openjpeg", "pip install pylibjpeg pylibjpeg-openjpeg")
_LIBJPEG = (
    "pylibjpeg-libjpeg",
    "pip install ctdid[jpeg] (or: pip install pylibjpeg pylibjpeg-libjpeg)",
)
_RLE = ("pylibjpeg-rle", "pip install pylibjpeg pylibjpeg-rle")
_DECODER_PACKAGES: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG baseline
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG extended
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG lossless P14
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": _LIBJPEG,  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": _LIBJPEG,  # JPEG-LS near lossless
    "1.2.840.10008.1.2.5": _RLE,  # RLE lossless
}

#: Two orientations (direction cosines) differing by more than this are "mixed".
_ORIENTATION_TOL = 1e-3
#: Slice positions closer than this (mm along the normal) are duplicates.
_DUPLICATE_TOL_MM = 1e-3
#: A step larger than this multiple of the median spacing means slices are missing.
_GAP_FACTOR = 1.5
#: Spacings differing by more than max(abs, rel * median) are "non-uniform".
_UNIFORM_TOL_MM = 1e-2
_UNIFORM_TOL_REL = 1e-2
#: Slice positions stepping at more than this angle (degrees) to the normal mean a tilt.
_TILT_TOL_DEG = 0.1
#: At most this many individual warnings of one kind per series; the rest are summarised.
_MAX_DETAILED = 5


@dataclasses.dataclass(frozen=True)
class DicomSeriesInfo:
    """One image series found by :func:`list_dicom_series`.

    Attributes
    ----------
    index : int
        1-based position in the list; accepted by ``read_dicom(series=...)``.
    series_instance_uid : str
        SeriesInstanceUID ("" when the files leave it empty, as some anonymisers do).
    series_number : int or None
        SeriesNumber, if any.
    series_description : str
        SeriesDescription ("" if none).
    modality : str
        Modality of the first file ("CT", "MR", ...).
    n_files : int
        Number of files in the series.
    n_slices : int
        Number of slices (frames) in all files together.
    rows, columns : int
        Image size of the first file.
    study_instance_uid : str
        StudyInstanceUID ("" if none).
    first_file : Path
        The first file of the series in file-name order.
    files : tuple of Path
        All files of the series, in file-name order (not slice order).
    """

    index: int
    series_instance_uid: str
    series_number: int | None
    series_description: str
    modality: str
    n_files: int
    n_slices: int
    rows: int
    columns: int
    study_instance_uid: str
    first_file: Path
    files: tuple[Path, ...] = dataclasses.field(repr=False, compare=False)

    def label(self) -> str:
        """One line describing the series, as listed in a :class:`SeriesSelectionError`."""
        number = "no number" if self.series_number is None else f"number {self.series_number}"
        desc = f' "{self.series_description}"' if self.series_description else ""
        uid = self.series_instance_uid or "(empty)"
        return (
            f"[{self.index}] series {number}{desc}: {self.n_slices} slice(s), "
            f"{self.rows}x{self.columns}, {self.modality or '?'}, UID {uid}"
        )


# --------------------------------------------------------------------------------------------
# Scanning


@dataclasses.dataclass
class _Entry:
    """A DICOM image file found while scanning (header only, pixel data not read)."""

    path: Path
    header: Dataset
    raw: bool  # no 'DICM' preamble; read with force=True
    n_frames: int


@dataclasses.dataclass
class _Group:
    key: tuple[str, ...]
    entries: list[_Entry]
    info: DicomSeriesInfo | None = None


def _sniff(path: Path) -> str | None:
    """'dicom' for a Part 10 file, 'raw' for a bare little-endian dataset, else None."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    # A dataset without preamble normally starts with a group 0x0008 (or 0x0002) element.
    if len(head) >= 8 and head[1:2] == b"\x00" and head[0:1] in (b"\x02", b"\x08"):
        return "raw"
    return None


def _read_header(path: Path, kind: str) -> Dataset:
    try:
        # defer_size: large values (the pixel data) stay on disk but their presence is known.
        return pydicom.dcmread(path, defer_size=4096, force=(kind == "raw"))
    except InvalidDicomError as exc:
        raise InputError(f"not a readable DICOM file: {exc}", path=path) from exc
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise InputError(
            f"unreadable or truncated DICOM file ({type(exc).__name__}: {exc})", path=path
        ) from exc


def _sop_class(ds: Dataset) -> str:
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop:
        meta = getattr(ds, "file_meta", None)
        sop = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta is not None else ""
    return sop


def _has_pixels(ds: Dataset) -> bool:
    return any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _classify(path: Path, ds: Dataset, *, single: bool) -> str:
    """'image', or 'skip' for a non-image object; raises for a broken image file."""
    sop = _sop_class(ds)
    modality = str(ds.get("Modality", "") or "").upper()
    if sop == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        if single:
            raise InputError("is a DICOMDIR; pass the folder that holds it", path=path)
        return "skip"
    if len(ds) == 0:
        raise InputError("DICOM file holds no data elements (truncated?)", path=path)
    if _has_pixels(ds):
        if modality in _SKIPPED_MODALITIES:
            if single:
                raise InputError(f"is a {modality} object, not a CT image", path=path)
            return "skip"
        return "image"
    sop_name = UID(sop).name if sop else ""
    looks_like_image = ("Rows" in ds and "Columns" in ds) or "Image Storage" in sop_name
    if looks_like_image and modality not in _SKIPPED_MODALITIES:
        raise InputError("DICOM image file has no pixel data (truncated?)", path=path)
    if single:
        what = modality or sop_name or "non-image"
        raise InputError(f"DICOM file holds no image (it is a {what} object)", path=path)
    return "skip"


def _n_frames(ds: Dataset) -> int:
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _iter_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _series_key(ds: Dataset) -> tuple[str, ...]:
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return ("uid", uid)
    # Anonymised files sometimes empty the UIDs: group by what is left.
    return (
        "nouid",
        str(ds.get("StudyInstanceUID", "") or ""),
        str(ds.get("SeriesNumber", "") or ""),
        str(ds.get("SeriesDescription", "") or ""),
        str(ds.get("FrameOfReferenceUID", "") or ""),
        str(ds.get("Modality", "") or ""),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _scan(path: PathLike) -> tuple[Path, list[_Group]]:
    root = Path(path)
    if not root.exists():
        raise InputError("does not exist", path=root)
    single = root.is_file()
    files = [root] if single else list(_iter_files(root))
    groups: dict[tuple[str, ...], _Group] = {}
    n_dicom = 0
    for f in files:
        kind = _sniff(f)
        if kind is None:
            if single:
                raise InputError("not a DICOM file (no 'DICM' marker)", path=f)
            continue
        if kind == "raw" and not single:
            # No 'DICM' marker: only a guess that this is DICOM. Skip it unless it parses
            # into something that looks like an image header.
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = _read_header(f, kind)
            except InputError:
                continue
            if not any(k in ds for k in ("SOPClassUID", "Modality", "Rows")):
                continue
        else:
            ds = _read_header(f, kind)
        n_dicom += 1
        if single and (_sop_class(ds) == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds):
            # A DICOMDIR names the files of its folder: read that folder.
            return _scan(f.parent)
        if _classify(f, ds, single=single) != "image":
            continue
        entry = _Entry(path=f, header=ds, raw=(kind == "raw"), n_frames=_n_frames(ds))
        groups.setdefault(_series_key(ds), _Group(_series_key(ds), [])).entries.append(entry)
    if not groups:
        what = "no files" if not files else f"{len(files)} file(s), {n_dicom} DICOM"
        raise InputError(f"no DICOM image series found ({what})", path=root)

    def order(g: _Group) -> tuple[Any, ...]:
        ds = g.entries[0].header
        num = _int_or_none(ds.get("SeriesNumber"))
        return (
            _str(ds.get("StudyDate")),
            _str(ds.get("StudyTime")),
            _str(ds.get("StudyInstanceUID")),
            num is None,
            num or 0,
            _str(ds.get("SeriesInstanceUID")),
            str(g.entries[0].path),
        )

    ordered = sorted(groups.values(), key=order)
    for i, g in enumerate(ordered, start=1):
        g.entries.sort(key=lambda e: str(e.path))
        ds = g.entries[0].header
        g.info = DicomSeriesInfo(
            index=i,
            series_instance_uid=_str(ds.get("SeriesInstanceUID")),
            series_number=_int_or_none(ds.get("SeriesNumber")),
            series_description=_str(ds.get("SeriesDescription")),
            modality=_str(ds.get("Modality")),
            n_files=len(g.entries),
            n_slices=sum(e.n_frames for e in g.entries),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            study_instance_uid=_str(ds.get("StudyInstanceUID")),
            first_file=g.entries[0].path,
            files=tuple(e.path for e in g.entries),
        )
    return root, ordered


def list_dicom_series(path: PathLike) -> list[DicomSeriesInfo]:
    """List the DICOM image series in a folder (searched recursively) or one file.

    Parameters
    ----------
    path : str or path-like
        A folder or a single DICOM file.

    Returns
    -------
    list of DicomSeriesInfo
        Ordered by study (date, time, UID), then SeriesNumber, SeriesInstanceUID and file
        name; ``info.index`` is the 1-based
        position that ``read_dicom(series=...)`` accepts.

    Raises
    ------
    InputError
        If ``path`` does not exist, holds no DICOM image, or a DICOM file in it is unreadable.
    """
    _, groups = _scan(path)
    return [g.info for g in groups if g.info is not None]


# --------------------------------------------------------------------------------------------
# Series selection


def _select(root: Path, groups: list[_Group], series: str | int | None) -> _Group:
    infos = [g.info for g in groups if g.info is not None]

    def listing() -> str:
        return "\n".join("  " + i.label() for i in infos)

    how = "pass --series with a SeriesInstanceUID, a SeriesNumber or a 1-based index"
    if series is None:
        if len(groups) == 1:
            return groups[0]
        raise SeriesSelectionError(
            f"{len(groups)} DICOM image series found; {how}:\n{listing()}", path=root
        )
    text = str(series).strip()
    by_uid = [g for g in groups if g.info and g.info.series_instance_uid == text]
    if by_uid:
        return by_uid[0]
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is not None and not isinstance(series, bool):
        by_number = [g for g in groups if g.info and g.info.series_number == number]
        if len(by_number) == 1:
            return by_number[0]
        if len(by_number) > 1:
            raise SeriesSelectionError(
                f"{len(by_number)} series have SeriesNumber {number}; pass --series with a "
                f"SeriesInstanceUID or a 1-based index instead:\n{listing()}",
                path=root,
            )
        if 1 <= number <= len(groups):
            return groups[number - 1]
    raise SeriesSelectionError(
        f"no series matches --series {text!r} (not a SeriesInstanceUID, SeriesNumber or "
        f"1-based index here); {how}:\n{listing()}",
        path=root,
    )


# --------------------------------------------------------------------------------------------
# Slices and geometry


@dataclasses.dataclass
class _Slice:
    """One 2-D slice: a single-frame file or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    header: Dataset  # scanned header (single-frame) or the multi-frame file's header
    rows: int
    columns: int
    ipp: NDArray[np.float64] | None
    iop: NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    slice_location: float | None
    instance_number: int | None
    slope: float
    intercept: float
    gantry_tilt: float

    def name(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


def _floats(value: Any, n: int) -> NDArray[np.float64] | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.size != n or not np.all(np.isfinite(arr)):
        return None
    return arr


def _float(value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _first_item(ds: Dataset | None, seq: str) -> Dataset | None:
    if ds is None or seq not in ds:
        return None
    items = ds[seq].value
    return items[0] if items else None


def _slice_from(path: Path, frame: int | None, ds: Dataset, *groups: Dataset | None) -> _Slice:
    """Build a slice record; ``groups`` are functional-group items searched before ``ds``."""

    def find(seq: str, keyword: str) -> Any:
        for g in groups:
            item = _first_item(g, seq)
            if item is not None and keyword in item:
                return item.get(keyword)
        return ds.get(keyword)

    spacing = _floats(find("PixelMeasuresSequence", "PixelSpacing"), 2)
    slope = _float(find("PixelValueTransformationSequence", "RescaleSlope"), 1.0)
    intercept = _float(find("PixelValueTransformationSequence", "RescaleIntercept"), 0.0)
    return _Slice(
        path=path,
        frame=frame,
        header=ds,
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        ipp=_floats(find("PlanePositionSequence", "ImagePositionPatient"), 3),
        iop=_floats(find("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        slice_location=_float(ds.get("SliceLocation"), None) if frame is None else None,
        instance_number=_int_or_none(ds.get("InstanceNumber")) if frame is None else frame + 1,
        slope=1.0 if slope is None else slope,
        intercept=0.0 if intercept is None else intercept,
        gantry_tilt=_float(ds.get("GantryDetectorTilt"), 0.0) or 0.0,
    )


def _slices_of(group: _Group) -> tuple[list[_Slice], bool]:
    """Slice records of a series; the flag says whether it is one multi-frame file."""
    multi = [e for e in group.entries if e.n_frames > 1]
    if not multi:
        return [_slice_from(e.path, None, e.header) for e in group.entries], False
    if len(group.entries) > 1:
        raise InputError(
            f"series of {len(group.entries)} files with multi-frame images (first: "
            f"{multi[0].path.name}) is not supported yet; convert it to single-frame files",
            path=multi[0].path,
        )
    entry = multi[0]
    ds = entry.header
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = (
        ds["PerFrameFunctionalGroupsSequence"].value
        if ("PerFrameFunctionalGroupsSequence" in ds)
        else []
    )
    if len(per_frame) != entry.n_frames:
        raise InputError(
            f"multi-frame DICOM ({entry.n_frames} frames) without a per-frame "
            "functional group for each frame is not supported yet",
            path=entry.path,
        )
    slices = [_slice_from(entry.path, i, ds, item, shared) for i, item in enumerate(per_frame)]
    if any(s.ipp is None for s in slices):
        raise InputError(
            "multi-frame DICOM without per-frame positions (PlanePositionSequence) is not "
            "supported yet",
            path=entry.path,
        )
    return slices, True


def _warn(message: str) -> None:
    warnings.warn(message, CTDIDWarning, stacklevel=3)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _fmt_pos(p: NDArray[np.float64] | None) -> str:
    if p is None:
        return "?"
    return "(" + ", ".join(f"{v:.2f}" for v in p) + ") mm"


@dataclasses.dataclass
class _Geometry:
    slices: list[_Slice]  # z order, duplicates removed
    dz: float
    dy: float
    dx: float
    origin: tuple[float, float, float]
    direction: NDArray[np.float64]
    order_by: str


def _check_consistent(slices: list[_Slice], warn: list[str]) -> None:
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise InputError(
                f"mixed image sizes in one series: {s.rows}x{s.columns} in {s.name()} but "
                f"{first.rows}x{first.columns} in {first.name()}",
                path=s.path,
            )
    with_iop = [s for s in slices if s.iop is not None]
    for s in with_iop[1:]:
        assert s.iop is not None and with_iop[0].iop is not None
        if np.max(np.abs(s.iop - with_iop[0].iop)) > _ORIENTATION_TOL:
            raise InputError(
                "mixed slice orientations in one series: ImageOrientationPatient "
                f"{np.round(s.iop, 4).tolist()} in {s.name()} but "
                f"{np.round(with_iop[0].iop, 4).tolist()} in {with_iop[0].name()}",
                path=s.path,
            )
    with_ps = [s for s in slices if s.pixel_spacing is not None]
    for s in with_ps[1:]:
        a, b = np.asarray(s.pixel_spacing), np.asarray(with_ps[0].pixel_spacing)
        if np.max(np.abs(a - b) / np.maximum(b, 1e-9)) > 1e-3:
            raise InputError(
                f"mixed pixel spacings in one series: {a.tolist()} mm in {s.name()} but "
                f"{b.tolist()} mm in {with_ps[0].name()}",
                path=s.path,
            )
    if len(slices) > 1 and with_iop and len(with_iop) < len(slices):
        missing = next(s for s in slices if s.iop is None)
        warn.append(
            f"{len(slices) - len(with_iop)} of {len(slices)} slices have no "
            f"ImageOrientationPatient (first: {missing.name()}); using that of the others"
        )


def _orientation(slices: list[_Slice], warn: list[str]) -> NDArray[np.float64]:
    iop = next((s.iop for s in slices if s.iop is not None), None)
    if iop is None:
        if len(slices) > 1:
            warn.append(
                f"no ImageOrientationPatient in {slices[0].name()} and the other "
                "slices; assuming axial slices (rows along +x, columns along +y)"
            )
        iop = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise InputError(
            f"invalid ImageOrientationPatient {iop.tolist()} (zero vector)", path=slices[0].path
        )
    row, col = row / nr, col / nc
    col = col - row * float(row @ col)  # remove rounding skew
    nc = np.linalg.norm(col)
    if nc < 1e-6:
        raise InputError(
            f"invalid ImageOrientationPatient {iop.tolist()} (row and column parallel)",
            path=slices[0].path,
        )
    col = col / nc
    normal = np.cross(row, col)
    return np.stack([row, col, normal / np.linalg.norm(normal)])


def _fallback_dz(s: _Slice) -> float | None:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        v = _float(s.header.get(key), None)
        if v is not None and v > 0:
            return abs(v)
    return None


def _pixel_spacing(slices: list[_Slice], warn: list[str]) -> tuple[float, float]:
    """(dy, dx) in mm: PixelSpacing, else ImagerPixelSpacing, else 1 mm (with a warning)."""
    ps = next((s.pixel_spacing for s in slices if s.pixel_spacing is not None), None)
    if ps is None or min(ps) <= 0:
        ips = _floats(slices[0].header.get("ImagerPixelSpacing"), 2)
        if ips is not None and float(np.min(ips)) > 0:
            ps = (float(ips[0]), float(ips[1]))
            warn.append(f"no PixelSpacing in {slices[0].name()}; using ImagerPixelSpacing {ps}")
        else:
            ps = (1.0, 1.0)
            warn.append(f"no PixelSpacing in {slices[0].name()}; assuming 1 mm pixels")
    return float(ps[0]), float(ps[1])


def _order_keys(
    slices: list[_Slice], normal: NDArray[np.float64], warn: list[str]
) -> tuple[str, NDArray[np.float64]]:
    """What the slices are ordered by, and each one's key (in mm along the normal if possible)."""
    n = len(slices)
    positions = [s.ipp for s in slices if s.ipp is not None]
    if len(positions) == n:
        return "ImagePositionPatient", np.array([float(normal @ p) for p in positions])
    if n == 1:
        return "none", np.zeros(1)
    lacking = [s for s in slices if s.ipp is None]
    why = f"{len(lacking)} of {n} slices have no ImagePositionPatient (first: {lacking[0].name()})"
    if all(s.slice_location is not None for s in slices):
        keys = np.array([float(s.slice_location) for s in slices])  # type: ignore[arg-type]
        warn.append(f"{why}; ordering the slices by SliceLocation")
        return "SliceLocation", keys
    if all(s.instance_number is not None for s in slices):
        keys = np.array([float(s.instance_number) for s in slices])  # type: ignore[arg-type]
        warn.append(
            f"{why} and no SliceLocation; ordering the slices by InstanceNumber, which may be wrong"
        )
        return "InstanceNumber", keys
    raise InputError(
        f"cannot order the slices: {why}, and neither SliceLocation nor "
        "InstanceNumber is in every file",
        path=lacking[0].path,
    )


@dataclasses.dataclass
class _Stack:
    """Slices in order along the normal; ``keys[i]`` is the sort key of ``slices[i]``."""

    slices: list[_Slice]
    keys: NDArray[np.float64]
    order_by: str

    @property
    def in_mm(self) -> bool:
        """Whether the keys are positions in mm."""
        return self.order_by in ("ImagePositionPatient", "SliceLocation")

    @property
    def unit(self) -> str:
        """The unit of the keys, to append to a number in a message."""
        return " mm" if self.in_mm else ""

    def where(self, i: int) -> str:
        """Where slice ``i`` lies, for a message."""
        if self.order_by == "ImagePositionPatient":
            return (
                f"{_fmt(self.keys[i])} mm along the normal, position {_fmt_pos(self.slices[i].ipp)}"
            )
        return f"{self.order_by} {_fmt(self.keys[i])}"


def _sorted_stack(slices: list[_Slice], keys: NDArray[np.float64], order_by: str) -> _Stack:
    """The slices sorted by key, then file name and frame."""
    idx = sorted(
        range(len(slices)), key=lambda i: (keys[i], str(slices[i].path), slices[i].frame or 0)
    )
    return _Stack([slices[i] for i in idx], keys[idx], order_by)


def _duplicate_groups(stack: _Stack) -> tuple[list[int], list[list[int]]]:
    """Indices of the slices to keep, one per position, and the groups of duplicates."""
    slices, keys, n = stack.slices, stack.keys, len(stack.slices)
    tol = _DUPLICATE_TOL_MM if stack.in_mm else 0.5
    keep: list[int] = []
    dup_groups: list[list[int]] = []
    i = 0
    while i < n:
        j = i + 1
        while j < n and keys[j] - keys[i] < tol:
            j += 1
        members = list(range(i, j))
        members.sort(
            key=lambda m: (
                slices[m].instance_number if slices[m].instance_number is not None else 1 << 62,
                str(slices[m].path),
                slices[m].frame or 0,
            )
        )
        keep.append(members[0])
        if len(members) > 1:
            dup_groups.append(members)
        i = j
    return keep, dup_groups


def _drop_duplicates(stack: _Stack, warn: list[str]) -> _Stack:
    """The stack with one slice per position: the lowest InstanceNumber, then file name."""
    slices = stack.slices
    keep, dup_groups = _duplicate_groups(stack)
    for g in dup_groups[:_MAX_DETAILED]:
        names = ", ".join(slices[m].name() for m in g)
        warn.append(
            f"duplicate slice position {stack.where(g[0])} in {len(g)} slices: {names}; "
            f"keeping {slices[g[0]].name()}"
        )
    if len(dup_groups) > _MAX_DETAILED:
        warn.append(
            f"... and {len(dup_groups) - _MAX_DETAILED} more duplicate slice position(s); "
            f"{sum(len(g) - 1 for g in dup_groups)} duplicate slice(s) dropped in all"
        )
    return _Stack([slices[k] for k in keep], stack.keys[keep], stack.order_by)


def _median_step(stack: _Stack, warn: list[str]) -> float:
    """The median step between slices, warning of gaps and of uneven steps."""
    slices, unit, n = stack.slices, stack.unit, len(stack.slices)
    steps = np.diff(stack.keys)
    median = float(np.median(steps))
    gaps = [k for k in range(n - 1) if steps[k] > _GAP_FACTOR * median]
    for k in gaps[:_MAX_DETAILED]:
        missing = max(round(steps[k] / median) - 1, 1)
        warn.append(
            f"missing slice(s) between slice {k} ({stack.where(k)}) and slice {k + 1} "
            f"({stack.where(k + 1)}): gap {_fmt(steps[k])}{unit} is "
            f"{steps[k] / median:.2f}x the median spacing {_fmt(median)}{unit}, "
            f"about {missing} slice(s) missing; the slices are stacked without them"
        )
    if len(gaps) > _MAX_DETAILED:
        warn.append(f"... and {len(gaps) - _MAX_DETAILED} more gap(s) in the slice positions")
    regular = [k for k in range(n - 1) if k not in gaps]
    if len(regular) >= 2:
        kmin = min(regular, key=lambda k: steps[k])
        kmax = max(regular, key=lambda k: steps[k])
        lo, hi = float(steps[kmin]), float(steps[kmax])
        if hi - lo > max(_UNIFORM_TOL_MM, _UNIFORM_TOL_REL * median):
            warn.append(
                f"non-uniform slice spacing: min {_fmt(lo)}{unit} (between slices {kmin} "
                f"and {kmin + 1}, {slices[kmin + 1].name()}), max {_fmt(hi)}{unit} "
                f"(between slices {kmax} and {kmax + 1}, {slices[kmax + 1].name()}); "
                f"using the median {_fmt(median)}{unit}"
            )
    return median


def _slice_spacing(stack: _Stack, warn: list[str]) -> float:
    """dz in mm: the median step, else SpacingBetweenSlices/SliceThickness, else 1."""
    n = len(stack.slices)
    dz: float | None = None
    if n >= 2 and stack.order_by != "InstanceNumber":
        dz = _median_step(stack, warn)
    if dz is None or dz <= 0:
        fb = _fallback_dz(stack.slices[0])
        if stack.order_by == "InstanceNumber" and n >= 2:
            warn.append(
                f"slice spacing unknown without positions; using "
                f"{'SpacingBetweenSlices/SliceThickness ' + _fmt(fb) if fb else '1'} mm"
            )
        dz = fb if fb else 1.0
    return float(dz)


def _check_tilt(stack: _Stack, normal: NDArray[np.float64], warn: list[str]) -> None:
    """Warn of gantry tilt: a header value, or slice positions not stepping along the normal."""
    slices = stack.slices
    tilted = [s for s in slices if abs(s.gantry_tilt) > 1e-6]
    step_angle = 0.0
    if stack.order_by == "ImagePositionPatient" and len(slices) >= 2:
        v = slices[-1].ipp - slices[0].ipp  # type: ignore[operator]
        norm_v = float(np.linalg.norm(v))
        if norm_v > 0:
            cos = min(abs(float(v @ normal)) / norm_v, 1.0)
            step_angle = math.degrees(math.acos(cos))
    if not tilted and step_angle <= _TILT_TOL_DEG:
        return
    parts = []
    if tilted:
        parts.append(
            f"GantryDetectorTilt {_fmt(tilted[0].gantry_tilt)}° in {len(tilted)} slice(s) "
            f"(first: {tilted[0].name()})"
        )
    if step_angle > _TILT_TOL_DEG:
        parts.append(
            f"slice positions step at {step_angle:.2f}° to the slice normal "
            f"(from {_fmt_pos(slices[0].ipp)} to {_fmt_pos(slices[-1].ipp)}); the volume "
            "is stored unsheared, so positions away from the first slice are approximate"
        )
    else:
        parts.append("slice positions follow the slice normal")
    warn.append("gantry tilt: " + "; ".join(parts))


def _origin(stack: _Stack, normal: NDArray[np.float64]) -> tuple[float, float, float]:
    """Position of the first voxel: the first slice's ImagePositionPatient where known."""
    first = stack.slices[0]
    if first.ipp is not None:
        point = first.ipp
    elif stack.order_by == "SliceLocation":
        point = normal * stack.keys[0]
    else:
        return (0.0, 0.0, 0.0)
    x, y, z = (float(v) for v in point)
    return (x, y, z)


def _geometry(slices: list[_Slice], warn: list[str]) -> _Geometry:
    """Order the slices along the normal and work out the voxel grid; oddities go to ``warn``."""
    _check_consistent(slices, warn)
    direction = _orientation(slices, warn)
    normal = direction[2]
    dy, dx = _pixel_spacing(slices, warn)
    order_by, keys = _order_keys(slices, normal, warn)
    stack = _drop_duplicates(_sorted_stack(slices, keys, order_by), warn)
    dz = _slice_spacing(stack, warn)
    _check_tilt(stack, normal, warn)
    return _Geometry(
        slices=stack.slices,
        dz=dz,
        dy=dy,
        dx=dx,
        origin=_origin(stack, normal),
        direction=direction,
        order_by=order_by,
    )


# --------------------------------------------------------------------------------------------
# Pixel data


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    ts = meta.get("TransferSyntaxUID")
    if ts:
        return UID(str(ts))
    # A bare dataset (no file meta): use the encoding it was read with.
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    meta.TransferSyntaxUID = uid
    return uid


def _missing_decoder(ts: UID, path: Path, detail: str = "") -> MissingDecoderError:
    package, hint = _DECODER_PACKAGES.get(str(ts), ("", ""))
    name = ts.name if ts.name != str(ts) else "an unknown transfer syntax"
    msg = f"pixel data are compressed as {name} ({ts}) and no installed decoder reads them"
    if package:
        msg += f"; install {package}: {hint}"
    else:
        msg += "; pydicom has no decoder for this transfer syntax"
    if detail:
        msg += f" ({detail})"
    return MissingDecoderError(msg, path=path)


def _check_decoder(ts: UID, path: Path) -> None:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise _missing_decoder(ts, path) from exc
    if not decoder.is_available:
        raise _missing_decoder(ts, path)


def _mask_stored_bits(arr: NDArray[Any], bits_stored: int, signed: bool) -> NDArray[Any]:
    """Keep the low ``bits_stored`` bits, sign-extended if signed (idempotent)."""
    if arr.dtype.kind not in "iu" or bits_stored <= 0 or bits_stored >= arr.dtype.itemsize * 8:
        return arr
    a = arr.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        a = np.where(a >= (1 << (bits_stored - 1)), a - (1 << bits_stored), a)
    return a


def _decode(ds: Dataset, path: Path) -> NDArray[Any]:
    """The stored values of all frames of ``ds``, shape (frames, rows, columns)."""
    ts = _transfer_syntax(ds)
    _check_decoder(ts, path)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp != 1:
        raise InputError(
            f"colour image (SamplesPerPixel {spp}, {ds.get('PhotometricInterpretation')}) "
            "is not a CT slice",
            path=path,
        )
    try:
        arr = ds.pixel_array
    except RuntimeError as exc:
        if "missing dependencies" in str(exc):
            raise _missing_decoder(ts, path, str(exc).splitlines()[0]) from exc
        raise InputError(f"cannot decode the pixel data ({ts.name}): {exc}", path=path) from exc
    except Exception as exc:  # decoders raise many types on corrupt data
        raise InputError(
            f"cannot decode the pixel data ({ts.name}): {type(exc).__name__}: {exc}", path=path
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"unexpected pixel array shape {arr.shape}", path=path)
    bits_stored = int(ds.get("BitsStored", 0) or 0)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return _mask_stored_bits(arr, bits_stored, signed)


def _read_full(path: Path, raw: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, force=raw)
    except Exception as exc:
        raise InputError(
            f"unreadable or truncated DICOM file ({type(exc).__name__}: {exc})", path=path
        ) from exc


def _strip_pixels(ds: Dataset) -> Dataset:
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            delattr(ds, kw)
    return ds


def _frame_header(base: Dataset, s: _Slice, direction: NDArray[np.float64]) -> Dataset:
    """A single-frame style header for frame ``s.frame`` of a multi-frame file."""
    from pydicom.valuerep import DSfloat

    def ds_values(vals: Iterable[float]) -> list[DSfloat]:
        return [DSfloat(float(v), auto_format=True) for v in vals]

    out = Dataset()
    out.update(base)
    for kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        if kw in out:
            delattr(out, kw)
    out.file_meta = base.file_meta
    out.NumberOfFrames = 1
    assert s.ipp is not None
    out.ImagePositionPatient = ds_values(s.ipp)
    out.ImageOrientationPatient = ds_values(np.concatenate([direction[0], direction[1]]))
    if s.pixel_spacing is not None:
        out.PixelSpacing = ds_values(s.pixel_spacing)
    out.RescaleSlope = DSfloat(s.slope, auto_format=True)
    out.RescaleIntercept = DSfloat(s.intercept, auto_format=True)
    out.InstanceNumber = (s.frame or 0) + 1
    return out


def _json_value(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if isinstance(value, float) else int(value)
    if type(value).__name__ in ("DSfloat", "DSdecimal"):
        return float(value)
    if type(value).__name__ == "IS":
        return int(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _meta(
    root: Path, group: _Group, geom: _Geometry, ds: Dataset, ts: UID, warns: list[str]
) -> dict[str, Any]:
    def get(kw: str) -> Any:
        try:
            return _json_value(ds.get(kw))
        except Exception:
            return None

    ctdivol = get("CTDIvol")
    info = group.info
    assert info is not None
    return {
        "format": "dicom",
        "path": str(root.absolute()),
        "series_instance_uid": info.series_instance_uid,
        "series_number": info.series_number,
        "series_description": info.series_description,
        "study_instance_uid": info.study_instance_uid,
        "modality": info.modality,
        "manufacturer": get("Manufacturer"),
        "manufacturer_model": get("ManufacturerModelName"),
        "kernel": get("ConvolutionKernel"),
        "kvp": get("KVP"),
        "tube_current_ma": get("XRayTubeCurrent"),
        "exposure_mas": get("Exposure"),
        "ctdivol_mgy": ctdivol,
        "slice_thickness_mm": get("SliceThickness"),
        "body_part": get("BodyPartExamined"),
        "patient_position": get("PatientPosition"),
        "study_date": get("StudyDate"),
        "transfer_syntax": str(ts),
        "transfer_syntax_name": ts.name,
        "n_files": info.n_files,
        "n_slices": len(geom.slices),
        "slice_order": geom.order_by,
        "warnings": list(warns),
    }


def read_dicom(path: PathLike, *, series: str | int | None = None) -> CTVolume:
    """Read one DICOM CT series as a volume in Hounsfield units.

    Parameters
    ----------
    path : str or path-like
        A folder (searched recursively; non-DICOM files and non-image DICOM objects are
        skipped) or a single DICOM file (then only that file is read).
    series : str or int, optional
        Which series to read when there are several: its SeriesInstanceUID, its SeriesNumber
        or its 1-based index in :func:`list_dicom_series` (tried in that order).

    Returns
    -------
    CTVolume
        float32 HU (z, y, x) in slice-position order, spacing (dz, dy, dx) in mm, origin
        = ImagePositionPatient of the first slice, direction rows = row cosines, column
        cosines and slice normal (z index increases along it); the per-slice headers without
        pixel data in ``dicom_headers``; the source description in ``meta``.

    Raises
    ------
    SeriesSelectionError
        Several image series and ``series`` not given, or ``series`` matches none; the message
        lists the series.
    MissingDecoderError
        Compressed pixel data and no plug-in to decode them; the message names the package.
    InputError
        Unreadable, truncated or inconsistent files (mixed sizes or orientations), or no
        image at all; the message names the file.

    Warns
    -----
    CTDIDWarning
        Missing or duplicate slices, non-uniform spacing, gantry tilt, a modality other than
        CT, missing positions.
    """
    root, groups = _scan(path)
    group = _select(root, groups, series)
    assert group.info is not None
    slices, multiframe = _slices_of(group)
    warns: list[str] = []
    modality = group.info.modality.upper()
    if modality != "CT":
        warns.append(
            f"modality {group.info.modality or '(none)'!r} is not CT; values are not HU "
            f"(series {group.info.label()}, first file {group.info.first_file})"
        )
    geom = _geometry(slices, warns)
    for w in warns:
        _warn(w)

    nz = len(geom.slices)
    rows, cols = geom.slices[0].rows, geom.slices[0].columns
    hu = np.empty((nz, rows, cols), dtype=np.float32)
    headers: list[Dataset] = []
    full_cache: dict[Path, tuple[Dataset, NDArray[Any]]] = {}
    entry_raw = {e.path: e.raw for e in group.entries}
    first_ts: UID | None = None
    for k, s in enumerate(geom.slices):
        if s.path in full_cache:
            ds, frames = full_cache[s.path]
        else:
            ds = _read_full(s.path, entry_raw[s.path])
            ts = _transfer_syntax(ds)
            first_ts = first_ts or ts
            frames = _decode(ds, s.path)
            _strip_pixels(ds)
            if multiframe:
                full_cache[s.path] = (ds, frames)
        fi = s.frame or 0
        if fi >= frames.shape[0] or frames.shape[1:] != (rows, cols):
            raise InputError(
                f"pixel data of shape {frames.shape} do not match the header "
                f"({rows}x{cols}, frame {fi + 1})",
                path=s.path,
            )
        slab = frames[fi].astype(np.float64) * s.slope + s.intercept
        hu[k] = slab
        headers.append(_frame_header(ds, s, geom.direction) if multiframe else ds)

    if not np.all(np.isfinite(hu)):
        raise InputError("rescaled pixel values are not finite", path=geom.slices[0].path)
    assert first_ts is not None
    meta = _meta(root, group, geom, headers[0], first_ts, warns)
    if multiframe:
        meta["multiframe"] = True
    return CTVolume(
        hu=hu,
        spacing=(geom.dz, geom.dy, geom.dx),
        origin=geom.origin,
        direction=geom.direction,
        meta=meta,
        dicom_headers=tuple(headers),
    )
