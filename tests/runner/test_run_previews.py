"""run_did with previews: blends listed first, marked, replaced by DID, the folder unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ctdid.baselines import blend
from ctdid.errors import InputError
from ctdid.results import ResultReader
from ctdid.runner import RunOptions, RunProgress, run_did
from tiny_run_model import Tiny, disk_scan

torch.set_num_threads(1)

N, N_CAND = 40, 3
OPTS: dict[str, Any] = {"method": "did", "mode": "fast", "n_candidates": N_CAND, "seed": 1}


def _doc(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run.json").read_text())


class Watcher:
    """A progress callback that checks the folder after every stored candidate or preview."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.snapshots: list[dict[str, Any]] = []
        self.listed_at_ready: dict[str, Any] | None = None
        self.images: dict[float, np.ndarray] = {}

    def __call__(self, p: RunProgress) -> None:
        self.stages.append(p.stage)
        if p.stage not in ("preview", "candidate"):
            return
        doc = _doc(p.folder)
        prev = doc.get("previews", [])
        for rec in prev:  # every listed preview is marked and on disk
            assert rec["preview"] is True and rec["file"].startswith("previews/p")
            assert (p.folder / rec["file"]).is_file()
        assert all("preview" not in c for c in doc["candidates"])
        listed = {rec["file"] for rec in prev}
        on_disk = {f"previews/{f.name}" for f in (p.folder / "previews").glob("p*.npy")}
        if p.stage == "candidate":
            assert on_disk <= listed  # replaced previews are gone from the folder
        if p.stage == "preview" and p.done == p.total:
            self.listed_at_ready = doc
            self.images = self._check_images(p.folder)
        if p.stage == "candidate" and p.record is not None and p.record.direction != "default":
            # previews of the new candidate's side that it reached are gone
            reach = max(abs(c["strength"]) for c in doc["candidates"]
                        if c["direction"] == p.record.direction)  # fmt: skip
            for rec in prev:
                if rec["direction"] == p.record.direction:
                    assert abs(rec["strength"]) > reach + 0.5 / N_CAND - 1e-9
        self.snapshots.append({"stage": p.stage, "n_prev": len(prev)})

    @staticmethod
    def _check_images(folder: Path) -> dict[float, np.ndarray]:
        """The listed previews are the blend baseline of the input, default and t_low."""
        reader = ResultReader(folder)
        assert sorted(reader.previews) == list(range(2 * N_CAND))
        x = reader.input()[0]
        y0 = reader.candidate(reader.default_record().id)[0]  # type: ignore[union-attr]
        imgs = {r.strength: reader.preview(r.id)[0] for r in reader.previews.values()}
        t_low = imgs[1.0]  # s = +1 is the low-noise bound itself
        np.testing.assert_array_equal(imgs[-1.0], x)
        for s, img in imgs.items():
            np.testing.assert_array_equal(img, blend(x, y0, t_low, s))  # bit for bit
        return imgs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("previews")
    watch = Watcher()
    with_prev = run_did(disk_scan(N, seed=1), Tiny(), out_dir=base / "with", previews=True,
                        progress=watch, **OPTS)  # fmt: skip
    without = run_did(disk_scan(N, seed=1), Tiny(), out_dir=base / "without", **OPTS)
    return {"with": with_prev, "without": without, "watch": watch, "base": base}


def test_previews_come_first_and_are_marked(runs):
    watch: Watcher = runs["watch"]
    stages = [s for s in watch.stages if s in ("preview", "candidate")]
    # the default, then all previews, then DID's candidates
    assert stages[0] == "candidate"
    assert stages[1 : 1 + 2 * N_CAND] == ["preview"] * (2 * N_CAND)
    assert "preview" not in stages[1 + 2 * N_CAND :]
    doc = watch.listed_at_ready
    assert doc is not None and doc["status"] == "running"
    assert [c["direction"] for c in doc["candidates"]] == ["default"]  # only the default yet
    prev = doc["previews"]
    expect = [sign * i / N_CAND for sign in (-1, 1) for i in range(1, N_CAND + 1)]
    assert [r["strength"] for r in prev] == expect
    assert all(r["preview"] and r["step"] == 0 for r in prev)


