"""Tests of ctdid.io.dicom_read: synthetic series (pydicom-written), pydicom's CT_small.dcm and,
when ../shared/data is there, two real scans."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import make_ct_series, make_enhanced_ct, make_rtstruct, stored_range
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

from ctdid import CTVolume
from ctdid.errors import CTDIDWarning, InputError, MissingDecoderError, SeriesSelectionError
from ctdid.io import dicom_read
from ctdid.io.dicom_read import DicomSeriesInfo, list_dicom_series, read_dicom

SHARED_DATA = Path(
    os.environ.get("CTDID_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)


def _no_warnings_read(path: Path | str, **kw: object) -> CTVolume:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CTDIDWarning)
        return read_dicom(path, **kw)  # type: ignore[arg-type]


def _read_warns(path: Path | str, **kw: object) -> tuple[CTVolume, list[str]]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        vol = read_dicom(path, **kw)  # type: ignore[arg-type]
    return vol, [str(w.message) for w in rec if issubclass(w.category, CTDIDWarning)]


def _ramp(nz: int = 6, ny: int = 8, nx: int = 9) -> np.ndarray:
    """A volume whose every voxel differs, so that any slice mix-up shows."""
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    return (z * 100 + y * 10 + x - 500).astype(float)


# --------------------------------------------------------------------------------------------
# Property: shuffled synthetic series load in the right order, geometry and HU.


def _rotation(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


_quaternion = st.tuples(*[st.floats(-1, 1) for _ in range(4)]).map(
    lambda q: q if np.linalg.norm(q) > 0.2 else (1.0, *q[1:])
)
_orientation = st.one_of(
    st.sampled_from(
        [
            np.eye(3),  # axial
            np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # coronal
            np.array([[0.0, 1, 0], [0, 0, -1], [-1, 0, 0]]),  # sagittal
            np.array([[-1.0, 0, 0], [0, -1, 0], [0, 0, 1]]),  # axial, prone
            np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]]),  # feet first
        ]
    ),
    _quaternion.map(_rotation),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 9)),
    spacing=st.tuples(st.floats(0.3, 6.0), st.floats(0.2, 2.0), st.floats(0.2, 2.0)).map(
        lambda t: tuple(round(v, 4) for v in t)
    ),
    origin=st.tuples(*[st.floats(-600, 600) for _ in range(3)]).map(
        lambda t: tuple(round(v, 3) for v in t)
    ),
    direction=_orientation,
    bits=st.sampled_from([(16, 16), (16, 12), (16, 10), (8, 8), (16, 15)]),
    signed=st.booleans(),
    high_bits=st.integers(0, 7),
    slope=st.one_of(
        st.sampled_from([1.0, 0.5, 2.0, 0.25]), st.floats(0.1, 4.0).map(lambda v: round(v, 4))
    ),
    intercepts=st.lists(st.integers(-3000, 3000), min_size=7, max_size=7),
    per_slice_rescale=st.booleans(),
    transfer_syntax=st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless]),
    seed=st.integers(0, 2**31 - 1),
)
def test_shuffled_series_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: np.ndarray,
    bits: tuple[int, int],
    signed: bool,
    high_bits: int,
    slope: float,
    intercepts: list[int],
    per_slice_rescale: bool,
    transfer_syntax: str,
    seed: int,
) -> None:
    nz = shape[0]
    bits_allocated, bits_stored = bits
    rng = np.random.default_rng(seed)
    lo, hi = stored_range(bits_stored, signed)
    stored = rng.integers(lo, hi + 1, size=shape)
    # Slices may have their own RescaleSlope and RescaleIntercept.
    if per_slice_rescale:
        slopes = [slope * (1 + k % 3) for k in range(nz)]
        icepts = [float(v) for v in intercepts[:nz]]
    else:
        slopes, icepts = [slope] * nz, [float(intercepts[0])] * nz
    slope_arr = np.asarray(slopes).reshape(-1, 1, 1)
    exact = stored * slope_arr + np.asarray(icepts).reshape(-1, 1, 1)
    # Values anywhere within a rescale step round to the stored value.
    hu = exact + rng.uniform(-0.45, 0.45, size=shape) * slope_arr

    folder = tmp_path_factory.mktemp("series")
    paths = make_ct_series(
        folder,
        hu,
        spacing=spacing,
        origin=origin,
        direction=direction,
        slope=slopes,
        intercept=icepts,
        signed=signed,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bits=high_bits,
        transfer_syntax=transfer_syntax,
        shuffle=True,
        seed=seed,
    )
    vol = _no_warnings_read(folder)

    assert vol.shape == shape
    assert vol.hu.dtype == np.float32
    tol = 0.5 * slope_arr + 1e-6 * np.abs(hu).max() + 1e-4
    assert np.all(np.abs(vol.hu - hu) <= tol)
    np.testing.assert_allclose(vol.hu, exact, rtol=0, atol=1e-6 * np.abs(exact).max() + 1e-3)

    # dz from positions; for one slice from SliceThickness, which the factory sets to dz too.
    np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-6)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-6)
    # Voxel (0, 0, k) of the volume is where the file of slice k says it is.
    for k in range(nz):
        np.testing.assert_allclose(
            vol.slice_position(k),
            [float(v) for v in pydicom.dcmread(paths[k]).ImagePositionPatient],
            atol=1e-5,
        )
    # Headers in z order, without pixel data.
    assert vol.dicom_headers is not None
    for k, header in enumerate(vol.dicom_headers):
        assert "PixelData" not in header
        assert header.SOPInstanceUID == pydicom.dcmread(paths[k]).SOPInstanceUID
    assert vol.meta["format"] == "dicom"
    assert vol.meta["n_slices"] == nz
    assert json.loads(json.dumps(vol.meta)) == vol.meta


# --------------------------------------------------------------------------------------------
# Real files bundled with pydicom.


def test_ct_small_from_pydicom() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    vol = _no_warnings_read(path)
    assert vol.shape == (1, 128, 128)
    np.testing.assert_array_equal(vol.hu[0], expected.astype(np.float32))
    assert ds.PixelRepresentation == 1  # signed
    assert float(ds.RescaleIntercept) == -1024
    # A soft-tissue phantom slice: air around about -850..-900 HU, nothing below -1024.
    assert -1024 <= vol.hu.min() < -800
    assert 500 < vol.hu.max() < 3000
    assert vol.spacing[1:] == pytest.approx([0.661468, 0.661468])
    assert vol.spacing[0] == pytest.approx(float(ds.SliceThickness))
    assert vol.origin == pytest.approx([float(v) for v in ds.ImagePositionPatient])
    assert vol.meta["modality"] == "CT"
    assert vol.meta["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert vol.meta["kernel"] == "STANDARD"
    assert vol.meta["kvp"] == 120.0
    assert vol.dicom_headers is not None and "PixelData" not in vol.dicom_headers[0]
    infos = list_dicom_series(path)
    assert len(infos) == 1 and infos[0].n_files == 1 and infos[0].rows == 128


# --------------------------------------------------------------------------------------------
# Several series, non-image files, recursion


@pytest.fixture
def two_series(tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    hu = _ramp(5, 6, 7)
    study = "1.2.826.0.1.3680043.8.498.1000"
    b = make_ct_series(
        tmp_path / "b", hu[:3] + 7, series_number=9, series_description="lung",
        seed=2, series_uid="1.2.826.0.1.3680043.8.498.2222", study_uid=study,
    )  # fmt: skip
    a = make_ct_series(
        tmp_path / "nested" / "a", hu, series_number=5, series_description="soft", seed=1,
        series_uid="1.2.826.0.1.3680043.8.498.1111", study_uid=study,
    )  # fmt: skip
    (tmp_path / "README").write_text("synthetic test data\n")
    (tmp_path / "LICENSE").write_text("CC0\n")
    (tmp_path / "nested" / "notes.txt").write_bytes(b"\x00\x01binary junk" * 20)
    make_rtstruct(tmp_path / "RS.structures.dcm")
    return tmp_path, {"a": a, "b": b}


def test_list_dicom_series(two_series: tuple[Path, dict[str, list[Path]]]) -> None:
    folder, paths = two_series
    infos = list_dicom_series(folder)
    assert [i.index for i in infos] == [1, 2]
    a, b = infos
    assert isinstance(a, DicomSeriesInfo)
    assert (a.series_number, a.series_description, a.n_files, a.n_slices) == (5, "soft", 5, 5)
    assert (b.series_number, b.series_description, b.n_files) == (9, "lung", 3)
    assert a.series_instance_uid == "1.2.826.0.1.3680043.8.498.1111"
    assert (a.rows, a.columns, a.modality) == (6, 7, "CT")
    assert a.study_instance_uid
    assert a.first_file in paths["a"] and set(a.files) == set(paths["a"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.n_files = 3  # type: ignore[misc]


def test_several_series_need_a_choice(two_series: tuple[Path, dict[str, list[Path]]]) -> None:
    folder, _ = two_series
    with pytest.raises(SeriesSelectionError) as err:
        read_dicom(folder)
    msg = str(err.value)
    assert "--series" in msg
    assert "2 DICOM image series" in msg
    for text in ("1.2.826.0.1.3680043.8.498.1111", "1.2.826.0.1.3680043.8.498.2222",
                 "number 5", "number 9", '"soft"', '"lung"', "5 slice(s)", "3 slice(s)",
                 "[1]", "[2]"):  # fmt: skip
        assert text in msg
    assert err.value.path == str(folder)


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ("1.2.826.0.1.3680043.8.498.2222", "lung"),
        ("1.2.826.0.1.3680043.8.498.1111", "soft"),
        (9, "lung"),
        ("5", "soft"),
        (2, "lung"),  # not a SeriesNumber here: a 1-based index
        ("1", "soft"),
    ],
)
def test_select_series(
    two_series: tuple[Path, dict[str, list[Path]]], series: str | int, expected: str
) -> None:
    folder, _ = two_series
    vol = _no_warnings_read(folder, series=series)
    assert vol.meta["series_description"] == expected
    assert vol.shape[0] == (3 if expected == "lung" else 5)
    if expected == "lung":
        np.testing.assert_array_equal(vol.hu, _ramp(5, 6, 7)[:3] + 7)


@pytest.mark.parametrize("series", ["1.2.3.4.404", 3, "0", "seven"])
def test_unknown_series(two_series: tuple[Path, dict[str, list[Path]]], series: object) -> None:
    folder, _ = two_series
    with pytest.raises(SeriesSelectionError, match="no series matches") as err:
        read_dicom(folder, series=series)  # type: ignore[arg-type]
    assert "1.2.826.0.1.3680043.8.498.2222" in str(err.value)


def test_ambiguous_series_number(tmp_path: Path) -> None:
    make_ct_series(tmp_path / "x", _ramp(2, 4, 4), series_number=3, seed=1)
    make_ct_series(tmp_path / "y", _ramp(2, 4, 4), series_number=3, seed=2)
    with pytest.raises(SeriesSelectionError, match="2 series have SeriesNumber 3"):
        read_dicom(tmp_path, series=3)
    assert _no_warnings_read(tmp_path, series=2).shape == (2, 4, 4)  # index


def test_single_file_reads_only_that_file(two_series: tuple[Path, dict[str, list[Path]]]) -> None:
    _, paths = two_series
    vol = _no_warnings_read(paths["a"][2])
    assert vol.shape == (1, 6, 7)
    np.testing.assert_array_equal(vol.hu[0], _ramp(5, 6, 7)[2])
    with pytest.raises(SeriesSelectionError):
        read_dicom(paths["a"][2], series="1.2.826.0.1.3680043.8.498.2222")


def test_rtstruct_and_text_files_are_skipped(tmp_path: Path) -> None:
    make_ct_series(tmp_path, _ramp(3, 4, 5))
    make_rtstruct(tmp_path / "RS.dcm")
    (tmp_path / "README.md").write_text("# data\n")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    (tmp_path / "junk.bin").write_bytes(b"\x08\x00\x05\x00" + b"\xff" * 300)  # looks raw
    assert len(list_dicom_series(tmp_path)) == 1
    np.testing.assert_array_equal(_no_warnings_read(tmp_path).hu, _ramp(3, 4, 5))


def test_dicomdir_file_set(tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    paths = make_ct_series(tmp_path / "src", _ramp(4, 5, 5))
    fs = FileSet()
    for p in paths:
        fs.add(p)
    fs.write(tmp_path / "fileset")
    stage = getattr(fs, "_stage", {}).get("t")  # FileSet's staging TemporaryDirectory
    if stage is not None:
        stage.cleanup()
    assert (tmp_path / "fileset" / "DICOMDIR").is_file()
    infos = list_dicom_series(tmp_path / "fileset")
    assert len(infos) == 1 and infos[0].n_files == 4
    np.testing.assert_array_equal(_no_warnings_read(tmp_path / "fileset").hu, _ramp(4, 5, 5))
    # The DICOMDIR itself stands for its folder.
    np.testing.assert_array_equal(
        _no_warnings_read(tmp_path / "fileset" / "DICOMDIR").hu, _ramp(4, 5, 5)
    )


def test_no_image_series(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("nothing here\n")
    make_rtstruct(tmp_path / "rs.dcm")
    with pytest.raises(InputError, match="no DICOM image series found"):
        read_dicom(tmp_path)
    with pytest.raises(InputError, match="no DICOM image series found"):
        list_dicom_series(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no files"):
        read_dicom(empty)
    with pytest.raises(InputError, match="does not exist"):
        read_dicom(tmp_path / "missing")
    with pytest.raises(InputError, match="not a DICOM file") as err:
        read_dicom(tmp_path / "README")
    assert err.value.path == str(tmp_path / "README")
    with pytest.raises(InputError, match="RTSTRUCT"):
        read_dicom(tmp_path / "rs.dcm")


def test_dataset_without_preamble(tmp_path: Path) -> None:
    path = make_ct_series(tmp_path / "src", _ramp(1, 4, 4), shuffle=False)[0]
    ds = pydicom.dcmread(path)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    bare = tmp_path / "bare" / "IMG0001"
    bare.parent.mkdir()
    ds.save_as(bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(_no_warnings_read(bare.parent).hu, _ramp(1, 4, 4))


# --------------------------------------------------------------------------------------------
# Warnings


def test_missing_slices_warn(tmp_path: Path) -> None:
    hu = _ramp(8, 4, 4)
    paths = make_ct_series(tmp_path, hu, spacing=(2.0, 0.5, 0.5), origin=(0, 0, 10))
    paths[3].unlink()
    paths[4].unlink()
    vol, msgs = _read_warns(tmp_path)
    assert vol.shape[0] == 6
    np.testing.assert_array_equal(vol.hu, hu[[0, 1, 2, 5, 6, 7]])
    assert vol.spacing[0] == pytest.approx(2.0)
    (msg,) = [m for m in msgs if "missing slice" in m]
    assert "about 2 slice(s) missing" in msg
    assert "between slice 2" in msg and "slice 3" in msg
    assert "14 mm" in msg and "20 mm" in msg  # z of the slices either side
    assert "gap 6 mm" in msg
    assert vol.meta["warnings"] == msgs


def test_duplicate_positions_warn(tmp_path: Path) -> None:
    hu = _ramp(4, 4, 4)
    paths = make_ct_series(tmp_path, hu, shuffle=False, instance_numbers=[1, 2, 3, 4])
    ds = pydicom.dcmread(paths[1])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 9
    copy = tmp_path / "zz_copy.dcm"
    ds.save_as(copy)
    vol, msgs = _read_warns(tmp_path)
    assert vol.shape[0] == 4
    np.testing.assert_array_equal(vol.hu, hu)
    (msg,) = [m for m in msgs if "duplicate" in m]
    assert str(paths[1]) in msg and str(copy) in msg
    assert f"keeping {paths[1]}" in msg  # the lower InstanceNumber
    assert "2 slices" in msg
    assert not [m for m in msgs if "non-uniform" in m or "missing" in m]


def test_non_uniform_spacing_warns(tmp_path: Path) -> None:
    hu = _ramp(5, 3, 3)
    z = np.array([0.0, 2.0, 4.0, 6.4, 8.4])
    make_ct_series(tmp_path, hu, positions=np.stack([np.zeros(5), np.zeros(5), z], axis=1))
    vol, msgs = _read_warns(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    (msg,) = [m for m in msgs if "non-uniform" in m]
    assert "min 2 mm" in msg and "max 2.4 mm" in msg
    assert "median 2 mm" in msg
    assert vol.spacing[0] == pytest.approx(2.0)
    assert not [m for m in msgs if "missing" in m]


def test_gantry_tilt_header_warns(tmp_path: Path) -> None:
    make_ct_series(tmp_path, _ramp(3, 4, 4), extra={"GantryDetectorTilt": 15})
    _, msgs = _read_warns(tmp_path)
    (msg,) = [m for m in msgs if "gantry tilt" in m]
    assert "GantryDetectorTilt 15°" in msg


def test_sheared_positions_warn_tilt(tmp_path: Path) -> None:
    angle = math.radians(20)
    direction = np.array([[1, 0, 0], [0, 1, 0], [0, math.sin(angle), math.cos(angle)]])
    hu = _ramp(4, 5, 5)
    make_ct_series(tmp_path, hu, direction=direction, spacing=(3.0, 0.5, 0.5))
    vol, msgs = _read_warns(tmp_path)
    (msg,) = [m for m in msgs if "gantry tilt" in m]
    assert "20.00°" in msg
    np.testing.assert_array_equal(vol.hu, hu)
    # dz is the distance between slice planes, along the normal.
    assert vol.spacing[0] == pytest.approx(3.0 * math.cos(angle))
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-9)


def test_tilted_orientation_with_matching_positions_does_not_warn(tmp_path: Path) -> None:
    # Like the CatPhan CBCT: rotated slices whose positions step along their own normal.
    r = _rotation((1.0, 0.0, 0.003, 0.0))
    make_ct_series(tmp_path, _ramp(4, 4, 4), direction=r)
    vol = _no_warnings_read(tmp_path)
    np.testing.assert_allclose(vol.direction, r, atol=1e-9)


def test_non_ct_modality_warns(tmp_path: Path) -> None:
    make_ct_series(tmp_path, _ramp(2, 4, 4), modality="MR")
    vol, msgs = _read_warns(tmp_path)
    (msg,) = [m for m in msgs if "not CT" in m]
    assert "'MR'" in msg and "values are not HU" in msg
    assert vol.meta["modality"] == "MR"


def test_missing_positions_fall_back_to_slice_location(tmp_path: Path) -> None:
    hu = _ramp(5, 4, 4)
    make_ct_series(tmp_path, hu, spacing=(1.5, 1, 1), extra={"ImagePositionPatient": None})
    vol, msgs = _read_warns(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == pytest.approx(1.5)
    (msg,) = [m for m in msgs if "SliceLocation" in m]
    assert "5 of 5 slices have no ImagePositionPatient" in msg
    assert vol.meta["slice_order"] == "SliceLocation"


def test_missing_positions_fall_back_to_instance_number(tmp_path: Path) -> None:
    hu = _ramp(5, 4, 4)
    make_ct_series(
        tmp_path, hu, spacing=(1.5, 1, 1), instance_numbers=[10, 11, 12, 13, 14],
        extra={"ImagePositionPatient": None, "SliceLocation": None},
    )  # fmt: skip
    vol, msgs = _read_warns(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == pytest.approx(1.5)  # from SliceThickness
    assert any("ordering the slices by InstanceNumber" in m for m in msgs)
    assert vol.meta["slice_order"] == "InstanceNumber"


def test_no_order_at_all_is_an_error(tmp_path: Path) -> None:
    make_ct_series(
        tmp_path, _ramp(2, 4, 4),
        extra={"ImagePositionPatient": None, "SliceLocation": None, "InstanceNumber": None},
    )  # fmt: skip
    with pytest.raises(InputError, match="cannot order the slices"):
        read_dicom(tmp_path)


def test_single_file_without_position(tmp_path: Path) -> None:
    (path,) = make_ct_series(
        tmp_path, _ramp(1, 4, 4), extra={"ImagePositionPatient": None, "SliceLocation": None}
    )
    vol = _no_warnings_read(path)
    assert vol.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(vol.hu, _ramp(1, 4, 4))


# --------------------------------------------------------------------------------------------
# Errors


def test_mixed_image_sizes_error(tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.8.498.3333"
    make_ct_series(tmp_path, _ramp(3, 4, 4), series_uid=uid, seed=1)
    odd = make_ct_series(tmp_path, _ramp(1, 5, 4), series_uid=uid, seed=2, origin=(-100, -120, 40))
    with pytest.raises(InputError, match="mixed image sizes") as err:
        read_dicom(tmp_path)
    assert str(odd[0]) in str(err.value) and "5x4" in str(err.value)
    assert "4x4" in str(err.value)


def test_mixed_orientation_error(tmp_path: Path) -> None:
    def edit(k: int, ds: Dataset) -> None:
        if k == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    paths = make_ct_series(tmp_path, _ramp(4, 4, 4), edit=edit)
    with pytest.raises(InputError, match="mixed slice orientations") as err:
        read_dicom(tmp_path)
    assert str(paths[2]) in str(err.value)


def test_truncated_pixel_data_error(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path, _ramp(3, 16, 16))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 200])
    with pytest.raises(InputError) as err:
        read_dicom(tmp_path)
    assert err.value.path == str(paths[1])
    assert "pixel data" in str(err.value)


def test_truncated_header_error(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path, _ramp(3, 16, 16))
    paths[0].write_bytes(paths[0].read_bytes()[:140])
    with pytest.raises(InputError) as err:
        read_dicom(tmp_path)
    assert err.value.path == str(paths[0])
    paths[0].write_bytes(paths[1].read_bytes()[:700])  # cut inside the data set
    with pytest.raises(InputError) as err:
        read_dicom(tmp_path)
    assert err.value.path == str(paths[0])


def test_image_without_pixel_data_error(tmp_path: Path) -> None:
    def edit(k: int, ds: Dataset) -> None:
        if k == 1:
            del ds.PixelData

    paths = make_ct_series(tmp_path, _ramp(3, 4, 4), edit=edit)
    with pytest.raises(InputError, match="no pixel data") as err:
        read_dicom(tmp_path)
    assert err.value.path == str(paths[1])
    with pytest.raises(InputError, match="no pixel data"):
        read_dicom(paths[1])


def test_colour_image_error(tmp_path: Path) -> None:
    (path,) = make_ct_series(tmp_path, _ramp(1, 4, 4))
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = bytes(4 * 4 * 3)
    ds.save_as(path)
    with pytest.raises(InputError, match="colour image"):
        read_dicom(path)


# --------------------------------------------------------------------------------------------
# Multi-frame Enhanced CT


def test_enhanced_ct_multiframe(tmp_path: Path) -> None:
    hu = _ramp(5, 6, 7)
    path = make_enhanced_ct(
        tmp_path / "enh.dcm", hu, spacing=(2.0, 0.8, 0.6), origin=(-5, -6, 10),
        frame_order=[3, 0, 4, 1, 2], per_frame_rescale=True,
    )  # fmt: skip
    vol = _no_warnings_read(path)
    np.testing.assert_array_equal(vol.hu, hu)
    np.testing.assert_allclose(vol.spacing, (2.0, 0.8, 0.6))
    np.testing.assert_allclose(vol.origin, (-5, -6, 10))
    assert vol.meta["multiframe"] is True
    assert vol.dicom_headers is not None and len(vol.dicom_headers) == 5
    h = vol.dicom_headers[4]
    assert [float(v) for v in h.ImagePositionPatient] == pytest.approx([-5, -6, 18])
    assert "PerFrameFunctionalGroupsSequence" not in h and "PixelData" not in h
    # Same through the folder, shared rescale too.
    make_enhanced_ct(tmp_path / "b" / "enh2.dcm", hu)
    np.testing.assert_array_equal(_no_warnings_read(tmp_path / "b").hu, hu)


def test_enhanced_ct_without_positions_not_supported(tmp_path: Path) -> None:
    path = make_enhanced_ct(tmp_path / "enh.dcm", _ramp(3, 4, 4), positions=False)
    with pytest.raises(InputError, match="not supported yet") as err:
        read_dicom(path)
    assert err.value.path == str(path)


def test_several_multiframe_files_not_supported(tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.8.498.4444"
    make_enhanced_ct(tmp_path / "a.dcm", _ramp(3, 4, 4), series_uid=uid)
    make_enhanced_ct(tmp_path / "b.dcm", _ramp(3, 4, 4), series_uid=uid)
    with pytest.raises(InputError, match="not supported yet"):
        read_dicom(tmp_path)


# --------------------------------------------------------------------------------------------
# Compressed transfer syntaxes


def test_rle_compressed_series(tmp_path: Path) -> None:
    hu = _ramp(4, 10, 12) * 3
    paths = make_ct_series(tmp_path, hu, transfer_syntax=RLELossless, signed=True, intercept=0)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == RLELossless
    vol = _no_warnings_read(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.meta["transfer_syntax"] == RLELossless


@pytest.mark.skipif(
    not get_encoder(JPEG2000Lossless).is_available, reason="no JPEG 2000 encoder installed"
)
def test_jpeg2000_lossless_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    hu = rng.integers(-1024, 3000, size=(3, 32, 40)).astype(float)
    make_ct_series(tmp_path, hu, transfer_syntax=JPEG2000Lossless, bits_stored=12,
                   intercept=-1024)  # fmt: skip
    vol = _no_warnings_read(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.meta["transfer_syntax"] == JPEG2000Lossless


def _without_plugins(monkeypatch: pytest.MonkeyPatch, uid: str) -> None:
    """Pretend that no decoder plug-in for ``uid`` is installed."""
    decoder = get_decoder(uid)
    monkeypatch.setattr(decoder, "_available", {})


def test_missing_rle_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_ct_series(tmp_path, _ramp(2, 4, 4), transfer_syntax=RLELossless)
    _without_plugins(monkeypatch, RLELossless)
    with pytest.raises(MissingDecoderError) as err:
        read_dicom(tmp_path)
    msg = str(err.value)
    assert "RLE Lossless" in msg and RLELossless in msg and "pylibjpeg-rle" in msg
    assert err.value.path in {str(p) for p in paths}
    assert isinstance(err.value, InputError)


def test_missing_decoder_from_pydicom_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the up-front check passes but pydicom then finds no plug-in, the error is the same."""
    make_ct_series(tmp_path, _ramp(2, 4, 4), transfer_syntax=RLELossless)
    _without_plugins(monkeypatch, RLELossless)
    monkeypatch.setattr(dicom_read, "_check_decoder", lambda ts, path: None)
    with pytest.raises(MissingDecoderError, match="pylibjpeg-rle"):
        read_dicom(tmp_path)


