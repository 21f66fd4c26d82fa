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


def test_texture_check_flags_a_band_above_the_default(ec) -> None:
    curve = _curve([40, 20, 8, 6, 4], [1] * 5, 2)
    curve["nps_bands"] = [[9, 9, 9, 9], [5, 5, 5, 5], [4, 2, 1, 1],
                          [3, 1.5, 0.5, 0.5], [2, 1, 0.2, 0.1]]  # fmt: skip
    ok = ec.ordering(curve)
    assert ok["texture_checked"] == 2 and ok["texture_above"] == 0
    assert ok["texture_max_ratio"] == pytest.approx(0.75)
    # the last candidate carries fine texture of its own: highest band 1.3x the default's
    curve["nps_bands"][-1] = [2, 1, 0.2, 1.3]
    bad = ec.ordering(curve)
    assert bad["texture_above"] == 1 and bad["texture_max_ratio"] == pytest.approx(1.3)
    rows = ec.ordering_rows([{"ordering": {"did-fast": bad}}, {"ordering": {"did-fast": ok}}])
    assert rows[0]["texture_ok"] == 1 and rows[0]["texture_slices"] == 2
    old = _curve([40, 20, 8, 6, 4], [1] * 5, 2)  # a cached curve made before the bands
    assert ec.ordering(old)["texture_checked"] == 0


def test_nps_bands_measure_white_and_smoothed_noise(ec) -> None:
    """White noise spreads its variance over the bands; a smoothed copy loses the high ones."""
    import eval_sets
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 10.0, (128, 128)).astype(np.float32)
    regions = [(slice(a, a + 24), slice(b, b + 24)) for a in (8, 48, 88) for b in (8, 48, 88)]
    s = eval_sets.EvalSlice(
        name="t", group="sim", dose=0.25, kernel="sharp", low=img, reference=img,
        spacing=(0.5, 0.5), body=np.ones_like(img, bool), flat_regions=regions,
        edges=np.zeros_like(img, bool),
    )  # fmt: skip
    white = ec.nps_bands(img, s)
    assert len(white) == ec.TEXTURE_BANDS
    assert sum(white) == pytest.approx(100.0, rel=0.25)  # most of the 10 HU variance
    smooth = ec.nps_bands(ndimage.gaussian_filter(img, 1.5), s)
    assert all(a < b for a, b in zip(smooth, white, strict=True))
    assert smooth[-1] < 0.05 * white[-1]
