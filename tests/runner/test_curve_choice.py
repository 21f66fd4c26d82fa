"""``--method auto``: the packaged harness verdict, how it resolves, and what a run records."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ctdid.errors import InputError
from ctdid.runner import RunOptions, run_did
from ctdid.runner.curve_choice import SIDES, CurveChoice, choose_curve, load_verdict
from tiny_run_model import Tiny, disk_scan

torch.set_num_threads(1)
SIDE_METHODS = ("did", "blend", "iterate")


def test_packaged_verdict_follows_its_own_rule() -> None:
    """Each side's choice is what the recorded rule gives on the recorded numbers."""
    doc = load_verdict()
    assert doc["rule"] and doc["command"].startswith("benchmarks/eval_curves.py")
    assert set(doc["modes"]) == {"fast", "robust"}
    for mode, entry in doc["modes"].items():
        for side in SIDES:
            chosen, measured = entry[side]["choice"], entry[side]["measured"]
            assert chosen in SIDE_METHODS, (mode, side)
            assert {"did", "iterate"} <= set(measured)
            for figures in measured.values():
                # the rule: lower real edge RMSE, RMSE not higher (real, simulated), ordered
                ordered, slices = (int(v) for v in figures["ordered"].split("/"))
                rule = (figures["real_edge_rmse_hu"] < 0 and figures["real_rmse_hu"] <= 0
                        and figures["sim_rmse_hu"] <= 0 and ordered == slices)  # fmt: skip
                assert figures["passes"] == rule, (mode, side, figures)
            passing = sorted((f["real_edge_rmse_hu"], n) for n, f in measured.items()
                             if f["passes"])  # fmt: skip
            assert chosen == (passing[0][1] if passing else "blend"), (mode, side)
            assert entry[side]["why"].startswith(f"{chosen} chosen")


@pytest.mark.parametrize("mode", ["fast", "robust"])
def test_auto_takes_the_verdict(mode: str) -> None:
    entry = load_verdict()["modes"][mode]
    curve = choose_curve("auto", mode)
    assert (curve.high, curve.low) == (entry["high"]["choice"], entry["low"]["choice"])
    assert curve.verdict is not None and "eval_curves.py" in curve.verdict
    assert entry["high"]["why"] in curve.reason and entry["low"]["why"] in curve.reason


def test_faithful_is_the_paper_and_explicit_methods_are_kept() -> None:
    assert choose_curve("auto", "faithful") == CurveChoice(
        "did", "did", "faithful mode: the paper's DID on both sides"
    )
    for method in ("did", "blend", "tv"):
        curve = choose_curve(method, "robust")
        assert (curve.high, curve.low, curve.verdict) == (method, method, None)


def test_a_verdict_without_the_mode_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no verdict for the fast mode"):
        choose_curve("auto", "fast", verdict={"modes": {"robust": {}}})


def test_described_sides() -> None:
    assert CurveChoice("blend", "iterate", "").describe("fast") == (
        "high side: blend, low side: iterate (no DID)"
    )
    assert CurveChoice("did", "iterate", "").describe("fast") == (
        "high side: DID fast, low side: iterate"
    )
    assert CurveChoice("did", "did", "").engine_method == "did"
    assert CurveChoice("blend", "iterate", "").engine_method == "sided"


def _auto_verdict(high: str, low: str) -> dict[str, Any]:
    side = {"why": "test verdict", "measured": {}}
    return {"command": "test", "date": "today", "model": "tiny",
            "modes": {"fast": {"high": {**side, "choice": high},
                               "low": {**side, "choice": low}}}}  # fmt: skip


def test_auto_run_records_its_resolved_curve(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with ``auto`` records the sides it used, in ``curve`` and in ``config``."""
    import ctdid.runner.curve_choice as cc

    monkeypatch.setattr(cc, "load_verdict", lambda: _auto_verdict("blend", "iterate"))
    opts = RunOptions(mode="fast", method="auto", n_candidates=2)
    summary = run_did(disk_scan(40, seed=1), Tiny(), out_dir=tmp_path / "res", options=opts)
    assert summary.curve is not None
    assert (summary.curve["high"], summary.curve["low"]) == ("blend", "iterate")
    import json

    doc = json.loads((tmp_path / "res" / "run.json").read_text())
    assert doc["config"]["method"] == "auto:blend+iterate"
    assert doc["curve"]["verdict"] == "test (today, model tiny)"
    directions = {r.direction for r in summary.records}
    assert {"high", "default", "low"} <= directions
