"""Tests of ctdid.io.dicom_write (derived and new DICOM series) and ctdid.io.uids.

Files are read back with pydicom directly, and checked with dciodvfy (Debian dicom3tools) when it
is installed.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

from ctdid.errors import CTDIDWarning, OutputExistsError
from ctdid.io import dicom_write
from ctdid.io.dicom_write import write_dicom_series
from ctdid.io.uids import derive_uid, is_valid_uid, new_uid
from ctdid.volume import CTVolume

DCIODVFY = shutil.which("dciodvfy")
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


# ------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------


def _ct_small() -> pydicom.FileDataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _hu_of(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array.astype(np.float64)
    return arr * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def _source_series(
    n: int = 3,
    *,
    slope: str | None = None,
    intercept: str | None = None,
    transfer_syntax: str | None = None,
    tmp_path: Path | None = None,
) -> list[Dataset]:
    """``n`` slices made from pydicom's CT_small.dcm (GE, signed 16 bit, 128x128): own SOP
    Instance UIDs, positions 5 mm apart. With ``transfer_syntax`` the slices are compressed,
    written to ``tmp_path`` and read back (so their file meta says how they were stored).
    Pixel data are kept; :func:`_volume_from` strips them as a reader does."""
    base = _ct_small()
    out = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        z = float(base.ImagePositionPatient[2]) - 5.0 * k
        ds.ImagePositionPatient = [base.ImagePositionPatient[0], base.ImagePositionPatient[1], z]
        ds.SliceLocation = z
        if slope is not None:
            ds.RescaleSlope = slope
        if intercept is not None:
            ds.RescaleIntercept = intercept
        if transfer_syntax is not None:
            assert tmp_path is not None
            ds.compress(transfer_syntax, generate_instance_uid=False)
            path = tmp_path / f"src{k}.dcm"
            ds.save_as(path, enforce_file_format=True)
            ds = pydicom.dcmread(path)
        out.append(ds)
    return out


def _volume_from(datasets: Sequence[Dataset], hu: np.ndarray | None = None) -> CTVolume:
    """A CTVolume as a DICOM reader makes it: HU, geometry, headers without pixel data."""
    first = datasets[0]
    if hu is None:
        hu = np.stack([_hu_of(ds) for ds in datasets])
    headers = []
    for ds in datasets:
        h = copy.deepcopy(ds)
        del h.PixelData
        headers.append(h)
    ps = [float(v) for v in first.PixelSpacing]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dz = float(datasets[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    direction = np.stack([iop[:3], iop[3:], normal * np.sign(dz)])
    return CTVolume(
        hu,
        spacing=(abs(dz), ps[0], ps[1]),
        origin=tuple(float(v) for v in first.ImagePositionPatient),
        direction=direction,
        meta={"format": "dicom"},
        dicom_headers=tuple(headers),
    )


def _phantom(shape: tuple[int, int, int] = (4, 40, 48), lo: float = -1000.0) -> np.ndarray:
    """A small synthetic HU volume: air outside, water disc, a bone insert, non-integer HU."""
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    r = np.hypot(y - shape[1] / 2, x - shape[2] / 2)
    hu = np.where(r < min(shape[1:]) * 0.4, 0.0, lo)
    hu = np.where(np.hypot(y - shape[1] / 2, x - shape[2] / 2 - 6) < 4, 1200.0, hu)
    rng = np.random.default_rng(0)
    return hu + rng.normal(0, 20, size=shape) * (hu > lo) + 0.25 * z


def _read_series(files: Sequence[Path]) -> list[pydicom.FileDataset]:
    return [pydicom.dcmread(f) for f in files]


def _dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) dciodvfy reports for ``path``."""
    assert DCIODVFY is not None
    proc = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    warns = [ln for ln in lines if ln.startswith("Warning")]
    return errors, warns


@pytest.fixture
def source() -> list[Dataset]:
    return _source_series(3)


@pytest.fixture
def volume(source: list[Dataset]) -> CTVolume:
    return _volume_from(source)


