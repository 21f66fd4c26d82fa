"""MetaImage reading and writing (ctdid.io.metaimage)."""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from ctdid.errors import CTDIDWarning, InputError, OutputExistsError
from ctdid.io.metaimage import ELEMENT_TYPES, read_metaimage, write_metaimage
from ctdid.volume import CTVolume

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LCD = SHARED / "lcd_ct_cct189"


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def _volume(shape: tuple[int, int, int] = (3, 5, 4), seed: int = 0) -> CTVolume:
    rng = np.random.default_rng(seed)
    hu = rng.normal(0, 400, size=shape).astype(np.float32)
    direction = _rotation(0.3, -0.2, 0.1) * np.array([[1], [-1], [1]])  # with a flip
    return CTVolume(
        hu, spacing=(2.5, 0.703125, 0.6), origin=(-120.3, 45.7, -301.25), direction=direction
    )


def _write_mhd(
    folder: Path,
    fields: dict[str, str],
    data: bytes | None,
    *,
    name: str = "img.mhd",
    data_name: str = "img.raw",
) -> Path:
    """A hand-made header (and its data file) to test the reader on."""
    header = folder / name
    lines = [f"{k} = {v}" for k, v in fields.items()]
    if "ElementDataFile" not in fields:
        lines.append(f"ElementDataFile = {data_name}")
    header.write_text("\n".join(lines) + "\n")
    if data is not None:
        (folder / data_name).parent.mkdir(parents=True, exist_ok=True)
        (folder / data_name).write_bytes(data)
    return header


def _fields(dims: str = "4 3 2", etype: str = "MET_SHORT", **extra: str) -> dict[str, str]:
    ndims = len(dims.split())
    return {
        "ObjectType": "Image",
        "NDims": str(ndims),
        "DimSize": dims,
        "ElementType": etype,
        **extra,
    }


# --- writing and round trips --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mhd", ".mha"])
def test_round_trip_exact(tmp_path: Path, suffix: str) -> None:
    vol = _volume()
    out = write_metaimage(vol, tmp_path / f"v{suffix}")
    assert out == (tmp_path / f"v{suffix}").absolute()
    back = read_metaimage(out)
    np.testing.assert_array_equal(back.hu, vol.hu)  # bit-exact float32
    assert back.spacing == vol.spacing
    assert back.origin == vol.origin
    np.testing.assert_array_equal(back.direction, vol.direction)
    np.testing.assert_array_equal(back.affine, vol.affine)
    assert back.meta["format"] == "metaimage"
    assert back.meta["path"] == str(out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["v.mhd", "v.raw"] if suffix == ".mhd" else ["v.mha"])


def test_written_header_and_data(tmp_path: Path) -> None:
    vol = _volume((2, 3, 4))
    write_metaimage(vol, tmp_path / "v.mhd")
    text = (tmp_path / "v.mhd").read_text()
    assert "ElementType = MET_FLOAT" in text
    assert "BinaryDataByteOrderMSB = False" in text
    assert "DimSize = 4 3 2" in text
    assert "ElementSpacing = 0.6 0.703125 2.5" in text
    assert text.rstrip().endswith("ElementDataFile = v.raw")
    raw = np.fromfile(tmp_path / "v.raw", dtype="<f4")
    np.testing.assert_array_equal(raw, vol.hu.reshape(-1))


def test_refuses_to_overwrite_either_file(tmp_path: Path) -> None:
    vol = _volume()
    (tmp_path / "v.raw").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        write_metaimage(vol, tmp_path / "v.mhd")
    assert not (tmp_path / "v.mhd").exists()
    assert (tmp_path / "v.raw").read_bytes() == b"keep"
    (tmp_path / "v.raw").unlink()
    (tmp_path / "v.mhd").write_text("keep")
    with pytest.raises(OutputExistsError):
        write_metaimage(vol, tmp_path / "v.mhd")
    assert (tmp_path / "v.mhd").read_text() == "keep"
    assert not (tmp_path / "v.raw").exists()
    write_metaimage(vol, tmp_path / "v.mhd", overwrite=True)
    np.testing.assert_array_equal(read_metaimage(tmp_path / "v.mhd").hu, vol.hu)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mhd", "v.raw"]  # no temporaries


def test_write_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.mhd or \.mha"):
        write_metaimage(_volume(), tmp_path / "v.raw")


# --- reading hand-made files --------------------------------------------------------------------


