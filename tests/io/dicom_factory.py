"""Build synthetic CT DICOM series with pydicom, for tests.

``make_ct_series`` writes one file per slice of a HU array with a known geometry, quantised with
RescaleSlope/RescaleIntercept, in a shuffled order under random file names with shuffled
InstanceNumbers, so that a reader must sort by position. ``make_enhanced_ct`` writes the same as
one multi-frame Enhanced CT file. ``make_rtstruct`` writes a non-image object.

Import it from a test module in ``tests/io`` with ``from dicom_factory import make_ct_series``
(pytest puts the test's folder on ``sys.path``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RTStructureSetStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

__all__ = [
    "axial_direction",
    "make_ct_series",
    "make_enhanced_ct",
    "make_rtstruct",
    "quantize",
    "stored_range",
]

_NAME_SUFFIXES = ("", ".dcm", ".DCM", ".ima")


def _ds(values: ArrayLike) -> list[DSfloat]:
    """Decimal strings (<= 16 characters each) for a sequence of floats."""
    return [DSfloat(float(v), auto_format=True) for v in np.asarray(values, float).reshape(-1)]


def axial_direction() -> NDArray[np.float64]:
    """Rows: row cosines, column cosines, slice normal of axial slices (identity)."""
    return np.eye(3)


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value for ``bits_stored`` bits."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def quantize(
    hu: ArrayLike, slope: float, intercept: float, *, bits_stored: int = 16, signed: bool = True
) -> NDArray[np.int64]:
    """Stored values ``round((hu - intercept) / slope)``; raises if they do not fit the bits."""
    stored = np.rint((np.asarray(hu, float) - intercept) / slope).astype(np.int64)
    lo, hi = stored_range(bits_stored, signed)
    if stored.size and (stored.min() < lo or stored.max() > hi):
        raise ValueError(
            f"HU do not fit {bits_stored} {'signed' if signed else 'unsigned'} bits with "
            f"slope {slope} and intercept {intercept}: stored {stored.min()}..{stored.max()}"
        )
    return stored


def _per_slice(value: float | Sequence[float], n: int, name: str) -> list[float]:
    if np.ndim(value) == 0:
        return [float(value)] * n  # type: ignore[arg-type]
    out = [float(v) for v in value]  # type: ignore[union-attr]
    if len(out) != n:
        raise ValueError(f"{name}: {len(out)} values for {n} slices")
    return out


def _base_dataset(
    *,
    sop_class: str,
    transfer_syntax: str,
    study_uid: str,
    series_uid: str,
    series_number: int | None,
    series_description: str,
    modality: str,
    frame_of_reference_uid: str,
) -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    uid = UID(transfer_syntax)
    # Compressed syntaxes are set by Dataset.compress(), which wants native data first.
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if uid.is_compressed else uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    if series_number is not None:
        ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.Modality = modality
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "CTDID-TEST"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.Manufacturer = "ctdid tests"
    ds.ConvolutionKernel = "SYNTH"
    ds.KVP = 120
    return ds


def _set_pixels(
    ds: Dataset,
    stored: NDArray[np.int64],
    *,
    bits_allocated: int,
    bits_stored: int,
    signed: bool,
    high_bits: int,
) -> None:
    """Native pixel data for stored values of shape (rows, cols) or (frames, rows, cols)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    raw = stored.astype(np.int64) & ((1 << bits_allocated) - 1)
    if high_bits and bits_stored < bits_allocated:
        # Junk in the unused high bits (e.g. overlays), which a reader must mask off.
        raw = raw & ((1 << bits_stored) - 1) | (high_bits << bits_stored) & (
            (1 << bits_allocated) - 1
        )
    ds.PixelData = raw.astype(f"<u{bits_allocated // 8}").tobytes()


def _compress(ds: Dataset, transfer_syntax: str) -> None:
    uid = UID(transfer_syntax)
    if uid.is_compressed:
        ds.compress(uid)  # needs an encoder plug-in: numpy/pylibjpeg-rle, pylibjpeg-openjpeg


def _save(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)


