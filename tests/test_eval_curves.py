"""benchmarks/eval_curves.py: the comparison with the blend at equal noise, on made-up curves."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark_loading import benchmark_module


@pytest.fixture(scope="module")
def ec():
    with benchmark_module("eval_curves") as module:
        yield module


def _curve(noise, rmse, d):
    return {
        "noise": list(noise), "rmse": list(rmse), "edge_rmse": list(rmse),
        "strength": list(np.linspace(-1, 1, len(noise))), "default_index": d,
        "input_noise": noise[0], "low_noise": noise[-1],
    }  # fmt: skip


def test_ordering_counts_rises_above_tolerance(ec) -> None:
    ok = ec.ordering(_curve([40, 20, 8, 8.05, 4], [1] * 5, 2))
    assert ok["ordered"] and ok["rises"] == 0 and not ok["low_end_above_default"]
    bad = ec.ordering(_curve([40, 20, 8, 6, 9], [1] * 5, 2))
    assert not bad["ordered"] and bad["rises"] == 1 and bad["low_end_above_default"]
    assert bad["max_rise_hu"] == pytest.approx(3.0)


def test_compare_to_blend_per_side(ec) -> None:
    noise = [40, 20, 8, 5, 3]
    blend = _curve(noise, [30, 22, 20, 21, 24], 2)
    # "did": 1 HU better on the high side, 2 HU worse on the low side.
    did = _curve(noise, [30, 21, 20, 23, 26], 2)
    vs = ec.compare_to_blend({"blend": blend, "did-fast": did})
    high, low = vs["did-fast"]["rmse"]["high"], vs["did-fast"]["rmse"]["low"]
    assert high < 0 < low
    assert low == pytest.approx(2.0 * 15 / 16, rel=0.2)  # 0 at the default, 2 outward
    rows = ec.summary_rows([{"group": "sim", "vs_blend": vs}])
    r = {(x["measure"], x["side"]): x for x in rows}
    assert r[("rmse", "high")]["better"] == 1 and r[("rmse", "low")]["better"] == 0
    text = ec.markdown({"summary": rows, "ordering": []})
    assert "did-fast" in text and "0 / 1" in text


def test_best_points(ec) -> None:
    blend = _curve([40, 20, 8, 5, 3], [30, 22, 20, 21, 24], 2)
    best = ec.best_points({"blend": blend})["blend"]
    assert best["best_rmse"] == 20 and best["vs_default_pct"] == pytest.approx(0.0)
