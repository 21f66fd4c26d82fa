"""Headerless raw reading (ctdid.io.raw)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctdid.errors import InputError
from ctdid.io.raw import parse_dtype, read_raw

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uint16", "<u2"),
        ("u2", "<u2"),
        ("<u2", "<u2"),
        (">u2", ">u2"),
        ("int16", "<i2"),
        (">i2", ">i2"),
        ("float32", "<f4"),
        ("f4", "<f4"),
        ("float64", "<f8"),
        ("double", "<f8"),
        ("uint8", "|u1"),
        ("int8", "|i1"),
        ("int32", "<i4"),
        ("uint32", "<u4"),
        ("  UINT16 ", "<u2"),
        ("short", "<i2"),
    ],
)
def test_parse_dtype(text: str, expected: str) -> None:
    assert parse_dtype(text) == np.dtype(expected)
    assert parse_dtype(text).str == np.dtype(expected).str


@pytest.mark.parametrize("text", ["uint12", "f1", "complex64", "", "u2x", "object", "<<u2"])
def test_parse_dtype_rejects(text: str) -> None:
    with pytest.raises(InputError, match="data type"):
        parse_dtype(text)


def test_uint16_with_offset_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 4096, size=(3, 8, 6), dtype=np.uint16)
    f = tmp_path / "a.raw"
    vals.astype("<u2").tofile(f)
    vol = read_raw(f, shape=(3, 8, 6), dtype="uint16", hu_offset=-1024.0, spacing=(3, 0.7, 0.6))
    assert vol.shape == (3, 8, 6)
    assert vol.hu.dtype == np.float32
    np.testing.assert_array_equal(vol.hu, vals.astype(np.float64) - 1024.0)
    assert vol.spacing == (3.0, 0.7, 0.6)
    assert vol.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(vol.direction, np.eye(3))
    assert vol.meta["format"] == "raw"
    assert vol.meta["path"] == str(f)


def test_z_inferred_from_whole_slices(tmp_path: Path) -> None:
    vals = np.arange(4 * 5 * 7, dtype="<i2").reshape(4, 5, 7) - 50
    f = tmp_path / "b.raw"
    vals.tofile(f)
    vol = read_raw(f, shape=(5, 7), dtype="<i2")
    assert vol.shape == (4, 5, 7)
    np.testing.assert_array_equal(vol.hu, vals)


def test_big_endian(tmp_path: Path) -> None:
    vals = np.array([[-1000, -1, 0, 1], [255, 256, 1000, 3000]], dtype=">i2")
    f = tmp_path / "be.raw"
    vals.tofile(f)
    vol = read_raw(f, shape=(2, 4), dtype="int16", byte_order="big")
    np.testing.assert_array_equal(vol.hu[0], vals.astype(np.float32))
    vol = read_raw(f, shape=(2, 4), dtype=">i2", byte_order="big")
    np.testing.assert_array_equal(vol.hu[0], vals.astype(np.float32))
    # Read as little-endian the values are different: the byte order does matter.
    little = read_raw(f, shape=(2, 4), dtype="int16")
    assert not np.array_equal(little.hu, vol.hu)


def test_byte_order_conflict(tmp_path: Path) -> None:
    f = tmp_path / "c.raw"
    np.zeros(4, "<u2").tofile(f)
    with pytest.raises(InputError, match=r"big-endian.*byte_order"):
        read_raw(f, shape=(2, 2), dtype=">u2")
    with pytest.raises(InputError, match="byte order must be"):
        read_raw(f, shape=(2, 2), dtype="u2", byte_order="middle")


def test_float32_exact_and_slope(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vals = (rng.normal(0, 300, size=(2, 5, 5))).astype("<f4")
    f = tmp_path / "f.raw"
    vals.tofile(f)
    vol = read_raw(f, shape=(2, 5, 5), dtype="float32")
    np.testing.assert_array_equal(vol.hu, vals)  # bit-exact
    vol2 = read_raw(f, shape=(2, 5, 5), dtype="float32", hu_slope=2.0, hu_offset=-5.0)
    np.testing.assert_allclose(vol2.hu, vals.astype(np.float64) * 2 - 5, rtol=1e-6)


def test_offset_bytes(tmp_path: Path) -> None:
    vals = np.arange(12, dtype="<u2")
    f = tmp_path / "h.raw"
    f.write_bytes(b"HEADER" + vals.tobytes())
    vol = read_raw(f, shape=(3, 4), dtype="uint16", offset_bytes=6)
    np.testing.assert_array_equal(vol.hu[0], vals.reshape(3, 4))
    with pytest.raises(InputError, match="offset_bytes=99 is outside"):
        read_raw(f, shape=(3, 4), dtype="uint16", offset_bytes=99)


def test_size_mismatch_names_numbers(tmp_path: Path) -> None:
    f = tmp_path / "short.raw"
    f.write_bytes(b"\0" * 94)
    with pytest.raises(InputError, match=r"expected 96 bytes.*found 94 bytes") as info:
        read_raw(f, shape=(2, 4, 6), dtype="uint16")
    assert str(f) in str(info.value)
    with pytest.raises(InputError, match=r"94 bytes.*not a whole number.*48 bytes each"):
        read_raw(f, shape=(4, 6), dtype="uint16")


def test_spacing_two_values_and_bad_spacing(tmp_path: Path) -> None:
    f = tmp_path / "s.raw"
    np.zeros(4, "<u2").tofile(f)
    assert read_raw(f, shape=(2, 2), dtype="u2", spacing=(0.5, 0.6)).spacing == (1.0, 0.5, 0.6)
    for bad in [(0, 1, 1), (1, -1, 1), (1, 2, 3, 4), (float("nan"), 1, 1), (1,)]:
        with pytest.raises(InputError, match="spacing"):
            read_raw(f, shape=(2, 2), dtype="u2", spacing=bad)


@pytest.mark.parametrize("shape", [(2,), (1, 2, 2, 1), (0, 2), (2, -2), ("a", 2)])
def test_bad_shape(tmp_path: Path, shape: tuple[object, ...]) -> None:
    f = tmp_path / "x.raw"
    np.zeros(4, "<u2").tofile(f)
    with pytest.raises(InputError, match="shape") as info:
        read_raw(f, shape=shape, dtype="uint16")  # type: ignore[arg-type]
    assert str(f) in str(info.value)


def test_missing_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_raw(tmp_path / "nope.raw", shape=(2, 2), dtype="u2")
    empty = tmp_path / "empty.raw"
    empty.touch()
    with pytest.raises(InputError, match="empty") as info:
        read_raw(empty, shape=(2, 2), dtype="u2")
    assert str(empty) in str(info.value)
    with pytest.raises(InputError, match="folder"):
        read_raw(tmp_path, shape=(2, 2), dtype="u2")


def test_bad_dtype_names_file(tmp_path: Path) -> None:
    f = tmp_path / "x.raw"
    np.zeros(4, "<u2").tofile(f)
    with pytest.raises(InputError, match="unknown data type") as info:
        read_raw(f, shape=(2, 2), dtype="uint12")
    assert str(f) in str(info.value)


def test_nan_becomes_input_error(tmp_path: Path) -> None:
    f = tmp_path / "nan.raw"
    np.array([0, np.nan, 1, 2], dtype="<f4").tofile(f)
    with pytest.raises(InputError, match="NaN") as info:
        read_raw(f, shape=(2, 2), dtype="float32")
    assert str(f) in str(info.value)


def test_zero_slope_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.raw"
    np.zeros(4, "<u2").tofile(f)
    with pytest.raises(InputError, match="slope"):
        read_raw(f, shape=(2, 2), dtype="u2", hu_slope=0.0)


# --- shared data -------------------------------------------------------------------------------

MAYO_DIRS = ["mayo_pair_L506", "mayo_fd_L067"]


def _mayo_files(folder: str) -> list[Path]:
    d = SHARED / folder
    return sorted(d.glob("*.raw")) if d.is_dir() else []


@pytest.mark.shared
@pytest.mark.parametrize("folder", MAYO_DIRS)
def test_mayo_slices_hu(folder: str) -> None:
    files = _mayo_files(folder)
    if not files:
        pytest.skip(f"../shared/data/{folder} is absent")
    for f in files:
        vol = read_raw(f, shape=(512, 512), dtype="uint16", hu_offset=-1024.0)
        assert vol.shape == (1, 512, 512)
        hu = vol.hu[0]
        assert hu.min() >= -1024.0
        air = float(np.median(hu[hu < -900]))
        body = float(np.median(hu[hu > -300]))
        assert -1024.0 <= air <= -960.0, (f.name, air)
        assert 0.0 <= body <= 100.0, (f.name, body)


@pytest.mark.shared
def test_mayo_l506_regions() -> None:
    fd = SHARED / "mayo_pair_L506" / "L506_FD_3mm_D45_slice32.raw"
    qd = SHARED / "mayo_pair_L506" / "L506_QD_3mm_D45_slice32.raw"
    if not (fd.exists() and qd.exists()):
        pytest.skip("../shared/data/mayo_pair_L506 is absent")
    full = read_raw(fd, shape=(512, 512), dtype="uint16", hu_offset=-1024.0).hu[0]
    quarter = read_raw(qd, shape=(512, 512), dtype="uint16", hu_offset=-1024.0).hu[0]
    air = full[15:45, 200:310]  # in front of the abdomen
    liver = full[170:210, 90:130]  # patient's right = image left
    assert -1010 < air.mean() < -960
    assert 60 < liver.mean() < 160  # contrast-enhanced liver
    # The quarter-dose image differs by noise only: std of the difference ~ 109 HU (README).
    diff = (quarter - full)[206:306, 206:306]
    assert 80 < diff.std() < 140
    assert abs(diff.mean()) < 20