@pytest.mark.parametrize("etype", sorted(ELEMENT_TYPES))
@pytest.mark.parametrize("msb", [False, True])
def test_element_types_and_byte_orders(tmp_path: Path, etype: str, msb: bool) -> None:
    code = ELEMENT_TYPES[etype]
    dt = np.dtype((">" if msb else "<") + code)
    info = np.iinfo(dt) if dt.kind in "iu" else None
    lo = max(info.min, -3000) if info else -3000
    hi = min(info.max, 3000) if info else 3000
    vals = np.linspace(lo, hi, 24).reshape(2, 3, 4)
    if dt.kind == "f":
        vals = vals + 0.25
    vals = vals.astype(dt)
    h = _write_mhd(tmp_path, _fields(etype=etype, ElementByteOrderMSB=str(msb)), vals.tobytes())
    vol = read_metaimage(h, hu_offset=-10.0, hu_slope=2.0)
    np.testing.assert_allclose(vol.hu, vals.astype(np.float64) * 2 - 10, rtol=1e-6)
    assert vol.meta["byte_order"] == ("big" if msb else "little")
    assert vol.meta["element_type"] == etype


def test_binary_data_byte_order_msb_key(tmp_path: Path) -> None:
    vals = np.array([[-1000, 0, 40, 1500]], dtype=">i2")
    h = _write_mhd(tmp_path, _fields("4 1", BinaryDataByteOrderMSB="True"), vals.tobytes())
    np.testing.assert_array_equal(read_metaimage(h).hu[0], vals.astype(np.float32))


def test_byte_orders_disagree(tmp_path: Path) -> None:
    h = _write_mhd(
        tmp_path,
        _fields("2 1", ElementByteOrderMSB="True", BinaryDataByteOrderMSB="False"),
        b"\0" * 4,
    )
    with pytest.raises(InputError, match="disagree"):
        read_metaimage(h)


def test_big_endian_float_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vals = rng.normal(0, 500, (2, 3, 4)).astype(">f4")
    h = _write_mhd(tmp_path, _fields(etype="MET_FLOAT", ElementByteOrderMSB="True"), vals.tobytes())
    np.testing.assert_array_equal(read_metaimage(h).hu, vals.astype(np.float32))


def test_geometry_is_lps_as_written(tmp_path: Path) -> None:
    rot = _rotation(0.2, 0.1, -0.3)
    vals = np.zeros((2, 3, 4), "<i2")
    fields = _fields(
        ElementSpacing="0.5 0.75 3",
        Offset="10 -20 30.5",
        TransformMatrix=" ".join(repr(float(v)) for v in rot.reshape(-1)),
    )
    vol = read_metaimage(_write_mhd(tmp_path, fields, vals.tobytes()))
    assert vol.spacing == (3.0, 0.75, 0.5)
    assert vol.origin == (10.0, -20.0, 30.5)
    np.testing.assert_allclose(vol.direction, rot)
    # Patient position of voxel index (x=i, y=j, z=k): Offset + sum(index * spacing * row).
    i, j, k = 3, 2, 1
    expected = np.array([10, -20, 30.5]) + i * 0.5 * rot[0] + j * 0.75 * rot[1] + k * 3 * rot[2]
    np.testing.assert_allclose((vol.affine @ [i, j, k, 1])[:3], expected)


def test_position_and_orientation_synonyms(tmp_path: Path) -> None:
    fields = _fields(Position="1 2 3", Orientation="0 1 0 -1 0 0 0 0 1", ElementSize="2 2 2")
    vol = read_metaimage(_write_mhd(tmp_path, fields, b"\0" * 48))
    assert vol.origin == (1.0, 2.0, 3.0)
    assert vol.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(vol.direction, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]])


def test_negative_spacing_is_a_flip(tmp_path: Path) -> None:
    fields = _fields(ElementSpacing="0.5 -0.75 3", Offset="1 2 3")
    vol = read_metaimage(_write_mhd(tmp_path, fields, b"\0" * 48))
    assert vol.spacing == (3.0, 0.75, 0.5)
    np.testing.assert_array_equal(vol.direction, np.diag([1.0, -1.0, 1.0]))
    np.testing.assert_allclose((vol.affine @ [0, 2, 0, 1])[:3], [1, 2 - 1.5, 3])
    with pytest.raises(InputError, match="spacing must be > 0"):
        read_metaimage(_write_mhd(tmp_path, _fields(ElementSpacing="0.5 0 3"), b"\0" * 48))


