"""Write a CT volume as a DICOM series: a derived series of its source, or a new one.

One file per slice, uncompressed (Explicit VR Little Endian), written atomically into a new
folder. Two cases:

* The volume came from DICOM (it has :attr:`~ctdid.volume.CTVolume.dicom_headers`): every
  slice is a *derived* copy of its source slice. Patient, study, frame of reference, equipment,
  acquisition and geometry attributes are kept (private ones too); the series and the instances
  get new UIDs, derived deterministically from the source UIDs, the description and the
  parameters (writing again gives the same UIDs; other parameters give other UIDs); the image is
  marked ``DERIVED\\SECONDARY``, says what made it (Series Description, Derivation Description,
  Contributing Equipment Sequence) and points at its source slice (Source Image Sequence). The
  source's Rescale Slope and Intercept and Pixel Representation are kept; Bits Stored becomes
  16 (never less range than the source), and stored values are rounded and clipped to that
  16-bit range. Attributes that described the old pixel data (Smallest/Largest Image Pixel
  Value, Pixel Padding Value, VOI/Modality LUTs, icon, digital signatures, ...) are dropped; the
  Lossy Image Compression flag stays ``01`` once the source was lossy, is ``00`` when it is
  known not to have been, and is left out when unknown. A frame of a multi-frame (Enhanced CT)
  source becomes a single-frame CT Image Storage instance that references that frame.
* Otherwise a new CT Image Storage series is made (new study and frame of reference derived
  from the volume's ``meta`` and geometry; series and instances also from the description and
  parameters, so reruns give the same UIDs), with placeholder patient attributes
  (``ANONYMOUS``), Rescale Intercept -1024 and Slope 1, unsigned 16-bit stored values unless
  the volume goes below -1024 HU (then signed), and the geometry of the volume.

In both cases the HU values read back (stored value x slope + intercept) are within half a
rescale step of the volume's, except where clipped (a :class:`~ctdid.errors.CTDIDWarning` says
how many voxels were clipped).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from ctdid.errors import CTDIDWarning
from ctdid.io.atomic import atomic_dir
from ctdid.io.uids import derive_uid
from ctdid.volume import CTVolume

__all__ = ["write_dicom_series"]

#: Implementation Class UID and Version Name written in the file meta information.
IMPLEMENTATION_CLASS_UID = UID(derive_uid("ctdid", "implementation-class"))

_SERIES_DESCRIPTION_MAX = 64  # LO
_DERIVATION_DESCRIPTION_MAX = 1024  # ST

# Multi-frame (enhanced) CT classes: a slice of one is written as single-frame CT Image Storage.
_ENHANCED_CT_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)

# Transfer syntaxes whose pixel data are always lossy, with the Lossy Image Compression Method.
_LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
}
# Transfer syntaxes that may be lossy (then the source says so) and their method.
_MAYBE_LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",  # JPEG 2000 Part 2 multi-component
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # High-Throughput JPEG 2000
}
# Transfer syntaxes that never lose information.
_LOSSLESS_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR Little Endian
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
        "1.2.840.10008.1.2.4.57",  # JPEG lossless
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 lossless
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
        "1.2.840.10008.1.2.5",  # RLE lossless
    }
)

# Attributes of group 0028 (image pixel description) kept from the source; every other one
# either is rewritten here or no longer holds for the new pixel data (Smallest/Largest Image
# Pixel Value, Pixel Padding Value/Range Limit, VOI and Modality LUTs, palettes, ...).
_KEPT_GROUP_0028 = frozenset(
    {
        0x00280030,  # Pixel Spacing
        0x00280034,  # Pixel Aspect Ratio
        0x00280300,  # Quality Control Image
        0x00280301,  # Burned In Annotation
        0x00280302,  # Recognizable Visual Features
        0x00280A02,  # Pixel Spacing Calibration Type
        0x00280A04,  # Pixel Spacing Calibration Description
        0x00281052,  # Rescale Intercept (kept, used)
        0x00281053,  # Rescale Slope (kept, used)
        0x00281054,  # Rescale Type
        0x00282110,  # Lossy Image Compression (decided below)
        0x00282112,  # Lossy Image Compression Ratio
        0x00282114,  # Lossy Image Compression Method
    }
)

# Other attributes of the source that no longer hold for the derived instance.
_DROPPED_TAGS = frozenset(
    {
        0x00080014,  # Instance Creator UID
        0x00080058,  # Failed SOP Instance UID List
        0x00082111,  # Derivation Description (rewritten)
        0x00082112,  # Source Image Sequence (rewritten)
        0x00089215,  # Derivation Code Sequence (rewritten)
        0x00081155,  # Referenced SOP Instance UID (stray at top level)
        0x0008103E,  # Series Description (rewritten)
        0x00201200,  # Number of Patient Related Studies (query attributes)
        0x00201202,  # Number of Patient Related Series
        0x00201204,  # Number of Patient Related Instances
        0x00201206,  # Number of Study Related Series
        0x00201208,  # Number of Study Related Instances
        0x00201209,  # Number of Series Related Instances
        0x00209161,  # Concatenation UID
        0x00209162,  # In-concatenation Number
        0x00209163,  # In-concatenation Total Number
        0x00209228,  # Concatenation Frame Offset Number
        0x00880200,  # Icon Image Sequence (shows the old pixels)
        0x04000500,  # Encrypted Attributes Sequence
        0x4FFE0001,  # MAC Parameters Sequence (signatures no longer valid)
        0x52009229,  # Shared Functional Groups Sequence (multi-frame)
        0x52009230,  # Per-frame Functional Groups Sequence (multi-frame)
        0xFFFAFFFA,  # Digital Signatures Sequence
        0xFFFCFFFC,  # Data Set Trailing Padding
    }
)

# Type 2 attributes of the CT Image IOD (and a few 2C ones that apply to CT): present in every
# file written, empty when unknown.
_TYPE2_EMPTY: tuple[tuple[str, Any], ...] = (
    ("PatientName", ""),
    ("PatientID", ""),
    ("PatientBirthDate", ""),
    ("PatientSex", ""),
    ("StudyDate", ""),
    ("StudyTime", ""),
    ("ReferringPhysicianName", ""),
    ("StudyID", ""),
    ("AccessionNumber", ""),
    ("PatientPosition", ""),
    ("PositionReferenceIndicator", ""),
    ("Manufacturer", ""),
    ("KVP", None),
    ("AcquisitionNumber", None),
    ("SliceThickness", None),
)

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (dict/list/str/int/float/bool/None), for stable hashing."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else repr(f)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _canonical_json(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _ds(x: float) -> str:
    """A Decimal String (at most 16 characters) for ``x``, short where possible."""
    x = float(x)
    if x == 0.0:
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    s = repr(x)
    if len(s) <= 16 and "e" not in s:
        return s
    return format_number_as_ds(x)


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary where one is near,
    ending with ``...`` when cut."""
    if len(text) <= limit:
        return text
    head = text[: limit - 3]
    cut = head.rfind(" ")
    if cut >= (2 * limit) // 3:
        head = head[:cut]
    head = head.rstrip(" ,;:-_/([{=+")
    return head + "..."


