"""The denoiser evaluation script (benchmarks/eval_denoisers.py) on tiny stand-ins."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from benchmark_loading import BENCHMARKS, benchmark_module
from ctdid.core.adapter import HUAdapter
from ctdid.metrics import noise_label
from ctdid.metrics.baselines import roi_noise_std
from ctdid.models import ModelCard, build_model, load_model, sha256_file

FLAT = (slice(24, 40), slice(24, 40))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ev() -> Iterator[ModuleType]:
    with benchmark_module("eval_denoisers") as module:
        yield module


def _disk(n: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    img = np.full((n, n), -1000.0, dtype=np.float32)
    img[np.hypot(yy - n / 2, xx - n / 2) < 0.45 * n] = 40.0
    img[np.hypot(yy - 0.3 * n, xx - 0.3 * n) < 4] = 300.0
    return img


def _pair(seed: int = 0, n: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = _disk(n)
    normal = truth + rng.normal(0.0, 5.0, truth.shape).astype(np.float32)
    low = normal + rng.normal(0.0, 20.0, truth.shape).astype(np.float32)
    return low, normal, truth


class _Shrink(nn.Module):
    """Pulls the input toward the noise-free disk: ``clean + alpha * (x - clean)``.

    A stand-in denoiser with a known result: the noise STD is scaled by ``alpha`` (1: identity).
    """

    def __init__(self, alpha: float, n: int = 64) -> None:
        super().__init__()
        self.alpha = alpha
        self.clean: torch.Tensor
        self.register_buffer("clean", torch.from_numpy((_disk(n) + 1000.0) / 1000.0)[None, None])
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clean + self.alpha * (x - self.clean) + 0.0 * self.dummy


def _shrink_model(alpha: float, dose: float) -> HUAdapter:
    return HUAdapter(_Shrink(alpha), meta={"training_dose": dose, "architecture": "shrink"})


@pytest.fixture
def case(ev: ModuleType) -> Any:
    low, normal, truth = _pair()
    return ev.make_case(
        "disk",
        "phantom",
        low=low,
        normal=normal,
        truth=truth,
        spacing=(0.7, 0.7),
        dose=0.25,
        regions=[FLAT],
    )


def test_evaluate_case_measures_model_input_and_matched_tv(ev: ModuleType, case: Any) -> None:
    ident = ev.evaluate_case("ident", _shrink_model(1.0, 0.5), case)
    assert ident["rmse_hu"] == pytest.approx(ident["rmse_input_hu"], rel=1e-4)
    assert ident["rmse_reduction"] == pytest.approx(0.0, abs=1e-4)
    assert ident["rmse_input_hu"] == pytest.approx(np.hypot(20.0, 0.0), rel=0.1)

    box = ev.evaluate_case("half", _shrink_model(0.5, 0.25), case)
    assert box["std_input_hu"] == pytest.approx(roi_noise_std(case.low, FLAT))
    assert box["std_hu"] == pytest.approx(0.5 * box["std_input_hu"], rel=0.01)
    assert box["rmse_hu"] < box["rmse_input_hu"]
    assert box["rmse_reduction"] > 0.3
    assert box["tv_matched"]
    assert abs(box["std_tv_hu"] - box["std_hu"]) <= 0.02 * box["std_hu"]
    assert box["rmse_truth_hu"] is not None
    assert box["training_dose"] == 0.25


def test_evaluate_runs_common_and_own_doses_and_checks(ev: ModuleType, case: Any) -> None:
    models = {
        "half": _shrink_model(0.5, 0.5),
        "quarter": _shrink_model(0.25, 0.125),
        "ident": _shrink_model(1.0, 0.25),
    }
    models["ident"].meta["architecture"] = "other"
    rows = ev.evaluate(models, [case], log=lambda _: None)
    seen = sorted((r["model"], r["dose"]) for r in rows)
    assert seen == [
        ("half", 0.25),
        ("half", 0.5),
        ("ident", 0.25),
        ("quarter", 0.125),
        ("quarter", 0.25),
    ]
    # Inputs at a lower dose are noisier (rescale_noise on the phantom pair).
    std_in = {r["dose"]: r["std_input_hu"] for r in rows}
    assert std_in[0.125] > std_in[0.25] > std_in[0.5]

    order = ev.trend_order(models)
    assert order == ["half", "quarter"]
    trend = ev.dose_trend(rows, order)
    assert trend["passed"] is True
    assert trend["per_case"]["disk"]["falls"]
    assert ev.dose_trend(rows, order[::-1])["passed"] is False
    assert ev.dose_trend(rows, ["half"])["passed"] is None

    # No row for the target model on L506: not measured.
    assert ev.target_check(rows)["passed"] is None
    hit = ev.target_check(rows, model="quarter", case="disk")
    assert hit["passed"] is True and hit["rmse_reduction"] > 0.3
    miss = ev.target_check(rows, model="ident", case="disk")
    assert miss["passed"] is False

    summary = ev.summary_table(rows)
    assert summary.count("\n") == 2 + 5  # one line per model and dose
    assert "| quarter | 0.125 | simulated (1) | 0.125 |" in summary
    table = ev.markdown_table(rows)
    assert table.count("\n") == 2 + len(rows)
    assert "| quarter |" in table
    text = ev.checks_text(trend, ev.target_check(rows))
    assert "PASS" in text and "not measured" in text


def test_real_case_regions_match_noise_label(ev: ModuleType) -> None:
    low, normal, _ = _pair(n=128)
    real = ev.make_case("real", "real", low=low, normal=normal, spacing=(0.7, 0.7), dose=0.25)
    assert real.detrend and real.regions
    expected = noise_label(low, spacing=0.7, regions=real.regions)
    assert roi_noise_std(low, real.regions, detrend=True) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="real pair"):
        real.at_dose(0.5)


def test_l506_absent_is_skipped_with_a_message(ev: ModuleType, tmp_path: Path) -> None:
    messages: list[str] = []
    assert ev.load_l506(tmp_path / "absent", log=messages.append) is None
    assert messages and "skipping" in messages[0]


def test_l506_reader_on_fake_raw_files(ev: ModuleType, tmp_path: Path) -> None:
    low, normal, _ = _pair(n=512)
    for name, img in ((ev.L506_LOW, low), (ev.L506_NORMAL, normal)):
        raw = np.clip(np.round(img + 1024), 0, 4095).astype("<u2")
        raw.tofile(tmp_path / name)
        if name == ev.L506_NORMAL:
            expected = raw.astype(np.float32) - 1024.0
    real = ev.load_l506(tmp_path, log=lambda _: None)
    assert real is not None and real.kind == "real" and real.dose == 0.25
    assert real.spacing == (0.7, 0.7)
    np.testing.assert_array_equal(real.normal, expected)
    assert real.body.sum() > 0.5 * np.pi * (0.45 * 512) ** 2


def test_simulated_cases_are_cached_outside_the_repo(ev: ModuleType, tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    def fake(kind: str, seed: int) -> dict[str, Any]:
        calls.append((kind, seed))
        low, normal, truth = _pair(seed)
        return {
            "truth": truth,
            "low": low,
            "normal": normal,
            "spacing": (0.7, 0.7),
            "flat_roi": (24, 40, 24, 40),
        }

    slices = [("abdomen", 1), ("chest", 2)]
    first = ev.simulated_cases(tmp_path, slices=slices, simulate=fake, log=lambda _: None)
    again = ev.simulated_cases(tmp_path, slices=slices, simulate=fake, log=lambda _: None)
    assert calls == slices
    assert [c.name for c in again] == ["abdomen-1", "chest-2"]
    np.testing.assert_array_equal(first[1].low, again[1].low)
    assert again[0].regions == [FLAT] and not again[0].detrend
    with pytest.raises(ValueError, match="checkout"):
        ev.check_cache_dir(BENCHMARKS / "cache")


@pytest.fixture
def stand_in_dir(tmp_path: Path) -> Path:
    """A weights folder holding an untrained CompactUNet saved as ``unet-d25`` with its card."""
    from safetensors.torch import save_file

    folder = tmp_path / "weights"
    folder.mkdir()
    torch.manual_seed(0)
    net = build_model("compact-unet", {})
    weights = folder / "unet-d25.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    card = ModelCard(
        name="unet-d25",
        architecture="compact-unet",
        hu_offset=-1000.0,
        hu_scale=1000.0,
        size_multiple=16,
        training_dose=0.25,
        weights_sha256=sha256_file(weights),
    )
    card.save(folder / "unet-d25.card.yaml")
    return folder


def test_stand_in_shipped_model_and_card_update(
    ev: ModuleType, case: Any, stand_in_dir: Path
) -> None:
    weights = stand_in_dir / "unet-d25.safetensors"
    sha = sha256_file(weights)
    models = ev.load_models(weights_dir=stand_in_dir)
    assert list(models) == ["unet-d25"]
    rows = ev.evaluate(models, [case], log=lambda _: None)
    assert len(rows) == 1 and np.isfinite(rows[0]["rmse_hu"])

    (path,) = ev.update_cards(rows, ["unet-d25"], weights_dir=stand_in_dir)
    assert sha256_file(weights) == sha
    metrics = ModelCard.load(path).metrics
    sim = metrics["simulated_dose0.25"]
    assert sim["rmse_hu"] == pytest.approx(rows[0]["rmse_hu"], abs=1e-3)
    assert sim["cases"] == "disk"
    assert "evaluation" in metrics
    # The card still loads with its weights (checksum unchanged).
    assert isinstance(load_model("unet-d25", weights_dir=stand_in_dir), HUAdapter)


def test_main_end_to_end_without_shared_data(
    ev: ModuleType,
    stand_in_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fake(kind: str, seed: int) -> dict[str, Any]:
        low, normal, truth = _pair(seed)
        return {
            "truth": truth,
            "low": low,
            "normal": normal,
            "spacing": (0.7, 0.7),
            "flat_roi": (24, 40, 24, 40),
        }

    monkeypatch.setattr(ev, "simulate_phantom_pair", fake)
    out_json, out_md = tmp_path / "results.json", tmp_path / "table.md"
    status = ev.main(
        [
            "--quick",
            "--weights-dir", str(stand_in_dir),
            "--l506", str(tmp_path / "no-shared"),
            "--cache", str(tmp_path / "cache"),
            "--json", str(out_json),
            "--markdown", str(out_md),
            "--update-cards",
        ]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "skipping the real pair" in printed
    assert "| unet-d25 |" in printed
    doc = json.loads(out_json.read_text())
    assert doc["real_pair_measured"] is False
    assert [r["case"] for r in doc["rows"]] == ["abdomen-9001", "chest-9101"]
    assert doc["target"]["passed"] is None
    assert doc["dose_trend"]["passed"] is None
    assert "| unet-d25 |" in out_md.read_text()
    card = ModelCard.load(stand_in_dir / "unet-d25.card.yaml")
    assert card.metrics["simulated_dose0.25"]["cases"] == "abdomen-9001, chest-9101"


def test_card_update_keeps_training_and_bias_metrics(
    ev: ModuleType, case: Any, stand_in_dir: Path
) -> None:
    path = stand_in_dir / "unet-d25.card.yaml"
    card = ModelCard.load(path)
    bias = {"real_L506": 3.7}
    card = dataclasses.replace(
        card, metrics={"val_rmse_hu": 25.7, "iteration": 6000, "soft_tissue_bias_hu": bias}
    )
    card.save(path, overwrite=True)
    rows = ev.evaluate(ev.load_models(weights_dir=stand_in_dir), [case], log=lambda _: None)
    (path,) = ev.update_cards(rows, ["unet-d25"], weights_dir=stand_in_dir)
    metrics = ModelCard.load(path).metrics
    assert metrics["training"]["val_rmse_hu"] == 25.7 and metrics["training"]["iteration"] == 6000
    assert "val_rmse_hu" not in metrics  # moved under "training"
    assert metrics["soft_tissue_bias_hu"] == bias
    assert "simulated_dose0.25" in metrics
    # A second update keeps what the first one moved.
    (path,) = ev.update_cards(rows, ["unet-d25"], weights_dir=stand_in_dir)
    assert ModelCard.load(path).metrics["training"]["val_rmse_hu"] == 25.7
