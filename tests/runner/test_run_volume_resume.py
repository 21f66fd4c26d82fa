"""run_did on volumes: streamed shared trajectory, per-slice streaming, saved weights, resume."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import ctdid.core.did.generate as did_generate
from ctdid.core import HUAdapter, InteractiveDenoiser, interpolate
from ctdid.errors import InputError, OutputExistsError
from ctdid.results import ResultReader, ResultWriter
from ctdid.runner import RunProgress, run_did
from ctdid.volume import CTVolume
from tiny_run_model import disk_volume

torch.set_num_threads(1)

Z, N = 5, 48
OPTS: dict[str, Any] = {"n_candidates": 2, "train_slices": 3, "batch_size": 2}


class TinyNet(nn.Module):
    """Residual two-layer CNN in network units, seeded."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)
        with torch.no_grad():
            self.c2.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.c2(torch.relu(self.c1(x)))


def make_model(seed: int = 0) -> HUAdapter:
    return HUAdapter(TinyNet(seed), meta={"name": "tiny-test"})


def make_volume(z: int = Z, seed: int = 0) -> CTVolume:
    return disk_volume(N, z, seed=seed)


class Counter:
    """Counts engine runs and the slices the model is applied to (renders)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs = 0
        self.applied: list[int] = []
        orig_run, orig_apply = InteractiveDenoiser.run, InteractiveDenoiser.apply

        def run(engine: InteractiveDenoiser, x: Any, **kw: Any) -> Any:
            self.runs += 1
            return orig_run(engine, x, **kw)

        def apply(engine: InteractiveDenoiser, x: Any, **kw: Any) -> Any:
            self.applied.append(int(np.asarray(x).shape[0]))
            return orig_apply(engine, x, **kw)

        monkeypatch.setattr(InteractiveDenoiser, "run", run)
        monkeypatch.setattr(InteractiveDenoiser, "apply", apply)


def stopper(stage: str, after: int) -> Callable[[RunProgress], None]:
    seen = [0]

    def progress(p: RunProgress) -> None:
        if p.stage == stage:
            seen[0] += 1
            if seen[0] == after:
                raise KeyboardInterrupt(f"stopped after {after} {stage}")

    return progress


def table(folder: Path) -> list[dict[str, Any]]:
    """run.json's candidates without the times."""
    doc = json.loads((folder / "run.json").read_text())
    return [{k: v for k, v in c.items() if k != "elapsed_s"} for c in doc["candidates"]]


def assert_same_result(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "candidates").iterdir())
    assert names == sorted(p.name for p in (b / "candidates").iterdir())
    for name in names:
        assert (a / "candidates" / name).read_bytes() == (b / "candidates" / name).read_bytes()
    assert table(a) == table(b)
    rows = [list(csv.DictReader((f / "metrics.csv").open())) for f in (a, b)]
    for row in (*rows[0], *rows[1]):
        row.pop("elapsed_s")
    assert rows[0] == rows[1]
    assert json.loads((b / "run.json").read_text())["status"] == "done"
    assert not (b / "partial").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted shared run, with the model's applications counted."""
    folder = tmp_path_factory.mktemp("vol") / "ref"
    mp = pytest.MonkeyPatch()
    try:
        count = Counter(mp)
        summary = run_did(make_volume(), make_model(), out_dir=folder, **OPTS)
    finally:
        mp.undo()
    return {"folder": folder, "summary": summary, "runs": count.runs, "applied": count.applied}


# ------------------------------------------------------------------------------------------------
# shared trajectory


def test_shared_equals_in_memory_run_volume(reference: dict[str, Any]) -> None:
    reader = ResultReader(reference["folder"])
    engine = InteractiveDenoiser(make_model(), n_candidates=2)
    stack = engine.run_volume(np.array(make_volume().hu), train_slices=3, batch_size=2)
    ordered = reader.ordered()
    assert [r.direction for r in ordered] == [c.direction for c in stack]
    for rec, cand in zip(ordered, stack, strict=True):
        assert rec.strength == pytest.approx(cand.strength, abs=1e-6)
        assert rec.step == cand.step
        # The runner fine-tunes on the training slices alone, run_volume on all slices applied
        # in batches of 2: the defaults differ in the last float bit, which the least-damped
        # Gauss-Newton steps amplify to a few hundredths of a HU at a few pixels.
        np.testing.assert_allclose(reader.candidate(rec.id), cand.image, atol=0.1)
    doc = reader.doc
    assert doc["config"]["trajectory"] == "shared" and doc["config"]["train_slices"] == 3
    assert doc["engine"]["train_slices"] == [0, 2, 4]
    assert doc["engine"]["coverage"] == pytest.approx(dict(stack.coverage), abs=1e-3)
    assert reference["runs"] == 1
    # every slice of every candidate rendered once (the default's t_low: k - 1 more passes)
    n = len(ordered)
    assert sum(reference["applied"]) == Z * (n + 2)