def test_preview_images_are_blends_of_input_and_default(runs):
    imgs = runs["watch"].images  # checked against blend() when they were listed
    assert len(imgs) == 2 * N_CAND and all(img.dtype == np.float32 for img in imgs.values())
    prev = runs["watch"].listed_at_ready["previews"]
    assert prev[0]["progress"] == pytest.approx(1 / N_CAND)


def test_did_candidates_replace_previews(runs):
    snaps = runs["watch"].snapshots
    n_prev = [s["n_prev"] for s in snaps if s["stage"] == "candidate"]
    assert n_prev[0] == 0  # the default: before the previews
    after = n_prev[1:]
    assert after and after == sorted(after, reverse=True)  # only ever fewer
    assert after[-1] < 2 * N_CAND


def test_finished_folder_equals_a_run_without_previews(runs):
    a, b = runs["base"] / "with", runs["base"] / "without"
    da, db = _doc(a), _doc(b)
    assert "previews" not in da and not (a / "previews").exists()
    assert da["previews_shown"]["count"] == 2 * N_CAND and da["previews_shown"]["method"] == "blend"
    assert da["previews_shown"]["ready_s"] > 0
    assert "previews_shown" not in db
    assert da["config"] == db["config"] and da["order"] == db["order"]

    def strip(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k != "elapsed_s"}

    assert [strip(c) for c in da["candidates"]] == [strip(c) for c in db["candidates"]]
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for c in da["candidates"]:
        np.testing.assert_array_equal(np.load(a / c["file"]), np.load(b / c["file"]))
    assert [r.id for r in runs["with"].records] == [r.id for r in runs["without"].records]


def test_previews_are_not_compared_on_resume(runs, tmp_path):
    # A finished run without previews, resumed with them: the same run, left as it is.
    again = run_did(disk_scan(N, seed=1), Tiny(), out_dir=runs["base"] / "without", resume=True,
                    previews=True, **OPTS)  # fmt: skip
    assert again.already_done


def test_baselines_make_no_previews(tmp_path):
    stages: list[str] = []
    run_did(disk_scan(N, seed=1), Tiny(), out_dir=tmp_path / "blend", method="blend",
            n_candidates=2, previews=True, progress=lambda p: stages.append(p.stage))  # fmt: skip
    assert "preview" not in stages and "previews_shown" not in _doc(tmp_path / "blend")


def test_previews_option_is_checked():
    assert RunOptions().previews is False
    assert RunOptions(previews=True).previews is True
    with pytest.raises(InputError, match="previews"):
        RunOptions(previews="yes")  # type: ignore[arg-type]
    assert "previews" not in RunOptions(previews=True).config(
        per_slice=False, reference=False, roi=False
    )


MODEL_FILE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, hu):
        z = (hu + 1000.0) / 1000.0
        return (z - 0.1 * self.c2(torch.relu(self.c1(z)))) * 1000.0 - 1000.0


def build():
    torch.set_num_threads(1)
    return Net()
"""


@pytest.mark.parametrize("flag", [None, "--no-previews"])
def test_cli_run_did_previews_on_by_default(tmp_path, monkeypatch, flag):
    from ctdid.cli import main

    np.save(tmp_path / "in.npy", np.asarray(disk_scan(N, seed=1).hu))
    (tmp_path / "tiny_model.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    args = ["run", "in.npy", "--model", "tiny_model.py:build", "--out", "res",
            "--method", "did", "--mode", "fast", "--candidates", "2"]  # fmt: skip
    try:
        main([*args, *([flag] if flag else [])])
    except SystemExit as exc:
        assert not exc.code
    doc = _doc(tmp_path / "res")
    assert doc["status"] == "done" and "previews" not in doc
    if flag is None:
        assert doc["previews_shown"]["count"] == 4
    else:
        assert "previews_shown" not in doc
