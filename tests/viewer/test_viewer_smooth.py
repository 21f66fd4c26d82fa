"""Smooth mode of the viewer: a continuous strength slider blending neighbouring candidates.

The browser blends the int16 slices it receives, so the reference here is
:func:`ctdid.core.candidates.interpolate` applied to those slices, windowed with
:func:`ctdid.io.png.window_to_uint8`, and compared pixel-exactly like the stepped slider.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import test_viewer_page
from test_viewer_page import _drag, canvas_grey, current_id, expected_grey

from ctdid.core.candidates import interpolate
from ctdid.io.png import window_to_uint8
from ctdid.results import ResultReader
from ctdid.viewer.server import roi_stats, slice_int16

# the browser fixtures and skip marks of the stepped-slider tests
pytestmark = test_viewer_page.pytestmark
browser = test_viewer_page.browser
open_page = test_viewer_page.open_page

ABDOMEN = (-160.0, 240.0)


class Slices:
    """The result's candidate slices as the page receives them, in curve order."""

    def __init__(self, folder: Path, z: int = 0) -> None:
        reader = ResultReader(folder)
        self.order: list[int] = reader.doc["order"]
        strength = {c["id"]: c["strength"] for c in reader.doc["candidates"]}
        self.strengths = [strength[i] for i in self.order]
        self.images = [slice_int16(reader.candidate(i)[z]) for i in self.order]
        self.stack = SimpleNamespace(
            candidates=[
                SimpleNamespace(image=img.astype(np.float32), strength=s)
                for img, s in zip(self.images, self.strengths, strict=True)
            ],
            default_index=self.order.index(reader.default_record().id),
        )

    def at(self, s: float) -> np.ndarray:
        """HU at strength ``s``: the Python API's rule, on the int16 slices."""
        return interpolate(self.stack, s)  # type: ignore[arg-type]


def smooth_on(page: Any) -> None:
    page.check("#smooth")
    assert page.get_attribute("#cand-slider", "max") == "200"


def shown_strength(page: Any) -> float:
    return float(page.get_attribute("#cand-index", "data-strength"))


@pytest.mark.parametrize(
    ("step", "strength", "pair", "weight"),
    [
        (150, 0.5, (4, 5), 0.5),  # halfway between +1/3 and +2/3
        (140, 0.4, (4, 5), 0.2),  # off-centre: a swapped weight would show 0.8
        (30, -0.7, (1, 0), 0.1),  # high-resolution side: from -2/3 toward -1
    ],
)
def test_smooth_slider_blends_neighbours_exactly(
    open_page: Any, result64: Path, step: int, strength: float, pair: tuple[int, int], weight: float
) -> None:
    page = open_page(result64)
    sl = Slices(result64)
    assert not page.is_checked("#smooth")  # off by default
    smooth_on(page)
    page.locator("#cand-slider").fill(str(step))
    assert shown_strength(page) == pytest.approx(strength, abs=1e-12)
    near, far = pair
    # independent of ctdid.core: float32 near + float32(w) * (far - near)
    a, b = (sl.images[i].astype(np.float32) for i in pair)
    w = (abs(strength) - abs(sl.strengths[near])) / (
        abs(sl.strengths[far]) - abs(sl.strengths[near])
    )
    assert w == pytest.approx(weight)
    blend = a + np.float32(w) * (b - a)
    assert np.array_equal(blend, sl.at(shown_strength(page)))
    got = canvas_grey(page)
    assert np.array_equal(got, window_to_uint8(blend, *ABDOMEN))
    for i in pair:  # a blend, not one of the stored candidates
        assert not np.array_equal(got, window_to_uint8(sl.images[i], *ABDOMEN))
    lo_pos, hi_pos = sorted(p + 1 for p in pair)
    text = page.inner_text("#cand-index")
    assert text == f"strength {strength:+.2f} (between candidate {lo_pos} and {hi_pos})"
    # nearest stored candidate is the current one (pick, export, tradeoff plot)
    assert current_id(page) == sl.order[near if w <= 0.5 else far]
    assert page.inner_text("#cand-info").startswith("nearest stored: id ")
    # window presets re-window the same blend
    page.click("#presets button[data-preset=lung]")
    assert np.array_equal(canvas_grey(page), window_to_uint8(blend, -1350, 150))