def test_shared_memory_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No candidate image (engine or runner) holds more than the training slices or a batch."""
    shapes: list[tuple[int, ...]] = []

    class Recorded(did_generate.Candidate):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            shapes.append(np.shape(self.image))

    def no_add(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a whole candidate volume was handed to ResultWriter.add")

    def no_run_volume(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("run_volume holds every candidate volume")

    monkeypatch.setattr(did_generate, "Candidate", Recorded)
    monkeypatch.setattr(ResultWriter, "add", no_add)
    monkeypatch.setattr(InteractiveDenoiser, "run_volume", no_run_volume)
    count = Counter(monkeypatch)
    vol = make_volume(z=7)
    summary = run_did(vol, make_model(), out_dir=tmp_path / "r", **OPTS)
    assert len(summary.records) >= 3 and shapes
    assert max(s[0] for s in shapes) == 3  # the engine's candidates: training slices only
    assert max(count.applied) <= OPTS["batch_size"]
    assert ResultReader(tmp_path / "r").candidate(summary.default_id).shape == (7, N, N)


def test_saved_weights_reproduce_candidates(reference: dict[str, Any]) -> None:
    reader = ResultReader(reference["folder"])
    engine = InteractiveDenoiser(make_model())
    hu = np.array(make_volume().hu)
    for rec in reader.ordered():
        assert rec.weights == f"candidates/c{rec.id:03d}.weights.safetensors"
        weights = reader.candidate_weights(rec.id)
        expected = reader.candidate(rec.id)
        np.testing.assert_array_equal(engine.apply(hu, weights=weights, batch_size=2), expected)
        model = make_model(seed=7)  # other weights, replaced by the candidate's
        model.load_state_dict(weights)
        with torch.no_grad():
            out = model(torch.from_numpy(hu[:2])[:, None])[:, 0].numpy()
        np.testing.assert_allclose(out, expected[:2], atol=1e-3)
    default = reader.candidate_weights(reader.default_record().id)  # type: ignore[union-attr]
    assert all(torch.equal(default[k], v) for k, v in make_model().state_dict().items())
    size = (reference["folder"] / "candidates/c001.weights.safetensors").stat().st_size
    assert size < 4096  # 41 parameters


def test_rendering_candidates_listed_before_their_volumes(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """The default's and each fine-tuned candidate's weights are listed under ``rendering``
    before any volume is rendered; they are the weights of the final candidates."""
    folder = tmp_path / "r"
    seen: list[tuple[str, list[int], list[int]]] = []

    def progress(p: RunProgress) -> None:
        if p.stage not in ("rendering", "render", "candidate"):
            return
        reader = ResultReader(folder)
        for rec in reader.rendering.values():
            assert rec.weights is not None and (folder / rec.weights).is_file()
            assert rec.id not in reader.records
        seen.append((p.stage, sorted(reader.rendering), sorted(reader.records)))

    run_did(make_volume(), make_model(), out_dir=folder, progress=progress, **OPTS)
    stages = [s for s, _, _ in seen]
    assert stages[0] == "rendering" and seen[0][1] == [0]  # the default, before anything
    first_render = stages.index("render")
    n_made = len(ResultReader(folder).records)
    # every candidate listed (as rendering) before the first slice batch is rendered
    assert seen[first_render][1] == list(range(n_made)) and seen[first_render][2] == []
    assert "rendering" not in stages[first_render:]
    # listed candidates leave 'rendering' one by one, and a finished run lists none
    for _, rendering, records in seen:
        assert not set(rendering) & set(records)
    final = ResultReader(folder)
    assert final.rendering == {} and "rendering" not in final.doc
    ref = ResultReader(reference["folder"])
    for cid in final.records:
        mine, theirs = final.candidate_weights(cid), ref.candidate_weights(cid)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize(
    ("stage", "after", "runs"),
    [
        ("rendering", 1, 1),  # the default's weights listed, before the fine-tuning
        ("finetune", 2, 1),  # inside the fine-tuning: run again from the start
        ("render", 2, 0),  # inside the default volume (3 batches), after the fine-tuning
        ("render", 7, 0),  # inside the second candidate volume: saved weights reused
        ("candidate", 3, 0),  # right after a candidate was listed
        ("finishing", 1, 0),  # every candidate done
    ],
)
def test_interrupted_shared_run_resumes(
    reference: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    after: int,
    runs: int,
) -> None:
    folder = tmp_path / "r"
    count = Counter(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_did(make_volume(), make_model(), out_dir=folder, progress=stopper(stage, after), **OPTS)
    first_runs = count.runs
    doc = json.loads((folder / "run.json").read_text())
    assert doc["status"] == "failed"
    state = json.loads((folder / "resume.json").read_text())
    assert state["trajectory"] == "shared"
    with pytest.raises(OutputExistsError):
        run_did(make_volume(), make_model(), out_dir=folder, **OPTS)
    stages: list[str] = []
    summary = run_did(
        make_volume(),
        make_model(),
        out_dir=folder,
        resume=True,
        progress=lambda p: stages.append(p.stage),
        **OPTS,
    )
    assert not summary.already_done
    assert count.runs - first_runs == runs
    # no slice batch rendered twice: both parts together apply the model as one run does
    assert sum(count.applied) == sum(reference["applied"])
    assert_same_result(reference["folder"], folder)
    assert json.loads((folder / "run.json").read_text())["resumed"] is True
    assert stages[-1] == "done"


def test_finished_run_resumed_does_nothing(
    reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(reference["folder"], folder)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    count = Counter(monkeypatch)
    summary = run_did(make_volume(), make_model(), out_dir=folder, resume=True, **OPTS)
    assert summary.already_done
    assert count.runs == 0 and count.applied == []
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert [r.id for r in summary.records] == [r.id for r in reference["summary"].records]
    assert summary.default_id == reference["summary"].default_id


def test_resume_refuses_another_run(reference: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(reference["folder"], folder)
    changed = make_volume()
    hu = np.array(changed.hu)
    hu[2, 10, 10] += 1.0
    cases: list[tuple[CTVolume, nn.Module, dict[str, Any], str]] = [
        (changed.with_hu(hu), make_model(), OPTS, "input's values differ"),
        (make_volume(z=4), make_model(), OPTS, "input's shape differs"),
        (make_volume(), make_model(seed=1), OPTS, "model's weights differ"),
        (make_volume(), make_model(), {**OPTS, "n_candidates": 3}, "n_candidates 2 -> 3"),
        (make_volume(), make_model(), {**OPTS, "batch_size": 1}, "batch_size"),
        (make_volume(), make_model(), {**OPTS, "shared": False}, "trajectory"),
    ]
    for vol, model, opts, message in cases:
        with pytest.raises(InputError, match=message):
            run_did(vol, model, out_dir=folder, resume=True, **opts)
    with pytest.raises(InputError, match="exclude each other"):
        run_did(make_volume(), make_model(), out_dir=folder, resume=True, overwrite=True, **OPTS)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a ctdid result folder"):
        run_did(make_volume(), make_model(), out_dir=tmp_path / "other", resume=True, **OPTS)


def test_resume_of_missing_folder_starts_a_run(tmp_path: Path) -> None:
    vol = make_volume(z=2)
    summary = run_did(vol, make_model(), out_dir=tmp_path / "new", resume=True, n_candidates=1)
    assert not summary.already_done and ResultReader(tmp_path / "new").status == "done"


# ------------------------------------------------------------------------------------------------
# per-slice trajectories


@pytest.fixture(scope="module")
def per_slice_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("per") / "ref"
    run_did(make_volume(), make_model(), out_dir=folder, shared=False, **OPTS)
    return folder


def test_per_slice_writes_candidates_as_slices_finish(
    per_slice_reference: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "r"
    engine = InteractiveDenoiser(make_model(), n_candidates=2)
    hu = np.array(make_volume().hu)
    grid = [0.0, -0.475, -0.95, 0.475, 0.95]  # default, then the engine's targets per side
    checked: list[int] = []

    def progress(p: RunProgress) -> None:
        if p.stage != "slice":
            return
        stack = engine.run(hu[p.done - 1])
        listed = json.loads((folder / "run.json").read_text())["candidates"]
        assert [c["direction"] for c in listed] == ["default"]  # listed before the slices
        default = np.load(folder / listed[0]["file"], mmap_mode="r")
        np.testing.assert_array_equal(default[p.done - 1], stack.default.image)
        for cid, s in enumerate(grid[1:], start=1):
            part = np.load(folder / "partial" / f"c{cid:03d}.npy", mmap_mode="r")
            np.testing.assert_array_equal(part[p.done - 1], interpolate(stack, s))
            assert not np.any(part[p.done :])
        checked.append(p.done)
        if p.done == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        run_did(
            make_volume(), make_model(), out_dir=folder, shared=False, progress=progress, **OPTS
        )
    assert checked == [1, 2, 3]
    state = json.loads((folder / "resume.json").read_text())
    assert sorted(state["slices"]) == ["0", "1", "2"]
    assert [s for _, s in state["grid"]] == pytest.approx(grid)

    mp = pytest.MonkeyPatch()
    try:
        count = Counter(mp)
        run_did(make_volume(), make_model(), out_dir=folder, shared=False, resume=True, **OPTS)
    finally:
        mp.undo()
    assert count.runs == Z - 3  # the finished slices are not run again
    assert_same_result(per_slice_reference, folder)


def test_per_slice_grid_reach_and_clamping(per_slice_reference: Path) -> None:
    reader = ResultReader(per_slice_reference)
    engine_doc = reader.doc["engine"]
    assert [r.strength for r in reader.ordered()] == pytest.approx([-0.95, -0.475, 0, 0.475, 0.95])
    assert engine_doc["strength_grid"] == pytest.approx([0.0, -0.475, -0.95, 0.475, 0.95])
    hu = np.array(make_volume().hu)
    engine = InteractiveDenoiser(make_model(), n_candidates=2)
    clamped = {(c["slice"], c["strength"]) for c in engine_doc["clamped"]}
    for z, item in enumerate(engine_doc["per_slice"]):
        stack = engine.run(hu[z])
        reach = {"high": -float(stack.strengths[0]), "low": float(stack.strengths[-1])}
        assert item["reach"] == pytest.approx(reach)
        for rec in reader.ordered():
            np.testing.assert_array_equal(
                reader.candidate(rec.id)[z], interpolate(stack, rec.strength)
            )
            beyond = rec.direction != "default" and abs(rec.strength) > reach[rec.direction] + 1e-9
            assert ((z, rec.strength) in clamped) == beyond
            if beyond:  # clamped to the slice's own last candidate on that side
                end = stack[0] if rec.direction == "high" else stack[-1]
                np.testing.assert_array_equal(reader.candidate(rec.id)[z], end.image)


def test_viewer_reads_streamed_result(reference: dict[str, Any]) -> None:
    import warnings

    from ctdid.viewer.server import create_app, slice_int16

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    folder = reference["folder"]
    client = TestClient(create_app(folder), base_url="http://127.0.0.1")
    doc = client.get("/api/result").json()
    assert doc["status"] == "done" and doc["shape_zyx"] == [Z, N, N]
    reader = ResultReader(folder)
    for rec in reader.ordered():
        r = client.get(f"/api/slice/{rec.id}/{Z - 1}")
        assert r.status_code == 200
        data = np.frombuffer(r.content, dtype="<i2").reshape(N, N)
        np.testing.assert_array_equal(data, slice_int16(reader.candidate(rec.id)[Z - 1]))


MODEL_FILE = """
import torch
from torch import nn