@pytest.mark.parametrize(
    ("uid", "package"),
    [
        (JPEG2000Lossless, "pylibjpeg-openjpeg"),
        (JPEGLosslessSV1, "ctdid[jpeg]"),
        ("1.2.840.10008.1.2.4.80", "pylibjpeg-libjpeg"),
        (RLELossless, "pylibjpeg-rle"),
    ],
)
def test_missing_decoder_names_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uid: str, package: str
) -> None:
    (path,) = make_ct_series(tmp_path, _ramp(1, 4, 4))
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8 not really compressed \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(uid)
    ds.save_as(path)
    _without_plugins(monkeypatch, uid)
    with pytest.raises(MissingDecoderError) as err:
        read_dicom(path)
    assert package in str(err.value)
    assert uid in str(err.value)
    assert err.value.path == str(path)


def test_corrupt_compressed_data_is_input_error(tmp_path: Path) -> None:
    (path,) = make_ct_series(tmp_path, _ramp(1, 4, 4))
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\x00\x01garbage"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.save_as(path)
    with pytest.raises(InputError, match="cannot decode") as err:
        read_dicom(path)
    assert not isinstance(err.value, MissingDecoderError)


# --------------------------------------------------------------------------------------------
# Real data (../shared/data); skipped where absent.


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.shared
def test_shared_abdomen_jpeg2000() -> None:
    folder = _shared("abdomen_ct_totalseg")
    infos = list_dicom_series(folder)  # LICENSE skipped
    assert len(infos) == 1 and infos[0].n_files == 20
    vol = _no_warnings_read(folder)
    assert vol.shape == (20, 512, 512)
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert vol.meta["transfer_syntax"] == JPEG2000Lossless
    assert vol.meta["kernel"].startswith("Br38f")
    assert vol.meta["kvp"] == 120.0
    z = [vol.slice_position(k)[2] for k in range(20)]
    assert z == sorted(z) and vol.origin[2] == pytest.approx(-804.5)
    hu = vol.hu
    assert hu.min() >= -1024 and hu.max() < 3100
    air = hu[:, 40:70, 230:280]  # in front of the patient
    assert -1020 < float(air.mean()) < -980
    soft = hu[:, 230:270, 150:200]  # liver
    assert 0 < float(soft.mean()) < 150
    body = hu[(hu > -200) & (hu < 300)]
    assert 0 < float(np.median(body)) < 100


