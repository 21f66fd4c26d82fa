"""benchmarks/bench_volume.py: what it measures during a whole-scan run (tiny scan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_loading import benchmark_module


def test_one_scan_probes_the_viewer_before_the_volumes(tmp_path: Path) -> None:
    with benchmark_module("bench_volume") as bv:
        res = bv.one_scan(4, size=64, realisations=2, threads=1, work=tmp_path)
    first, slider = res["marks"]["default_view"], res["marks"]["slider_view"]
    # the default's weights and the previews listed: all rendered on demand for the slice
    assert res["previews"] and first["on_demand_available"]
    assert first["entries"] == first["on_demand"] == 1 + first["previews"] > 1
    # the fine-tuning done: every candidate on the slider, all on demand, none stored yet
    assert slider["entries"] == slider["on_demand"] == res["candidates"] >= 3
    assert res["first_view_s"] < res["marks"]["first_stored_s"] <= res["marks"]["last_stored_s"]
    # asked before the first volume was stored (its own rendering time depends on the load)
    assert slider["at_s"] < res["marks"]["first_stored_s"]
    assert res["marks"]["last_stored_s"] <= res["total_s"]
    assert res["shape"] == [4, 64, 64] and res["peak_rss_mb"] > 0
    assert not (tmp_path / "scan4").exists()  # the scan's folder is removed
    assert slider["previews"] == 0  # DID's candidates replaced them all


def test_one_scan_without_previews_shows_the_default_alone(tmp_path: Path) -> None:
    with benchmark_module("bench_volume") as bv:
        res = bv.one_scan(3, size=64, realisations=1, threads=1, work=tmp_path, previews=False)
    first = res["marks"]["default_view"]
    assert not res["previews"] and first["entries"] == first["on_demand"] == 1
    assert first["previews"] == 0


def test_auto_method_shows_the_stored_default_first(tmp_path: Path) -> None:
    """``ctdid run``'s default runs each slice on its own, the default volume listed first."""
    with benchmark_module("bench_volume") as bv:
        res = bv.one_scan(3, size=64, realisations=1, threads=1, work=tmp_path, method="auto")
    marks = res["marks"]
    first, slider = marks["default_view"], marks["slider_view"]
    assert res["method"] == "auto" and first["on_demand"] == 0 == slider["on_demand"]
    # the viewer was asked when the default was listed: it showed the default alone
    assert first["entries"] == 1
    assert first["at_s"] == pytest.approx(marks["first_stored_s"], abs=0.05)
    # and when the last candidate was listed: the whole slider, all stored
    assert slider["entries"] == res["candidates"] >= 3
    assert slider["at_s"] == pytest.approx(marks["last_stored_s"], abs=0.05)
    assert marks["last_stored_s"] <= res["total_s"]
    assert res["first_view_s"] <= res["slider_view_s"]
