"""run.json names the engine's step control, and why it fell back to Adam when it did."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ctdid.runner import run_did
from ctdid.volume import CTVolume
from no_forward_ad import WithoutForwardAD
from tiny_run_model import Tiny, disk_scan

torch.set_num_threads(1)
N = 40


def scan() -> CTVolume:
    return disk_scan(N)


def engine_doc(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())["engine"]


def test_run_json_names_the_step_control(tmp_path: Path) -> None:
    run_did(scan(), Tiny(), out_dir=tmp_path / "gn", n_candidates=2)
    doc = engine_doc(tmp_path / "gn")
    for d in ("high", "low"):
        assert doc["optimizer"][d].startswith("Gauss-Newton")
    assert "fallback" not in doc


def test_run_json_records_the_fallback_to_adam(tmp_path: Path) -> None:
    run_did(scan(), WithoutForwardAD(Tiny()), out_dir=tmp_path / "adam", n_candidates=2)
    doc = engine_doc(tmp_path / "adam")
    assert set(doc["fallback"]) == {"high", "low"}
    assert all("Adam" in why for why in doc["fallback"].values())
    assert all(o.startswith("Adam") for o in doc["optimizer"].values())
