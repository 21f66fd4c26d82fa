"""A volume's previews: blends listed without files while DID fine-tunes, rendered on demand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from on_demand_factory import OPTS, TinyHU, Z, client, disk_volume, slice_of

from ctdid.core import InteractiveDenoiser
from ctdid.core.did import preview_image
from ctdid.results import ResultReader
from ctdid.runner import RunProgress, run_did
from ctdid.viewer.ondemand import OnDemandRenderer
from ctdid.viewer.server import slice_int16

K = 3  # RunOptions' default k
N_CAND = int(OPTS["n_candidates"])


def bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The default and t_low of one slice, as the viewer computes them."""
    engine = InteractiveDenoiser(TinyHU())
    y0 = engine.apply(x, batch_size=1)
    t = y0
    for _ in range(K - 1):
        t = engine.apply(t, batch_size=1)
    return y0, t


class Viewer:
    """A progress callback that looks at the folder through the viewer while the run goes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.at_previews: dict[str, Any] | None = None
        self.shown: dict[tuple[str, int], tuple[np.ndarray, str]] = {}
        self.after_candidates: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self.pick_status: int | None = None

    def __call__(self, p: RunProgress) -> None:
        if p.stage == "preview" and self.at_previews is None:
            c = client(self.folder, model=TinyHU())
            self.at_previews = c.get("/api/result").json()
            for rec in self.at_previews["previews"]:
                for z in (0, Z - 1):
                    self.shown[(rec["key"], z)] = slice_of(c, rec["key"], z)
            key = self.at_previews["previews"][0]["key"]
            self.pick_status = c.post("/api/picks", json={"candidate": key, "task": "liver"}
                                      ).status_code  # fmt: skip
        if p.stage == "rendering" and p.record is not None and p.record.direction != "default":
            doc = json.loads((self.folder / "run.json").read_text())
            self.after_candidates.append((p.record.__dict__.copy(), doc.get("previews", [])))


def test_volume_previews_are_listed_rendered_and_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "with"
    viewer = Viewer(folder)
    run_did(disk_volume(), TinyHU(), out_dir=folder, previews=True, progress=viewer, **OPTS)
    doc = viewer.at_previews
    assert doc is not None, "no previews were listed"
    # 2 n previews, all without files, before any fine-tuned candidate; with the default
    prev = doc["previews"]
    assert len(prev) == 2 * N_CAND and all(r["on_demand"] and r["preview"] for r in prev)
    assert not (folder / "previews").exists() or not any((folder / "previews").iterdir())
    assert [r["direction"] for r in doc["rendering"]] == ["default"]
    strengths = sorted(r["strength"] for r in prev)
    assert strengths == [-1.0, -0.5, 0.5, 1.0]
    order = doc["view_order"]
    assert order[len(order) // 2] == 0 and len(order) == 2 * N_CAND + 1
    # each slice is the blend of that slice of the input, the default and t_low, exactly
    x = ResultReader(folder).input()
    for (key, z), (img, how) in viewer.shown.items():
        s = next(r["strength"] for r in prev if r["key"] == key)
        y0, t_low = bounds(np.array(x[z]))
        assert how == "on-demand"
        np.testing.assert_array_equal(img, slice_int16(preview_image(x[z], y0, t_low,
                                                                     strength=s)))  # fmt: skip
    assert viewer.pick_status == 409
    # every fine-tuned candidate replaced the previews of its side it reached
    assert viewer.after_candidates
    for rec, listed in viewer.after_candidates:
        for r in listed:
            if r["direction"] == rec["direction"]:
                assert abs(r["strength"]) > abs(rec["strength"]) + 0.5 / N_CAND
    done = ResultReader(folder)
    assert done.previews == {} and done.rendering == {}
    assert done.doc["previews_shown"]["count"] == 2 * N_CAND


def test_volume_previews_leave_the_folder_as_without(tmp_path: Path) -> None:
    a, b = tmp_path / "with", tmp_path / "without"
    run_did(disk_volume(), TinyHU(), out_dir=a, previews=True, **OPTS)
    run_did(disk_volume(), TinyHU(), out_dir=b, **OPTS)
    ra, rb = ResultReader(a), ResultReader(b)
    assert sorted(ra.records) == sorted(rb.records)
    for cid in ra.records:
        np.testing.assert_array_equal(ra.candidate(cid), rb.candidate(cid))
    files = [sorted(p.relative_to(f).as_posix() for p in f.rglob("*") if p.is_file())
             for f in (a, b)]  # fmt: skip
    assert files[0] == files[1]


def test_volume_previews_hidden_without_the_model(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    seen: list[dict[str, Any]] = []

    def look(p: RunProgress) -> None:
        if p.stage == "preview" and not seen:
            seen.append(client(folder).get("/api/result").json())  # no model given

    run_did(disk_volume(), TinyHU(), out_dir=folder, previews=True, progress=look, **OPTS)
    (doc,) = seen
    assert doc["on_demand"]["available"] is False
    assert doc["previews"] == [] and doc["view_order"] == []


def test_renderer_computes_a_slice_bounds_once(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    counts: list[int] = []

    def look(p: RunProgress) -> None:
        if p.stage == "preview" and not counts:
            reader = ResultReader(folder)
            renderer = OnDemandRenderer(folder, model=TinyHU())
            for pid in reader.previews:
                renderer.preview_slice(reader, pid, 1)
            counts.append(renderer.rendered)

    run_did(disk_volume(), TinyHU(), out_dir=folder, previews=True, progress=look, **OPTS)
    assert counts == [K]  # k forward passes for all 2 n previews of the slice
