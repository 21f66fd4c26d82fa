from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctdid.errors import InputError, OutputExistsError
from ctdid.results import ResultReader, ResultWriter


def _writer(folder: Path, **kw: object) -> ResultWriter:
    x = np.random.default_rng(0).normal(0, 30, (2, 8, 8)).astype(np.float32)
    return ResultWriter(folder, input_hu=x, spacing=(3.0, 0.7, 0.7), info={"seed": 1}, **kw)


def test_candidates_stream_in_and_read_back_in_curve_order(tmp_path: Path) -> None:
    w = _writer(tmp_path / "r")
    images = {s: np.full((2, 8, 8), 100 * s, np.float32) for s in (0.0, -0.5, 0.5, -1.0, 1.0)}
    directions = {0.0: "default", -0.5: "high", 0.5: "low", -1.0: "high", 1.0: "low"}
    for s, img in images.items():
        w.add(
            img,
            direction=directions[s],
            strength=s,
            step=int(abs(s) * 4),
            progress=abs(s),
            elapsed_s=0.1,
            labels={"noise_hu": 10 - s},
        )
        r = ResultReader(tmp_path / "r")
        assert r.status == "running"
        strengths = [c.strength for c in r.ordered()]
        assert strengths == sorted(strengths)
    w.finish(timings={"total_s": 1.0})
    r = ResultReader(tmp_path / "r")
    assert r.status == "done"
    assert [c.strength for c in r.ordered()] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert r.default_record() is not None
    for rec in r.ordered():
        np.testing.assert_array_equal(r.candidate(rec.id), images[rec.strength])
    assert r.spacing == (3.0, 0.7, 0.7)
    assert r.shape == (2, 8, 8)
    doc = json.loads((tmp_path / "r" / "run.json").read_text())
    assert doc["seed"] == 1 and doc["timings"] == {"total_s": 1.0}


def test_refuses_nonempty_folder_without_overwrite(tmp_path: Path) -> None:
    w = _writer(tmp_path / "r")
    w.add(np.zeros((2, 8, 8)), direction="default", strength=0, step=0, progress=0, elapsed_s=0)
    with pytest.raises(OutputExistsError):
        _writer(tmp_path / "r")
    _writer(tmp_path / "r", overwrite=True)
    assert not list((tmp_path / "r" / "candidates").glob("*.npy"))


def test_shape_mismatch_and_broken_folders(tmp_path: Path) -> None:
    w = _writer(tmp_path / "r")
    with pytest.raises(ValueError, match="shape"):
        w.add(np.zeros((1, 8, 8)), direction="low", strength=1, step=1, progress=1, elapsed_s=0)
    with pytest.raises(InputError, match="no such"):
        ResultReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"run\.json"):
        ResultReader(tmp_path / "empty")
    (tmp_path / "r" / "run.json").write_text("{broken")
    with pytest.raises(InputError, match="unreadable"):
        ResultReader(tmp_path / "r")


def test_rendering_candidates_listed_until_committed(tmp_path: Path) -> None:
    import torch

    from ctdid.results import CandidateRecord

    w = _writer(tmp_path / "r")
    rel = w.save_weights(0, {"w": torch.ones(3)})
    rec = CandidateRecord(id=0, direction="default", strength=0.0, step=0, progress=0.0,
                          elapsed_s=0.1, weights=rel)  # fmt: skip
    w.list_rendering(rec)
    r = ResultReader(tmp_path / "r")
    assert list(r.rendering) == [0] and r.records == {}
    assert torch.equal(r.candidate_weights(0)["w"], torch.ones(3))
    with pytest.raises(ValueError, match="no saved weights"):
        missing = "candidates/c001.weights.safetensors"
        w.list_rendering(CandidateRecord(id=1, direction="low", strength=0.2, step=3,
                                         progress=0.2, elapsed_s=0.2, weights=missing))  # fmt: skip
    part = w.open_partial("c000.npy")
    part[:] = 5.0
    part.flush()
    del part
    w.commit(0, direction="default", strength=0.0, step=0, progress=0.0, elapsed_s=1.0,
             weights=rel)  # fmt: skip
    r.refresh()
    assert r.rendering == {} and list(r.records) == [0]
    with pytest.raises(ValueError, match="already listed"):
        w.list_rendering(rec)
    rel1 = w.save_weights(1, {"w": torch.zeros(3)})
    w.list_rendering(CandidateRecord(id=1, direction="low", strength=0.2, step=3, progress=0.2,
                                     elapsed_s=0.2, weights=rel1))  # fmt: skip
    w.finish(status="failed")  # a failed run keeps what can still be rendered
    assert list(ResultReader(tmp_path / "r").rendering) == [1]
    w.finish(status="done")
    assert ResultReader(tmp_path / "r").rendering == {}
