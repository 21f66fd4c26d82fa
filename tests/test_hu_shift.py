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


def _case(*, bone: bool = False) -> SimpleNamespace:
    """A 200 mm water disc (1 mm pixels), optionally with a 700 HU bone disc beside its
    centre, and a noisy copy of it."""
    yy, xx = np.mgrid[:256, :256]
    body = np.hypot(yy - 128, xx - 128) < 100
    normal = np.where(body, 40.0, -1000.0).astype(np.float32)
    if bone:
        normal[np.hypot(yy - 128, xx - 90) < 20] = 700.0
    low = normal + np.random.default_rng(0).normal(0, 30, normal.shape).astype(np.float32)
    return SimpleNamespace(name="L506", low=low, normal=normal, body=body, spacing=(1.0, 1.0))


def test_measure_finds_a_known_offset(hs: ModuleType) -> None:
    case = _case()
    model = HUAdapter(_AddHU(12.0), hu_offset=-1000.0, hu_scale=1000.0)
    m = hs.measure(model, case)
    assert m["roi"] == pytest.approx(m["roi_input"] + 12.0, abs=0.05)
    assert m["roi_input"] == pytest.approx(0.0, abs=3 * 30 / 15)  # 15 x 15 px ROIs, 30 HU noise
    assert m["n_rois"] == hs.N_ROIS
    assert m["whole"] == pytest.approx(m["input"] + 12.0, abs=0.05)
    assert m["crop"] == pytest.approx(12.0, abs=2.0)
    assert m["tiles"] == pytest.approx(m["input"] + 12.0, abs=0.05)


def test_rois_stay_in_flat_soft_tissue(hs: ModuleType) -> None:
    case = _case(bone=True)
    rois = hs.flat_rois(case)
    assert len(rois) == hs.N_ROIS
    for r in rois:
        assert np.all(case.normal[r] == 40.0)  # neither bone nor air nor their edges


def test_a_mean_preserving_blur_reads_no_bias_on_the_roi_measure(hs: ModuleType) -> None:
    # The reason for the ROI measure: a Gaussian blur keeps every mean, yet next to bone it
    # spills air and bone into the [-500, 200] HU band, which the band mask reads as a shift.
    case = _case(bone=True)
    case.low = case.normal.copy()  # noise-free: a blur moves only what edges spill
    rows = hs.check_measures(case)
    assert [r["sigma_px"] for r in rows] == list(hs.CHECK_SIGMAS)
    for r in rows:
        assert abs(r["roi"]) < 0.01
        assert abs(r["band"]) > 1.0  # air and bone spill into the band


def test_roi_shift_refuses_no_regions(hs: ModuleType) -> None:
    with pytest.raises(ValueError, match="no flat region"):
        hs.roi_shift(np.zeros((4, 4)), np.zeros((4, 4)), [])


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
        "L506": {"whole": 4.24, "input": 0.71, "roi": 0.34, "roi_se": 0.26, "roi_input": -0.05},
        "abdomen-1": {"whole": 3.0, "roi": -0.5},
        "chest-2": {"whole": -2.0, "roi": 1.26},
    }
    (path,) = hs.update_cards({"unet-d25": results}, str(tmp_path))
    metrics = ModelCard.load(path).metrics
    assert metrics["kept"] == 1
    bias = metrics["soft_tissue_bias_hu"]
    assert (bias["simulated_dose0.25_min"], bias["simulated_dose0.25_max"]) == (-0.5, 1.3)
    assert (bias["real_L506"], bias["real_L506_se"], bias["real_L506_input"]) == (0.3, 0.3, -0.1)
    assert (bias["real_L506_band_mask"], bias["real_L506_band_mask_input"]) == (4.2, 0.7)
    assert "flat soft-tissue ROIs" in bias["how"]
