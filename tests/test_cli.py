"""The command line: help, info, convert, and one clear line for every kind of bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ctdid", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def ct_small() -> pydicom.Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return pydicom.dcmread(path)


def test_help_lists_commands() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("info", "convert", "demo"):
        assert cmd in res.stdout


def test_version() -> None:
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("ctdid ")


def test_info_on_dicom_file_reports_shape_and_hu(tmp_path: Path) -> None:
    path = get_testdata_file("CT_small.dcm")
    res = run_cli("info", path, "--json")
    assert res.returncode == 0, res.stderr
    desc = json.loads(res.stdout)
    ds = ct_small()
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert desc["shape_zyx"] == [1, 128, 128]
    assert desc["hu_min"] == pytest.approx(float(hu.min()))
    assert desc["hu_max"] == pytest.approx(float(hu.max()))
    assert desc["spacing_mm_zyx"][1:] == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_convert_npy_roundtrip_and_no_overwrite(tmp_path: Path) -> None:
    hu = np.random.default_rng(0).normal(0, 50, size=(3, 16, 20)).astype(np.float32)
    src = tmp_path / "in.npy"
    np.save(src, hu)
    (tmp_path / "in.npy.json").write_text(json.dumps({"spacing": [2.0, 0.5, 0.5]}))
    before = src.read_bytes()
    out = tmp_path / "out.nii.gz"
    res = run_cli("convert", src, out)
    assert res.returncode == 0, res.stderr
    assert src.read_bytes() == before  # input untouched
    back = tmp_path / "back.npy"
    res = run_cli("convert", out, back)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.load(back), hu)
    stamp = out.stat().st_mtime_ns
    res = run_cli("convert", src, out)
    assert res.returncode == 2
    assert "--overwrite" in res.stderr
    assert out.stat().st_mtime_ns == stamp
    res = run_cli("convert", src, out, "--overwrite")
    assert res.returncode == 0, res.stderr


# --- bad input: each must give exit status 2 and one line naming the problem, no traceback ------


def _nan_npy(d: Path) -> list[str]:
    a = np.zeros((4, 4), np.float32)
    a[1, 2] = np.nan
    np.save(d / "nan.npy", a)
    return ["info", str(d / "nan.npy")]


def _inf_npy(d: Path) -> list[str]:
    a = np.zeros((4, 4), np.float32)
    a[0, 0] = np.inf
    np.save(d / "inf.npy", a)
    return ["info", str(d / "inf.npy")]


def _4d_npy(d: Path) -> list[str]:
    np.save(d / "four.npy", np.zeros((2, 2, 4, 4), np.float32))
    return ["info", str(d / "four.npy")]


def _object_npy(d: Path) -> list[str]:
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return ["info", str(d / "obj.npy")]


def _npz_several(d: Path) -> list[str]:
    np.savez(d / "two.npz", a=np.zeros((4, 4)), b=np.ones((4, 4)))
    return ["info", str(d / "two.npz")]


def _bad_sidecar(d: Path) -> list[str]:
    np.save(d / "side.npy", np.zeros((4, 4), np.float32))
    (d / "side.npy.json").write_text("{not json")
    return ["info", str(d / "side.npy")]


def _empty_dcm(d: Path) -> list[str]:
    (d / "empty.dcm").write_bytes(b"")
    return ["info", str(d / "empty.dcm")]


def _truncated_dcm(d: Path) -> list[str]:
    path = d / "trunc.dcm"
    ct_small().save_as(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20000])
    return ["info", str(path)]


def _dcm_no_pixels(d: Path) -> list[str]:
    ds = ct_small()
    del ds.PixelData
    path = d / "nopix.dcm"
    ds.save_as(path)
    return ["info", str(path)]


def _text_as_dcm(d: Path) -> list[str]:
    (d / "notes.dcm").write_text("this is not DICOM\n" * 20)
    return ["info", str(d / "notes.dcm")]


def _empty_folder(d: Path) -> list[str]:
    (d / "emptydir").mkdir()
    return ["info", str(d / "emptydir")]


def _folder_without_dicom(d: Path) -> list[str]:
    (d / "docs").mkdir()
    (d / "docs" / "README.txt").write_text("hello")
    return ["info", str(d / "docs")]


def _mixed_shapes_series(d: Path) -> list[str]:
    folder = d / "mixed"
    folder.mkdir()
    ds = ct_small()
    ds.save_as(folder / "a.dcm")
    ds2 = ct_small()
    ds2.SOPInstanceUID = pydicom.uid.generate_uid()
    ds2.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
        float(ds.ImagePositionPatient[2]) + 5.0
    ]
    arr = ds2.pixel_array[:64, :]
    ds2.Rows = 64
    ds2.PixelData = np.ascontiguousarray(arr).tobytes()
    ds2.save_as(folder / "b.dcm")
    return ["info", str(folder)]


def _text_as_nifti(d: Path) -> list[str]:
    (d / "x.nii").write_text("nope" * 100)
    return ["info", str(d / "x.nii")]


def _truncated_niigz(d: Path) -> list[str]:
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((32, 32, 4), np.float32), np.eye(4))
    nib.save(img, d / "t.nii.gz")
    data = gzip.decompress((d / "t.nii.gz").read_bytes())
    (d / "t.nii.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    return ["info", str(d / "t.nii.gz")]


def _raw_wrong_size(d: Path) -> list[str]:
    (d / "slice.raw").write_bytes(b"\0" * 1000)
    return ["info", str(d / "slice.raw"), "--shape", "512,512", "--dtype", "uint16"]


def _raw_without_dtype(d: Path) -> list[str]:
    (d / "s.raw").write_bytes(b"\0" * 512)
    return ["info", str(d / "s.raw")]


def _raw_bad_dtype(d: Path) -> list[str]:
    (d / "s2.raw").write_bytes(b"\0" * 512)
    return ["info", str(d / "s2.raw"), "--shape", "16,16", "--dtype", "complex-thing"]


def _mhd_missing_raw(d: Path) -> list[str]:
    (d / "m.mhd").write_text(
        "ObjectType = Image\nNDims = 2\nDimSize = 8 8\nElementType = MET_SHORT\n"
        "ElementDataFile = m.raw\n"
    )
    return ["info", str(d / "m.mhd")]


def _mhd_truncated(d: Path) -> list[str]:
    (d / "t.mhd").write_text(
        "ObjectType = Image\nNDims = 2\nDimSize = 8 8\nElementType = MET_SHORT\n"
        "ElementDataFile = t.raw\n"
    )
    (d / "t.raw").write_bytes(b"\0" * 100)
    return ["info", str(d / "t.mhd")]


def _unknown_suffix(d: Path) -> list[str]:
    (d / "scan.xyz").write_bytes(b"\1" * 64)
    return ["info", str(d / "scan.xyz")]


def _png_input(d: Path) -> list[str]:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "view.png")
    return ["info", str(d / "view.png")]


def _missing_path(d: Path) -> list[str]:
    return ["info", str(d / "does-not-exist.dcm")]


def _bad_shape_text(d: Path) -> list[str]:
    (d / "s3.raw").write_bytes(b"\0" * 512)
    return ["info", str(d / "s3.raw"), "--shape", "16,abc", "--dtype", "uint16"]


def _bad_window(d: Path) -> list[str]:
    np.save(d / "w.npy", np.zeros((4, 4), np.float32))
    return ["convert", str(d / "w.npy"), str(d / "w.png"), "--window", "240,-160"]


def _unknown_output_suffix(d: Path) -> list[str]:
    np.save(d / "u.npy", np.zeros((4, 4), np.float32))
    return ["convert", str(d / "u.npy"), str(d / "u.weird")]


BAD_INPUTS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing path": (_missing_path, "no such file"),
    "NaN voxels": (_nan_npy, "NaN"),
    "Inf voxels": (_inf_npy, "Inf"),
    "4-D array": (_4d_npy, "3-D"),
    "pickled object array": (_object_npy, "obj.npy"),
    "npz with several arrays": (_npz_several, "--key"),
    "broken JSON sidecar": (_bad_sidecar, "side.npy"),
    "empty .dcm file": (_empty_dcm, "empty.dcm"),
    "truncated DICOM": (_truncated_dcm, "trunc.dcm"),
    "DICOM without pixel data": (_dcm_no_pixels, "pixel"),
    "text file named .dcm": (_text_as_dcm, "notes.dcm"),
    "empty folder": (_empty_folder, "emptydir"),
    "folder with no DICOM": (_folder_without_dicom, "docs"),
    "series with mismatched slice shapes": (_mixed_shapes_series, "mixed"),
    "text file named .nii": (_text_as_nifti, "x.nii"),
    "truncated .nii.gz": (_truncated_niigz, "t.nii.gz"),
    "raw of the wrong size": (_raw_wrong_size, "slice.raw"),
    "raw without --dtype": (_raw_without_dtype, "--dtype"),
    "unknown --dtype": (_raw_bad_dtype, "complex-thing"),
    "bad --shape text": (_bad_shape_text, "--shape"),
    "MetaImage with its data file missing": (_mhd_missing_raw, "m.raw"),
    "MetaImage with truncated data": (_mhd_truncated, "truncated"),
    "unknown suffix": (_unknown_suffix, "--format"),
    "PNG as input": (_png_input, "PNG"),
    "window low above high": (_bad_window, "window"),
    "unknown output suffix": (_unknown_output_suffix, "u.weird"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(tmp_path: Path, kind: str) -> None:
    make, expected = BAD_INPUTS[kind]
    args = make(tmp_path)
    res = run_cli(*args)
    assert res.returncode == 2, (kind, res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("ctdid: error:")]
    assert len(errors) == 1, res.stderr
    assert expected.lower() in errors[0].lower(), errors[0]


def test_debug_shows_traceback(tmp_path: Path) -> None:
    res = run_cli("--debug", "info", tmp_path / "nothing.npy")
    assert res.returncode != 0
    assert "Traceback" in res.stderr
