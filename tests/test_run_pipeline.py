"""run_did: the result folder of a DID run on a small simulated abdomen slice."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ctdid.core import HUAdapter, InteractiveDenoiser
from ctdid.errors import InputError, OutputExistsError
from ctdid.io import read_volume
from ctdid.metrics import find_body_mask, transfer_label
from ctdid.results import ResultReader
from ctdid.runner import RunProgress, run_did
from ctdid.sim import abdomen_phantom
from ctdid.volume import CTVolume
from smoother_model import Smoother

torch.set_num_threads(1)

N_CAND = 3


def make_model() -> HUAdapter:
    return HUAdapter(Smoother(), meta={"name": "smoother-test", "weights_sha256": "ab" * 32})


def scans(n_slices: int = 1, size: int = 64) -> tuple[CTVolume, CTVolume]:
    """(noisy, clean) volumes of the abdomen phantom, Gaussian noise of 40 HU."""
    clean = [abdomen_phantom(seed=s, shape=size).hu for s in range(n_slices)]
    ph_spacing = abdomen_phantom(seed=0, shape=size).spacing
    rng = np.random.default_rng(0)
    ref = np.stack(clean).astype(np.float32)
    noisy = ref + rng.normal(0.0, 40.0, ref.shape).astype(np.float32)
    spacing = (2.0, *ph_spacing)
    return CTVolume(noisy, spacing=spacing), CTVolume(ref, spacing=spacing)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("run") / "result"
    noisy, ref = scans()
    snapshots: list[tuple[RunProgress, dict[str, Any], list[str]]] = []

    def progress(p: RunProgress) -> None:
        doc = json.loads((p.folder / "run.json").read_text())
        files = sorted(f.name for f in (p.folder / "candidates").glob("c*.npy"))
        snapshots.append((p, doc, files))

    summary = run_did(
        noisy,
        make_model(),
        out_dir=folder,
        n_candidates=N_CAND,
        reference=ref,
        pick="detect",
        export=("dicom", "nifti", "png"),
        progress=progress,
        model_info={"spec": "test:smoother"},
    )
    return {"folder": folder, "summary": summary, "snapshots": snapshots, "noisy": noisy}


def test_run_json_is_complete(run: dict[str, Any]) -> None:
    doc = json.loads((run["folder"] / "run.json").read_text())
    assert doc["status"] == "done"
    assert doc["config"]["mode"] == "robust"
    assert doc["config"]["n_candidates"] == N_CAND
    assert doc["seed"] == 0
    assert doc["model"]["name"] == "smoother-test"
    assert doc["model"]["weights_sha256"] == "ab" * 32
    assert doc["model"]["spec"] == "test:smoother"
    assert len(doc["model"]["state_dict_sha256"]) == 64
    assert {"ctdid", "torch", "numpy"} <= set(doc["versions"])
    t = doc["timings"]
    assert 0 < t["first_candidate"] <= t["engine"] <= t["total"]
    eng = doc["engine"]
    assert set(eng["stop_reasons"]) == {"high", "low"}
    assert eng["peak_memory_bytes"] > 0
    assert set(eng["coverage"]) == {"high", "low"}
    assert doc["spacing_zyx"] == list(run["noisy"].spacing)


def test_candidates_ordered_with_default_and_labels(run: dict[str, Any]) -> None:
    reader = ResultReader(run["folder"])
    ordered = reader.ordered()
    strengths = [r.strength for r in ordered]
    assert strengths == sorted(strengths)
    assert len(ordered) >= 3 and strengths[0] < 0 < strengths[-1]
    default = reader.default_record()
    assert default is not None and default.strength == 0.0
    assert run["summary"].default_id == default.id
    for rec in ordered:
        assert {"noise_hu", "mtf50_per_mm", "transfer50_per_mm", "rmse_hu"} <= set(rec.labels)
        assert all(np.isfinite(v) for v in rec.labels.values())
    noise = [r.labels["noise_hu"] for r in ordered]
    # the tradeoff: the high-resolution end is noisier than the low-noise end
    assert noise[0] > default.labels["noise_hu"] > noise[-1]
    assert ordered[0].labels["mtf50_per_mm"] > ordered[-1].labels["mtf50_per_mm"]
    # the transfer from the input falls all along, from the high-resolution end to the low-noise
    f50 = [r.labels["transfer50_per_mm"] for r in ordered]
    assert all(a > b for a, b in itertools.pairwise(f50)), f50


def test_transfer_label_of_default_and_input(run: dict[str, Any]) -> None:
    reader = ResultReader(run["folder"])
    default = reader.default_record()
    assert default is not None
    x, c = reader.input(), reader.candidate(default.id)
    spacing = run["noisy"].spacing
    expected = transfer_label(c, x, spacing=spacing, mask=find_body_mask(c))
    assert default.labels["transfer50_per_mm"] == pytest.approx(expected, rel=1e-6)
    # the default is the model's output: the 5x5 Gaussian of sigma 1 pixel, whose MTF50 is
    # sqrt(ln 2 / (2 pi^2)) / sigma
    sigma_mm = spacing[-1]
    mtf50 = float(np.sqrt(np.log(2) / (2 * np.pi**2)) / sigma_mm)
    assert default.labels["transfer50_per_mm"] == pytest.approx(mtf50, rel=0.05)
    # the input keeps all of itself: Nyquist
    inp = reader.doc["input_labels"]["noisy input"]
    assert inp["transfer50_per_mm"] == pytest.approx(0.5 / spacing[-1])


def test_candidate_files_equal_engine_output(run: dict[str, Any]) -> None:
    reader = ResultReader(run["folder"])
    stack = InteractiveDenoiser(make_model(), n_candidates=N_CAND).run(np.array(run["noisy"].hu[0]))
    ordered = reader.ordered()
    assert len(ordered) == len(stack)
    for rec, cand in zip(ordered, stack, strict=True):
        assert rec.strength == pytest.approx(cand.strength)
        np.testing.assert_array_equal(reader.candidate(rec.id)[0], cand.image)
    np.testing.assert_array_equal(reader.input()[0], run["noisy"].hu[0])


def test_metrics_csv_rows(run: dict[str, Any]) -> None:
    reader = ResultReader(run["folder"])
    with (run["folder"] / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ordered = reader.ordered()
    assert [int(r["id"]) for r in rows] == [r.id for r in ordered]
    assert [r["direction"] for r in rows].count("default") == 1
    for row, rec in zip(rows, ordered, strict=True):
        assert float(row["strength"]) == pytest.approx(rec.strength, rel=1e-5, abs=1e-6)
        assert float(row["noise_hu"]) == pytest.approx(rec.labels["noise_hu"], rel=1e-5)
        assert float(row["rmse_hu"]) == pytest.approx(rec.labels["rmse_hu"], rel=1e-5)
        f50 = float(row["transfer50_per_mm"])
        assert f50 == pytest.approx(rec.labels["transfer50_per_mm"], rel=1e-5)
        assert row["file"] == rec.file


@pytest.mark.parametrize("name", ["montage.png", "tradeoff.png"])
def test_figures_are_valid_png(run: dict[str, Any], name: str) -> None:
    with Image.open(run["folder"] / name) as img:
        img.verify()
    with Image.open(run["folder"] / name) as img:
        assert img.format == "PNG"
        assert img.size[0] > 300 and img.size[1] > 200
        arr = np.asarray(img.convert("L"))
    assert arr.std() > 5  # not blank


def test_streaming_run_json_updated_during_run(run: dict[str, Any]) -> None:
    mid = [(p, doc, files) for p, doc, files in run["snapshots"] if p.stage == "candidate"]
    n_total = len(ResultReader(run["folder"]).records)
    assert [p.done for p, _, _ in mid] == list(range(1, n_total + 1))
    for p, doc, files in mid:
        assert doc["status"] == "running"
        assert len(doc["candidates"]) == p.done == len(files)
        assert p.record is not None and p.record.labels
    assert mid[0][1]["candidates"][0]["direction"] == "default"
    assert run["snapshots"][-1][0].stage == "done"


def test_pick_written(run: dict[str, Any]) -> None:
    doc = json.loads((run["folder"] / "picks.json").read_text())
    pick = doc["picks"]["detect"]
    reader = ResultReader(run["folder"])
    rec = reader.records[pick["candidate"]]
    assert pick["strength"] == pytest.approx(rec.strength)
    assert pick["file"] == rec.file
    assert run["summary"].picked["candidate"] == rec.id
    assert pick["resolution_label"] == "transfer50_per_mm"


def test_exports_dicom_nifti_png(run: dict[str, Any]) -> None:
    import pydicom

    reader = ResultReader(run["folder"])
    pick = run["summary"].picked
    image = reader.candidate(pick["candidate"])
    exports = sorted(p.name for p in (run["folder"] / "exports").iterdir())
    stem = f"detect_s{pick['strength']:+.2f}"
    assert exports == sorted([f"{stem}.nii.gz", f"{stem}.png", f"{stem}_dicom"])
    nifti = read_volume(run["folder"] / "exports" / f"{stem}.nii.gz")
    np.testing.assert_allclose(nifti.hu, image, atol=1e-3)
    dicom_dir = run["folder"] / "exports" / f"{stem}_dicom"
    dcm = read_volume(dicom_dir)
    np.testing.assert_allclose(dcm.hu, image, atol=1.0)  # stored as integers
    ds = pydicom.dcmread(next(dicom_dir.glob("*.dcm")), stop_before_pixels=True)
    assert "ctdid" in ds.SeriesDescription and "smoother-test" in ds.SeriesDescription
    assert "strength" in ds.DerivationDescription
    with Image.open(run["folder"] / "exports" / f"{stem}.png") as img:
        assert img.size == (64, 64)


def test_no_overwrite_without_flag(run: dict[str, Any]) -> None:
    before = (run["folder"] / "run.json").read_bytes()
    with pytest.raises(OutputExistsError):
        run_did(run["noisy"], make_model(), out_dir=run["folder"], n_candidates=1)
    assert (run["folder"] / "run.json").read_bytes() == before


def test_overwrite_replaces_result(tmp_path: Path) -> None:
    noisy, _ = scans()
    folder = tmp_path / "res"
    run_did(noisy, make_model(), out_dir=folder, n_candidates=2, pick="detect", export="png")
    assert (folder / "picks.json").exists()
    s = run_did(noisy, make_model(), out_dir=folder, n_candidates=1, overwrite=True)
    reader = ResultReader(folder)
    assert reader.status == "done"
    assert len(reader.records) == len(s.records) <= 3
    assert len(list((folder / "candidates").glob("c*.npy"))) == len(s.records)
    assert not (folder / "picks.json").exists() and not (folder / "exports").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pick": "best"}, "unknown pick task"),
        ({"pick": "sharpest-below"}, "noise-ceiling"),
        ({"pick": "match-noise"}, "target-noise"),
        ({"export": "dicom,jpeg"}, "unknown export format"),
        ({"mode": "slow"}, "unknown mode"),
        ({"window": (100.0, -100.0)}, "window"),
        ({"k": 0}, "k must be"),
    ],
)
def test_bad_options_fail_before_writing(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    noisy, _ = scans(size=32)
    with pytest.raises(InputError, match=message):
        run_did(noisy, make_model(), out_dir=tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()


def test_reference_of_other_shape_refused(tmp_path: Path) -> None:
    noisy, _ = scans(size=32)
    _, ref = scans(size=64)
    with pytest.raises(InputError, match="reference"):
        run_did(noisy, make_model(), out_dir=tmp_path / "r", reference=ref)


def test_failure_marks_run_failed(tmp_path: Path) -> None:
    noisy, _ = scans()

    def stop(p: RunProgress) -> None:
        if p.done == 2:
            raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test"):
        run_did(noisy, make_model(), out_dir=tmp_path / "r", n_candidates=2, progress=stop)
    doc = json.loads((tmp_path / "r" / "run.json").read_text())
    assert doc["status"] == "failed"
    assert "stopped by the test" in doc["error"]
    assert len(doc["candidates"]) == 2


def test_volume_shared_and_per_slice(tmp_path: Path) -> None:
    noisy, ref = scans(n_slices=2)
    shared = run_did(noisy, make_model(), out_dir=tmp_path / "s", n_candidates=2, reference=ref)
    reader = ResultReader(tmp_path / "s")
    assert reader.shape == (2, 64, 64)
    doc = reader.doc
    assert doc["config"]["trajectory"] == "shared"
    assert "per_slice" not in doc["engine"]
    # one trajectory: every candidate holds both slices, made by the same weights
    assert all(reader.candidate(r.id).shape == (2, 64, 64) for r in shared.records)

    per = run_did(
        noisy, make_model(), out_dir=tmp_path / "p", n_candidates=2, shared=False, pick=None
    )
    reader = ResultReader(tmp_path / "p")
    assert reader.doc["config"]["trajectory"] == "per-slice"
    assert len(reader.doc["engine"]["per_slice"]) == 2
    strengths = [r.strength for r in reader.ordered()]
    assert strengths == sorted(strengths) and 0.0 in strengths
    # per slice, the default candidate is that slice's own default output
    engine = InteractiveDenoiser(make_model(), n_candidates=2)
    default = reader.candidate(per.default_id)
    for z in range(2):
        np.testing.assert_array_equal(default[z], engine.run(np.array(noisy.hu[z])).default.image)


def test_roi_pair_adds_cnr(tmp_path: Path) -> None:
    noisy, _ = scans()
    yy, xx = np.mgrid[:64, :64]
    lesion = np.hypot(yy - 30, xx - 26) < 3
    background = (np.hypot(yy - 30, xx - 26) >= 5) & (np.hypot(yy - 30, xx - 26) < 8)
    s = run_did(
        noisy, make_model(), out_dir=tmp_path / "r", n_candidates=1, roi=(lesion, background)
    )
    assert all(np.isfinite(r.labels["cnr"]) for r in s.records)
    with (tmp_path / "r" / "metrics.csv").open() as fh:
        assert "cnr" in next(csv.reader(fh))


def test_unmeasurable_label_left_out_and_json_strict(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    water = rng.normal(0.0, 30.0, (1, 48, 48)).astype(np.float32)  # no air, so no skin edge
    s = run_did(
        CTVolume(water, spacing=(1, 1, 1)), make_model(), out_dir=tmp_path / "r", n_candidates=1
    )
    assert all("mtf50_per_mm" not in r.labels for r in s.records)
    assert any(n.startswith("mtf50_per_mm") for n in s.notes)

    def no_constants(name: str) -> None:
        raise AssertionError(f"run.json holds {name}")

    doc = json.loads((tmp_path / "r" / "run.json").read_text(), parse_constant=no_constants)
    assert doc["label_notes"] == list(s.notes)
