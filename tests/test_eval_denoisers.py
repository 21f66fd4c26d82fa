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
    ident = ev.evaluate_case("ident", _shrink_model(1.0, 0.5), case, bm3d=False)
    assert ident["rmse_hu"] == pytest.approx(ident["rmse_input_hu"], rel=1e-4)
    assert ident["rmse_reduction"] == pytest.approx(0.0, abs=1e-4)
    assert ident["rmse_input_hu"] == pytest.approx(np.hypot(20.0, 0.0), rel=0.1)

    box = ev.evaluate_case("half", _shrink_model(0.5, 0.25), case, bm3d=False)
    assert box["std_input_hu"] == pytest.approx(roi_noise_std(case.low, FLAT))
    assert box["std_hu"] == pytest.approx(0.5 * box["std_input_hu"], rel=0.01)
    assert box["rmse_hu"] < box["rmse_input_hu"]
    assert box["rmse_reduction"] > 0.3
    assert box["tv_matched"]
    assert abs(box["std_tv_hu"] - box["std_hu"]) <= 0.02 * box["std_hu"]
    assert box["rmse_truth_hu"] is not None
    assert box["training_dose"] == 0.25
    # Without BM3D its fields are there but empty; no field protocol on a phantom by default.
    assert box["rmse_bm3d_hu"] is None and box["bm3d_matched"] is None
    assert box["rmse_reduction_bm3d"] is None and box["seconds_bm3d"] is None
    assert "field_psnr_db" not in box and "field_ssim_input" not in box


def test_evaluate_case_bm3d_at_matched_noise_and_field_protocol(ev: ModuleType, case: Any) -> None:
    row = ev.evaluate_case("half", _shrink_model(0.5, 0.25), case, field=True)
    assert row["bm3d_matched"] is True
    assert abs(row["std_bm3d_hu"] - row["std_hu"]) <= 0.02 * row["std_hu"]
    assert 0 < row["bm3d_factor"] < 2
    assert row["rmse_bm3d_hu"] < row["rmse_input_hu"]
    assert row["rmse_reduction_bm3d"] == pytest.approx(
        1 - row["rmse_bm3d_hu"] / row["rmse_input_hu"]
    )
    assert row["rmse_truth_bm3d_hu"] is not None and row["seconds_bm3d"] > 0
    for suffix in ("_input", "", "_tv", "_bm3d"):
        assert np.isfinite(row[f"field_rmse_hu{suffix}"])
        assert 0 < row[f"field_ssim{suffix}"] <= 1
    assert row["field_psnr_db"] > row["field_psnr_db_input"]
    expected = ev.field_metrics(case.low, case.normal)
    assert row["field_rmse_hu_input"] == pytest.approx(expected.rmse_hu)
    table = ev.markdown_table([row])
    assert f"{row['rmse_bm3d_hu']:.1f}" in table and "not matched" not in table


def test_field_metrics_clips_to_the_window(ev: ModuleType) -> None:
    rng = np.random.default_rng(1)
    ref = rng.uniform(-100.0, 200.0, (32, 32))
    same = ev.field_metrics(ref, ref)
    assert same.rmse_hu == 0 and same.ssim == pytest.approx(1.0) and same.psnr_db == np.inf
    # A 10 HU offset inside the window: RMSE 10, PSNR 20 log10(400 / 10).
    flat = np.zeros((32, 32))
    off = ev.field_metrics(flat + 10.0, flat)
    assert off.rmse_hu == pytest.approx(10.0)
    assert off.psnr_db == pytest.approx(20 * np.log10(40.0))
    # Outside the window both clip to its ends: 1000 HU above 240 counts as 240.
    clipped = ev.field_metrics(flat + 1000.0, flat)
    assert clipped.rmse_hu == pytest.approx(240.0)
    assert clipped.psnr_db == pytest.approx(20 * np.log10(400 / 240))
    both_high = ev.field_metrics(flat + 500.0, flat + 300.0)
    assert both_high.rmse_hu == 0 and both_high.ssim == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same 2-D shape"):
        ev.field_metrics(flat, flat[:16])