def _clean_lo(text: str, limit: int) -> str:
    """One line of text for an LO value: no control characters or backslashes, single
    spaces, at most ``limit`` characters."""
    text = _CONTROL_CHARS.sub(" ", text).replace("\\", "/")
    text = " ".join(text.split())
    return _truncate(text, limit)


def _clean_st(text: str, limit: int) -> str:
    """Text for an ST value: line breaks kept (as CR LF), other control characters removed,
    at most ``limit`` characters."""
    lines = [" ".join(_CONTROL_CHARS.sub(" ", ln).split()) for ln in text.splitlines()]
    text = "\r\n".join(ln for ln in lines if ln)
    return _truncate(text, limit)


def _now(tz_offset: str | None) -> _dt.datetime:
    """The current time, in the time zone ``tz_offset`` (``+HHMM``/``-HHMM``) when valid."""
    if tz_offset:
        m = re.fullmatch(r"\s*([+-])(\d\d)(\d\d)\s*", str(tz_offset))
        if m:
            minutes = int(m.group(2)) * 60 + int(m.group(3))
            if minutes <= 14 * 60:
                sign = -1 if m.group(1) == "-" else 1
                tz = _dt.timezone(sign * _dt.timedelta(minutes=minutes))
                return _dt.datetime.now(tz)
    return _dt.datetime.now().astimezone()