def test_two_d(tmp_path: Path) -> None:
    vals = np.arange(12, dtype="<u2").reshape(3, 4)
    fields = _fields("4 3", etype="MET_USHORT", ElementSpacing="0.5 0.6", Offset="-5 7")
    vol = read_metaimage(_write_mhd(tmp_path, fields, vals.tobytes()))
    assert vol.shape == (1, 3, 4)
    np.testing.assert_array_equal(vol.hu[0], vals)
    assert vol.spacing == (1.0, 0.6, 0.5)
    assert vol.origin == (-5.0, 7.0, 0.0)


def test_data_file_relative_to_header(tmp_path: Path) -> None:
    vals = np.arange(24, dtype="<i2")
    sub = tmp_path / "hdr"
    sub.mkdir()
    h = _write_mhd(sub, _fields(), vals.tobytes(), data_name="data/img.raw")
    np.testing.assert_array_equal(read_metaimage(h).hu.reshape(-1), vals)


def test_local_mha(tmp_path: Path) -> None:
    vals = (np.arange(24) - 5).astype(">i2")
    text = "\n".join(f"{k} = {v}" for k, v in _fields(ElementByteOrderMSB="True").items())
    h = tmp_path / "img.mha"
    h.write_bytes(text.encode() + b"\nElementDataFile = LOCAL\n" + vals.tobytes())
    np.testing.assert_array_equal(read_metaimage(h).hu.reshape(-1), vals)


@pytest.mark.parametrize("packer", ["zlib", "gzip"])
def test_compressed(tmp_path: Path, packer: str) -> None:
    vals = (np.arange(24, dtype="<i2") * 37 - 400).astype("<i2")
    packed = zlib.compress(vals.tobytes()) if packer == "zlib" else gzip.compress(vals.tobytes())
    fields = _fields(CompressedData="True", CompressedDataSize=str(len(packed)))
    h = _write_mhd(tmp_path, fields, packed, data_name="img.zraw")
    np.testing.assert_array_equal(read_metaimage(h).hu.reshape(-1), vals)


def test_compressed_local_mha(tmp_path: Path) -> None:
    vals = np.arange(24, dtype="<f4") / 3
    text = "\n".join(f"{k} = {v}" for k, v in _fields(etype="MET_FLOAT").items())
    h = tmp_path / "img.mha"
    h.write_bytes(
        text.encode()
        + b"\nCompressedData = True\nElementDataFile = LOCAL\n"
        + zlib.compress(vals.tobytes())
    )
    np.testing.assert_array_equal(read_metaimage(h).hu.reshape(-1), vals)


def test_corrupt_compressed(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields(CompressedData="True"), b"not zlib", data_name="i.zraw")
    with pytest.raises(InputError, match="zlib"):
        read_metaimage(h)


def test_compressed_truncated(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields(CompressedData="True"), zlib.compress(b"\0" * 40))
    with pytest.raises(InputError, match=r"expected 48 bytes.*found 40"):
        read_metaimage(h)


def test_file_pattern_one_slice_per_file(tmp_path: Path) -> None:
    vals = np.arange(3 * 2 * 4, dtype="<i2").reshape(3, 2, 4)
    for k in range(3):
        (tmp_path / f"s_{k + 1:03d}.raw").write_bytes(vals[k].tobytes())
    h = _write_mhd(tmp_path, _fields("4 2 3", ElementDataFile="s_%03d.raw 1 3 1"), None)
    np.testing.assert_array_equal(read_metaimage(h).hu, vals)


def test_file_list(tmp_path: Path) -> None:
    vals = np.arange(3 * 2 * 4, dtype="<u1").reshape(3, 2, 4)
    names = ["b.raw", "a.raw", "c.raw"]
    for k, n in enumerate(names):
        (tmp_path / n).write_bytes(vals[k].tobytes())
    h = tmp_path / "img.mhd"
    text = "\n".join(f"{k} = {v}" for k, v in _fields("4 2 3", etype="MET_UCHAR").items())
    h.write_text(text + "\nElementDataFile = LIST\n" + "\n".join(names) + "\n")
    np.testing.assert_array_equal(read_metaimage(h).hu, vals)


def test_header_size(tmp_path: Path) -> None:
    vals = np.arange(24, dtype="<i2")
    h = _write_mhd(tmp_path, _fields(HeaderSize="10"), b"x" * 10 + vals.tobytes())
    np.testing.assert_array_equal(read_metaimage(h).hu.reshape(-1), vals)
    h = _write_mhd(tmp_path, _fields(HeaderSize="-1"), b"y" * 7 + vals.tobytes())
    np.testing.assert_array_equal(read_metaimage(h).hu.reshape(-1), vals)