def _write(volume: CTVolume, out: Path, **kw) -> list[Path]:
    kw.setdefault("description", "CT small denoised")
    kw.setdefault("derivation", "Denoised by the ctdid test suite")
    kw.setdefault("params", {"model": "test", "strength": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CTDIDWarning)
        return write_dicom_series(volume, out, **kw)


# ------------------------------------------------------------------------------------------
# UIDs
# ------------------------------------------------------------------------------------------


def test_derive_uid_is_valid_and_deterministic() -> None:
    a = derive_uid("1.2.3", "denoised", '{"s":0.5}')
    assert a == derive_uid("1.2.3", "denoised", '{"s":0.5}')
    assert is_valid_uid(a)
    assert a.startswith("2.25.")
    assert len(a) <= 64
    assert a != derive_uid("1.2.3", "denoised", '{"s":0.6}')
    assert a != derive_uid("1.2.3", '{"s":0.5}', "denoised")
    # Parts are joined unambiguously.
    assert derive_uid("a.b", "c") != derive_uid("a", "b.c")
    assert derive_uid("ab") != derive_uid("a", "b")
    # 2.25 UIDs hold a 128-bit integer.
    assert int(a.split(".")[2]) < 2**128


def test_derive_uid_rejects_bad_parts() -> None:
    with pytest.raises(ValueError):
        derive_uid()
    with pytest.raises(TypeError):
        derive_uid("1.2", 3)  # type: ignore[arg-type]


def test_new_uid_is_valid_and_random() -> None:
    uids = {new_uid() for _ in range(100)}
    assert len(uids) == 100
    assert all(is_valid_uid(u) and u.startswith("2.25.") for u in uids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_derive_uid_always_valid(parts: list[str]) -> None:
    uid = derive_uid(*parts)
    assert is_valid_uid(uid)
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid)
    assert pydicom.uid.UID(uid).is_valid


def test_is_valid_uid() -> None:
    assert is_valid_uid("1.2.840.10008.1.2.1")
    assert is_valid_uid("2.25.0")
    assert not is_valid_uid("1.02.3")
    assert not is_valid_uid("1..2")
    assert not is_valid_uid("1.2.")
    assert not is_valid_uid("1.2a")
    assert not is_valid_uid("")
    assert not is_valid_uid("1." + "2" * 64)


# ------------------------------------------------------------------------------------------
# Derived series
# ------------------------------------------------------------------------------------------


def test_derived_series_attributes(tmp_path: Path, source, volume) -> None:
    files = _write(volume, tmp_path / "out")
    assert [f.name for f in files] == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]
    assert all(f.parent == (tmp_path / "out").absolute() for f in files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f.name for f in files]
    out = _read_series(files)

    series_uids = {ds.SeriesInstanceUID for ds in out}
    assert len(series_uids) == 1
    (series_uid,) = series_uids
    assert is_valid_uid(series_uid) and series_uid != source[0].SeriesInstanceUID
    sop_uids = [ds.SOPInstanceUID for ds in out]
    assert len(set(sop_uids)) == 3
    assert all(is_valid_uid(u) for u in sop_uids)
    assert not set(sop_uids) & {s.SOPInstanceUID for s in source}
    today = dt.date.today()
    # Dates are in the source's time zone (CT_small: -0500): today, give or take a day.
    near_today = {(today + dt.timedelta(days=d)).strftime("%Y%m%d") for d in (-1, 0, 1)}

    for k, (ds, src) in enumerate(zip(out, source, strict=True)):
        fm = ds.file_meta
        assert fm.TransferSyntaxUID == ExplicitVRLittleEndian
        assert fm.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert fm.MediaStorageSOPClassUID == ds.SOPClassUID == CTImageStorage
        assert ds.preamble is not None
        # Kept from the source.
        for kw in (
            "StudyInstanceUID",
            "FrameOfReferenceUID",
            "PatientName",
            "PatientID",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "StudyID",
            "AccessionNumber",
            "Manufacturer",
            "KVP",
            "ConvolutionKernel",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "SliceThickness",
            "RescaleSlope",
            "RescaleIntercept",
            "PixelRepresentation",
            "AcquisitionNumber",
        ):
            assert ds[kw].value == src[kw].value, kw
        assert ds[0x0009, 0x0010].value == "GEMS_IDEN_01"  # private tags kept
        assert ds[0x0043, 0x1010].value == src[0x0043, 0x1010].value
        # New.
        assert ds.ImageType == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.InstanceNumber == k + 1
        assert ds.SeriesNumber == int(src.SeriesNumber) + 1000
        assert ds.SeriesDescription == "CT small denoised"
        assert ds.DerivationDescription.startswith("Denoised by the ctdid test suite")
        assert '"strength":0.5' in ds.DerivationDescription
        assert float(ds.WindowCenter) == 40.0 and float(ds.WindowWidth) == 400.0
        assert ds.ContentDate in near_today and ds.ContentDate != src.ContentDate
        assert ds.SeriesDate == ds.ContentDate
        assert ds.ContentTime != src.ContentTime
        (ref,) = ds.SourceImageSequence
        assert ref.ReferencedSOPClassUID == src.SOPClassUID
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        equipment = ds.ContributingEquipmentSequence[-1]
        assert equipment.Manufacturer == "ctdid"
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        # Pixel description of the new data.
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 16, 15)
        assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (128, 128, 1)
        assert ds.LossyImageCompression == "00"
        for gone in (
            "PixelPaddingValue",
            "SmallestImagePixelValue",
            "LargestImagePixelValue",
            "InstanceCreatorUID",
            "DataSetTrailingPadding",
        ):
            assert gone not in ds, gone
        assert "InstanceCreatorUID" in src