def _da(t: _dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: _dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def _dt_value(t: _dt.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S.%f%z")


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _needs_unicode(texts: Sequence[str], charset: Any) -> bool:
    """Whether ``texts`` cannot be written in the character set ``charset`` (the value of
    Specific Character Set, or None for the default repertoire)."""
    if all(t.isascii() for t in texts):
        return False
    terms = [] if charset is None else ([charset] if isinstance(charset, str) else list(charset))
    terms = [str(t).strip() for t in terms]
    if len(terms) == 1:
        if terms[0] == "ISO_IR 192":
            return False
        codec = python_encoding.get(terms[0])
        if codec is not None:
            try:
                for t in texts:
                    t.encode(codec)
            except (UnicodeEncodeError, LookupError):
                return True
            return False
    return True


def _window(window: tuple[float, float]) -> tuple[float, float]:
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be (center, width) in HU, got {window!r}") from None
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        raise ValueError(f"window must be finite with width >= 1 HU, got {window!r}")
    return center, width


def _check_series_number(series_number: int | None) -> None:
    if series_number is None:
        return
    if isinstance(series_number, bool) or not isinstance(series_number, numbers.Integral):
        raise TypeError(f"series_number must be an int, got {series_number!r}")
    if not 0 <= int(series_number) <= 2**31 - 1:
        raise ValueError(f"series_number must be in 0..2147483647, got {series_number}")


def _stored_range(pixel_representation: int) -> tuple[int, int, np.dtype[Any]]:
    if pixel_representation == 1:
        return -32768, 32767, np.dtype("<i2")
    return 0, 65535, np.dtype("<u2")


def _to_stored(
    hu: NDArray[np.float32], slope: float, intercept: float, pixel_representation: int
) -> tuple[bytes, int]:
    """Stored values of one slice as little-endian 16-bit bytes, and how many were clipped."""
    lo, hi, dtype = _stored_range(pixel_representation)
    sv = np.rint((hu.astype(np.float64) - intercept) / slope)
    n_clipped = int(np.count_nonzero((sv < lo) | (sv > hi)))
    return np.clip(sv, lo, hi).astype(dtype).tobytes(), n_clipped


def _set_pixels(
    ds: Dataset,
    hu: NDArray[np.float32],
    slope: float,
    intercept: float,
    pixel_repr: int,
    photometric: str,
) -> int:
    """Set the Image Pixel module of ``ds`` for one slice; returns the number of clipped voxels."""
    rows, cols = hu.shape
    data, n_clipped = _to_stored(hu, slope, intercept, pixel_repr)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_repr
    ds.add_new(0x7FE00010, "OW", data)
    return n_clipped


def _set_window(ds: Dataset, window: tuple[float, float]) -> None:
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])


def _file_meta(ds: Dataset) -> FileMetaDataset:
    from ctdid import __version__

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = ("CTDID_" + __version__)[:16]
    return meta


def _ensure_type2(ds: Dataset) -> None:
    for keyword, empty in _TYPE2_EMPTY:
        if keyword not in ds:
            setattr(ds, keyword, empty)
    # Laterality (Type 2C) is needed for a paired body part unless Image Laterality is given;
    # ctdid cannot know, so it is sent empty (unknown) rather than left out.
    if "Laterality" not in ds and "ImageLaterality" not in ds:
        ds.Laterality = ""


def _set_text(ds: Dataset, series_description: str, derivation_description: str) -> None:
    if _needs_unicode([series_description, derivation_description], ds.get("SpecificCharacterSet")):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SeriesDescription = series_description
    ds.DerivationDescription = derivation_description


def _set_dates(ds: Dataset, now: _dt.datetime) -> None:
    ds.InstanceCreationDate = _da(now)
    ds.InstanceCreationTime = _tm(now)
    ds.SeriesDate = _da(now)
    ds.SeriesTime = _tm(now)
    ds.ContentDate = _da(now)
    ds.ContentTime = _tm(now)


def _file_names(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"IM{i:0{width}d}.dcm" for i in range(1, n + 1)]