@pytest.mark.shared
def test_shared_catphan_cbct_skips_rtstruct() -> None:
    folder = _shared("catphan504_cbct")
    infos = list_dicom_series(folder)
    assert len(infos) == 1 and infos[0].n_files == 64 and infos[0].modality == "CT"
    vol = _no_warnings_read(folder)
    assert vol.shape == (64, 512, 512)
    assert vol.spacing == pytest.approx((2.5, 0.48828125, 0.48828125), rel=1e-6)
    assert vol.direction[0] == pytest.approx([0.99998629, 0, 0.00523596], abs=1e-6)
    assert vol.meta["kvp"] == 100.0
    k = 31  # the CTP404 sensitometry module
    hu = vol.hu
    assert float(hu[k, 128:138, 253:263].mean()) == pytest.approx(-1000, abs=30)  # air insert
    assert float(hu[k, 145:155, 311:321].mean()) == pytest.approx(990, abs=80)  # Teflon
    assert float(hu[k, 250:260, 371:381].mean()) == pytest.approx(340, abs=60)  # Delrin
    assert hu.min() >= -1000 and hu.max() < 3000


def test_copying_series_keeps_sorting(tmp_path: Path) -> None:
    """Copies of the same files in another folder layout read identically."""
    hu = _ramp(6, 5, 5)
    paths = make_ct_series(tmp_path / "a", hu, seed=11)
    for i, p in enumerate(reversed(paths)):
        sub = tmp_path / "b" / f"d{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sub / f"{i:03d}")
    np.testing.assert_array_equal(_no_warnings_read(tmp_path / "b").hu, hu)