def test_smooth_at_stored_strengths_shows_the_candidate(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    sl = Slices(result64)
    smooth_on(page)
    slider = page.locator("#cand-slider")
    for step, pos in ((100, sl.order.index(0)), (0, 0), (200, 6)):
        slider.fill(str(step))
        assert shown_strength(page) == sl.strengths[pos]
        assert page.get_attribute("#views canvas", "data-shown") == str(sl.order[pos])
        expected = expected_grey(result64, sl.order[pos], ABDOMEN)
        assert np.array_equal(canvas_grey(page), expected)
        assert page.inner_text("#cand-index").endswith(f"(candidate {pos + 1} / 7)")
    # +1/3 is off the slider's grid; set it exactly through the page API
    page.evaluate("(s) => window.ctdidViewer.setStrength(s, false)", sl.strengths[4])
    assert page.get_attribute("#views canvas", "data-shown") == str(sl.order[4])
    assert np.array_equal(canvas_grey(page), expected_grey(result64, sl.order[4], ABDOMEN))
    assert np.array_equal(sl.at(sl.strengths[4]), sl.images[4])


def test_smooth_readout_and_roi_use_the_blend(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    sl = Slices(result64)
    smooth_on(page)
    page.locator("#cand-slider").fill("140")
    blend = sl.at(0.4)
    box = page.locator("#views canvas").first.bounding_box()
    page.mouse.move(box["x"] + 40.5 * box["width"] / 64, box["y"] + 20.5 * box["height"] / 64)
    assert float(page.get_attribute("#readout-pixel", "data-hu")) == float(blend[20, 40])
    assert page.inner_text("#readout-pixel") == f"x 40 y 20: {blend[20, 40]:.1f} HU"
    page.check("input[name=tool][value=rect]")
    _drag(page, (20.3, 24.6), (44.2, 36.1))
    r = page.evaluate("window.ctdidViewer.state.rois")["A"]
    want = roi_stats(blend, **{k: r[k] for k in ("shape", "x0", "y0", "x1", "y1")})
    assert int(page.get_attribute("#roi-a", "data-n")) == want["n"] > 20
    assert float(page.get_attribute("#roi-a", "data-mean")) == pytest.approx(want["mean"], rel=1e-9)
    assert float(page.get_attribute("#roi-a", "data-std")) == pytest.approx(want["std"], rel=1e-9)


def test_smooth_pick_uses_nearest_candidate_and_toggle_off(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    sl = Slices(result64)
    smooth_on(page)
    assert "nearest" in page.inner_text("#btn-pick")
    page.locator("#cand-slider").fill("140")  # s = 0.4: nearest stored is +1/3
    page.fill("#task", "high-contrast detail")
    page.click("#btn-pick")
    page.wait_for_function("document.getElementById('picks').children.length === 1")
    picks = json.loads((result64 / "picks.json").read_text())["picks"]
    assert picks["high-contrast detail"]["candidate"] == sl.order[4]
    assert "nearest strength +0.40" in page.inner_text("#pick-status")
    # off again: the old stepping over stored candidates, at the nearest one
    page.uncheck("#smooth")
    assert page.get_attribute("#cand-slider", "max") == "6"
    assert page.input_value("#cand-slider") == "4"
    assert page.inner_text("#cand-index") == "candidate 5 / 7"
    assert page.inner_text("#btn-pick") == "pick this candidate"
    assert np.array_equal(canvas_grey(page), expected_grey(result64, sl.order[4], ABDOMEN))
    page.locator("#cand-slider").fill("0")
    assert page.inner_text("#cand-index") == "candidate 1 / 7"
    assert np.array_equal(canvas_grey(page), expected_grey(result64, sl.order[0], ABDOMEN))