def test_derived_hu_round_trip(tmp_path: Path, source, volume) -> None:
    rng = np.random.default_rng(1)
    hu = np.clip(volume.hu + rng.uniform(-0.5, 0.5, size=volume.shape) * 7.3, -3000, 3000)
    files = _write(volume.with_hu(hu), tmp_path / "out")
    back = np.stack([_hu_of(ds) for ds in _read_series(files)])
    assert np.max(np.abs(back - hu.astype(np.float32))) <= 0.5 + 1e-6


def test_derived_hu_round_trip_fractional_slope(tmp_path: Path) -> None:
    src = _source_series(2, slope="0.5", intercept="-1000.25")
    vol = _volume_from(src)
    rng = np.random.default_rng(2)
    hu = rng.uniform(-1000, 3000, size=vol.shape).astype(np.float32)
    files = _write(vol.with_hu(hu), tmp_path / "out")
    out = _read_series(files)
    assert out[0].RescaleSlope == 0.5 and out[0].RescaleIntercept == -1000.25
    back = np.stack([_hu_of(ds) for ds in out])
    assert np.max(np.abs(back - hu)) <= 0.25 + 1e-6


def test_derived_uids_stable_and_parameter_dependent(tmp_path: Path, volume) -> None:
    def uids(files):
        out = _read_series(files)
        return out[0].SeriesInstanceUID, [ds.SOPInstanceUID for ds in out]

    a = uids(_write(volume, tmp_path / "a"))
    again = uids(_write(volume, tmp_path / "again"))
    assert a == again
    other_params = uids(_write(volume, tmp_path / "b", params={"model": "test", "strength": 0.6}))
    other_desc = uids(_write(volume, tmp_path / "c", description="other description"))
    for other in (other_params, other_desc):
        assert other[0] != a[0]
        assert not set(other[1]) & set(a[1])
    # Same output from another source gives other UIDs too.
    moved = list(volume.dicom_headers)
    moved = [copy.deepcopy(h) for h in moved]
    for h in moved:
        h.SOPInstanceUID = h.SOPInstanceUID + "9"
        h.SeriesInstanceUID = h.SeriesInstanceUID + ".9"
    vol2 = CTVolume(volume.hu, spacing=volume.spacing, dicom_headers=moved)
    b = uids(_write(vol2, tmp_path / "d"))
    assert b[0] != a[0] and not set(b[1]) & set(a[1])