def make_ct_series(
    directory: str | os.PathLike[str],
    hu: ArrayLike,
    *,
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    origin: tuple[float, float, float] = (-100.0, -120.0, 30.0),
    direction: ArrayLike | None = None,
    positions: ArrayLike | None = None,
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    signed: bool = False,
    bits_allocated: int = 16,
    bits_stored: int | None = None,
    high_bits: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    modality: str = "CT",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int | None = 1,
    series_description: str = "synthetic CT",
    shuffle: bool = True,
    seed: int = 0,
    instance_numbers: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
    edit: Callable[[int, Dataset], None] | None = None,
) -> list[Path]:
    """Write a CT series, one file per slice of ``hu``; return the paths in slice (z) order.

    Parameters
    ----------
    directory : path-like
        Folder to write into (created if needed). Files get random names (hex, with or without
        an extension) unless ``shuffle`` is false, then ``slice_0000.dcm``, ... .
    hu : array_like, shape (z, y, x)
        HU values; stored as ``round((hu - intercept) / slope)`` in the given bits, which must
        fit (``ValueError`` otherwise).
    spacing : (dz, dy, dx)
        Slice step along ``direction[2]`` and PixelSpacing [row spacing dy, column spacing dx].
    origin : (x, y, z)
        ImagePositionPatient of slice 0 (LPS, mm).
    direction : array_like (3, 3), optional
        Rows: row cosines, column cosines (written as ImageOrientationPatient) and the
        direction the slices step along (default: their cross product). A third row that is
        not the cross product makes a tilted (sheared) series.
    positions : array_like (z, 3), optional
        ImagePositionPatient per slice, replacing ``origin + k * dz * direction[2]``.
    slope, intercept : float or sequence of float
        RescaleSlope/RescaleIntercept, one value or one per slice.
    signed, bits_allocated, bits_stored : PixelRepresentation and bit depths
        ``bits_stored`` defaults to ``bits_allocated``.
    high_bits : int
        Junk value written into the bits above ``bits_stored`` (0: none).
    transfer_syntax : str
        Explicit/Implicit VR Little Endian, or a compressed one pydicom can encode (RLE
        Lossless; JPEG 2000 Lossless with pylibjpeg-openjpeg).
    modality, study_uid, series_uid, series_number, series_description
        Series identity; UIDs are generated when not given.
    shuffle : bool
        Write the files in random order under random names with shuffled InstanceNumbers.
    seed : int
        Seed for names and order.
    instance_numbers : sequence of int, optional
        InstanceNumber per slice (z order), overriding the default.
    extra : mapping, optional
        DICOM keyword -> value set in every file (value ``None`` deletes the element).
    edit : callable(k, dataset), optional
        Called for each slice ``k`` just before its dataset is compressed and written.

    Returns
    -------
    list of Path
        ``paths[k]`` holds slice ``k`` of ``hu``.
    """
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    vol = np.asarray(hu, dtype=float)
    if vol.ndim == 2:
        vol = vol[np.newaxis]
    nz = vol.shape[0]
    rng = np.random.default_rng(seed)
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    slopes = _per_slice(slope, nz, "slope")
    intercepts = _per_slice(intercept, nz, "intercept")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    row, col = d[0], d[1]
    step = d[2] if direction is not None else np.cross(row, col)
    if positions is None:
        pos = np.asarray(origin, float) + np.outer(np.arange(nz) * spacing[0], step)
    else:
        pos = np.asarray(positions, float).reshape(nz, 3)
    if instance_numbers is None:
        inst = (rng.permutation(nz) + 1) if shuffle else np.arange(1, nz + 1)
    else:
        inst = np.asarray(instance_numbers)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid() if series_uid is None else series_uid
    for_uid = generate_uid()

    paths: list[Path] = []
    used: set[str] = set()
    for k in range(nz):
        if shuffle:
            while True:
                name = rng.bytes(8).hex() + str(rng.choice(_NAME_SUFFIXES))
                if name not in used:
                    break
        else:
            name = f"slice_{k:04d}.dcm"
        used.add(name)
        paths.append(out_dir / name)

    order = rng.permutation(nz) if shuffle else np.arange(nz)
    for k in order:
        ds = _base_dataset(
            sop_class=CTImageStorage,
            transfer_syntax=transfer_syntax,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=series_number,
            series_description=series_description,
            modality=modality,
            frame_of_reference_uid=for_uid,
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(inst[k])
        ds.ImagePositionPatient = _ds(pos[k])
        ds.ImageOrientationPatient = _ds(np.concatenate([row, col]))
        ds.PixelSpacing = _ds(spacing[1:])
        ds.SliceThickness = DSfloat(spacing[0], auto_format=True)
        ds.SliceLocation = DSfloat(float(pos[k] @ np.cross(row, col)), auto_format=True)
        ds.RescaleSlope = DSfloat(slopes[k], auto_format=True)
        ds.RescaleIntercept = DSfloat(intercepts[k], auto_format=True)
        ds.RescaleType = "HU"
        stored = quantize(vol[k], slopes[k], intercepts[k], bits_stored=bits_stored, signed=signed)
        _set_pixels(
            ds,
            stored,
            bits_allocated=bits_allocated,
            bits_stored=bits_stored,
            signed=signed,
            high_bits=high_bits,
        )
        for key, value in (extra or {}).items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        if edit is not None:
            edit(int(k), ds)
        _compress(ds, transfer_syntax)
        _save(ds, paths[k], transfer_syntax)
    return paths


def make_enhanced_ct(
    path: str | os.PathLike[str],
    hu: ArrayLike,
    *,
    spacing: tuple[float, float, float] = (2.0, 0.8, 0.8),
    origin: tuple[float, float, float] = (-50.0, -60.0, 10.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    per_frame_rescale: bool = False,
    frame_order: Sequence[int] | None = None,
    positions: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_uid: str | None = None,
) -> Path:
    """Write ``hu`` (z, y, x) as one multi-frame Enhanced CT file; return its path.

    Frames are stored in ``frame_order`` (default reversed z order), each with its
    ImagePositionPatient in the PerFrameFunctionalGroupsSequence (omitted if ``positions`` is
    false). Orientation (axial) and pixel spacing are in the shared functional groups; rescale
    too, unless ``per_frame_rescale`` (then frame k gets intercept ``intercept - k``).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    vol = np.asarray(hu, dtype=float)
    nz = vol.shape[0]
    order = list(range(nz))[::-1] if frame_order is None else list(frame_order)
    ds = _base_dataset(
        sop_class=EnhancedCTImageStorage,
        transfer_syntax=transfer_syntax,
        study_uid=generate_uid(),
        series_uid=series_uid or generate_uid(),
        series_number=7,
        series_description="enhanced synthetic CT",
        modality="CT",
        frame_of_reference_uid=generate_uid(),
    )
    ds.InstanceNumber = 1
    ds.NumberOfFrames = nz
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = _ds(spacing[1:])
    measures.SliceThickness = DSfloat(spacing[0], auto_format=True)
    shared.PixelMeasuresSequence = DicomSequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = _ds([1, 0, 0, 0, 1, 0])
    shared.PlaneOrientationSequence = DicomSequence([orient])
    intercepts = [intercept - (k if per_frame_rescale else 0) for k in range(nz)]
    if not per_frame_rescale:
        trans = Dataset()
        trans.RescaleSlope = DSfloat(slope, auto_format=True)
        trans.RescaleIntercept = DSfloat(intercept, auto_format=True)
        trans.RescaleType = "HU"
        shared.PixelValueTransformationSequence = DicomSequence([trans])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    frames = []
    for k in order:
        item = Dataset()
        if positions:
            pos = Dataset()
            pos.ImagePositionPatient = _ds(np.asarray(origin) + np.array([0, 0, k * spacing[0]]))
            item.PlanePositionSequence = DicomSequence([pos])
        if per_frame_rescale:
            trans = Dataset()
            trans.RescaleSlope = DSfloat(slope, auto_format=True)
            trans.RescaleIntercept = DSfloat(intercepts[k], auto_format=True)
            item.PixelValueTransformationSequence = DicomSequence([trans])
        per_frame.append(item)
        frames.append(quantize(vol[k], slope, intercepts[k], bits_stored=16, signed=True))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _set_pixels(ds, np.stack(frames), bits_allocated=16, bits_stored=16, signed=True, high_bits=0)
    _compress(ds, transfer_syntax)
    _save(ds, p, transfer_syntax)
    return p


def make_rtstruct(
    path: str | os.PathLike[str], *, study_uid: str | None = None, series_number: int = 99
) -> Path:
    """Write a minimal RT Structure Set (a DICOM object without pixel data); return its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds = _base_dataset(
        sop_class=RTStructureSetStorage,
        transfer_syntax=ImplicitVRLittleEndian,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        series_number=series_number,
        series_description="structures",
        modality="RTSTRUCT",
        frame_of_reference_uid=generate_uid(),
    )
    roi = Dataset()
    roi.ROINumber = 1
    roi.ROIName = "BODY"
    ds.StructureSetLabel = "test"
    ds.StructureSetROISequence = DicomSequence([roi])
    _save(ds, p, ImplicitVRLittleEndian)
    return p
