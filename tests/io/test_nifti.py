"""NIfTI reading and writing (ctdid.io.nifti): values, RAS <-> LPS geometry, axis order."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctdid.errors import InputError, OutputExistsError
from ctdid.io.nifti import read_nifti, write_nifti
from ctdid.volume import CTVolume

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def _volume(shape: tuple[int, int, int] = (4, 6, 5)) -> CTVolume:
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 400, size=shape).astype(np.float32)
    direction = _rotation(0.25, -0.15, 0.05) * np.array([[1], [1], [-1]])  # oblique + flipped z
    return CTVolume(
        hu, spacing=(2.5, 0.703125, 0.65), origin=(-120.3, 45.7, -101.25), direction=direction
    )


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    vol = _volume()
    out = write_nifti(vol, tmp_path / name)
    assert out == (tmp_path / name).absolute()
    back = read_nifti(out)
    np.testing.assert_array_equal(back.hu, vol.hu)  # bit-exact
    np.testing.assert_allclose(back.affine, vol.affine, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert back.meta == {"format": "nifti", "path": str(out), "dtype": "<f4"}
    assert [p.name for p in tmp_path.iterdir()] == [name]
    if name.endswith(".gz"):
        assert out.read_bytes()[:2] == b"\x1f\x8b"


def test_written_header(tmp_path: Path) -> None:
    vol = _volume()
    write_nifti(vol, tmp_path / "v.nii")
    img = nib.load(tmp_path / "v.nii")
    hdr = img.header
    assert hdr.get_data_dtype() == np.dtype("<f4")
    assert int(hdr["sform_code"]) == 1
    assert int(hdr["qform_code"]) == 1
    assert hdr.get_xyzt_units()[0] == "mm"
    assert img.shape == (5, 6, 4)  # (i, j, k) = (x, y, z)
    np.testing.assert_allclose(img.get_sform(), FLIP @ vol.affine, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), FLIP @ vol.affine, rtol=1e-6, atol=1e-4)
    # Voxel (x=i, y=j, z=k) holds hu[k, j, i] and sits at the same place: RAS = (-x, -y, z) LPS.
    data = np.asarray(img.dataobj)
    i, j, k = 4, 2, 3
    assert data[i, j, k] == vol.hu[k, j, i]
    lps = (vol.affine @ [i, j, k, 1])[:3]
    ras = (img.affine @ [i, j, k, 1])[:3]
    np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-4)


def test_external_oblique_flipped_affine_with_scaling(tmp_path: Path) -> None:
    # A file made by another tool: int16 with scl_slope/scl_inter, oblique RAS affine with a
    # left-right flip, stored (i, j, k).
    rng = np.random.default_rng(5)
    data = rng.integers(-1000, 3000, size=(7, 5, 3)).astype(np.int16)
    rot = _rotation(-0.4, 0.2, 0.3) @ np.diag([-1.0, 1.0, 1.0])
    ras = np.eye(4)
    ras[:3, :3] = rot * [0.8, 0.9, 3.0]
    ras[:3, 3] = [95.5, -110.25, 33.0]
    img = nib.Nifti1Image(data, ras)
    img.header.set_slope_inter(2.0, -1024.0)
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp_path / "ext.nii.gz")

    vol = read_nifti(tmp_path / "ext.nii.gz")
    assert vol.shape == (3, 5, 7)
    np.testing.assert_array_equal(vol.hu, data.transpose(2, 1, 0).astype(np.float64) * 2 - 1024)
    np.testing.assert_allclose(vol.spacing, [3.0, 0.9, 0.8], rtol=1e-6)
    for i, j, k in [(0, 0, 0), (6, 4, 2), (3, 1, 2), (1, 4, 0)]:
        p_ras = (ras @ [i, j, k, 1])[:3]
        p_lps = (vol.affine @ [i, j, k, 1])[:3]
        np.testing.assert_allclose(p_lps, [-p_ras[0], -p_ras[1], p_ras[2]], atol=1e-4)
        assert vol.hu[k, j, i] == data[i, j, k] * 2.0 - 1024.0
    # and back out: the same patient positions, now from ctdid's file
    write_nifti(vol, tmp_path / "again.nii")
    again = nib.load(tmp_path / "again.nii")
    np.testing.assert_allclose(again.affine, ras, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(again.dataobj), data * 2.0 - 1024.0)


def test_qform_only_and_no_affine(tmp_path: Path) -> None:
    data = np.zeros((3, 4, 2), np.float32)
    ras = np.diag([-0.5, 0.5, 2.0, 1.0])
    ras[:3, 3] = [10, 20, 30]
    img = nib.Nifti1Image(data, None)
    img.set_qform(ras, code=1)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "q.nii")
    vol = read_nifti(tmp_path / "q.nii")
    np.testing.assert_allclose(vol.origin, [-10, -20, 30])
    np.testing.assert_allclose(vol.direction, np.diag([1.0, -1.0, 1.0]), atol=1e-7)
    np.testing.assert_allclose(vol.spacing, [2.0, 0.5, 0.5])


def test_sheared_affine_keeps_sform_and_drops_qform(tmp_path: Path) -> None:
    direction = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, np.sin(0.3), np.cos(0.3)]])  # tilt
    vol = CTVolume(np.ones((2, 3, 4), np.float32), spacing=(3, 1, 1), direction=direction)
    write_nifti(vol, tmp_path / "t.nii")
    img = nib.load(tmp_path / "t.nii")
    assert int(img.header["qform_code"]) == 0
    assert int(img.header["sform_code"]) == 1
    back = read_nifti(tmp_path / "t.nii")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)


def test_units_metres(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.diag([0.001, 0.001, 0.002, 1]))
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "m.nii")
    np.testing.assert_allclose(read_nifti(tmp_path / "m.nii").spacing, [2.0, 1.0, 1.0])


def test_two_d_and_single_volume_4d(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "2d.nii")
    vol = read_nifti(tmp_path / "2d.nii")
    assert vol.shape == (1, 3, 4)
    np.testing.assert_array_equal(vol.hu[0], data.T)
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 1), np.float32), np.eye(4)), tmp_path / "4d.nii")
    assert read_nifti(tmp_path / "4d.nii").shape == (2, 3, 4)


def test_bad_inputs(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(InputError, match=r"shape \(4, 3, 2, 2\)") as info:
        read_nifti(tmp_path / "4d.nii")
    assert "4d.nii" in str(info.value)

    data = np.zeros((3, 3, 2), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(InputError, match="NaN") as info:
        read_nifti(tmp_path / "nan.nii")
    assert "nan.nii" in str(info.value)

    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.complex64), np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(InputError, match="complex64"):
        read_nifti(tmp_path / "c.nii")

    (tmp_path / "junk.nii").write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(InputError, match="not a readable NIfTI") as info:
        read_nifti(tmp_path / "junk.nii")
    assert "junk.nii" in str(info.value)

    with pytest.raises(InputError, match="does not exist"):
        read_nifti(tmp_path / "absent.nii.gz")
    (tmp_path / "empty.nii").touch()
    with pytest.raises(InputError, match="empty"):
        read_nifti(tmp_path / "empty.nii")

    bad = np.eye(4)
    bad[:3, 2] = 0  # degenerate slice axis
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), None)
    img.set_sform(bad, code=1)
    nib.save(img, tmp_path / "deg.nii")
    with pytest.raises(InputError, match="degenerate"):
        read_nifti(tmp_path / "deg.nii")


def test_overwrite_and_suffix(tmp_path: Path) -> None:
    vol = _volume()
    out = tmp_path / "v.nii.gz"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        write_nifti(vol, out)
    assert out.read_bytes() == b"keep"
    write_nifti(vol, out, overwrite=True)
    np.testing.assert_array_equal(read_nifti(out).hu, vol.hu)
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]
    with pytest.raises(ValueError, match=r"\.nii"):
        write_nifti(vol, tmp_path / "v.img")