def test_series_number_option(tmp_path: Path, volume) -> None:
    files = _write(volume, tmp_path / "out", series_number=77, window=(-600, 1500.5))
    ds = pydicom.dcmread(files[0])
    assert ds.SeriesNumber == 77
    assert float(ds.WindowCenter) == -600.0
    assert float(ds.WindowWidth) == 1500.5


def test_series_description_truncated(tmp_path: Path, volume) -> None:
    long = "Denoised with a very long description \\ that goes on and on " * 3
    deriv = "x" * 3000
    files = _write(volume, tmp_path / "out", description=long, derivation=deriv)
    ds = pydicom.dcmread(files[0])
    assert len(ds.SeriesDescription) <= 64
    assert ds.SeriesDescription.endswith("...")
    assert ds.SeriesDescription.startswith("Denoised with a very long description / that")
    assert "\\" not in ds.SeriesDescription
    assert not ds.SeriesDescription[:-3].endswith(" ")
    assert len(ds.DerivationDescription) <= 1024
    assert ds.DerivationDescription.startswith("xxxx")
    assert "... [ctdid " in ds.DerivationDescription  # derivation cut, parameters kept
    assert ds.DerivationDescription.endswith('"strength":0.5}]')


def test_unicode_description(tmp_path: Path, volume) -> None:
    headers = [copy.deepcopy(h) for h in volume.dicom_headers]
    for h in headers:
        h.PatientName = "Müller^Jürgen"  # latin-1 in the source's ISO_IR 100
    vol = CTVolume(volume.hu, spacing=volume.spacing, dicom_headers=headers)
    files = _write(vol, tmp_path / "out", description="Débruité ✓", derivation="Entrauscht")
    ds = pydicom.dcmread(files[0])
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.SeriesDescription == "Débruité ✓"
    assert str(ds.PatientName) == "Müller^Jürgen"


def test_clipping_warning(tmp_path: Path, volume) -> None:
    # CT_small: signed 16 bit, intercept -1024 -> storable HU -33792 .. 31743.
    hu = np.array(volume.hu)
    hu[0, 0, :5] = 40000.0
    hu[1, 0, :2] = -40000.0
    with pytest.warns(CTDIDWarning, match=r"\b7 of 49152 voxels\b.*clipped"):
        files = write_dicom_series(
            volume.with_hu(hu), tmp_path / "out", description="d", derivation="clip test"
        )
    back = np.stack([_hu_of(ds) for ds in _read_series(files)])
    assert np.all(back[0, 0, :5] == 31743)
    assert np.all(back[1, 0, :2] == -33792)
    ok = np.ones(hu.shape, bool)
    ok[0, 0, :5] = ok[1, 0, :2] = False
    assert np.max(np.abs(back[ok] - hu[ok])) <= 0.5


def test_clipping_unsigned_source(tmp_path: Path) -> None:
    src = _source_series(2)
    for ds in src:  # an unsigned 12-bit style source (e.g. Siemens): HU >= -1024 only
        arr = ds.pixel_array.astype(np.int32) + 2000
        arr = np.clip(arr, 0, 4095).astype(np.uint16)
        ds.PixelRepresentation = 0
        ds.BitsStored, ds.HighBit = 12, 11
        del ds.PixelPaddingValue
        ds.PixelData = arr.tobytes()
        ds.RescaleIntercept = "-3024"
    vol = _volume_from(src)
    hu = np.array(vol.hu)
    hu[:, 0, 0] = -3100.0
    hu[:, 0, 1] = 70000.0  # above -3024 + 65535
    with pytest.warns(CTDIDWarning, match=r"\b4 of"):
        files = write_dicom_series(
            vol.with_hu(hu), tmp_path / "out", description="d", derivation="clip"
        )
    out = _read_series(files)
    assert out[0].PixelRepresentation == 0
    assert out[0].BitsStored == 16  # widened: nothing lost, more range
    back = np.stack([_hu_of(ds) for ds in out])
    assert np.all(back[:, 0, 0] == -3024) and np.all(back[:, 0, 1] == 65535 - 3024)
    assert np.max(np.abs(back[:, 1:] - hu[:, 1:])) <= 0.5


