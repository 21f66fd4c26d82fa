"""NumPy .npy/.npz reading and writing with the JSON sidecar (ctdid.io.numpy_io)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from ctdid.errors import InputError, OutputExistsError
from ctdid.io.numpy_io import read_numpy, sidecar_path, write_numpy
from ctdid.volume import CTVolume


def _volume() -> CTVolume:
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 400, size=(3, 5, 4)).astype(np.float32)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, -1.0]])
    return CTVolume(hu, spacing=(1.25, 0.7, 0.7), origin=(-100.1, 22.2, 333.3), direction=direction)


def test_round_trip_exact(tmp_path: Path) -> None:
    vol = _volume()
    out = write_numpy(vol, tmp_path / "v.npy")
    assert out == (tmp_path / "v.npy").absolute()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.npy"]
    back = read_numpy(out)
    np.testing.assert_array_equal(back.hu, vol.hu)
    assert back.spacing == vol.spacing
    assert back.origin == vol.origin
    np.testing.assert_array_equal(back.direction, vol.direction)
    assert back.meta["format"] == "numpy"
    assert back.meta["path"] == str(out)
    assert back.meta["sidecar"] == str(tmp_path / "v.json")
    arr = np.load(out, allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (3, 5, 4)
    side = json.loads((tmp_path / "v.json").read_text())
    assert side["spacing"] == [1.25, 0.7, 0.7]
    assert side["hu_offset"] == 0 and side["hu_slope"] == 1


def test_no_sidecar_defaults(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 10
    np.save(tmp_path / "a.npy", arr)
    vol = read_numpy(tmp_path / "a.npy")
    np.testing.assert_array_equal(vol.hu, arr)
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.origin == (0.0, 0.0, 0.0)
    assert "sidecar" not in vol.meta


def test_two_d_array_is_one_slice(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", arr)
    vol = read_numpy(tmp_path / "a.npy")
    assert vol.shape == (1, 3, 4)


def test_integer_array_with_offset(tmp_path: Path) -> None:
    arr = np.array([[[0, 1024, 2048], [1000, 1100, 4095]]], dtype=np.uint16)
    np.save(tmp_path / "i.npy", arr)
    (tmp_path / "i.json").write_text(json.dumps({"hu_offset": -1024, "spacing": [3, 0.6, 0.5]}))
    vol = read_numpy(tmp_path / "i.npy")
    np.testing.assert_array_equal(vol.hu, arr.astype(np.float64) - 1024)
    assert vol.spacing == (3.0, 0.6, 0.5)
    (tmp_path / "i.json").write_text(json.dumps({"hu_offset": -1000, "hu_slope": 0.5}))
    np.testing.assert_array_equal(
        read_numpy(tmp_path / "i.npy").hu, arr.astype(np.float64) * 0.5 - 1000
    )


def test_sidecar_full_name_fallback(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 2), np.int16))
    (tmp_path / "a.npy.json").write_text(json.dumps({"origin": [1, 2, 3]}))
    assert read_numpy(tmp_path / "a.npy").origin == (1.0, 2.0, 3.0)


def test_npz_keys(tmp_path: Path) -> None:
    a = np.ones((2, 3), np.float32)
    b = np.full((2, 2, 2), 5, np.int16)
    np.savez(tmp_path / "one.npz", image=a)
    np.testing.assert_array_equal(read_numpy(tmp_path / "one.npz").hu[0], a)
    np.savez_compressed(tmp_path / "two.npz", image=a, label=b)
    with pytest.raises(InputError, match=r"2 arrays.*key=.*image, label") as info:
        read_numpy(tmp_path / "two.npz")
    assert "two.npz" in str(info.value)
    vol = read_numpy(tmp_path / "two.npz", key="label")
    np.testing.assert_array_equal(vol.hu, b)
    assert vol.meta["key"] == "label"
    with pytest.raises(InputError, match=r"no array 'nope' \(keys: image, label\)"):
        read_numpy(tmp_path / "two.npz", key="nope")
    np.save(tmp_path / "x.npy", a)
    with pytest.raises(InputError, match="one array"):
        read_numpy(tmp_path / "x.npy", key="image")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(InputError, match="no arrays"):
        read_numpy(tmp_path / "empty.npz")


def test_npz_sidecar(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", hu=np.zeros((2, 2, 2), np.float32))
    (tmp_path / "s.json").write_text(json.dumps({"spacing": [2, 1, 1]}))
    assert read_numpy(tmp_path / "s.npz").spacing == (2.0, 1.0, 1.0)


def test_object_arrays_and_pickles_refused(tmp_path: Path) -> None:
    obj = np.array([np.zeros(3), np.zeros(2)], dtype=object)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(InputError, match="pickle") as info:
        read_numpy(tmp_path / "obj.npy")
    assert "obj.npy" in str(info.value)
    np.savez(tmp_path / "obj.npz", a=obj)
    with pytest.raises(InputError, match="object array"):
        read_numpy(tmp_path / "obj.npz")
    with open(tmp_path / "p.npy", "wb") as f:
        pickle.dump({"hu": [1, 2, 3]}, f)
    with pytest.raises(InputError, match=r"pickle|NumPy") as info:
        read_numpy(tmp_path / "p.npy")
    assert "p.npy" in str(info.value)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((1, 2, 3, 4), np.float32), r"shape \(1, 2, 3, 4\)"),
        (np.zeros(5, np.float32), r"shape \(5,\)"),
        (np.zeros((0, 4), np.float32), "empty"),
        (np.zeros((2, 2), np.complex64), "complex64"),
        (np.array([["a", "b"]]), "U1"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    ],
)
def test_bad_arrays(tmp_path: Path, arr: np.ndarray, match: str) -> None:
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(InputError, match=match) as info:
        read_numpy(tmp_path / "bad.npy")
    assert str(tmp_path / "bad.npy") in str(info.value)


def test_nan_in_npz_names_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "n.npz", img=np.array([[np.inf, 0.0]]))
    with pytest.raises(InputError, match=r"n\.npz\[img\].*NaN or Inf"):
        read_numpy(tmp_path / "n.npz")


def test_missing_empty_corrupt(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_numpy(tmp_path / "no.npy")
    (tmp_path / "e.npy").touch()
    with pytest.raises(InputError, match="empty"):
        read_numpy(tmp_path / "e.npy")
    (tmp_path / "c.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(InputError, match="NumPy") as info:
        read_numpy(tmp_path / "c.npy")
    assert "c.npy" in str(info.value)
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(InputError, match="NumPy"):
        read_numpy(tmp_path / "c.npz")
    full = tmp_path / "t.npy"
    np.save(full, np.zeros((10, 10), np.float32))
    full.write_bytes(full.read_bytes()[:-40])  # truncated data
    with pytest.raises(InputError, match="NumPy"):
        read_numpy(full)


@pytest.mark.parametrize(
    ("sidecar", "match"),
    [
        ("{not json", "not valid JSON.*line 1"),
        ('{"spacing": [1, 1, NaN]}', "NaN"),
        ("[1, 2, 3]", "JSON object"),
        ('{"spacings": [1, 1, 1]}', "unknown key.*'spacings'.*allowed: spacing"),
        ('{"spacing": [1, 1]}', "'spacing' must be a list of 3"),
        ('{"spacing": [1, -1, 1]}', "spacing must be > 0"),
        ('{"spacing": "1 1 1"}', "'spacing' must be a list of 3"),
        ('{"spacing": [1, true, 1]}', "'spacing' must be a list of 3"),
        ('{"origin": [0, 0]}', "'origin' must be a list of 3"),
        ('{"direction": [[1, 0, 0], [0, 1, 0]]}', "'direction' must be 3 rows"),
        ('{"direction": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}', "unit vectors"),
        ('{"direction": [[1, 0, 0], [0, 1, 0], [0, 0, "z"]]}', "'direction' must be a list"),
        ('{"hu_offset": "-1024"}', "'hu_offset' must be a finite number"),
        ('{"hu_slope": 0}', "hu_slope must not be 0"),
        ('{"hu_slope": null}', "'hu_slope' must be a finite number"),
    ],
)
def test_bad_sidecar(tmp_path: Path, sidecar: str, match: str) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 2), np.int16))
    (tmp_path / "a.json").write_text(sidecar)
    with pytest.raises(InputError, match=match) as info:
        read_numpy(tmp_path / "a.npy")
    assert str(tmp_path / "a.json") in str(info.value)


def test_write_refuses_existing(tmp_path: Path) -> None:
    vol = _volume()
    (tmp_path / "v.json").write_text("keep")
    with pytest.raises(OutputExistsError):
        write_numpy(vol, tmp_path / "v.npy")
    assert not (tmp_path / "v.npy").exists()
    assert (tmp_path / "v.json").read_text() == "keep"
    write_numpy(vol, tmp_path / "v.npy", overwrite=True)
    with pytest.raises(OutputExistsError):
        write_numpy(vol, tmp_path / "v.npy")
    np.testing.assert_array_equal(read_numpy(tmp_path / "v.npy").hu, vol.hu)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.npy"]
    assert sidecar_path(tmp_path / "v.npy") == tmp_path / "v.json"


def test_write_needs_npy_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.npy"):
        write_numpy(_volume(), tmp_path / "v.npz")


def test_sidecar_values_are_exact(tmp_path: Path) -> None:
    vol = CTVolume(
        np.zeros((1, 2, 2), np.float32), spacing=(0.1 + 0.2, 1 / 3, 2 / 3), origin=(1e-9, -0.3, 7)
    )
    write_numpy(vol, tmp_path / "x.npy")
    back = read_numpy(tmp_path / "x.npy")
    assert back.spacing == vol.spacing
    assert back.origin == vol.origin
