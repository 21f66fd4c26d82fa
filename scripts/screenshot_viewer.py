"""Screenshot of the viewer on a result folder, for the README (docs/img/viewer.png).

    .venv/bin/python scripts/screenshot_viewer.py RESULT_DIR OUT.png [--strength S]

Opens ``ctdid view`` on RESULT_DIR in headless Debian chromium (``/usr/bin/chromium``, the
playwright package), moves the slider to the candidate nearest strength S (default -0.5: a
sharper one, so the picture differs from the default), waits for the frame and saves a
1400 x 900 screenshot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

MOVE_JS = """
(strength) => {
  const V = window.ctdidViewer, slider = document.getElementById('cand-slider');
  const s = V.state.order.map((id) => V.state.records.get(id).strength);
  let best = 0;
  s.forEach((v, i) => { if (Math.abs(v - strength) < Math.abs(s[best] - strength)) best = i; });
  slider.value = String(best);
  slider.dispatchEvent(new Event('input', { bubbles: true }));
  return best;
}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--strength", type=float, default=-0.5)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from ctdid.viewer.server import serve_in_thread

    with sync_playwright() as pw, serve_in_thread(args.result) as url:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_function("window.ctdidViewer && window.ctdidViewer.ready()")
        page.wait_for_function("window.ctdidViewer.allCached()", timeout=60000)
        index = page.evaluate(MOVE_JS, args.strength)
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out} (candidate {index})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
