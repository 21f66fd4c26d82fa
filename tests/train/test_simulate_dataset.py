"""Multi-dose paired datasets (``ctdid.train.simulate_dataset``): files, manifest, seeds,
workers, resume, noise, and reading them for training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctdid.errors import InputError, OutputExistsError
from ctdid.sim import FanBeamGeometry, abdomen_phantom, simulate_low_dose
from ctdid.train import simulate_dataset as sd
from ctdid.train.dataset import PairPatchDataset, split_pairs
from ctdid.train.pairs import (
    SIMULATE_FORMAT,
    RealSource,
    list_pairs,
    load_pair,
    read_dataset_info,
)
from ctdid.train.pairs import _seeds as _pair_seeds
from ctdid.volume import CTVolume

#: A coarse fan beam (64 views, 96 bins) with the default 505 mm field of view.
SMALL = FanBeamGeometry(n_views=64, n_cols=96, col_width_mm=1.2858 * 736 / 96)
DOSES = (0.5, 0.125)


def _water(value: float = 0.0, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), -1000.0, dtype=np.float32)
    img[np.hypot(yy - size / 2, xx - size / 2) < size * 0.4] = value
    return img


def _real(name: str = "patient_sm_x.raw") -> RealSource:
    vol = CTVolume(np.stack([_water(), _water(40.0)]), spacing=(3.0, 6.0, 6.0))
    return RealSource(name, vol, kernel="ramp", path=f"/data/{name}")


def _make(out: Path, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "phantoms": 2,
        "real": [_real()],
        "doses": DOSES,
        "realisations": 2,
        "seed": 3,
        "geometry": SMALL,
        "phantom_size": 64,
        "workers": 1,
    }
    args.update(kw)
    return sd.simulate_dataset(out, **args)


def _arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for f in list_pairs(folder):
        with np.load(f) as z:
            out[f.name] = {k: z[k] for k in z.files}
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "ds"
    _make(out)
    return out


def test_files_and_manifest(dataset: Path) -> None:
    names = sorted(p.name for p in (dataset / "slices").iterdir())
    assert names == [
        "0000_abdomen.npz",
        "0001_chest.npz",
        "0002_patient_sm_x_z000.npz",
        "0003_patient_sm_x_z001.npz",
    ]
    z = _arrays(dataset)["0000_abdomen.npz"]
    assert z["normal"].shape == (64, 64) and z["normal"].dtype == np.float32
    assert z["low"].shape == (2, 2, 64, 64) and z["low"].dtype == np.float32
    assert z["doses"].tolist() == list(DOSES)
    assert z["spacing"].tolist() == pytest.approx([380 / 64, 380 / 64])
    assert z["seeds"].shape == (2, 2) and str(z["kind"]) == "phantom-abdomen"

    m = json.loads((dataset / "manifest.json").read_text())
    assert m["format"] == SIMULATE_FORMAT and m["status"] == "complete"
    opts = m["options"]
    assert opts["doses"] == list(DOSES) and opts["realisations"] == 2 and opts["seed"] == 3
    assert opts["i0"] == 1.5e5 and opts["sigma_e"] == 10.0 and opts["kernel"] == "hann"
    assert opts["geometry"]["type"] == "FanBeamGeometry" and opts["geometry"]["n_views"] == 64
    assert opts["real_sources"][0]["name"] == "patient_sm_x.raw"
    assert opts["real_sources"][0]["kernel"] == "ramp" and opts["real_sources"][0]["slices"] == 2
    assert "L506" in m["held_out"]["patterns"]
    assert {"ctdid", "numpy", "torch"} <= set(m["versions"])
    assert m["runs"][-1]["slices"] == 4 and m["runs"][-1]["images"] == 16
    recs = m["slices"]
    assert [r["kind"] for r in recs] == ["phantom-abdomen", "phantom-chest"] + ["real-insert"] * 2
    assert all(r["done"] and len(r["sha256"]) == 64 and r["seconds"] > 0 for r in recs)
    assert recs[2]["path"] == "/data/patient_sm_x.raw" and recs[3]["source"].endswith("[1]")
    assert recs[2]["normal_seed"] is None and recs[2]["kernel"] == "ramp"
    assert z["seeds"].tolist() == recs[0]["seeds"]
    # the seeds follow sample_seed and differ everywhere
    assert recs[0]["seeds"][1][0] == sd.sample_seed(3, slice_index=0, dose=0.125, realisation=0)
    assert recs[0]["normal_seed"] == sd.sample_seed(3, slice_index=0)
    flat = [s for r in recs for row in r["seeds"] for s in row]
    assert len(set(flat)) == len(flat)
    # the phantoms' anatomy is that of `simulate-pairs --seed 3`
    assert [r["anatomy_seed"] for r in recs[:2]] == [a for a, _ in _pair_seeds(3, 2, 0)]


def test_every_image_can_be_regenerated_alone(dataset: Path) -> None:
    m = sd.read_manifest(dataset)
    arrays = _arrays(dataset)
    ph_rec = m["slices"][0]
    z = arrays["0000_abdomen.npz"]
    ph = abdomen_phantom(seed=ph_rec["anatomy_seed"], shape=64)
    common = {"spacing": ph.spacing, "geometry": SMALL, "mode": "full", "kernel": "hann"}
    normal = simulate_low_dose(ph.hu, dose=1.0, seed=ph_rec["normal_seed"], **common)
    np.testing.assert_array_equal(z["normal"], normal)
    low = simulate_low_dose(ph.hu, dose=0.125, seed=ph_rec["seeds"][1][1], **common)
    np.testing.assert_array_equal(z["low"][1, 1], low)
    # real slices: normal is the input exactly, low the insertion with its seed
    real_rec = m["slices"][3]
    zr = arrays["0003_patient_sm_x_z001.npz"]
    np.testing.assert_array_equal(zr["normal"], _water(40.0))
    inserted = simulate_low_dose(
        _water(40.0),
        dose=0.5,
        spacing=(6.0, 6.0),
        geometry=SMALL,
        mode="insert",
        kernel="ramp",
        seed=real_rec["seeds"][0][1],
    )
    np.testing.assert_array_equal(zr["low"][0, 1], inserted)


def test_same_seed_same_data_and_workers_do_not_matter(dataset: Path, tmp_path: Path) -> None:
    two = tmp_path / "two"
    _make(two, workers=2)
    a, b = _arrays(dataset), _arrays(two)
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")
    assert sd.read_manifest(two)["runs"][-1]["workers"] == 2
    # another seed, other noise (and anatomy)
    other = tmp_path / "other"
    _make(other, seed=4, real=[], phantoms=1)
    assert not np.array_equal(
        _arrays(other)["0000_abdomen.npz"]["low"], a["0000_abdomen.npz"]["low"]
    )


def test_a_dose_level_does_not_depend_on_the_others(dataset: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    _make(one, doses=(0.125,), phantoms=1, real=[])
    ref = _arrays(dataset)["0000_abdomen.npz"]
    got = _arrays(one)["0000_abdomen.npz"]
    np.testing.assert_array_equal(got["low"][0], ref["low"][1])
    np.testing.assert_array_equal(got["normal"], ref["normal"])


def test_noise_falls_with_dose_and_realisations_differ(tmp_path: Path) -> None:
    out = tmp_path / "noise"
    vol = CTVolume(_water()[None], spacing=(1.0, 6.0, 6.0))
    real = [RealSource("water.raw", vol)]
    _make(out, phantoms=1, real=real, doses=(0.5, 0.125), realisations=6, sigma_e=0.0)
    arrays = _arrays(out)
    # phantom: variance across the realisations, in the body, ~ 1 / dose (quantum noise)
    ph = arrays["0000_abdomen.npz"]
    body = ph["normal"] > -500
    std = [float(np.sqrt(np.mean(np.var(ph["low"][d], axis=0, ddof=1)[body]))) for d in (0, 1)]
    assert std[1] / std[0] == pytest.approx(2.0, rel=0.12)
    # real: inserted noise ~ sqrt(1 / dose - 1), independent between realisations
    w = arrays["0001_water.npz"]
    noise = (w["low"] - w["normal"])[:, :, 20:44, 20:44]
    std = [float(np.sqrt(np.mean(noise[d] ** 2))) for d in (0, 1)]
    assert std[1] / std[0] == pytest.approx(np.sqrt(7.0), rel=0.12)
    corr = np.corrcoef(noise[1].reshape(6, -1))[np.triu_indices(6, 1)]
    assert np.all(np.abs(corr) < 0.25)
    assert not np.array_equal(ph["low"][0, 0], ph["low"][0, 1])


def test_resume_redoes_only_missing_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "resume"
    calls: list[int] = []
    real_simulate = sd._simulate_slice

    def failing(task: Any) -> dict[str, Any]:
        calls.append(task.index)
        if task.index == 2:
            raise RuntimeError("source failed")
        return real_simulate(task)

    monkeypatch.setattr(sd, "_simulate_slice", failing)
    with pytest.raises(RuntimeError, match="source failed"):
        _make(out)
    assert calls == [0, 1, 2]
    m = sd.read_manifest(out)
    assert m["status"] == "incomplete"
    assert [bool(r.get("done")) for r in m["slices"]] == [True, True, False, False]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "slices").glob("*.npz")}
    assert sorted(stamps) == ["0000_abdomen.npz", "0001_chest.npz"]

    calls.clear()

    def counting(task: Any) -> dict[str, Any]:
        calls.append(task.index)
        return real_simulate(task)

    monkeypatch.setattr(sd, "_simulate_slice", counting)
    steps: list[tuple[int, int]] = []
    m = _make(out, progress=lambda done, total, _d: steps.append((done, total)))
    assert calls == [2, 3] and steps == [(2, 4), (3, 4), (4, 4)]
    assert m["status"] == "complete" and m["runs"][-1]["slices"] == 2
    assert {p: (out / "slices" / p).stat().st_mtime_ns for p in stamps} == stamps

    # a lost or damaged file is made again; the others are not touched
    (out / "slices" / "0001_chest.npz").unlink()
    with open(out / "slices" / "0003_patient_sm_x_z001.npz", "r+b") as f:
        f.seek(200)
        f.write(b"garbage")
    calls.clear()
    _make(out)
    assert calls == [1, 3]
    calls.clear()
    assert _make(out)["runs"][-1]["slices"] == 0 and calls == []


def test_worker_failure_keeps_the_finished_slices(tmp_path: Path) -> None:
    """In the process pool, a failing slice is raised after the others are recorded."""
    common: dict[str, Any] = {
        "kernel": "hann",
        "i0": 1.5e5,
        "sigma_e": 10.0,
        "doses": (0.5,),
        "seeds": ((1,),),
        "geometry": SMALL,
        "spacing": (6.0, 6.0),
    }
    good = sd._Task(0, str(tmp_path / "a.npz"), "real-insert", "w", normal_seed=None,
                    hu=_water(), **common)  # fmt: skip
    bad = sd._Task(1, str(tmp_path / "b.npz"), "phantom-abdomen", "p", normal_seed=2,
                   anatomy_seed=0, phantom_size=64, fov_mm=100.0, **common)  # fmt: skip
    finished: list[int] = []
    with pytest.raises(ValueError, match="fov_mm"):
        sd._run_pool([bad, good], 2, lambda task, _rec: finished.append(task.index))
    assert finished == [0] and (tmp_path / "a.npz").is_file()
    assert not (tmp_path / "b.npz").exists()


def test_resume_refuses_other_options_and_foreign_folders(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"realisations \(dataset 2, asked 3\)"):
        _make(dataset, realisations=3)
    with pytest.raises(InputError, match="doses"):
        _make(dataset, doses=(0.5,))
    changed = RealSource("patient_sm_x.raw", CTVolume(_water(1.0)[None], spacing=(1, 6, 6)))
    with pytest.raises(InputError, match="real_sources"):
        _make(dataset, real=[changed])
    with pytest.raises(OutputExistsError, match="overwrite"):
        _make(dataset, resume=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not"):
            _make(foreign, overwrite=overwrite, phantoms=1, real=[])
    assert (foreign / "notes.txt").read_text() == "keep me"
    # an empty folder is used; --overwrite replaces a dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    _make(empty, phantoms=1, real=[], doses=(0.5,), realisations=1)
    m = _make(empty, phantoms=1, real=[], doses=(0.25,), realisations=1, overwrite=True)
    assert m["options"]["doses"] == [0.25] and len(m["runs"]) == 1
    assert load_pair(list_pairs(empty)[0]).level_doses == (0.25,)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"doses": (0.0, 0.5)}, r"\(0, 1\]"),
        ({"doses": (1.5,)}, r"\(0, 1\]"),
        ({"doses": ()}, "at least one"),
        ({"doses": (0.25, 0.25)}, "differ"),
        ({"realisations": 0}, "realisations"),
        ({"kernel": "sharp"}, "unknown kernel"),
        ({"i0": -1.0}, "i0"),
        ({"fov_mm": 200.0}, "field of view"),
        ({"phantoms": 0, "real": []}, "no source"),
        ({"real": [RealSource("L506_FD_slice.raw", CTVolume(_water()[None]))]}, "held-out"),
    ],
)
def test_bad_options(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        _make(tmp_path / "bad", **kw)
    assert not (tmp_path / "bad").exists()


def test_training_reads_the_folder(dataset: Path) -> None:
    files = list_pairs(dataset)
    assert [f.parent.name for f in files] == ["slices"] * 4
    assert read_dataset_info(dataset)["format"] == SIMULATE_FORMAT
    train_files, val_files = split_pairs(dataset, n_val=1)
    assert len(train_files) == 3 and val_files[0].name == "0003_patient_sm_x_z001.npz"

    pair = load_pair(files[0])
    assert pair.levels is not None and pair.level_doses == DOSES
    z = _arrays(dataset)["0000_abdomen.npz"]
    np.testing.assert_array_equal(pair.low_at(0.125), z["low"][1, 0])
    np.testing.assert_array_equal(pair.realisations_at(0.5), z["low"][0])
    with pytest.raises(InputError, match=r"stored: 0\.5, 0\.125"):
        pair.low_at(0.25)
    one = load_pair(files[0], dose=0.125)
    assert one.levels is not None and one.levels.shape == (1, 2, 64, 64)

    ds = PairPatchDataset(dataset, dose=0.125, patch=32, seed=1, augment=False)
    lows = [a["low"][1] for a in _arrays(dataset).values()]
    used: set[int] = set()
    for i in range(40):
        low, normal = ds[i]
        assert low.shape == (1, 32, 32) and normal.shape == (1, 32, 32)
        found = {r for stack in lows for r in (0, 1) if _contains(stack[r], low[0].numpy())}
        assert len(found) == 1
        used |= found
    assert used == {0, 1}  # both realisations are drawn
    with pytest.raises(InputError, match=r"dose 0\.25 is not stored.*0\.5, 0\.125"):
        PairPatchDataset(dataset, dose=0.25, patch=32)


def _contains(image: np.ndarray, patch: np.ndarray) -> bool:
    """Whether ``patch`` is a crop of ``image``."""
    p = patch.shape[0]
    for y, x in np.argwhere(image == patch[0, 0]):
        if np.array_equal(image[y : y + p, x : x + p], patch):
            return True
    return False


def test_load_pair_rejects_bad_stacked_files(tmp_path: Path) -> None:
    f = tmp_path / "bad.npz"
    base = {"normal": np.zeros((4, 4), np.float32), "spacing": np.array([1.0, 1.0])}
    np.savez(f, low=np.zeros((2, 1, 4, 4), np.float32), doses=np.array([0.5]), **base)
    with pytest.raises(InputError, match="1 doses for low-dose images"):
        load_pair(f)
    np.savez(f, low=np.zeros((1, 1, 4, 4), np.float32), doses=np.array([1.5]), **base)
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        load_pair(f)
    np.savez(f, low=np.zeros((1, 4, 4), np.float32), doses=np.array([0.5]), **base)
    with pytest.raises(InputError, match="realisations"):
        load_pair(f)
    np.savez(f, low=np.zeros((1, 2, 4, 4), np.float32), doses=np.array([1.0]), **base)
    assert load_pair(f, dose=1.0).realisations_at(1.0).shape == (2, 4, 4)
