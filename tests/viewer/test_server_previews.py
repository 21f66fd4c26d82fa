"""The viewer's server with previews listed (a running single-slice DID run), no engine."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from viewer_factory import add_previews, make_result

from ctdid.results import ResultReader, ResultWriter
from ctdid.viewer.server import create_app, slice_int16, view_order

with warnings.catch_warnings():  # starlette >= 1.0 asks for httpx2 (not installed)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


def client(folder: Path) -> TestClient:
    return TestClient(create_app(folder), base_url="http://127.0.0.1")


Running = tuple[Path, ResultWriter, list[int]]


@pytest.fixture
def running(tmp_path: Path) -> Running:
    folder = tmp_path / "running"
    writer = make_result(folder, strengths=(0.0, -1 / 3, 1 / 3), finish=False)
    return folder, writer, add_previews(writer)


def _strength(doc: dict[str, Any], entry: int | str) -> float:
    table = doc["previews"] if isinstance(entry, str) else doc["candidates"]
    field = "key" if isinstance(entry, str) else "id"
    return next(r["strength"] for r in table if r[field] == entry)


def test_result_lists_previews_apart_and_merges_them_by_strength(running: Running) -> None:
    folder, _, ids = running
    doc = client(folder).get("/api/result").json()
    assert [c["id"] for c in doc["candidates"]] == [0, 1, 2]
    assert all("preview" not in c for c in doc["candidates"]) and doc["order"] == [1, 0, 2]
    assert [p["id"] for p in doc["previews"]] == ids == list(range(8))
    assert all(p["preview"] is True and p["key"] == f"p{p['id']}" for p in doc["previews"])
    assert all(p["file"] == f"previews/p{p['id']:03d}.npy" for p in doc["previews"])
    order = doc["view_order"]
    assert order == ["p3", "p2", "p1", 1, "p0", 0, "p4", 2, "p5", "p6", "p7"]
    strengths = [_strength(doc, e) for e in order]
    assert strengths == sorted(strengths)
    assert view_order(ResultReader(folder)) == order


def test_preview_slice_and_roi(running: Running) -> None:
    folder, _, _ = running
    c = client(folder)
    want = slice_int16(ResultReader(folder).preview(5)[0])
    r = c.get("/api/slice/p5/0")
    assert r.status_code == 200 and r.headers["x-shape"] == "64,64"
    assert np.array_equal(np.frombuffer(r.content, dtype="<i2").reshape(64, 64), want)
    # candidate 5 does not exist: the preview key does not clash with candidate ids
    assert c.get("/api/slice/5/0").status_code == 404
    assert c.get("/api/slice/0/0").content != r.content  # candidate 0 is the default
    box = {"x0": 10, "y0": 10, "x1": 30, "y1": 30}
    roi = c.post("/api/roi", json={"candidate": "p5", "z": 0, **box}).json()
    assert roi["n"] == 400 and roi["mean"] == pytest.approx(float(want[10:30, 10:30].mean()))
    for bad in ("p", "px", "p1234567", "q1"):
        assert c.get(f"/api/slice/{bad}/0").status_code == 404


def test_replaced_previews_drop_out_with_a_clear_404(running: Running) -> None:
    folder, writer, _ = running
    c = client(folder)
    assert c.get("/api/slice/p1/0").status_code == 200  # the server's reader lists p0..p7
    writer.drop_previews([0, 1])  # DID's candidate at -1/3... then -0.5 was reached
    for key in ("p0", "p1"):  # listed in the server's last read, file gone: re-read, 404
        r = c.get(f"/api/slice/{key}/0")
        assert r.status_code == 404 and "replaced by DID" in r.json()["error"]
    roi = c.post("/api/roi", json={"candidate": "p0", "z": 0, "x0": 0, "y0": 0, "x1": 4, "y1": 4})
    assert roi.status_code == 404
    doc = c.get("/api/result").json()
    assert [p["key"] for p in doc["previews"]] == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert doc["view_order"] == ["p3", "p2", 1, 0, "p4", 2, "p5", "p6", "p7"]
    assert c.get("/api/slice/p2/0").status_code == 200
    writer.finish()
    doc = c.get("/api/result").json()
    assert doc["previews"] == [] and doc["view_order"] == doc["order"] == [1, 0, 2]
    assert c.get("/api/slice/p2/0").status_code == 404
    assert not (folder / "previews").exists()


def test_previews_cannot_be_picked_or_exported(running: Running) -> None:
    folder, _, _ = running
    c = client(folder)
    r = c.post("/api/picks", json={"candidate": "p2", "task": "low-contrast lesion"})
    assert r.status_code == 409 and "preview (pixel blend)" in r.json()["error"]
    r = c.post("/api/export", json={"candidate": "p2", "format": "png", "task": "x"})
    assert r.status_code == 409 and "cannot be picked or exported" in r.json()["error"]
    assert not (folder / "picks.json").exists() and not (folder / "exports").exists()
    # integer 2 is candidate 2, not preview 2
    r = c.post("/api/picks", json={"candidate": 2, "task": "low-contrast lesion"})
    assert r.status_code == 200
    entry = json.loads((folder / "picks.json").read_text())["picks"]["low-contrast lesion"]
    assert entry["candidate"] == 2 and "preview" not in entry
    assert entry["file"] == "candidates/c002.npy"