def test_no_warning_without_clipping(tmp_path: Path, volume) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_dicom_series(volume, tmp_path / "out", description="d", derivation="x")


def test_refuses_to_overwrite(tmp_path: Path, volume) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        _write(volume, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    files = _write(volume, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [f.name for f in files]


def test_atomic_on_failure(tmp_path: Path, volume, monkeypatch) -> None:
    calls = []
    real = Dataset.save_as

    def failing(self, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, filename, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", failing)
    with pytest.raises(OSError, match="disk full"):
        _write(volume, tmp_path / "out")
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind


def test_atomic_overwrite_failure_keeps_old(tmp_path: Path, volume, monkeypatch) -> None:
    out = tmp_path / "out"
    first = _write(volume, out)
    before = {f.name: f.read_bytes() for f in first}

    def failing(self, *args, **kwargs):
        raise OSError("boom")

    monkeypatch.setattr(Dataset, "save_as", failing)
    with pytest.raises(OSError):
        _write(volume, out, overwrite=True, params={"other": 1})
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_bad_options(tmp_path: Path, volume) -> None:
    with pytest.raises(ValueError):
        _write(volume, tmp_path / "a", description="  ")
    with pytest.raises(ValueError):
        _write(volume, tmp_path / "b", derivation="")
    with pytest.raises(ValueError):
        _write(volume, tmp_path / "c", window=(40, 0))
    with pytest.raises(ValueError):
        _write(volume, tmp_path / "d", series_number=-1)
    bad = CTVolume(np.zeros((3, 64, 64)), dicom_headers=volume.dicom_headers)
    with pytest.raises(ValueError, match="128x128"):
        _write(bad, tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def test_jpeg2000_source(tmp_path: Path) -> None:
    pytest.importorskip("openjpeg")
    src = _source_series(2, transfer_syntax=JPEG2000Lossless, tmp_path=tmp_path)
    assert src[0].file_meta.TransferSyntaxUID == JPEG2000Lossless
    vol = _volume_from(src)
    files = _write(vol, tmp_path / "out")
    for ds, s in zip(_read_series(files), src, strict=True):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert not ds.file_meta.TransferSyntaxUID.is_compressed
        assert ds.LossyImageCompression == "00"
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == s.SOPInstanceUID
        np.testing.assert_allclose(_hu_of(ds), _hu_of(s), atol=0.5)


def test_lossy_source_stays_marked_lossy(tmp_path: Path) -> None:
    src = _source_series(2)
    for ds in src:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = "8.2"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    files = _write(_volume_from(src), tmp_path / "out")
    ds = pydicom.dcmread(files[0])
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert ds.LossyImageCompressionRatio == 8.2
    # Lossy transfer syntax without the attribute: marked lossy with its method.
    src = _source_series(1)
    hdr = copy.deepcopy(src[0])
    del hdr.PixelData
    hdr.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    vol = CTVolume(np.zeros((1, 128, 128)), dicom_headers=[hdr])
    ds = pydicom.dcmread(_write(vol, tmp_path / "out2")[0])
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"


def test_sparse_anonymised_source(tmp_path: Path) -> None:
    """A source with empty UIDs (as some anonymisers leave them): UIDs come from the file meta
    or are made; Type 1 attributes are never empty."""
    src = _source_series(2)
    headers = []
    for ds in src:
        h = copy.deepcopy(ds)
        del h.PixelData
        h.SOPInstanceUID = ""
        h.SOPClassUID = ""
        h.StudyInstanceUID = ""
        h.SeriesInstanceUID = ""
        h.SeriesNumber = None
        del h.PatientName, h.Laterality, h.ImageType
        headers.append(h)
    vol = CTVolume(np.zeros((2, 128, 128)), dicom_headers=headers)
    files = _write(vol, tmp_path / "out")
    out = _read_series(files)
    assert out[0].SOPClassUID == CTImageStorage
    assert out[0].SourceImageSequence[0].ReferencedSOPInstanceUID == src[0].SOPInstanceUID
    assert is_valid_uid(out[0].StudyInstanceUID)
    assert out[0].StudyInstanceUID == out[1].StudyInstanceUID
    assert out[0].SeriesNumber == 1000
    assert out[0].PatientName == ""
    assert out[0].ImageType == ["DERIVED", "SECONDARY", "AXIAL"]
    assert _read_series(_write(vol, tmp_path / "again"))[1].SOPInstanceUID == out[1].SOPInstanceUID
    if DCIODVFY:
        for f in files:
            assert _dciodvfy_errors(f)[0] == []


# ------------------------------------------------------------------------------------------
# New series (no DICOM source)
# ------------------------------------------------------------------------------------------

_CT_IOD_REQUIRED = (  # Type 1 and 2 attributes of the CT Image IOD's modules
    # Patient
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    # General Study
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber",
    # General Series
    "Modality", "SeriesInstanceUID", "SeriesNumber", "PatientPosition",
    # Frame of Reference
    "FrameOfReferenceUID", "PositionReferenceIndicator",
    # General Equipment
    "Manufacturer",
    # General Image
    "InstanceNumber", "ContentDate", "ContentTime",
    # Image Plane
    "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
    # Image Pixel
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
    # CT Image
    "ImageType", "RescaleIntercept", "RescaleSlope", "KVP", "AcquisitionNumber",
    # SOP Common
    "SOPClassUID", "SOPInstanceUID",
)  # fmt: skip


def test_new_series(tmp_path: Path) -> None:
    hu = _phantom()
    vol = CTVolume(hu, spacing=(2.5, 0.7, 0.6), origin=(-12.0, -14.0, 30.0), meta={"p": "x"})
    files = _write(vol, tmp_path / "out")
    out = _read_series(files)
    assert len(out) == 4
    for k, ds in enumerate(out):
        for kw in _CT_IOD_REQUIRED:
            assert kw in ds, kw
        assert ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.Modality == "CT"
        assert ds.PatientName == "ANONYMOUS" and ds.PatientID == "ANONYMOUS"
        assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"]
        assert ds.RescaleIntercept == -1024 and ds.RescaleSlope == 1
        assert ds.PixelRepresentation == 0  # nothing below -1024 HU
        assert ds.InstanceNumber == k + 1
        assert ds.SeriesNumber == 1000
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.6]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], vol.slice_position(k), atol=1e-6
        )
        assert float(ds.SliceThickness) == 2.5
        for kw in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            assert is_valid_uid(ds[kw].value)
    assert len({ds.SOPInstanceUID for ds in out}) == 4
    back = np.stack([_hu_of(ds) for ds in out])
    assert np.max(np.abs(back - vol.hu)) <= 0.5 + 1e-6


def test_new_series_signed_when_below_minus_1024(tmp_path: Path) -> None:
    hu = _phantom(lo=-1100.0)
    vol = CTVolume(hu, spacing=(1, 1, 1))
    files = _write(vol, tmp_path / "out", params={})
    out = _read_series(files)
    assert all(ds.PixelRepresentation == 1 for ds in out)
    back = np.stack([_hu_of(ds) for ds in out])
    assert np.max(np.abs(back - vol.hu)) <= 0.5 + 1e-6


def test_new_series_uids_stable(tmp_path: Path) -> None:
    vol = CTVolume(_phantom(), meta={"path": "a.nii.gz"})

    def uids(name, **kw):
        out = _read_series(_write(vol, tmp_path / name, **kw))
        ds = out[0]
        return (
            ds.StudyInstanceUID,
            ds.FrameOfReferenceUID,
            ds.SeriesInstanceUID,
            [d.SOPInstanceUID for d in out],
        )

    a = uids("a")
    assert uids("again") == a
    b = uids("b", params={"strength": 0.9})
    assert b[:2] == a[:2]  # same input: same study and frame of reference
    assert b[2] != a[2] and not set(b[3]) & set(a[3])
    other_input = CTVolume(_phantom(), meta={"path": "b.nii.gz"})
    c = _read_series(_write(other_input, tmp_path / "c"))[0]
    assert c.StudyInstanceUID != a[0] and c.SeriesInstanceUID != a[2]


def test_new_series_oblique_geometry(tmp_path: Path) -> None:
    t = np.deg2rad(20.0)
    direction = np.array(
        [[1, 0, 0], [0, np.cos(t), np.sin(t)], [0, -np.sin(t), np.cos(t)]], dtype=float
    )
    vol = CTVolume(_phantom((3, 16, 20)), spacing=(3, 0.8, 0.8), direction=direction)
    out = _read_series(_write(vol, tmp_path / "out"))
    iop = np.array([float(v) for v in out[0].ImageOrientationPatient])
    np.testing.assert_allclose(iop, [*direction[0], *direction[1]], atol=1e-9)
    for k, ds in enumerate(out):
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], vol.slice_position(k), atol=1e-5
        )


