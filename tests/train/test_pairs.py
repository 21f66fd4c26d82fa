"""Paired dataset generation: phantom pairs, insertion pairs, the folder, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctdid.errors import InputError, OutputExistsError
from ctdid.sim import ParallelBeamGeometry
from ctdid.train.pairs import (
    DATASET_FORMAT,
    Pair,
    RealSource,
    check_not_held_out,
    insertion_pair,
    list_pairs,
    load_pair,
    make_pairs,
    phantom_pair,
    read_dataset_info,
    read_real_sources,
)
from ctdid.volume import CTVolume

#: 64-pixel slices of 380 mm: a coarse, fast parallel-beam scan that covers them.
SMALL_GEOMETRY = ParallelBeamGeometry(n_views=60, n_cols=96, col_width_mm=6.0)


def _water(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), -1000.0, dtype=np.float32)
    img[np.hypot(yy - size / 2, xx - size / 2) < size * 0.4] = 0.0
    return img


def test_phantom_pair_noise_grows_at_lower_dose_and_follows_the_seed() -> None:
    img = _water()
    low, normal = phantom_pair(img, spacing=(6.0, 6.0), dose=0.25, seed=1, geometry=SMALL_GEOMETRY)
    assert low.dtype == normal.dtype == np.float32
    assert low.shape == normal.shape == img.shape
    roi = (slice(24, 40), slice(24, 40))
    assert abs(float(normal[roi].mean())) < 30  # water stays near 0 HU
    s_normal = float(np.std(normal[roi]))
    s_diff = float(np.std((low - normal)[roi]))
    assert s_normal > 0
    # added variance is (1/a0 - 1) = 3 times the full-dose variance: ratio about sqrt(3)
    assert 1.2 < s_diff / s_normal < 2.5
    again = phantom_pair(img, spacing=(6.0, 6.0), dose=0.25, seed=1, geometry=SMALL_GEOMETRY)
    other = phantom_pair(img, spacing=(6.0, 6.0), dose=0.25, seed=2, geometry=SMALL_GEOMETRY)
    np.testing.assert_array_equal(again[0], low)
    assert not np.array_equal(other[0], low)


def test_insertion_pair_keeps_the_target() -> None:
    img = _water() + 5.0
    low, normal = insertion_pair(
        img, spacing=(6.0, 6.0), dose=0.25, seed=3, geometry=SMALL_GEOMETRY, kernel="hann"
    )
    np.testing.assert_array_equal(normal, img)
    assert float(np.std((low - normal)[24:40, 24:40])) > 1.0


@pytest.mark.parametrize("dose", [0.0, 1.0, 1.5])
def test_pair_functions_reject_bad_doses(dose: float) -> None:
    with pytest.raises(ValueError, match="dose"):
        phantom_pair(_water(), spacing=(6.0, 6.0), dose=dose, geometry=SMALL_GEOMETRY)


def test_make_pairs_writes_phantoms_and_real_slices(tmp_path: Path) -> None:
    real = CTVolume(np.stack([_water(), _water() + 10]), spacing=(3.0, 6.0, 6.0))
    steps: list[tuple[int, int]] = []
    out = make_pairs(
        tmp_path / "pairs",
        n_phantoms=2,
        seed=7,
        real=[RealSource("patient_sm_x.raw", real, kernel="hann")],
        phantom_shape=64,
        geometry=SMALL_GEOMETRY,
        progress=lambda done, total, _desc: steps.append((done, total)),
    )
    files = list_pairs(out)
    assert [f.name for f in files] == [
        "0000_abdomen.npz",
        "0001_chest.npz",
        "0002_patient_sm_x_z000.npz",
        "0003_patient_sm_x_z001.npz",
    ]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    info = read_dataset_info(out)
    assert info["format"] == DATASET_FORMAT
    assert info["base_dose"] == 0.25
    assert info["seed"] == 7
    assert {"ctdid", "numpy", "torch"} <= set(info["versions"])
    assert info["timing_s_per_slice"]["phantom"] > 0
    assert info["timing_s_per_slice"]["insert"] > 0
    seeds = [p["anatomy_seed"] for p in info["pairs"][:2]]
    assert len(set(seeds)) == 2
    pair = load_pair(files[0])
    assert pair.kind == "phantom-abdomen"
    assert pair.dose == 0.25
    assert pair.low.dtype == np.float32 and pair.low.shape == (64, 64)
    assert pair.spacing == pytest.approx((380 / 64, 380 / 64))
    assert "seed=" in pair.source
    inserted = load_pair(files[3])
    assert inserted.kind == "real-insert" and inserted.kernel == "hann"
    np.testing.assert_array_equal(inserted.normal, _water() + 10)
    # same seed, same data
    again = make_pairs(
        tmp_path / "again", n_phantoms=1, seed=7, phantom_shape=64, geometry=SMALL_GEOMETRY
    )
    np.testing.assert_array_equal(load_pair(list_pairs(again)[0]).low, pair.low)


def test_make_pairs_refuses_existing_output_empty_sources_and_the_test_pair(
    tmp_path: Path,
) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputExistsError):
        make_pairs(tmp_path / "exists", n_phantoms=1, phantom_shape=64, geometry=SMALL_GEOMETRY)
    with pytest.raises(InputError, match="no source"):
        make_pairs(tmp_path / "none")
    with pytest.raises(InputError, match="base dose"):
        make_pairs(tmp_path / "bad", n_phantoms=1, base_dose=1.0)
    vol = CTVolume(_water(), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="held-out"):
        make_pairs(tmp_path / "l506", real=[RealSource("L506_FD_3mm_D45_slice32.raw", vol)])
    assert not (tmp_path / "none").exists() and not (tmp_path / "l506").exists()


def test_low_at_rescales_the_noise_difference() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 10, (128, 128)).astype(np.float32)
    low = normal + rng.normal(0, 30, normal.shape).astype(np.float32)
    pair = Pair(low, normal, 0.25, (1.0, 1.0))
    assert pair.low_at(0.25) is low
    np.testing.assert_allclose(pair.low_at(1.0), normal)
    eighth = pair.low_at(0.125)
    ratio = np.std(eighth - normal) / np.std(low - normal)
    assert ratio == pytest.approx(np.sqrt((8 - 1) / (4 - 1)), rel=1e-4)


def test_held_out_check() -> None:
    check_not_held_out("L067_FD_3mm_sh_slice39.raw")
    with pytest.raises(InputError, match="held-out"):
        check_not_held_out("data/mayo_pair_l506")


def test_read_real_sources_from_a_raw_folder(tmp_path: Path) -> None:
    folder = tmp_path / "raws"
    folder.mkdir()
    for name, value in (("b_sh_1.raw", 1024), ("a_sm_2.raw", 1064)):
        np.full((16, 16), value, dtype="<u2").tofile(folder / name)
    (folder / "LICENSE").write_text("not a slice")
    sources = read_real_sources(
        [folder], shape=(16, 16), dtype="uint16", hu_offset=-1024.0, spacing=(0.7, 0.7)
    )
    assert [s.name for s in sources] == ["a_sm_2.raw", "b_sh_1.raw"]
    assert [s.kernel for s in sources] == ["hann", "hann"]
    assert float(sources[0].volume.hu.mean()) == 40.0
    assert sources[0].volume.spacing[1:] == (0.7, 0.7)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no raw files"):
        read_real_sources(
            [tmp_path / "empty_dir"],
            shape=(16, 16),
            dtype="uint16",
        )
    held = tmp_path / "mayo_pair_L506"
    held.mkdir()
    with pytest.raises(InputError, match="held-out"):
        read_real_sources([held], shape=(16, 16), dtype="uint16")


def test_load_pair_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, low=np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="lacks"):
        load_pair(bad)
    with pytest.raises(InputError, match="not found"):
        load_pair(tmp_path / "missing.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.npz"):
        list_pairs(tmp_path / "empty")
    info_dir = tmp_path / "info"
    info_dir.mkdir()
    (info_dir / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset description"):
        read_dataset_info(info_dir)
    assert read_dataset_info(tmp_path) == {}  # no dataset.json: nothing to describe


@pytest.mark.shared
def test_read_real_sources_mayo_l067(shared_data: Path) -> None:
    sources = read_real_sources(
        [shared_data / "mayo_fd_L067"], shape=(512, 512), dtype="uint16", hu_offset=-1024.0
    )
    assert len(sources) == 10
    assert all(s.kernel == "hann" for s in sources)
    for s in sources:
        assert s.volume.shape == (1, 512, 512)
        assert -1100 < float(np.percentile(s.volume.hu, 1)) < -900  # air around the body
    with pytest.raises(InputError, match="held-out"):
        read_real_sources(
            [shared_data / "mayo_pair_L506"], shape=(512, 512), dtype="uint16", hu_offset=-1024.0
        )