def test_real_case_gets_the_field_protocol_by_default(ev: ModuleType) -> None:
    low, normal, _ = _pair(n=128)
    real = ev.make_case("real", "real", low=low, normal=normal, spacing=(0.7, 0.7), dose=0.25)
    model = HUAdapter(_Shrink(0.5, n=128), meta={"training_dose": 0.25})
    row = ev.evaluate_case("half", model, real, bm3d=False)
    assert row["field_rmse_hu"] < row["field_rmse_hu_input"]
    assert row["field_psnr_db"] > row["field_psnr_db_input"]
    assert row["field_rmse_hu_bm3d"] is None and row["field_ssim_tv"] is not None
    summary = ev.summary_table([row])
    assert f"{row['field_psnr_db']:.2f}" in summary


def _target_row(case: str, kind: str, model: float, tv: float, bm3d: float | None) -> dict:
    return {
        "model": "unet-d25",
        "case": case,
        "kind": kind,
        "dose": 0.25,
        "rmse_hu": model,
        "rmse_tv_hu": tv,
        "rmse_bm3d_hu": bm3d,
        "tv_matched": True,
        "bm3d_matched": None if bm3d is None else True,
    }


def test_equal_noise_target_passes_and_fails(ev: ModuleType) -> None:
    rows = [
        _target_row("L506", "real", 18.0, 20.0, 19.0),  # 90 % and 94.7 %
        _target_row("abdomen-1", "phantom", 9.0, 10.0, 10.0),
        _target_row("chest-2", "phantom", 11.0, 12.0, 12.0),  # mean 10 / 11: 90.9 %
    ]
    hit = ev.equal_noise_check(rows)
    assert hit["passed"] is True
    sim = hit["groups"]["simulated"]
    assert sim["cases"] == ["abdomen-1", "chest-2"]
    assert sim["tv"]["ratio"] == pytest.approx(10.0 / 11.0)
    assert hit["groups"]["L506"]["bm3d"]["ratio"] == pytest.approx(18.0 / 19.0)

    # 5 % lower than TV but only 4.8 % lower than BM3D on L506: fails.
    close = [_target_row("L506", "real", 18.1, 20.0, 19.0), *rows[1:]]
    miss = ev.equal_noise_check(close)
    assert miss["passed"] is False
    assert miss["groups"]["L506"]["tv"]["passed"] is True
    assert miss["groups"]["L506"]["bm3d"]["passed"] is False
    assert miss["groups"]["simulated"]["bm3d"]["passed"] is True

    # No real pair, or no BM3D: not measured (unless something failed).
    assert ev.equal_noise_check(rows[1:])["passed"] is None
    assert ev.equal_noise_check(rows[1:])["groups"]["L506"] is None
    no_bm3d = [_target_row(r["case"], r["kind"], r["rmse_hu"], r["rmse_tv_hu"], None) for r in rows]
    assert ev.equal_noise_check(no_bm3d)["passed"] is None
    assert ev.equal_noise_check(rows, model="other")["passed"] is None

    trend = {"models": [], "dose": 0.25, "per_case": {}, "passed": None}
    target = {"model": "unet-d25", "case": "L506", "threshold": 0.3, "rmse_reduction": None,
              "passed": None}  # fmt: skip
    text = ev.checks_text(trend, target, miss)
    assert "Target at equal noise" in text and "95 %" in text
    assert "L506: model 18.10 HU" in text and "model / BM3D 95.3 %" in text
    assert "simulated (mean of 2)" in text and "FAIL" in text
    assert "BM3D not measured" in ev.checks_text(trend, target, ev.equal_noise_check(no_bm3d))