# ------------------------------------------------------------------------------------------
# dciodvfy (Debian dicom3tools): no Error on anything written
# ------------------------------------------------------------------------------------------

needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed"
)


def _assert_dciodvfy_clean(files: Sequence[Path]) -> list[str]:
    all_warnings: list[str] = []
    for f in files:
        errors, warns = _dciodvfy_errors(f)
        assert errors == [], f"{f.name}: {errors}"
        all_warnings += warns
    return all_warnings


@needs_dciodvfy
def test_dciodvfy_derived(tmp_path: Path, volume) -> None:
    files = _write(volume, tmp_path / "out", derivation_code=("113087", "DCM", "Smoothing"))
    warns = _assert_dciodvfy_clean(files)
    # Only the source's own oddities remain (CT_small: zero Patient's Weight, empty Laterality).
    assert all("Patient's Weight" in w or "Laterality" in w for w in warns), warns


@needs_dciodvfy
def test_dciodvfy_derived_from_jpeg2000(tmp_path: Path) -> None:
    pytest.importorskip("openjpeg")
    src = _source_series(2, transfer_syntax=JPEG2000Lossless, tmp_path=tmp_path)
    files = _write(_volume_from(src), tmp_path / "out", description="Dénoisé")
    _assert_dciodvfy_clean(files)