# --------------------------------------------------------------------------------------------
# Derived series (the volume has DICOM headers)
# --------------------------------------------------------------------------------------------


def _uid_of(ds: Dataset, keyword: str, meta_keyword: str | None = None) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value and meta_keyword is not None:
        fm = getattr(ds, "file_meta", None)
        if fm is not None:
            value = str(fm.get(meta_keyword, "") or "").strip()
    return value


def _source_transfer_syntax(ds: Dataset) -> str:
    fm = getattr(ds, "file_meta", None)
    if fm is None:
        return ""
    return str(fm.get("TransferSyntaxUID", "") or "").strip()


def _lossy_state(src: Dataset) -> tuple[str | None, str | None]:
    """(Lossy Image Compression value to write or None to leave it out, method to add)."""
    flag = str(src.get("LossyImageCompression", "") or "").strip()
    ts = _source_transfer_syntax(src)
    if flag == "01":
        return "01", _LOSSY_TRANSFER_SYNTAXES.get(ts) or _MAYBE_LOSSY_TRANSFER_SYNTAXES.get(ts)
    if ts in _LOSSY_TRANSFER_SYNTAXES:
        return "01", _LOSSY_TRANSFER_SYNTAXES[ts]
    if flag == "00" or ts in _LOSSLESS_TRANSFER_SYNTAXES:
        return "00", None
    return None, None  # unknown: say nothing


def _keep_element(tag: int) -> bool:
    group, elem = tag >> 16, tag & 0xFFFF
    if group <= 0x0002 or group == 0x7FE0:
        return False
    if elem == 0x0000:  # group lengths: retired, and wrong once anything changes
        return False
    if group == 0x0028:
        return tag in _KEPT_GROUP_0028
    if 0x5000 <= group <= 0x501E and group % 2 == 0:  # retired curves
        return False
    return tag not in _DROPPED_TAGS


def _copy_header(src: Dataset) -> Dataset:
    """The source's data elements (deep copies) that still hold for a derived image."""
    src = copy.deepcopy(src)
    ds = Dataset()
    for elem in src:  # iterating converts raw elements with the source's own encoding
        if _keep_element(int(elem.tag)):
            ds.add(elem)
    # Overlays whose bits were embedded in the old pixel data are gone with it.
    tags = [int(e.tag) for e in ds]
    overlay_groups = {t >> 16 for t in tags if 0x6000 <= (t >> 16) <= 0x601E}
    for g in overlay_groups:
        if g % 2 == 0 and (g << 16 | 0x3000) not in tags:
            for t in tags:
                if t >> 16 == g:
                    del ds[t]
    return ds


def _image_type(src: Dataset, sop_class: str) -> list[str]:
    value = src.get("ImageType")
    values: list[str]
    if value is None or value == "":
        values = []
    elif isinstance(value, str):
        values = [value]
    else:
        values = [str(v) for v in value]
    rest = values[2:]
    if not rest and sop_class == CTImageStorage:
        rest = ["AXIAL"]
    return ["DERIVED", "SECONDARY", *rest]


def _rescale(src: Dataset, pixel_repr: int) -> tuple[float, float, str, str]:
    """(slope, intercept, slope DS, intercept DS) of a source slice; defaults where absent."""
    slope_v, icpt_v = src.get("RescaleSlope"), src.get("RescaleIntercept")
    try:
        slope = float(slope_v) if slope_v not in (None, "") else None
        intercept = float(icpt_v) if icpt_v not in (None, "") else None
    except (TypeError, ValueError):
        slope = intercept = None
    if (
        slope is None
        or intercept is None
        or not (math.isfinite(slope) and math.isfinite(intercept) and slope != 0)
    ):
        slope, intercept = 1.0, (-1024.0 if pixel_repr == 0 else 0.0)
        return slope, intercept, _ds(slope), _ds(intercept)
    return slope, intercept, str(slope_v), str(icpt_v)


def _source_series_key(headers: Sequence[Dataset]) -> str:
    uid = _uid_of(headers[0], "SeriesInstanceUID")
    if uid:
        return uid
    keys = [_uid_of(h, "SOPInstanceUID", "MediaStorageSOPInstanceUID") for h in headers]
    if any(keys):
        return derive_uid("ctdid-source-series", *keys)
    geometry = [_canonical_json(h.get("ImagePositionPatient")) for h in headers]
    return derive_uid("ctdid-source-series-geometry", *geometry)