def test_equal_noise_checked_for_every_quarter_dose_model(ev: ModuleType) -> None:
    rows = [
        {**_target_row("L506", "real", 18.0, 20.0, 19.0), "training_dose": 0.25},
        {**_target_row("L506", "real", 30.0, 20.0, 19.0), "model": "wide", "training_dose": 0.25},
        {**_target_row("L506", "real", 9.0, 20.0, 19.0), "model": "half", "training_dose": 0.5},
    ]
    names = ev.equal_noise_models([rows[1], rows[0], rows[2]])
    assert names == ["unet-d25", "wide"]  # the target model first, the 1/2-dose model not
    checks = [ev.equal_noise_check(rows, model=m) for m in names]
    # No simulated rows: the first is not measured as a whole, the second fails on L506.
    assert [c["passed"] for c in checks] == [None, False]
    assert [c["groups"]["L506"]["bm3d"]["passed"] for c in checks] == [True, False]
    trend = {"models": [], "dose": 0.25, "per_case": {}, "passed": None}
    target = {"model": "unet-d25", "case": "L506", "threshold": 0.3, "rmse_reduction": None,
              "passed": None}  # fmt: skip
    text = ev.checks_text(trend, target, checks)
    assert text.count("Target at equal noise") == 2
    assert "(wide at dose 0.25" in text and "L506: model 30.00 HU" in text


def test_evaluate_runs_common_and_own_doses_and_checks(ev: ModuleType, case: Any) -> None:
    models = {
        "half": _shrink_model(0.5, 0.5),
        "quarter": _shrink_model(0.25, 0.125),
        "ident": _shrink_model(1.0, 0.25),
    }
    models["ident"].meta["architecture"] = "other"
    rows = ev.evaluate(models, [case], bm3d=False, log=lambda _: None)
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
    # A wider model of the same architecture is not in the dose family.
    wide = _shrink_model(0.3, 0.25)
    wide.meta["architecture_config"] = {"base_channels": 16}
    assert ev.trend_order({**models, "wide": wide}) == ["half", "quarter"]
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
    rows = ev.evaluate(models, [case], bm3d=False, log=lambda _: None)
    assert len(rows) == 1 and np.isfinite(rows[0]["rmse_hu"])

    (path,) = ev.update_cards(rows, ["unet-d25"], weights_dir=stand_in_dir)
    assert sha256_file(weights) == sha
    metrics = ModelCard.load(path).metrics
    sim = metrics["simulated_dose0.25"]
    assert sim["rmse_hu"] == pytest.approx(rows[0]["rmse_hu"], abs=1e-3)
    assert sim["cases"] == "disk"
    assert "TV (BM3D not run)" in metrics["evaluation"]  # says what was compared
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
            "--no-bm3d",
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
    assert doc["bm3d"] is False
    groups = doc["equal_noise_target"]["groups"]
    assert groups["L506"] is None and groups["simulated"]["bm3d"]["passed"] is None
    assert groups["simulated"]["tv"]["passed"] is not None
    assert doc["rows"][0]["rmse_bm3d_hu"] is None
    assert "Target at equal noise" in printed
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
    models = ev.load_models(weights_dir=stand_in_dir)
    rows = ev.evaluate(models, [case], bm3d=False, log=lambda _: None)
    (path,) = ev.update_cards(rows, ["unet-d25"], weights_dir=stand_in_dir)
    metrics = ModelCard.load(path).metrics
    assert metrics["training"]["val_rmse_hu"] == 25.7 and metrics["training"]["iteration"] == 6000
    assert "val_rmse_hu" not in metrics  # moved under "training"
    assert metrics["soft_tissue_bias_hu"] == bias
    assert "simulated_dose0.25" in metrics
    # A second update keeps what the first one moved.
    (path,) = ev.update_cards(rows, ["unet-d25"], weights_dir=stand_in_dir)
    assert ModelCard.load(path).metrics["training"]["val_rmse_hu"] == 25.7
