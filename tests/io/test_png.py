"""Windowed 8-bit PNG export (ctdid.io.png)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctdid.errors import OutputExistsError
from ctdid.io.png import DEFAULT_WINDOW, slice_file_name, window_to_uint8, write_png
from ctdid.volume import CTVolume


def test_window_to_uint8_exact_mapping() -> None:
    low, high = -160.0, 240.0
    k = np.arange(256)
    hu = low + k * (high - low) / 255.0
    np.testing.assert_array_equal(window_to_uint8(hu, low, high), k)
    out = window_to_uint8([-1000.0, -160.0, -159.0, 40.0, 239.0, 240.0, 3000.0], low, high)
    # (hu - low) * 255 / 400, rounded half up, clipped: -159 -> 0.6375 -> 1; 40 -> 127.5 -> 128;
    # 239 -> 254.3625 -> 254.
    np.testing.assert_array_equal(out, [0, 0, 1, 128, 254, 255, 255])
    assert out.dtype == np.uint8
    # half-way points round up
    np.testing.assert_array_equal(window_to_uint8([0.5 / 255, 1.5 / 255], 0.0, 1.0), [1, 2])
    assert window_to_uint8(np.float32(0.0), -1.0, 1.0).shape == ()
    assert int(window_to_uint8(0.0, -1.0, 1.0)) == 128


@pytest.mark.parametrize(("low", "high"), [(0, 0), (10, -10), (float("nan"), 1), (0, np.inf)])
def test_window_to_uint8_rejects(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="window"):
        window_to_uint8([0.0], low, high)


def _volume(n: int = 3) -> CTVolume:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-400, 400, size=(n, 6, 5)).astype(np.float32)
    return CTVolume(hu, spacing=(2.5, 0.8, 0.5), origin=(1.0, 2.0, 3.0))


def _text(path: Path) -> dict[str, str]:
    with Image.open(path) as img:
        return dict(img.text)  # type: ignore[attr-defined]


def test_single_slice_file(tmp_path: Path) -> None:
    vol = _volume(1)
    out = write_png(vol, tmp_path / "s.png")
    assert out == (tmp_path / "s.png").absolute()
    with Image.open(out) as img:
        assert img.mode == "L"
        assert img.size == (5, 6)  # width x, height y
        pixels = np.asarray(img)
        dpi = img.info["dpi"]
    np.testing.assert_array_equal(pixels, window_to_uint8(vol.hu[0], *DEFAULT_WINDOW))
    text = _text(out)
    assert float(text["ctdid:window_low"]) == -160.0
    assert float(text["ctdid:window_high"]) == 240.0
    assert json.loads(text["ctdid:spacing"]) == [2.5, 0.8, 0.5]
    assert text["ctdid:slice_index"] == "0"
    assert json.loads(text["ctdid:slice_position"]) == [1.0, 2.0, 3.0]
    assert dpi[0] == pytest.approx(25.4 / 0.5, rel=1e-3)
    assert dpi[1] == pytest.approx(25.4 / 0.8, rel=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_multi_slice_folder(tmp_path: Path) -> None:
    vol = _volume(3)
    out = write_png(vol, tmp_path / "pngs", window=(-1000, 1000))
    assert out.is_dir()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["slice_0000.png", "slice_0001.png", "slice_0002.png"]
    for k, name in enumerate(names):
        with Image.open(out / name) as img:
            np.testing.assert_array_equal(np.asarray(img), window_to_uint8(vol.hu[k], -1000, 1000))
        text = _text(out / name)
        assert text["ctdid:slice_index"] == str(k)
        assert float(text["ctdid:window_low"]) == -1000.0
        np.testing.assert_allclose(json.loads(text["ctdid:slice_position"]), [1, 2, 3 + 2.5 * k])
    assert [p.name for p in tmp_path.iterdir()] == ["pngs"]  # no temporary folder left


def test_slice_index(tmp_path: Path) -> None:
    vol = _volume(3)
    write_png(vol, tmp_path / "one.png", slice_index=-1)
    with Image.open(tmp_path / "one.png") as img:
        np.testing.assert_array_equal(np.asarray(img), window_to_uint8(vol.hu[2], -160, 240))
    assert _text(tmp_path / "one.png")["ctdid:slice_index"] == "2"
    with pytest.raises(IndexError, match=r"outside 0\.\.2"):
        write_png(vol, tmp_path / "x.png", slice_index=3)
    assert not (tmp_path / "x.png").exists()


def test_overwrite(tmp_path: Path) -> None:
    vol = _volume(1)
    (tmp_path / "s.png").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        write_png(vol, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes() == b"keep"
    write_png(vol, tmp_path / "s.png", overwrite=True)
    with Image.open(tmp_path / "s.png") as img:
        assert img.format == "PNG"
    multi = _volume(2)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        write_png(multi, tmp_path / "d")
    assert (tmp_path / "d" / "old.txt").exists()
    write_png(multi, tmp_path / "d", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "slice_0000.png",
        "slice_0001.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "s.png"]


def test_bad_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window"):
        write_png(_volume(1), tmp_path / "s.png", window=(100, 100))
    with pytest.raises(ValueError, match="window"):
        write_png(_volume(1), tmp_path / "s.png", window=(1, 2, 3))
    assert not (tmp_path / "s.png").exists()


def test_slice_file_name() -> None:
    assert slice_file_name(7, 10) == "slice_0007.png"
    assert slice_file_name(12345, 20000) == "slice_12345.png"