def _check_headers(volume: CTVolume) -> None:
    """Refuse DICOM headers that do not describe the volume's slices."""
    _, rows, cols = volume.shape
    for k, h in enumerate(volume.dicom_headers or ()):
        if not isinstance(h, Dataset):
            raise TypeError(f"DICOM header {k} is a {type(h).__name__}, not a pydicom Dataset")
        r, c = h.get("Rows"), h.get("Columns")
        if (r not in (None, "") and int(r) != rows) or (c not in (None, "") and int(c) != cols):
            raise ValueError(
                f"DICOM header {k} is for {r}x{c} pixels but the volume's slices are "
                f"{rows}x{cols}; a resampled volume cannot be written as a derived series"
            )


def _frame_number(src: Dataset, src_class: str, multi_frame_uids: set[str]) -> int | None:
    """Frame number in its source instance of a slice that is a frame of a multi-frame image.

    ctdid's DICOM reader gives such a frame a single-frame style header whose Instance Number
    is the (1-based) frame number.
    """
    uid = _uid_of(src, "SOPInstanceUID", "MediaStorageSOPInstanceUID")
    if src_class not in _ENHANCED_CT_CLASSES and uid not in multi_frame_uids:
        return None
    try:
        frame = int(src.get("InstanceNumber"))
    except (TypeError, ValueError):
        return None
    return frame if frame >= 1 else None


@dataclasses.dataclass(frozen=True)
class _DerivedSeries:
    """What all slices of a derived series share."""

    source_key: str  # identifies the source series
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    series_number: int
    now: _dt.datetime
    multi_frame_uids: set[str]  # source instances that several slices are frames of


def _derived_series(
    headers: Sequence[Dataset], output_key: str, series_number: int | None
) -> _DerivedSeries:
    """UIDs, Series Number (default the source's plus 1000) and time of a derived series."""
    first = headers[0]
    src_series = _source_series_key(headers)
    series_uid = derive_uid("ctdid-series", src_series, output_key)
    study_uid = _uid_of(first, "StudyInstanceUID") or derive_uid("ctdid-study", src_series)
    for_uid = _uid_of(first, "FrameOfReferenceUID") or derive_uid(
        "ctdid-frame-of-reference", src_series
    )
    if series_number is None:
        try:
            series_number = min(int(first.get("SeriesNumber")) + 1000, 2**31 - 1)
        except (TypeError, ValueError):
            series_number = 1000
    now = _now(first.get("TimezoneOffsetFromUTC"))
    seen: dict[str, int] = {}
    for h in headers:
        uid = _uid_of(h, "SOPInstanceUID", "MediaStorageSOPInstanceUID")
        seen[uid] = seen.get(uid, 0) + 1
    return _DerivedSeries(
        source_key=src_series,
        series_uid=series_uid,
        study_uid=study_uid,
        frame_of_reference_uid=for_uid,
        series_number=int(series_number),
        now=now,
        multi_frame_uids={uid for uid, count in seen.items() if uid and count > 1},
    )


def _photometric(src: Dataset) -> str:
    """The source's Photometric Interpretation if monochrome, else MONOCHROME2."""
    photometric = str(src.get("PhotometricInterpretation", "") or "").strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        photometric = "MONOCHROME2"
    return photometric