def test_dtype_override(tmp_path: Path) -> None:
    # The FDA LCD DL_denoised headers say MET_SHORT for unsigned big-endian data.
    vals = np.array([32768, 33768, 33800, 33700], dtype=">u2")
    h = _write_mhd(tmp_path, _fields("4 1", ElementByteOrderMSB="True"), vals.tobytes())
    as_header = read_metaimage(h).hu[0]
    assert as_header.min() < -30000  # read as signed, the values wrap
    for override in ("uint16", "MET_USHORT", "u2"):
        vol = read_metaimage(h, dtype=override, hu_offset=-33768.0)
        np.testing.assert_array_equal(vol.hu.reshape(-1), [-1000, 0, 32, -68])
        assert vol.meta["element_type"] == "MET_USHORT"
        assert vol.meta["byte_order"] == "big"
    with pytest.raises(InputError, match="dtype"):
        read_metaimage(h, dtype="float16")
    with pytest.raises(InputError, match="dtype"):
        read_metaimage(h, dtype="uint12")


def test_extra_bytes_warn(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields(), b"\0" * 50)
    with pytest.warns(CTDIDWarning, match="2 more than"):
        read_metaimage(h)


# --- bad inputs ---------------------------------------------------------------------------------


def test_truncated_raw(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields(), b"\0" * 40)  # 4*3*2 shorts = 48 bytes
    with pytest.raises(InputError, match=r"expected 48 bytes.*found 40") as info:
        read_metaimage(h)
    assert "img.raw" in str(info.value)


def test_truncated_pattern_file(tmp_path: Path) -> None:
    for k in range(2):
        (tmp_path / f"s_{k + 1}.raw").write_bytes(b"\0" * (16 if k == 0 else 10))
    h = _write_mhd(tmp_path, _fields("4 2 2", ElementDataFile="s_%d.raw 1 2 1"), None)
    with pytest.raises(InputError, match=r"s_2\.raw.*expected 16 bytes.*found 10"):
        read_metaimage(h)


def test_missing_data_file(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields(), None)
    with pytest.raises(InputError, match=r"img\.raw.*does not exist") as info:
        read_metaimage(h)
    assert str(h) in str(info.value)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"ObjectType": "Image", "DimSize": "2 2", "ElementType": "MET_SHORT"}, "NDims"),
        ({"NDims": "2", "ElementType": "MET_SHORT"}, "DimSize"),
        ({"NDims": "2", "DimSize": "2 2"}, "ElementType"),
        ({"NDims": "2", "DimSize": "2 2", "ElementType": "MET_FLOAT_ARRAY"}, "not supported"),
        ({"NDims": "2", "DimSize": "2 2 2", "ElementType": "MET_SHORT"}, "3 value"),
        ({"NDims": "2", "DimSize": "2 x", "ElementType": "MET_SHORT"}, "not a list of numbers"),
        ({"NDims": "2", "DimSize": "2 0", "ElementType": "MET_SHORT"}, "positive"),
        ({"NDims": "two", "DimSize": "2 2", "ElementType": "MET_SHORT"}, "NDims"),
        ({"NDims": "1", "DimSize": "4", "ElementType": "MET_SHORT"}, "2-D and 3-D"),
        ({"NDims": "4", "DimSize": "2 2 2 2", "ElementType": "MET_SHORT"}, "2-D and 3-D"),
        (
            {
                "NDims": "2",
                "DimSize": "2 2",
                "ElementType": "MET_SHORT",
                "ElementNumberOfChannels": "3",
            },
            "single-channel",
        ),
        (
            {
                "NDims": "2",
                "DimSize": "2 2",
                "ElementType": "MET_SHORT",
                "ElementByteOrderMSB": "maybe",
            },
            "True or False",
        ),
        (
            {"NDims": "2", "DimSize": "2 2", "ElementType": "MET_SHORT", "ElementSpacing": "1"},
            "ElementSpacing",
        ),
        (
            {
                "NDims": "2",
                "DimSize": "2 2",
                "ElementType": "MET_SHORT",
                "TransformMatrix": "0 0 0 1",
            },
            "zero row",
        ),
    ],
)
def test_bad_headers(tmp_path: Path, fields: dict[str, str], match: str) -> None:
    h = _write_mhd(tmp_path, fields, b"\0" * 64)
    with pytest.raises(InputError, match=match) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", CTDIDWarning)
        read_metaimage(h)
    assert str(h) in str(info.value)


