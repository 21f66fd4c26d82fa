"""benchmarks/hu_shift.py: the shift measurement and the card update."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from benchmark_loading import benchmark_module
from ctdid.core.adapter import HUAdapter
from ctdid.models import ModelCard, build_model, sha256_file


@pytest.fixture(scope="module")
def hs() -> Iterator[ModuleType]:
    with benchmark_module("eval_denoisers"), benchmark_module("hu_shift") as module:
        yield module


class _AddHU(nn.Module):
    """Adds a constant in HU (the adapter's units are HU/1000 + 1)."""

    def __init__(self, hu: float) -> None:
        super().__init__()
        self.hu = hu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.hu / 1000.0


def _case() -> SimpleNamespace:
    yy, xx = np.mgrid[:256, :256]
    body = np.hypot(yy - 128, xx - 128) < 100
    normal = np.where(body, 40.0, -1000.0).astype(np.float32)
    low = normal + np.random.default_rng(0).normal(0, 30, normal.shape).astype(np.float32)
    return SimpleNamespace(name="L506", low=low, normal=normal, body=body)


def test_measure_finds_a_known_offset(hs: ModuleType) -> None:
    case = _case()
    model = HUAdapter(_AddHU(12.0), hu_offset=-1000.0, hu_scale=1000.0)
    m = hs.measure(model, case)
    assert m["whole"] == pytest.approx(m["input"] + 12.0, abs=0.05)
    assert m["crop"] == pytest.approx(12.0, abs=2.0)
    assert m["tiles"] == pytest.approx(m["input"] + 12.0, abs=0.05)


def test_card_update_merges_the_bias(hs: ModuleType, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = build_model("compact-unet", {})
    weights = tmp_path / "unet-d25.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    ModelCard(
        name="unet-d25", architecture="compact-unet", hu_offset=-1000.0, hu_scale=1000.0,
        size_multiple=16, training_dose=0.25, weights_sha256=sha256_file(weights),
        metrics={"kept": 1},
    ).save(tmp_path / "unet-d25.card.yaml")  # fmt: skip
    results = {
        "L506": {"whole": 4.24, "input": 0.71},
        "abdomen-1": {"whole": -0.5},
        "chest-2": {"whole": 1.26},
    }
    (path,) = hs.update_cards({"unet-d25": results}, str(tmp_path))
    metrics = ModelCard.load(path).metrics
    assert metrics["kept"] == 1
    bias = metrics["soft_tissue_bias_hu"]
    assert (bias["simulated_dose0.25_min"], bias["simulated_dose0.25_max"]) == (-0.5, 1.3)
    assert (bias["real_L506"], bias["real_L506_input"]) == (4.2, 0.7)
