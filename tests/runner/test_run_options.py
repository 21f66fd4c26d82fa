"""RunOptions: checked once, recorded in run.json, and the same run from an object or keywords."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ctdid.errors import InputError
from ctdid.runner import RunOptions, run_did
from ctdid.volume import CTVolume
from tiny_run_model import Tiny, disk_scan

torch.set_num_threads(1)
N = 40


def scan() -> CTVolume:
    return disk_scan(N, seed=1)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"mode": "quick"}, "mode"),
        ({"method": "median"}, "method"),
        ({"window": (100.0, -100.0)}, "window"),
        ({"window": (float("nan"), 100.0)}, "window"),
        ({"export": "dicom,jpeg"}, "export format"),
        ({"pick": "prettiest"}, "pick task"),
        ({"pick": "sharpest-below"}, "noise-ceiling"),
        ({"pick_options": {"colour": 1}}, "pick option"),
        ({"train_slices": 0}, "train_slices"),
        ({"batch_size": True}, "batch_size"),
        ({"resume": True, "overwrite": True}, "exclude"),
    ],
)
def test_bad_options_raise_input_error(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(InputError, match=word):
        RunOptions(**kwargs)


def test_options_are_normalised_and_frozen() -> None:
    opts = RunOptions(
        export="NII, dcm,nifti",
        window=(-160, 240),
        pick="detect",
        pick_options={"target_noise": None, "diameter_mm": 4.0},
        engine_options={"coverage": 0.9, "keep_weights": True},
    )
    assert opts.exports == ("nifti", "dicom")
    assert opts.window == (-160.0, 240.0) and isinstance(opts.window[0], float)
    assert dict(opts.pick_options) == {"diameter_mm": 4.0}
    assert dict(opts.engine_options) == {"coverage": 0.9}  # the run sets keep_weights
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.mode = "fast"  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunOptions("fast")  # type: ignore[misc]  # keyword-only
    cfg = opts.config(per_slice=False, reference=False, roi=False)
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["export"] == ["nifti", "dicom"] and cfg["trajectory"] == "shared"


def test_match_noise_needs_a_target_or_a_reference(tmp_path: Path) -> None:
    opts = RunOptions(pick="match-noise")  # the reference is known only when the run starts
    with pytest.raises(InputError, match="target-noise"):
        run_did(scan(), Tiny(), out_dir=tmp_path / "r", options=opts)
    assert not (tmp_path / "r").exists()


def test_options_object_and_keywords_write_the_same_run(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"mode": "fast", "n_candidates": 2, "seed": 3, "export": "numpy"}
    a = run_did(scan(), Tiny(), out_dir=tmp_path / "a", **kw)
    opts = RunOptions(**{**kw, "seed": 0})
    b = run_did(scan(), Tiny(), out_dir=tmp_path / "b", options=opts, seed=3)
    doc_a = json.loads((tmp_path / "a" / "run.json").read_text())
    doc_b = json.loads((tmp_path / "b" / "run.json").read_text())
    assert doc_a["config"] == doc_b["config"] and doc_a["config"]["seed"] == 3
    assert [r.strength for r in a.records] == [r.strength for r in b.records]
    for ra, rb in zip(a.records, b.records, strict=True):
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / ra.file), np.load(tmp_path / "b" / rb.file)
        )
    # Every engine option, resolved, is in run.json beside the options given.
    resolved = doc_a["engine_options_resolved"]
    assert resolved["mode"] == "fast" and resolved["krylov_dim"] == 12
    assert resolved["n_candidates"] == 2 and resolved["seed"] == 3
    with pytest.raises(TypeError):
        run_did(scan(), Tiny(), out_dir=tmp_path / "c", no_such_option=1)
    with pytest.raises(TypeError, match="RunOptions"):
        run_did(scan(), Tiny(), out_dir=tmp_path / "c", options={"mode": "fast"})  # type: ignore[arg-type]
