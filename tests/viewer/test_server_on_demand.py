"""The viewer's server renders slices of candidates still being rendered, from their weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from on_demand_factory import OPTS, TinyHU, Z, client, disk_volume, slice_of, stopped_run

from ctdid.core import InteractiveDenoiser
from ctdid.errors import InputError
from ctdid.results import ResultReader
from ctdid.runner import run_did
from ctdid.viewer.ondemand import OnDemandRenderer
from ctdid.viewer.server import slice_int16


def test_rendering_candidates_on_demand_then_stored(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    stopped_run(folder, TinyHU())
    reader = ResultReader(folder)
    assert reader.records == {} and len(reader.rendering) >= 3
    c = client(folder, model=TinyHU())
    doc = c.get("/api/result").json()
    assert doc["on_demand"] == {"available": True, "reason": None}
    ids = sorted(r["id"] for r in doc["rendering"])
    assert ids == sorted(reader.rendering) and doc["candidates"] == []
    assert doc["default_candidate"] == 0
    order = doc["view_order"]
    strength = {r["id"]: r["strength"] for r in doc["rendering"]}
    assert sorted(order) == ids and [strength[i] for i in order] == sorted(strength.values())
    directions = [next(r["direction"] for r in doc["rendering"] if r["id"] == i) for i in order]
    assert directions.index("default") == directions.count("high")  # high | default | low
    shown = {(cid, z): slice_of(c, cid, z) for cid in ids for z in (0, Z - 1)}
    assert all(how == "on-demand" for _, how in shown.values())
    # the image is the candidate's weights applied to the input slice
    engine = InteractiveDenoiser(TinyHU())
    x = reader.input()
    for (cid, z), (img, _) in shown.items():
        want = engine.apply(np.array(x[z]), weights=reader.candidate_weights(cid), batch_size=1)
        np.testing.assert_array_equal(img, slice_int16(want))
    # not pickable, not exportable, but measurable
    r = c.post("/api/picks", json={"candidate": ids[-1], "task": "liver"})
    assert r.status_code == 409 and "still being rendered" in r.json()["error"]
    r = c.post("/api/export", json={"candidate": ids[-1], "format": "png", "task": ""})
    assert r.status_code == 409
    roi = c.post("/api/roi", json={"candidate": ids[-1], "z": 0, "x0": 5, "y0": 5, "x1": 20,
                                   "y1": 20})  # fmt: skip
    assert roi.status_code == 200 and np.isfinite(roi.json()["mean"])
    # the same run resumed to its end: the stored volumes hold the same slices
    run_did(disk_volume(), TinyHU(), out_dir=folder, resume=True, **OPTS)
    done = ResultReader(folder)
    assert done.rendering == {} and sorted(done.records) == ids
    for (cid, z), (img, _) in shown.items():
        stored, how = slice_of(c, cid, z)
        assert how == "stored"
        assert np.abs(stored.astype(int) - img.astype(int)).max() <= 1  # float32 batching
        np.testing.assert_allclose(done.candidate(cid)[z], stored, atol=0.51)
    assert c.post("/api/picks", json={"candidate": ids[-1], "task": "liver"}).status_code == 200


def test_no_on_demand_without_the_model(tmp_path: Path) -> None:
    """A run started from Python records no model spec: nothing to render with; said so."""
    folder = tmp_path / "r"
    stopped_run(folder, TinyHU())
    c = client(folder)  # no model given
    doc = c.get("/api/result").json()
    assert doc["on_demand"]["available"] is False
    assert "no model spec" in doc["on_demand"]["reason"]
    assert doc["rendering"] == [] and doc["view_order"] == []
    r = c.get("/api/slice/1/0")
    assert r.status_code == 503 and "cannot render on demand" in r.json()["error"]
    assert slice_of(c, "input", 0)[1] == "stored"


def test_on_demand_refuses_another_model(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    stopped_run(folder, TinyHU())
    doc = client(folder, model=TinyHU(seed=3)).get("/api/result").json()
    assert doc["on_demand"]["available"] is False
    assert "differ from the run's" in doc["on_demand"]["reason"]


def test_on_demand_loads_the_model_named_in_run_json(tmp_path: Path) -> None:
    """``ctdid run`` records the model's spec: the viewer loads it itself (shipped model)."""
    from ctdid.runner.console import load_denoiser

    model, info = load_denoiser("unet-d25")
    folder = tmp_path / "r"
    vol = disk_volume(n=48, z=3)
    stopped_run(folder, model, volume=vol, model_info=info, n_candidates=1, train_slices=1)
    c = client(folder)
    doc = c.get("/api/result").json()
    assert doc["on_demand"] == {"available": True, "reason": None}
    reader = ResultReader(folder)
    engine = InteractiveDenoiser(load_denoiser("unet-d25")[0])
    for cid in reader.rendering:
        img, how = slice_of(c, cid, 1)
        want = engine.apply(
            np.array(vol.hu[1]), weights=reader.candidate_weights(cid), batch_size=1
        )
        assert how == "on-demand"
        np.testing.assert_array_equal(img, slice_int16(want))


def test_renderer_cache_is_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    stopped_run(folder, TinyHU())
    reader = ResultReader(folder)
    one = 40 * 40 * 4
    renderer = OnDemandRenderer(folder, model=TinyHU(), cache_bytes=3 * one)
    for z in range(Z):
        renderer.slice(reader, 0, z)
    assert renderer.rendered == Z
    renderer.slice(reader, 0, Z - 1)  # still cached
    assert renderer.rendered == Z
    renderer.slice(reader, 0, 0)  # dropped: rendered again
    assert renderer.rendered == Z + 1
    with pytest.raises(InputError, match="out of range"):
        renderer.slice(reader, 0, Z)
