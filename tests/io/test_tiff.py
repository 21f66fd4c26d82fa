"""Float32 multi-page TIFF (ctdid.io.tiff)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from ctdid.errors import InputError, OutputExistsError
from ctdid.io.tiff import read_tiff, write_tiff
from ctdid.volume import CTVolume


def _volume(n: int = 4) -> CTVolume:
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 500, size=(n, 6, 5)).astype(np.float32)
    c, s = np.cos(0.2), np.sin(0.2)
    direction = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return CTVolume(
        hu, spacing=(1.25, 0.703125, 0.65), origin=(-12.5, 300.1, -7.0), direction=direction
    )


@pytest.mark.parametrize("n", [1, 4])
def test_round_trip_exact(tmp_path: Path, n: int) -> None:
    vol = _volume(n)
    out = write_tiff(vol, tmp_path / "v.tif")
    assert out == (tmp_path / "v.tif").absolute()
    back = read_tiff(out)
    assert back.shape == vol.shape
    np.testing.assert_array_equal(back.hu, vol.hu)  # bit-exact
    assert back.spacing == vol.spacing
    assert back.origin == vol.origin
    np.testing.assert_array_equal(back.direction, vol.direction)
    assert back.meta == {"format": "tiff", "path": str(out), "dtype": "<f4"}
    assert [p.name for p in tmp_path.iterdir()] == ["v.tif"]


def test_imagej_metadata_for_other_tools(tmp_path: Path) -> None:
    vol = _volume(3)
    write_tiff(vol, tmp_path / "v.tif")
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert tif.is_imagej
        assert len(tif.pages) == 3
        assert tif.pages[0].dtype == np.float32
        ij = tif.imagej_metadata
        assert ij is not None
        assert ij["spacing"] == pytest.approx(1.25)
        assert ij["unit"] == "mm"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.65, rel=1e-6)  # pixels per mm
        num, den = tif.pages[0].tags["YResolution"].value
        assert den / num == pytest.approx(0.703125, rel=1e-6)


def test_imagej_file_without_ctdid_geometry(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"spacing": 2.0, "unit": "mm", "axes": "ZYX"},
    )
    vol = read_tiff(tmp_path / "ij.tif")
    np.testing.assert_array_equal(vol.hu, data)
    np.testing.assert_allclose(vol.spacing, [2.0, 0.25, 0.5])
    tifffile.imwrite(
        tmp_path / "um.tif",
        data,
        imagej=True,
        resolution=(1 / 500, 1 / 500),
        metadata={"spacing": 1000.0, "unit": "micron", "axes": "ZYX"},
    )
    np.testing.assert_allclose(read_tiff(tmp_path / "um.tif").spacing, [1.0, 0.5, 0.5])


def test_plain_uint16_tiff_with_offset(tmp_path: Path) -> None:
    data = np.array([[[0, 1024, 4095], [1000, 1100, 2000]]] * 2, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "u.tif", data, photometric="minisblack")
    vol = read_tiff(tmp_path / "u.tif", hu_offset=-1024.0)
    np.testing.assert_array_equal(vol.hu, data.astype(np.float64) - 1024)
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.meta["dtype"] == "<u2"


def test_plain_tiff_resolution_centimetre(tmp_path: Path) -> None:
    data = np.zeros((3, 4), np.int16)
    tifffile.imwrite(
        tmp_path / "cm.tif", data, resolution=(20.0, 25.0), resolutionunit="CENTIMETER"
    )
    np.testing.assert_allclose(read_tiff(tmp_path / "cm.tif").spacing, [1.0, 0.4, 0.5])


def test_bad_inputs(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="colour") as info:
        read_tiff(tmp_path / "rgb.tif")
    assert "rgb.tif" in str(info.value)

    data = np.zeros((2, 2), np.float32)
    data[0, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", data)
    with pytest.raises(InputError, match="NaN") as info:
        read_tiff(tmp_path / "nan.tif")
    assert "nan.tif" in str(info.value)

    (tmp_path / "junk.tif").write_bytes(b"II*\0 this is not really a tiff" * 3)
    with pytest.raises(InputError, match="TIFF") as info:
        read_tiff(tmp_path / "junk.tif")
    assert "junk.tif" in str(info.value)

    tifffile.imwrite(tmp_path / "c.tif", np.zeros((2, 2), np.complex64))
    with pytest.raises(InputError, match="complex64"):
        read_tiff(tmp_path / "c.tif")

    with pytest.raises(InputError, match="does not exist"):
        read_tiff(tmp_path / "absent.tif")
    (tmp_path / "e.tif").touch()
    with pytest.raises(InputError, match="empty"):
        read_tiff(tmp_path / "e.tif")


def test_overwrite(tmp_path: Path) -> None:
    vol = _volume(2)
    (tmp_path / "v.tiff").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        write_tiff(vol, tmp_path / "v.tiff")
    assert (tmp_path / "v.tiff").read_bytes() == b"keep"
    write_tiff(vol, tmp_path / "v.tiff", overwrite=True)
    np.testing.assert_array_equal(read_tiff(tmp_path / "v.tiff").hu, vol.hu)
    assert [p.name for p in tmp_path.iterdir()] == ["v.tiff"]
