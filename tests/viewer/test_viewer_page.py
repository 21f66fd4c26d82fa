"""The viewer page in a real browser (Playwright, Debian chromium, headless)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from viewer_factory import add_previews, make_result

from ctdid.io.png import window_to_uint8
from ctdid.results import ResultReader
from ctdid.viewer.server import roi_stats, serve_in_thread, slice_int16

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert sync_playwright is not None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    pages: list[Any] = []
    errors: list[str] = []

    def _open(folder: Path, *, wait_all: bool = True, model: Any = None) -> Any:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        server = serve_in_thread(folder, model=model)
        url = server.__enter__()
        pages.append((ctx, server))
        page.goto(url)
        page.wait_for_function("window.ctdidViewer && window.ctdidViewer.ready()", timeout=10000)
        if wait_all:
            page.wait_for_function("window.ctdidViewer.allCached()", timeout=10000)
        return page

    yield _open
    for ctx, server in pages:
        ctx.close()
        server.__exit__(None, None, None)
    assert errors == [], errors


def canvas_grey(page: Any, index: int = 0) -> np.ndarray:
    """The grey levels (red channel) of the index-th view canvas."""
    data = page.evaluate(
        """(i) => {
          const c = document.querySelectorAll('#views canvas')[i];
          return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
        }""",
        index,
    )
    rgba = np.asarray(data, dtype=np.uint8).reshape(64, 64, 4)
    assert np.array_equal(rgba[..., 0], rgba[..., 1]) and np.all(rgba[..., 3] == 255)
    return rgba[..., 0]


def expected_grey(folder: Path, cand: int | str, window: tuple[float, float], z: int = 0):
    reader = ResultReader(folder)
    vol = reader.input() if cand == "input" else reader.candidate(int(cand))
    return window_to_uint8(slice_int16(vol[z]), *window)


def current_id(page: Any) -> int:
    return int(page.evaluate("window.ctdidViewer.state.curId"))


def test_slider_shows_candidates_windowed_exactly(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    reader = ResultReader(result64)
    order = reader.doc["order"]
    assert page.inner_text("#cand-index") == f"candidate {order.index(0) + 1} / 7"
    assert current_id(page) == 0  # starts at the default
    first = canvas_grey(page)
    assert np.array_equal(first, expected_grey(result64, 0, (-160, 240)))
    slider = page.locator("#cand-slider")
    slider.fill("0")  # the high-resolution end
    assert page.inner_text("#cand-index") == "candidate 1 / 7"
    assert current_id(page) == order[0]
    moved = canvas_grey(page)
    assert not np.array_equal(moved, first)
    assert np.array_equal(moved, expected_grey(result64, order[0], (-160, 240)))
    assert "noise 32.0 HU" in page.inner_text("#cand-labels")
    assert "MTF50 0.800 /mm" in page.inner_text("#cand-labels")
    assert "f50 0.750 /mm" in page.inner_text("#cand-labels")
    assert page.locator("#tradeoff circle.current").count() == 1
    # the tradeoff's resolution axis is the transfer f50 (0.25 .. 0.75 /mm), not the MTF50
    axis = page.text_content("#tradeoff") or ""
    assert "f50 of transfer from input" in axis and "0.75" in axis and "0.80" not in axis
    # window presets: applied in the browser, same mapping as the PNG writer
    page.click("#presets button[data-preset=lung]")
    assert "W 1500 L -600" in page.inner_text("#readout-wl")
    assert np.array_equal(canvas_grey(page), expected_grey(result64, order[0], (-1350, 150)))
    page.keyboard.press("4")  # bone
    assert np.array_equal(canvas_grey(page), expected_grey(result64, order[0], (-500, 1300)))


def test_tradeoff_falls_back_to_mtf50(open_page: Any, tmp_path: Path) -> None:
    folder = tmp_path / "old"
    make_result(folder, transfer=False)
    page = open_page(folder)
    axis = page.text_content("#tradeoff") or ""
    assert "MTF50 (1/mm)" in axis and "0.80" in axis and "f50" not in axis
    assert page.locator("#tradeoff circle").count() == 7
    assert "f50" not in page.inner_text("#cand-labels")


def test_keyboard_wheel_and_default_mark(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    order = ResultReader(result64).doc["order"]
    start = int(page.evaluate("window.ctdidViewer.state.idx"))
    page.locator("#views .view").first.click()  # focus outside the inputs
    page.keyboard.press("ArrowRight")
    assert int(page.evaluate("window.ctdidViewer.state.idx")) == start + 1
    page.keyboard.press("Home")
    assert page.inner_text("#cand-index") == "candidate 1 / 7"
    page.locator("#views .view").first.hover()
    page.mouse.wheel(0, 100)  # one slice: the wheel steps candidates
    page.wait_for_function("window.ctdidViewer.state.idx === 1")
    page.locator("#cand-slider").hover()
    page.mouse.wheel(0, 100)
    page.wait_for_function("window.ctdidViewer.state.idx === 2")
    assert current_id(page) == order[2]
    page.click("#default-mark")
    assert current_id(page) == 0


def test_right_drag_window_and_pixel_readout(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    box = page.locator("#views canvas").first.bounding_box()
    # pixel under the cursor: centre of image pixel (x=40, y=20), the bone insert
    x = box["x"] + (40 + 0.5) * box["width"] / 64
    y = box["y"] + (20 + 0.5) * box["height"] / 64
    page.mouse.move(x, y)
    hu = int(slice_int16(ResultReader(result64).candidate(0)[0])[20, 40])
    assert page.inner_text("#readout-pixel") == f"x 40 y 20: {hu} HU"
    page.mouse.down(button="right")
    page.mouse.move(x + 139, y + 50, steps=4)
    page.mouse.up(button="right")
    low, high = page.evaluate("[window.ctdidViewer.state.low, window.ctdidViewer.state.high]")
    width, level = high - low, (high + low) / 2
    assert width == pytest.approx(400 * np.exp(139 / 200), rel=1e-6)
    assert level == pytest.approx(40 + 50 * 400 / 400)
    assert f"W {width:.0f} L {level:.0f}" in page.inner_text("#readout-wl")
    assert np.array_equal(canvas_grey(page), expected_grey(result64, 0, (low, high)))


def _drag(page: Any, a: tuple[float, float], b: tuple[float, float], shift: bool = False) -> None:
    box = page.locator("#views canvas").first.bounding_box()

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] * box["width"] / 64, box["y"] + p[1] * box["height"] / 64

    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(*at(a))
    page.mouse.down()
    page.mouse.move(*at(b), steps=5)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


def _shown(page: Any, sel: str) -> tuple[float, float, int]:
    m = re.search(r"mean (-?[\d.]+) HU · STD ([\d.]+) HU · N (\d+)", page.inner_text(sel))
    assert m, page.inner_text(sel)
    return float(m[1]), float(m[2]), int(m[3])


def test_roi_mean_std_and_cnr_match_numpy(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    page.check("input[name=tool][value=rect]")
    _drag(page, (20.3, 24.6), (44.2, 36.1))
    page.check("input[name=tool][value=circle]")
    _drag(page, (8.0, 40.0), (18.0, 50.0), shift=True)  # background ROI B
    rois = page.evaluate("window.ctdidViewer.state.rois")
    assert rois["A"]["shape"] == "rect" and rois["B"]["shape"] == "circle"

    def check(cand: int) -> None:
        data = slice_int16(ResultReader(result64).candidate(cand)[0])
        stats = {}
        for name in ("A", "B"):
            r = rois[name]
            stats[name] = roi_stats(data, **{k: r[k] for k in ("shape", "x0", "y0", "x1", "y1")})
            mean, std, n = _shown(page, f"#roi-{name.lower()}")
            assert n == stats[name]["n"] > 20
            assert mean == pytest.approx(stats[name]["mean"], abs=0.006)
            assert std == pytest.approx(stats[name]["std"], abs=0.006)
            exact = float(page.get_attribute(f"#roi-{name.lower()}", "data-std"))
            assert exact == pytest.approx(stats[name]["std"], rel=1e-9)
        a, b = stats["A"], stats["B"]
        cnr = 2 * abs(a["mean"] - b["mean"]) / (a["std"] + b["std"])
        assert float(page.get_attribute("#roi-cnr", "data-cnr")) == pytest.approx(cnr, rel=1e-9)

    check(0)
    before = _shown(page, "#roi-a")
    page.locator("#cand-slider").fill("6")  # live: the stats follow the candidate
    assert _shown(page, "#roi-a")[1] < before[1]
    check(current_id(page))


def test_compare_and_flip(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    page.locator("#cand-slider").fill("6")
    cur = current_id(page)
    page.locator("#views .view").first.click()
    page.keyboard.press("c")
    assert page.locator("#views canvas").count() == 3
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#views canvas')).every(c => c.dataset.shown)"
    )
    shown = page.eval_on_selector_all("#views canvas", "cs => cs.map(c => c.dataset.shown)")
    assert shown == ["input", "0", str(cur)]
    assert np.array_equal(canvas_grey(page, 0), expected_grey(result64, "input", (-160, 240)))
    assert np.array_equal(canvas_grey(page, 2), expected_grey(result64, cur, (-160, 240)))
    # zoom is shared by all views
    page.locator("#views .view").nth(1).hover()
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    transforms = page.eval_on_selector_all("#views .stage", "ss => ss.map(s => s.style.transform)")
    assert len(set(transforms)) == 1 and page.evaluate("window.ctdidViewer.state.zoom") > 1
    page.keyboard.press("c")
    page.keyboard.press("f")  # flip the single view to the input
    assert page.get_attribute("#views canvas", "data-shown") == "input"
    page.keyboard.press("f")
    assert page.get_attribute("#views canvas", "data-shown") == str(cur)


def test_pick_and_export(open_page: Any, result64: Path) -> None:
    page = open_page(result64)
    page.locator("#cand-slider").fill("5")
    cur = current_id(page)
    page.fill("#task", "high-contrast detail")
    page.click("#btn-pick")
    page.wait_for_function("document.getElementById('picks').children.length === 1")
    picks = json.loads((result64 / "picks.json").read_text())["picks"]
    assert picks["high-contrast detail"]["candidate"] == cur
    page.click("button.export[data-format=nifti]")
    page.wait_for_function("document.getElementById('pick-status').dataset.written")
    written = page.get_attribute("#pick-status", "data-written")
    path = (result64 / written).resolve()
    assert path.parent == (result64 / "exports").resolve() and path.is_file()
    assert f"_c{cur:03d}_" in path.name and path.name.endswith(".nii.gz")


def test_volume_slices(open_page: Any, result_volume: Path) -> None:
    page = open_page(result_volume)
    assert page.inner_text("#slice-index") == "3 / 5"
    page.locator("#views .view").first.click()
    page.keyboard.press("ArrowDown")
    page.wait_for_function("window.ctdidViewer.state.z === 3 && window.ctdidViewer.allCached()")
    page.evaluate("window.ctdidViewer.setIndex(window.ctdidViewer.state.idx, false)")
    assert np.array_equal(canvas_grey(page), expected_grey(result_volume, 0, (-160, 240), z=3))


def test_running_result_adds_candidates(open_page: Any, tmp_path: Path) -> None:
    folder = tmp_path / "running"
    writer = make_result(folder, strengths=(0.0,), finish=False)
    page = open_page(folder)
    assert "running" in page.inner_text("#run-status")
    assert page.get_attribute("#cand-slider", "max") == "0"
    img = ResultReader(folder).candidate(0)
    writer.add(img - 5, direction="high", strength=-0.5, step=1, progress=0.5, elapsed_s=1.0)
    writer.add(img + 5, direction="low", strength=0.5, step=1, progress=0.5, elapsed_s=1.0)
    writer.finish()
    page.wait_for_function("document.getElementById('cand-slider').max === '2'", timeout=5000)
    page.wait_for_function("document.getElementById('run-status').textContent.startsWith('done')")
    assert page.inner_text("#cand-index") == "candidate 2 / 3"  # still the default
    assert current_id(page) == 0


def test_failed_run_shows_error(open_page: Any, tmp_path: Path) -> None:
    folder = tmp_path / "failed"
    writer = make_result(folder, strengths=(0.0,), finish=False)
    writer.finish(status="failed", error="RuntimeError: out of memory")
    page = open_page(folder)
    assert page.is_visible("#error")
    assert "out of memory" in page.inner_text("#error-message")


def test_previews_shown_labelled_then_followed_when_replaced(
    open_page: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "previews"
    writer = make_result(folder, strengths=(0.0, -1 / 3, 1 / 3), finish=False)
    add_previews(writer)  # p0..p3 at -0.25..-1, p4..p7 at +0.25..+1
    page = open_page(folder)
    assert page.get_attribute("#cand-slider", "max") == "10"  # 3 candidates + 8 previews
    assert page.get_attribute("#preview-ticks", "data-count") == "8"
    assert page.is_visible("#preview-legend")
    assert "3 candidates so far + 8 previews" in page.inner_text("#run-status")
    assert page.evaluate("window.ctdidViewer.state.curId") == 0  # starts at the default
    order = page.evaluate("window.ctdidViewer.state.order")
    assert order == ["p3", "p2", "p1", 1, "p0", 0, "p4", 2, "p5", "p6", "p7"]
    page.evaluate(f"window.ctdidViewer.setIndex({order.index('p5')}, false)")
    assert page.get_attribute("#views canvas", "data-shown") == "p5"
    assert page.inner_text("#cand-index").startswith("preview (blend) 9 / 11")
    assert "preview (blend) · p5 · low · strength +0.50" in page.inner_text("#cand-info")
    assert page.inner_text("#views .view .label") == "preview (blend)"
    assert page.evaluate(
        "document.querySelector('#views .view .label').classList.contains('preview')"
    )
    want = window_to_uint8(slice_int16(ResultReader(folder).preview(5)[0]), -160, 240)
    assert np.array_equal(canvas_grey(page), want)
    page.click("#btn-pick")
    assert "cannot be picked or exported" in page.inner_text("#pick-status")
    assert not (folder / "picks.json").exists()
    page.evaluate("window.ctdidViewer.setSmooth(true)")  # a blend of candidate 2 and p5
    page.evaluate("window.ctdidViewer.setStrength(0.4, false)")
    page.wait_for_function("document.querySelector('#views canvas').dataset.shown === 'blend 2 p5'")
    assert page.inner_text("#views .view .label") == "strength +0.40 · preview (blend)"
    page.evaluate("window.ctdidViewer.setSmooth(false)")
    page.evaluate(f"window.ctdidViewer.setIndex({order.index('p5')}, false)")

    # DID's low side reaches +0.5: its candidate replaces p4 and p5, the viewer moves to it
    img = ResultReader(folder).candidate(2)
    rec = writer.add(img + 7, direction="low", strength=0.5, step=2, progress=0.5, elapsed_s=2.0)
    writer.drop_previews([4, 5])
    page.wait_for_function(f"window.ctdidViewer.state.curId === {rec.id}", timeout=5000)
    page.wait_for_function("window.ctdidViewer.allCached()", timeout=5000)
    assert page.get_attribute("#cand-slider", "max") == "9"
    assert page.get_attribute("#preview-ticks", "data-count") == "6"
    assert page.get_attribute("#views canvas", "data-shown") == str(rec.id)
    assert page.inner_text("#cand-index").startswith("candidate ")
    assert "preview" not in page.inner_text("#cand-info")
    assert np.array_equal(canvas_grey(page), expected_grey(folder, rec.id, (-160, 240)))

    # the run ends: the remaining previews go; from p7 (+1) the viewer moves to +0.5
    page.evaluate(
        "window.ctdidViewer.setIndex(window.ctdidViewer.state.order.indexOf('p7'), false)"
    )
    assert page.get_attribute("#views canvas", "data-shown") == "p7"
    writer.finish()
    page.wait_for_function("window.ctdidViewer.state.status === 'done'", timeout=5000)
    assert page.evaluate("window.ctdidViewer.state.order") == [1, 0, 2, rec.id]
    assert page.evaluate("window.ctdidViewer.state.curId") == rec.id
    assert page.get_attribute("#cand-slider", "max") == "3"
    assert page.get_attribute("#preview-ticks", "data-count") == "0"
    assert not page.is_visible("#preview-legend")
    assert page.inner_text("#run-status") == "done · 4 candidates"
    page.wait_for_function("window.ctdidViewer.allCached()", timeout=5000)
    assert page.evaluate("window.ctdidViewer.state.errors") == []
    assert "slice" not in page.inner_text("#pick-status")  # no failed request was shown


def test_on_demand_candidates_shown_while_the_volume_is_rendered(
    open_page: Any, tmp_path: Path
) -> None:
    """A long scan: candidates are browsed (rendered on demand from their weights) before
    their volumes exist, cannot be picked yet, and become stored candidates when done."""
    import threading

    from on_demand_factory import OPTS, TinyHU, disk_volume

    from ctdid.core import InteractiveDenoiser
    from ctdid.runner import RunProgress, run_did

    folder = tmp_path / "scan"
    vol = disk_volume(n=64, z=5)
    reached, go_on = threading.Event(), threading.Event()

    def hold(p: RunProgress) -> None:  # the run waits before its first volume batch
        if p.stage == "render" and not reached.is_set():
            reached.set()
            go_on.wait(120)

    run = threading.Thread(
        target=run_did, args=(vol, TinyHU()), kwargs={"out_dir": folder, "progress": hold, **OPTS}
    )
    run.start()
    try:
        assert reached.wait(120)
        page = _browse_on_demand(open_page, folder, vol, InteractiveDenoiser(TinyHU()), TinyHU())
    finally:
        go_on.set()
        run.join(120)
    n = len(ResultReader(folder).records)
    page.wait_for_function(
        "document.getElementById('run-status').textContent.startsWith('done')", timeout=10000
    )
    assert f"done · {n} candidates" == page.inner_text("#run-status")
    assert page.get_attribute("#cand-index", "data-rendering") == ""
    assert "rendered on demand" not in page.inner_text("#cand-info")
    page.click("#btn-pick")
    page.wait_for_function("document.getElementById('picks').textContent.includes('liver')")


def _browse_on_demand(open_page: Any, folder: Path, vol: Any, engine: Any, model: Any) -> Any:
    """The page of a run held before its volumes: every candidate rendered on demand."""
    reader = ResultReader(folder)
    n = len(reader.rendering)
    assert n >= 3 and reader.records == {}
    page = open_page(folder, model=model)
    assert f"running · 0 candidates so far + {n} rendered on demand" in page.inner_text(
        "#run-status"
    )
    assert page.get_attribute("#cand-slider", "max") == str(n - 1)
    assert current_id(page) == 0  # the default, before any volume exists
    assert page.get_attribute("#cand-index", "data-rendering") == "true"
    assert "rendered on demand" in page.inner_text("#cand-info")
    z = int(page.evaluate("window.ctdidViewer.state.z"))
    order = page.evaluate("window.ctdidViewer.state.order")
    for i in (0, n - 1):  # the two ends of the curve, rendered on demand for slice z
        page.evaluate(f"window.ctdidViewer.setIndex({i}, false)")
        page.wait_for_function("window.ctdidViewer.allCached()", timeout=10000)
        weights = reader.candidate_weights(order[i])
        want = engine.apply(np.array(vol.hu[z]), weights=weights, batch_size=1)
        assert np.array_equal(canvas_grey(page), window_to_uint8(slice_int16(want), -160, 240))
    page.fill("#task", "liver")
    page.click("#btn-pick")
    assert "once the volume is complete" in page.inner_text("#pick-status")
    assert not (folder / "picks.json").exists()
    return page


def test_volume_previews_rendered_on_demand_then_replaced(open_page: Any, tmp_path: Path) -> None:
    """A long scan with previews: as soon as the default is listed, the slider runs over blend
    previews rendered for the slice shown; DID's candidates replace them; none remain."""
    import threading

    from on_demand_factory import OPTS, TinyHU, disk_volume

    from ctdid.core import InteractiveDenoiser
    from ctdid.core.did import preview_image
    from ctdid.runner import RunProgress, run_did

    folder = tmp_path / "scan"
    vol = disk_volume(n=64, z=5)
    reached, go_on = threading.Event(), threading.Event()

    def hold(p: RunProgress) -> None:  # the run waits with its previews listed
        if p.stage == "preview" and not reached.is_set():
            reached.set()
            go_on.wait(120)

    run = threading.Thread(
        target=run_did,
        args=(vol, TinyHU()),
        kwargs={"out_dir": folder, "progress": hold, "previews": True, **OPTS},
    )
    run.start()
    try:
        assert reached.wait(120)
        n_prev = 2 * int(OPTS["n_candidates"])
        page = open_page(folder, model=TinyHU())
        assert page.get_attribute("#cand-slider", "max") == str(n_prev)  # default + previews
        assert page.get_attribute("#preview-ticks", "data-count") == str(n_prev)
        assert current_id(page) == 0  # the default, rendered on demand
        z = int(page.evaluate("window.ctdidViewer.state.z"))
        order = page.evaluate("window.ctdidViewer.state.order")
        prev = {p.id: p for p in ResultReader(folder).previews.values()}
        engine = InteractiveDenoiser(TinyHU())
        x = np.array(vol.hu[z], dtype=np.float32)
        y0 = engine.apply(x, batch_size=1)
        t_low = engine.apply(engine.apply(y0, batch_size=1), batch_size=1)  # k = 3
        for i in (0, n_prev):  # both ends: the input and t_low, as previews of slice z
            key = order[i]
            assert isinstance(key, str) and key.startswith("p")
            page.evaluate(f"window.ctdidViewer.setIndex({i}, false)")
            page.wait_for_function("window.ctdidViewer.allCached()", timeout=10000)
            assert page.inner_text("#views .view .label") == "preview (blend)"
            want = preview_image(x, y0, t_low, strength=prev[int(key[1:])].strength)
            assert np.array_equal(canvas_grey(page), window_to_uint8(slice_int16(want), -160, 240))
        page.click("#btn-pick")
        assert "cannot be picked or exported" in page.inner_text("#pick-status")
    finally:
        go_on.set()
        run.join(120)
    page.wait_for_function(
        "document.getElementById('run-status').textContent.startsWith('done')", timeout=10000
    )
    assert page.get_attribute("#preview-ticks", "data-count") == "0"
    assert all(isinstance(k, int) for k in page.evaluate("window.ctdidViewer.state.order"))
    assert page.evaluate("window.ctdidViewer.state.errors") == []