def test_four_d_with_one_volume_accepted(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields("4 3 2 1"), b"\0" * 48)
    assert read_metaimage(h).shape == (2, 3, 4)


def test_not_a_header(tmp_path: Path) -> None:
    h = tmp_path / "junk.mhd"
    h.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a MetaImage header"):
        read_metaimage(h)
    h.write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(InputError, match="no ElementDataFile"):
        read_metaimage(h)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_metaimage(tmp_path / "none.mhd")
    (tmp_path / "e.mhd").touch()
    with pytest.raises(InputError, match="empty"):
        read_metaimage(tmp_path / "e.mhd")


def test_nan_voxels(tmp_path: Path) -> None:
    vals = np.array([0, np.inf, 1, 2], dtype="<f4")
    h = _write_mhd(tmp_path, _fields("2 2", etype="MET_FLOAT"), vals.tobytes())
    with pytest.raises(InputError, match="NaN or Inf") as info:
        read_metaimage(h)
    assert str(h) in str(info.value)


def test_ascii_data(tmp_path: Path) -> None:
    h = _write_mhd(tmp_path, _fields("2 2", BinaryData="False"), b"1 2\n-3 4\n")
    np.testing.assert_array_equal(read_metaimage(h).hu[0], [[1, 2], [-3, 4]])


# --- shared data: the FDA MITA-LCD phantom -------------------------------------------------


def _lcd_or_skip() -> Path:
    if not LCD.is_dir():
        pytest.skip("../shared/data/lcd_ct_cct189 is absent")
    return LCD


def _background_mask() -> np.ndarray:
    gt = read_metaimage(LCD / "fbp" / "ground_truth.mhd", hu_offset=-1000.0).hu[0]
    return gt == 0.0  # phantom background (0 HU), without the discs and the air outside


@pytest.mark.shared
@pytest.mark.parametrize("dose", ["dose_010", "dose_055", "dose_100"])
def test_lcd_fbp_and_dl_background_match(dose: str) -> None:
    lcd = _lcd_or_skip()
    mask = _background_mask()
    assert 30000 < mask.sum() < 50000
    means = {}
    for kind in ("fbp", "DL_denoised"):
        for signal in ("signal_absent", "signal_present"):
            h = lcd / kind / dose / signal / f"{signal}.mhd"
            if kind == "fbp":
                vol = read_metaimage(h, hu_offset=-1000.0)
            else:
                vol = read_metaimage(h, dtype="uint16", hu_offset=-33768.0)
            assert vol.shape == (10, 256, 256)
            assert vol.spacing == (1.0, 1.0, 1.0)
            bg = vol.hu[:, mask]
            means[kind, signal] = float(bg.mean())
            assert abs(bg.mean()) < 10.0, (kind, dose, signal, bg.mean())
            assert float(np.median(vol.hu[:, ~mask & (vol.hu[0] < -500)])) < -900  # air
    for signal in ("signal_absent", "signal_present"):
        assert abs(means["fbp", signal] - means["DL_denoised", signal]) < 3.0, means


@pytest.mark.shared
def test_lcd_dl_signed_header_equivalent() -> None:
    lcd = _lcd_or_skip()
    h = lcd / "DL_denoised" / "dose_100" / "signal_absent" / "signal_absent.mhd"
    unsigned = read_metaimage(h, dtype="uint16", hu_offset=-33768.0)
    signed = read_metaimage(h, hu_offset=65536.0 - 33768.0)  # as the header says: MET_SHORT
    np.testing.assert_array_equal(unsigned.hu, signed.hu)


@pytest.mark.shared
def test_lcd_ground_truth_512_loads() -> None:
    lcd = _lcd_or_skip()
    vol = read_metaimage(lcd / "ground_truth_512" / "ground_truth.mhd")
    assert vol.shape == (1, 512, 512)
    assert vol.meta["element_type"] == "MET_DOUBLE"
    assert vol.hu.min() == 1000.0
    assert vol.hu.max() == 1014.0  # the 14 HU disc above a 1000 background
    small = read_metaimage(lcd / "fbp" / "ground_truth.mhd").hu
    values, counts = np.unique(small, return_counts=True)
    assert values[counts.argmax()] == 1000.0  # the background
    assert small.min() == 0.0  # air outside the phantom
    assert small.max() == 1014.0