@needs_dciodvfy
def test_dciodvfy_derived_fractional_slope_with_clipping(tmp_path: Path) -> None:
    src = _source_series(2, slope="0.5", intercept="-1000.25")
    vol = _volume_from(src)
    hu = np.array(vol.hu)
    hu[0, 0, 0] = 1e6
    with pytest.warns(CTDIDWarning):
        files = write_dicom_series(
            vol.with_hu(hu), tmp_path / "out", description="d", derivation="x"
        )
    _assert_dciodvfy_clean(files)


@needs_dciodvfy
@pytest.mark.parametrize("lo", [-1000.0, -1100.0])
def test_dciodvfy_new_series(tmp_path: Path, lo: float) -> None:
    t = np.deg2rad(15.0)
    direction = np.array(
        [[np.cos(t), np.sin(t), 0], [-np.sin(t), np.cos(t), 0], [0, 0, 1]], dtype=float
    )
    vol = CTVolume(_phantom((3, 24, 20), lo=lo), spacing=(1.25, 0.5, 0.5), direction=direction)
    files = _write(vol, tmp_path / "out", description="Phantom ✓ denoised")
    warns = _assert_dciodvfy_clean(files)
    # Left: empty Laterality (unknown), single-component Patient's Name "ANONYMOUS".
    assert all("Laterality" in w or "Patient's Name" in w for w in warns), warns


