"""run.json names the engine's step control, and why it fell back to Adam when it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ctdid.runner import run_did
from ctdid.volume import CTVolume
from no_forward_ad import WithoutForwardAD

torch.set_num_threads(1)
N = 40


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)
        with torch.no_grad():
            self.c2.weight.mul_(0.1)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        z = (hu + 1000.0) / 1000.0
        return (z - self.c2(torch.relu(self.c1(z)))) * 1000.0 - 1000.0


def scan() -> CTVolume:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    img = np.full((N, N), -1000.0, np.float32)
    img[yy**2 + xx**2 < (0.42 * N) ** 2] = 40.0
    img = img + rng.normal(0.0, 30.0, img.shape).astype(np.float32)
    return CTVolume(img[None].astype(np.float32), spacing=(1.0, 0.8, 0.8))


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