class Smoother(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9.0)
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x)


def build():
    torch.set_num_threads(1)
    return Smoother()
"""


def test_cli_resume(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    np.save(tmp_path / "in.npy", np.array(make_volume(z=3).hu))
    (tmp_path / "tiny_model.py").write_text(MODEL_FILE)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}

    def ctdid(*extra: str) -> subprocess.CompletedProcess[str]:
        args = ["run", "in.npy", "--model", "tiny_model.py:build", "--out", "res"]
        args += ["--method", "did", "--candidates", "1", "--train-slices", "2"]
        args += ["--batch-size", "2", *extra]
        return subprocess.run(
            [sys.executable, "-m", "ctdid", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    first = ctdid("--resume")  # nothing to resume yet: a new run
    assert first.returncode == 0, first.stderr
    assert "slices rendered" in first.stderr
    reader = ResultReader(tmp_path / "res")
    assert reader.doc["config"]["train_slices"] == 2
    assert reader.doc["config"]["method"] == "did"
    assert (reader.doc["curve"]["high"], reader.doc["curve"]["low"]) == ("did", "did")
    assert all(r.weights for r in reader.ordered())
    again = ctdid("--resume")
    assert again.returncode == 0, again.stderr
    assert "already finished; nothing to do" in again.stdout
    refused = ctdid()
    assert refused.returncode == 2 and "--resume" in refused.stderr
    both = ctdid("--resume", "--overwrite")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    other = ctdid("--resume", "--candidates", "2")
    assert other.returncode == 2 and "n_candidates 1 -> 2" in other.stderr


def test_single_slice_resume_runs_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = make_volume(z=1)
    folder = tmp_path / "one"
    with pytest.raises(KeyboardInterrupt):
        run_did(vol, make_model(), out_dir=folder, n_candidates=2, progress=stopper("candidate", 2))
    assert not (folder / "resume.json").exists()
    count = Counter(monkeypatch)
    summary = run_did(vol, make_model(), out_dir=folder, n_candidates=2, resume=True)
    assert count.runs == 1 and not summary.already_done
    fresh = run_did(vol, make_model(), out_dir=tmp_path / "fresh", n_candidates=2)
    assert_same_result(tmp_path / "fresh", folder)
    assert [r.weights for r in fresh.records] == [None] * len(fresh.records)
    again = run_did(vol, make_model(), out_dir=folder, n_candidates=2, resume=True)
    assert again.already_done and count.runs == 2


@pytest.mark.parametrize("method", ["auto", "did"])
def test_per_slice_lists_the_default_volume_before_any_slice(tmp_path: Path, method: str) -> None:
    """The default volume is listed first, bit for bit each slice's own default."""
    from ctdid.baselines import SidedDenoiser

    folder = tmp_path / method
    events: list[tuple[str, int]] = []
    snapshot: dict[str, Any] = {}

    def progress(p: RunProgress) -> None:
        events.append((p.stage, p.done))
        if p.stage == "candidate" and not snapshot:
            snapshot["listed"] = json.loads((folder / "run.json").read_text())["candidates"]

    opts = {**OPTS, "mode": "fast"} if method == "auto" else OPTS
    run_did(make_volume(), make_model(), out_dir=folder, shared=False, method=method,
            progress=progress, **opts)  # fmt: skip
    stages = [s for s, _ in events]
    assert stages.index("candidate") < stages.index("slice")  # listed before any slice ran
    assert [c["direction"] for c in snapshot["listed"]] == ["default"]
    reader = ResultReader(folder)
    hu = np.array(make_volume().hu)
    if method == "auto":
        engine: Any = SidedDenoiser(make_model(), high="blend", low="iterate", n_candidates=2)
    else:
        engine = InteractiveDenoiser(make_model(), n_candidates=2)
    default_rec = reader.default_record()
    assert default_rec is not None
    default = reader.candidate(default_rec.id)
    for z in range(Z):
        np.testing.assert_array_equal(default[z], engine.run(hu[z]).default.image)


def test_per_slice_resumes_after_the_default_volume(tmp_path: Path) -> None:
    """Stopped right after the default was listed: the resumed run makes the same folder."""
    ref = tmp_path / "ref"
    run_did(make_volume(), make_model(), out_dir=ref, shared=False, method="blend", **OPTS)
    folder = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run_did(make_volume(), make_model(), out_dir=folder, shared=False, method="blend",
                progress=stopper("candidate", 1), **OPTS)  # fmt: skip
    assert len(ResultReader(folder).records) == 1
    run_did(make_volume(), make_model(), out_dir=folder, shared=False, method="blend",
            resume=True, **OPTS)  # fmt: skip
    assert_same_result(ref, folder)