# ------------------------------------------------------------------------------------------
# Real series from ../shared (skipped where absent)
# ------------------------------------------------------------------------------------------


def _read_shared_series(folder: Path, n: int) -> list[Dataset]:
    datasets = []
    for f in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(f)
        except Exception:
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            datasets.append(ds)
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return datasets[:n]


@pytest.mark.shared
@needs_dciodvfy
@pytest.mark.parametrize("name", ["abdomen_ct_totalseg", "catphan504_cbct"])
def test_shared_series(tmp_path: Path, name: str) -> None:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    pytest.importorskip("openjpeg")
    src = _read_shared_series(folder, 4)
    vol = _volume_from(src)
    files = _write(vol, tmp_path / "out", params={"strength": 1.0})
    out = _read_series(files)
    for ds, s in zip(out, src, strict=True):
        np.testing.assert_allclose(_hu_of(ds), _hu_of(s), atol=0.5)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPInstanceUID != s.file_meta.MediaStorageSOPInstanceUID
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == (
            s.SOPInstanceUID or s.file_meta.MediaStorageSOPInstanceUID
        )
    _assert_dciodvfy_clean(files)


def test_module_exports() -> None:
    assert dicom_write.__all__ == ["write_dicom_series"]


# ------------------------------------------------------------------------------------------
# With the project's synthetic series maker and reader
# ------------------------------------------------------------------------------------------


def _factory():  # type: ignore[no-untyped-def]
    import dicom_factory  # tests/io/dicom_factory.py

    return dicom_factory


def test_round_trip_through_reader(tmp_path: Path) -> None:
    factory = _factory()
    from ctdid.io import dicom_read as reader

    hu = _phantom((5, 24, 30)).round()
    factory.make_ct_series(tmp_path / "src", hu, signed=False, bits_stored=12, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CTDIDWarning)
        vol = reader.read_dicom(tmp_path / "src")
    new_hu = vol.hu + np.float32(0.3)
    _write(vol.with_hu(new_hu), tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CTDIDWarning)
        back = reader.read_dicom(tmp_path / "out")
    assert np.max(np.abs(back.hu - new_hu)) <= 0.5 + 1e-4
    np.testing.assert_allclose(back.spacing, vol.spacing)
    np.testing.assert_allclose(back.origin, vol.origin)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-9)
    if DCIODVFY:
        _assert_dciodvfy_clean(sorted((tmp_path / "out").iterdir()))


def test_enhanced_ct_source(tmp_path: Path) -> None:
    factory = _factory()
    from ctdid.io import dicom_read as reader

    hu = _phantom((4, 16, 20)).round()
    src = factory.make_enhanced_ct(tmp_path / "src" / "enh.dcm", hu, per_frame_rescale=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CTDIDWarning)
        vol = reader.read_dicom(src)
    files = _write(vol, tmp_path / "out")
    out = _read_series(files)
    source_uid = pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID
    assert len({ds.SOPInstanceUID for ds in out}) == len(out) == 4
    for ds, header in zip(out, vol.dicom_headers, strict=True):
        assert ds.SOPClassUID == CTImageStorage
        (ref,) = ds.SourceImageSequence
        assert ref.ReferencedSOPInstanceUID == source_uid
        assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1"
        assert ref.ReferencedFrameNumber == header.InstanceNumber
        assert "NumberOfFrames" not in ds and "SharedFunctionalGroupsSequence" not in ds
    assert sorted(int(ds.SourceImageSequence[0].ReferencedFrameNumber) for ds in out) == [
        1,
        2,
        3,
        4,
    ]
    back = np.stack([_hu_of(ds) for ds in out])
    assert np.max(np.abs(back - vol.hu)) <= 0.5
    if DCIODVFY:
        _assert_dciodvfy_clean(files)
