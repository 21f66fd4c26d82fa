"""Speed of the interactive viewer in headless Debian chromium.

Measures, for a finished 512x512 result folder:

* slider step: ``performance.now()`` around the draw after a slider ``input`` event, with every
  candidate slice cached (window/level applied in the browser on the int16 data); also the time
  from the event to the next animation frame (the frame that shows it). p50 / p95 in ms.
* first paint: from the call that starts the server to the first drawn image in the page
  (the browser is already running, as a user's browser is). Also split into server start and
  navigation-to-paint.

Usage::

    .venv/bin/python benchmarks/bench_viewer.py [--candidates 9] [--slices 1] [--steps 300]
        [--smooth]

Needs ``/usr/bin/chromium`` and the playwright package.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

STEP_JS = """
async (steps) => {
  const V = window.ctdidViewer, slider = document.getElementById('cand-slider');
  const n = V.state.smooth ? Number(slider.max) + 1 : V.state.order.length;
  const frame = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
  V.state.timings.length = 0;
  const toFrame = [];
  let rng = 12345;
  for (let k = 0; k < steps; k++) {
    rng = (rng * 1103515245 + 12345) % 2147483648;
    let i = rng % n;
    if (i === V.state.idx) i = (i + 1) % n;
    await frame();
    const t0 = performance.now();
    slider.value = String(i);
    slider.dispatchEvent(new Event('input', { bubbles: true }));
    toFrame.push((await frame()) - t0);
  }
  return { draw: V.state.timings.slice(), frame: toFrame };
}
"""


def _make_result(folder: Path, *, n_cand: int, nz: int) -> None:
    from ctdid.results import ResultWriter

    n = 512
    yy, xx = np.mgrid[:n, :n].astype(np.float32) / 8.0
    clean = np.where(np.hypot(yy - 32, xx - 32) < 28, 0.0, -1000.0).astype(np.float32)
    clean[np.hypot(yy - 20, xx - 40) < 5] = 700.0
    vol = np.repeat(clean[None], nz, axis=0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(vol.shape).astype(np.float32)
    writer = ResultWriter(folder, input_hu=vol + 60 * noise, spacing=(1.0, 0.7, 0.7), info={})
    for k, s in enumerate(np.linspace(-1.0, 1.0, n_cand)):
        sigma = 30.0 * (1.0 - s) / 2.0 + 2.0
        direction = "default" if abs(s) < 1e-9 else ("high" if s < 0 else "low")
        writer.add(
            vol + sigma * noise,
            direction=direction,
            strength=float(s),
            step=k,
            progress=abs(float(s)),
            elapsed_s=float(k),
            labels={"noise_hu": sigma, "mtf50_per_mm": 0.6 - 0.2 * float(s)},
        )
    writer.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=9)
    ap.add_argument("--slices", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument(
        "--smooth", action="store_true", help="smooth mode: the slider blends two candidates"
    )
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"skipped: {CHROMIUM} is absent (apt-get install chromium)")
        return 0
    from playwright.sync_api import sync_playwright

    from ctdid.viewer.server import serve_in_thread

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        folder = Path(tmp) / "result"
        _make_result(folder, n_cand=args.candidates, nz=args.slices)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto("about:blank")
        t_start = time.time()
        with serve_in_thread(folder) as url:
            t_listen = time.time()
            page.goto(url)
            page.wait_for_function("window.ctdidViewer && window.ctdidViewer.ready()")
            origin_ms, paint_ms = page.evaluate(
                "[performance.timeOrigin, window.ctdidViewer.state.firstPaintMs]"
            )
            first_paint_s = (origin_ms + paint_ms) / 1000.0 - t_start
            page.wait_for_function("window.ctdidViewer.allCached()", timeout=30000)
            if args.smooth:
                page.evaluate("window.ctdidViewer.setSmooth(true)")
            res = page.evaluate(STEP_JS, args.steps)
        browser.close()
    draw = np.asarray(res["draw"])
    frame = np.asarray(res["frame"])
    mode = "smooth mode (blend of two candidates per step)" if args.smooth else "stored candidates"
    print(
        f"viewer benchmark: 512x512, {args.candidates} candidates, {args.slices} slice(s), {mode}"
    )
    print(
        f"slider step draw (ms, n={draw.size}): p50 {np.percentile(draw, 50):.2f}  "
        f"p95 {np.percentile(draw, 95):.2f}  max {draw.max():.2f}"
    )
    print(
        f"slider input -> next frame (ms, n={frame.size}): p50 {np.percentile(frame, 50):.2f}  "
        f"p95 {np.percentile(frame, 95):.2f}"
    )
    print(
        f"first paint: {first_paint_s * 1000:.0f} ms after server start "
        f"(server start {1000 * (t_listen - t_start):.0f} ms, "
        f"navigation to paint {paint_ms:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