def _source_reference(
    src: Dataset, src_class: str, src_uid: str, multi_frame_uids: set[str]
) -> Dataset:
    """The Source Image Sequence item that points at the source slice (and frame)."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = src_class
    ref.ReferencedSOPInstanceUID = src_uid
    frame = _frame_number(src, src_class, multi_frame_uids)
    if frame is not None:
        ref.ReferencedFrameNumber = frame
    ref.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code_item("121322", "DCM", "Source image for image processing operation")]
    )
    return ref


def _set_derivation_code(ds: Dataset, derivation_code: tuple[str, str, str] | None) -> None:
    """Set a one-item Derivation Code Sequence when a code is given."""
    if derivation_code is not None:
        ds.DerivationCodeSequence = DicomSequence([_code_item(*derivation_code)])


def _add_contributing_equipment(
    ds: Dataset, now: _dt.datetime, derivation_description: str
) -> None:
    """Append ctdid to the Contributing Equipment Sequence of ``ds``."""
    from ctdid import __version__

    equipment = Dataset()
    equipment.Manufacturer = "ctdid"
    equipment.ManufacturerModelName = "ctdid"
    equipment.SoftwareVersions = __version__
    equipment.ContributionDateTime = _dt_value(now)
    equipment.ContributionDescription = _truncate(derivation_description, 1024)
    equipment.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code_item("109102", "DCM", "Processing Equipment")]
    )
    previous = list(ds.get("ContributingEquipmentSequence", []) or [])
    ds.ContributingEquipmentSequence = DicomSequence([*previous, equipment])


def _fill_geometry(ds: Dataset, volume: CTVolume, k: int) -> None:
    """Set the geometry of slice ``k`` from the volume where the source header lacks it."""
    if not ds.get("ImagePositionPatient"):
        ds.ImagePositionPatient = [_ds(v) for v in volume.slice_position(k)]
    if not ds.get("ImageOrientationPatient"):
        ds.ImageOrientationPatient = [_ds(v) for v in (*volume.direction[0], *volume.direction[1])]
    if not ds.get("PixelSpacing"):
        ds.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[2])]


def _set_lossy(ds: Dataset, lossy: str | None, lossy_method: str | None) -> None:
    """Set Lossy Image Compression (see :func:`_lossy_state`); ratio and method only if lossy."""
    for kw in (
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
    ):
        if lossy != "01" and kw in ds:
            del ds[kw]
    if lossy is not None:
        ds.LossyImageCompression = lossy
        if lossy == "01" and lossy_method and "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = lossy_method


def _derived_slices(
    volume: CTVolume,
    *,
    series_description: str,
    derivation_description: str,
    output_key: str,
    series_number: int | None,
    window: tuple[float, float],
    derivation_code: tuple[str, str, str] | None,
) -> Iterator[tuple[Dataset, int]]:
    """Each slice as a derived copy of its source header, with its number of clipped voxels."""
    headers = list(volume.dicom_headers or ())
    series = _derived_series(headers, output_key, series_number)
    for k, src in enumerate(headers):
        src_class = _uid_of(src, "SOPClassUID", "MediaStorageSOPClassUID") or CTImageStorage
        sop_class = CTImageStorage if src_class in _ENHANCED_CT_CLASSES else src_class
        src_uid = _uid_of(src, "SOPInstanceUID", "MediaStorageSOPInstanceUID")
        pixel_repr = 1 if int(src.get("PixelRepresentation", 0) or 0) == 1 else 0
        slope, intercept, slope_s, intercept_s = _rescale(src, pixel_repr)
        photometric = _photometric(src)
        lossy, lossy_method = _lossy_state(src)

        ds = _copy_header(src)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = derive_uid(
            "ctdid-instance", series.source_key, src_uid, str(k), output_key
        )
        ds.StudyInstanceUID = series.study_uid
        ds.SeriesInstanceUID = series.series_uid
        ds.FrameOfReferenceUID = series.frame_of_reference_uid
        ds.SeriesNumber = series.series_number
        ds.InstanceNumber = k + 1
        ds.ImageType = _image_type(src, sop_class)
        if "Modality" not in ds or not ds.Modality:
            ds.Modality = "CT"
        _set_dates(ds, series.now)
        _set_text(ds, series_description, derivation_description)
        if src_uid:
            ref = _source_reference(src, src_class, src_uid, series.multi_frame_uids)
            ds.SourceImageSequence = DicomSequence([ref])
        _set_derivation_code(ds, derivation_code)
        _add_contributing_equipment(ds, series.now, derivation_description)
        # Geometry is kept from the source; fill it from the volume only where it is missing.
        _fill_geometry(ds, volume, k)

        ds.RescaleIntercept = intercept_s
        ds.RescaleSlope = slope_s
        _set_window(ds, window)
        _set_lossy(ds, lossy, lossy_method)
        if sop_class == CTImageStorage:
            _ensure_type2(ds)

        n_clipped = _set_pixels(ds, volume.hu[k], slope, intercept, pixel_repr, photometric)
        ds.file_meta = _file_meta(ds)
        yield ds, n_clipped


# --------------------------------------------------------------------------------------------
# New series (no DICOM source)
# --------------------------------------------------------------------------------------------


def _new_source_key(volume: CTVolume) -> str:
    """What identifies the volume (meta and geometry), for the UIDs of a new series."""
    return _canonical_json(
        {
            "meta": volume.meta,
            "shape": list(volume.shape),
            "spacing": list(volume.spacing),
            "origin": list(volume.origin),
            "direction": volume.direction.tolist(),
        }
    )


def _set_new_descriptive(
    ds: Dataset,
    now: _dt.datetime,
    dz: float,
    series_description: str,
    derivation_description: str,
    derivation_code: tuple[str, str, str] | None,
) -> None:
    """Study, equipment, description and placeholder patient attributes of a new slice."""
    from ctdid import __version__

    ds.StudyDate = _da(now)
    ds.StudyTime = _tm(now)
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "ctdid"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = "ctdid"
    ds.DerivationDescription = derivation_description
    _set_derivation_code(ds, derivation_code)
    ds.PatientName = "ANONYMOUS"
    ds.PatientID = "ANONYMOUS"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.SliceThickness = _ds(dz)
    ds.KVP = None
    ds.SpacingBetweenSlices = _ds(dz)
    ds.SoftwareVersions = __version__
    ds.PatientPosition = ""


def _new_slices(
    volume: CTVolume,
    *,
    series_description: str,
    derivation_description: str,
    output_key: str,
    series_number: int | None,
    window: tuple[float, float],
    derivation_code: tuple[str, str, str] | None,
) -> Iterator[tuple[Dataset, int]]:
    """Each slice of a new CT Image Storage series, with its number of clipped voxels."""
    source_key = _new_source_key(volume)
    study_uid = derive_uid("ctdid-new-study", source_key)
    for_uid = derive_uid("ctdid-new-frame-of-reference", source_key)
    series_uid = derive_uid("ctdid-new-series", source_key, output_key)
    now = _now(None)
    unicode = _needs_unicode([series_description, derivation_description], None)

    intercept, slope = -1024.0, 1.0
    # Unsigned when nothing falls below -1024 HU (stored 0), else signed.
    stored_min = float(np.rint(float(volume.hu.min()) - intercept))
    pixel_repr = 0 if stored_min >= 0 else 1

    row, col = volume.direction[0], volume.direction[1]
    normal = np.cross(row, col)
    iop = [_ds(round(float(v), 12)) for v in (*row, *col)]
    dz, dy, dx = volume.spacing

    for k in range(volume.shape[0]):
        ds = Dataset()
        if unicode:
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = derive_uid("ctdid-new-instance", source_key, output_key, str(k))
        _set_dates(ds, now)
        _set_new_descriptive(
            ds, now, dz, series_description, derivation_description, derivation_code
        )
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "CTDID"
        ds.SeriesNumber = int(1000 if series_number is None else series_number)
        ds.AcquisitionNumber = None
        ds.InstanceNumber = k + 1
        position = volume.slice_position(k)
        ds.ImagePositionPatient = [_ds(round(v, 6)) for v in position]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(round(float(np.dot(position, normal)), 6))
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.BurnedInAnnotation = "NO"
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU"
        _set_window(ds, window)
        ds.LossyImageCompression = "00"
        _ensure_type2(ds)
        n_clipped = _set_pixels(ds, volume.hu[k], slope, intercept, pixel_repr, "MONOCHROME2")
        ds.file_meta = _file_meta(ds)
        yield ds, n_clipped


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def write_dicom_series(
    volume: CTVolume,
    out_dir: str | os.PathLike[str],
    *,
    description: str,
    derivation: str,
    params: Mapping[str, object] | None = None,
    series_number: int | None = None,
    window: tuple[float, float] = (40.0, 400.0),
    derivation_code: tuple[str, str, str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``volume`` as a DICOM series, one file per slice, into the new folder ``out_dir``.

    Parameters
    ----------
    volume : CTVolume
        The HU volume. With :attr:`~ctdid.volume.CTVolume.dicom_headers` (one header per slice,
        in z order, for slices of the volume's size) a series derived from that source is
        written; without, a new CT Image Storage series.
    out_dir : path
        Folder to create. Written under a temporary name and renamed when complete.
    description : str
        Series Description (one line; cut to 64 characters, ending with ``...``, when longer).
    derivation : str
        What made the images, in words (e.g. "Denoised by ctdid, RED-CNN, strength 0.5"). Written
        with ``params`` and ctdid's version in Derivation Description (at most 1024 characters)
        and in the Contributing Equipment Sequence.
    params : mapping, optional
        Parameters of the processing (JSON-like). With ``description`` and the source's UIDs
        they determine the new UIDs: writing again with the same ones gives the same UIDs,
        other ones give other UIDs.
    series_number : int, optional
        Series Number; default the source's plus 1000 (1000 for a new series).
    window : (float, float)
        Window Center and Width in HU written to every slice. Default (40, 400).
    derivation_code : (str, str, str), optional
        (Code Value, Coding Scheme Designator, Code Meaning) of a Derivation Code Sequence item,
        e.g. ``("113087", "DCM", "Smoothing")`` (DICOM CID 7203). Default: none.
    overwrite : bool
        Replace an existing ``out_dir`` (only once the new one is complete).

    Returns
    -------
    list of Path
        The files written, in slice order (``IM0001.dcm``, ...).

    Raises
    ------
    OutputExistsError
        If ``out_dir`` exists and ``overwrite`` is false.
    ValueError
        If ``description`` or ``derivation`` is empty, ``window`` is not valid, or the DICOM
        headers do not fit the volume's slices.

    Warns
    -----
    CTDIDWarning
        When voxels fall outside what the output can store and are clipped; says how many.
    """
    from ctdid import __version__

    if not isinstance(volume, CTVolume):
        raise TypeError(f"volume must be a CTVolume, got {type(volume).__name__}")
    series_description = _clean_lo(str(description), _SERIES_DESCRIPTION_MAX)
    if not series_description:
        raise ValueError("description must not be empty")
    if not str(derivation).strip():
        raise ValueError("derivation must not be empty")
    win = _window(window)
    _check_series_number(series_number)
    if derivation_code is not None:
        if len(derivation_code) != 3 or not all(str(v).strip() for v in derivation_code):
            raise ValueError(
                f"derivation_code must be (value, scheme, meaning), got {derivation_code!r}"
            )
        derivation_code = (
            _clean_lo(str(derivation_code[0]), 16),
            _clean_lo(str(derivation_code[1]), 16),
            _clean_lo(str(derivation_code[2]), 64),
        )
    params_json = _canonical_json(dict(params or {}))
    suffix = f" [ctdid {__version__}; parameters: {params_json}]"
    derivation_text = str(derivation).strip()
    room = _DERIVATION_DESCRIPTION_MAX - len(suffix)
    if len(derivation_text) > room >= _DERIVATION_DESCRIPTION_MAX // 2:
        derivation_text = _truncate(derivation_text, room)  # keep the parameters when short
    derivation_description = _clean_st(derivation_text + suffix, _DERIVATION_DESCRIPTION_MAX)
    output_key = _canonical_json({"description": str(description), "params": dict(params or {})})

    if volume.dicom_headers is not None:
        _check_headers(volume)
    make = _derived_slices if volume.dicom_headers is not None else _new_slices
    slices = make(
        volume,
        series_description=series_description,
        derivation_description=derivation_description,
        output_key=output_key,
        series_number=series_number,
        window=win,
        derivation_code=derivation_code,
    )
    out = Path(out_dir).absolute()
    names = _file_names(volume.shape[0])
    n_clipped = 0
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for (ds, clipped), name in zip(slices, names, strict=True):
            n_clipped += clipped
            ds.save_as(tmp / name, enforce_file_format=True)
    if n_clipped:
        total = volume.hu.size
        warnings.warn(
            f"{out}: {n_clipped} of {total} voxels ({100.0 * n_clipped / total:.3g} %) were "
            f"outside the range the output can store (HU {float(volume.hu.min()):g} to "
            f"{float(volume.hu.max()):g} in the volume) and were clipped",
            CTDIDWarning,
            stacklevel=2,
        )
    return [out / name for name in names]
