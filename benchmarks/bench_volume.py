"""Whole scans on the CPU: time to the first interactive view and to all candidates, vs slices.

Builds a scan of ``Z`` slices (20, 100, 300 by default) from the embedded real slice (the
TotalSegmentator abdomen slice of ``ctdid demo``, 512 x 512) with quarter-dose noise inserted
in the projection domain, ``--realisations`` independent noise realisations repeated along z
(slice ``z`` carries realisation ``z % R``). Each scan runs ``run_did`` in the shared trajectory
(``--method did``, fast mode, ``unet-d25`` as ``ctdid run`` loads it, so ``run.json`` names
the model) in a
child process of its own (so that its peak memory is its own), and measures, side by side in
that one run:

* **on demand** (this implementation): the viewer's first interactive view of the middle
  slice -- its page data (``/api/result``) and the default plus every candidate rendered on
  demand from the saved weights (``/api/slice``), through the viewer's ASGI app loaded from
  the folder alone (it loads the model from ``run.json``). Measured twice: when the default's
  weights and the blend previews are listed (the default and the previews of the slice,
  rendered from its input, default and t_low; ``ctdid run`` shows previews, so the run does
  too unless ``--no-previews``: then the default alone) and when the fine-tuning has listed
  every candidate (the whole slider). The run waits while the viewer renders, and those
  seconds are taken out of the run's times;
* **stored**: when the first candidate volume (the default) and when the last one is on
  disk -- what a viewer that only shows stored volumes can show, and the end of the run;
* peak resident memory of the child (``ru_maxrss``) and the size of the result folder.

Targets (issue 16, 300 slices on 2 cores): first interactive view <= 60 s, all candidates
<= 600 s, memory bounded. Run from the checkout::

    .venv/bin/python benchmarks/bench_volume.py --threads 2 [--slices 20,100,300]
        [--realisations 8] [--out bench-volume.json]
    .venv/bin/python benchmarks/bench_volume.py --quick   # 6 slices of 128 px: checks it works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def make_scan(z: int, *, size: int, realisations: int) -> Any:
    """The benchmark scan: the embedded real slice with R noise realisations, repeated."""
    from ctdid.demo import simulate_demo_scan
    from ctdid.volume import CTVolume

    pool = [simulate_demo_scan(size=size, seed=s).low_dose for s in range(min(realisations, z))]
    hu = np.stack([pool[i % len(pool)].hu[0] for i in range(z)]).astype(np.float32)
    first = pool[0]
    return CTVolume(hu, spacing=first.spacing, meta={**dict(first.meta), "benchmark": "volume"})


def view_slice(folder: Path, z: int) -> dict[str, Any]:
    """The viewer's first view of slice ``z``: page data, then every listed entry's slice."""
    from starlette.testclient import TestClient

    from ctdid.viewer.server import create_app

    t0 = time.perf_counter()
    client = TestClient(create_app(folder), base_url="http://127.0.0.1")
    doc = client.get("/api/result").json()
    t_doc = time.perf_counter() - t0
    how: list[str] = []
    for cand in ["input", *doc["view_order"]]:
        r = client.get(f"/api/slice/{cand}/{z}")
        if r.status_code != 200:
            raise RuntimeError(f"slice {cand}/{z}: {r.status_code} {r.text}")
        how.append(r.headers["X-Rendered"])
    return {
        "seconds": time.perf_counter() - t0,
        "result_seconds": t_doc,
        "entries": len(doc["view_order"]),
        "previews": sum(1 for c in doc["view_order"] if isinstance(c, str)),
        "on_demand": how.count("on-demand"),
        "on_demand_available": doc["on_demand"]["available"],
    }


def one_scan(
    z: int,
    *,
    size: int,
    realisations: int,
    threads: int,
    work: Path,
    method: str = "did",
    previews: bool = True,
) -> dict[str, Any]:
    """Run one scan of ``z`` slices with the viewer probed during the run; its figures.

    ``method="auto"`` (``ctdid run``'s default: blend and iterates, each slice on its own)
    lists nothing to render on demand: it renders and lists the default volume before the
    slices' candidates, and the viewer is probed when that is listed (first view) and when
    the last candidate is (slider). ``previews`` (``ctdid run``'s default; ``did`` only):
    the first view is probed when the previews are listed, with the default.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _one_scan(
            z, size=size, realisations=realisations, work=work, method=method, previews=previews
        )
    finally:
        torch.set_num_threads(before)


def _one_scan(
    z: int, *, size: int, realisations: int, work: Path, method: str, previews: bool
) -> dict[str, Any]:
    from ctdid.runner import RunProgress, run_did
    from ctdid.runner.console import load_denoiser

    t0 = time.perf_counter()
    scan = make_scan(z, size=size, realisations=realisations)
    make_s = time.perf_counter() - t0
    model, info = load_denoiser("unet-d25")
    folder = work / f"scan{z}"
    paused = [0.0]  # seconds the run waited for the viewer
    marks: dict[str, Any] = {}
    start = [0.0]

    def at() -> float:
        return time.perf_counter() - start[0] - paused[0]

    def probe(name: str) -> None:
        t = time.perf_counter()
        marks[name] = {"at_s": at(), **view_slice(folder, z // 2)}
        paused[0] += time.perf_counter() - t

    shared = method == "did"
    first_stage = "preview" if shared and previews else "rendering"

    def progress(p: RunProgress) -> None:
        if p.stage == first_stage and "default_view" not in marks:
            probe("default_view")
        elif shared and p.stage == "render" and "slider_view" not in marks:
            probe("slider_view")  # the fine-tuning is done: every candidate listed
        elif p.stage == "candidate":
            marks.setdefault("first_stored_s", at())
            marks["last_stored_s"] = at()
            if not shared and "default_view" not in marks:
                probe("default_view")  # per slice: the default volume, listed first
            if not shared and p.total is not None and p.done >= p.total:
                probe("slider_view")  # every candidate of every slice listed

    start[0] = time.perf_counter()
    summary = run_did(
        scan,
        model,
        out_dir=folder,
        mode="fast",
        method=method,
        model_info=info,
        seed=0,
        progress=progress,
        previews=previews,
    )
    total = time.perf_counter() - start[0] - paused[0]
    size_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    engine = summary.engine
    for name, fallback in (("default_view", "first_stored_s"), ("slider_view", "last_stored_s")):
        if name not in marks:  # nothing listed to render on demand: what is stored
            marks[name] = {"at_s": marks[fallback], "seconds": 0.0, "entries": 0, "on_demand": 0}
    out = {
        "method": method,
        "previews": bool(previews and shared),
        "slices": z,
        "shape": list(scan.shape),
        "make_scan_s": make_s,
        "candidates": len(summary.records),
        "total_s": total,
        "finetune_s": engine.get("trajectory_seconds") or 0.0,
        "train_slices": engine.get("train_slices"),
        "first_view_s": marks["default_view"]["at_s"] + marks["default_view"]["seconds"],
        "slider_view_s": marks["slider_view"]["at_s"] + marks["slider_view"]["seconds"],
        "marks": marks,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "folder_mb": size_bytes / 2**20,
    }
    shutil.rmtree(folder)
    return out


def _child(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    res = one_scan(
        args.child, size=args.size, realisations=args.realisations, threads=args.threads,
        work=Path(args.work), method=args.method, previews=not args.no_previews,
    )  # fmt: skip
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", default="20,100,300", help="Scan lengths, comma-separated.")
    ap.add_argument("--size", type=int, default=512, help="Pixels per side (default 512).")
    ap.add_argument("--realisations", type=int, default=8, help="Noise realisations (8).")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2).")
    ap.add_argument(
        "--method", choices=("did", "auto"), default="did",
        help="did: the shared trajectory (default); auto: ctdid run's default.",
    )  # fmt: skip
    ap.add_argument(
        "--no-previews", action="store_true",
        help="--method did without blend previews (the first view: the default alone).",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, help="Write the results as JSON.")
    ap.add_argument("--quick", action="store_true", help="6 slices of 128 px: a check.")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args)
        return
    if args.quick:
        args.slices, args.size, args.realisations = "6", 128, 2
    sizes = [int(s) for s in str(args.slices).split(",")]
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.2f}; {args.size} px, {args.realisations} realisations, "
          f"fast mode, --method {args.method}"
          f"{' without previews' if args.no_previews else ''}, unet-d25, "
          f"{args.threads} threads")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctdid-bench-volume-") as work:
        for z in sizes:
            cmd = [sys.executable, __file__, "--child", str(z), "--size", str(args.size),
                   "--realisations", str(args.realisations), "--threads", str(args.threads),
                   "--work", work, "--method", args.method]  # fmt: skip
            if args.no_previews:
                cmd.append("--no-previews")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"scan of {z} slices failed:\n{proc.stderr[-3000:]}")
            res = json.loads(line[len("RESULT ") :])
            rows.append(res)
            m = res["marks"]
            if m["default_view"]["on_demand"]:
                n_prev = m["default_view"].get("previews", 0)
                how = (f"default + {n_prev} previews on demand; stored default "
                       f"{m['first_stored_s']:6.1f} s, "
                       f"{m['first_stored_s'] / res['first_view_s']:.1f}x later")  # fmt: skip
            else:  # per slice: before the default was listed first, nothing showed until
                # every slice was done (the slider's time, less the default's own pass)
                how = (f"the stored default, listed first; listed at the end as before "
                       f"{res['slider_view_s']:6.1f} s, "
                       f"{res['slider_view_s'] / res['first_view_s']:.1f}x later")  # fmt: skip
            print(
                f"{z:4d} slices: first view {res['first_view_s']:6.1f} s ({how}) | slider "
                f"{res['slider_view_s']:6.1f} s ({m['slider_view']['on_demand']} on demand, "
                f"{m['slider_view']['seconds']:.1f} s to render them) | all "
                f"{res['candidates']} candidates {res['total_s']:6.1f} s "
                f"({res['total_s'] / z:.2f} s/slice; fine-tuning {res['finetune_s']:.1f} s) | "
                f"peak RSS {res['peak_rss_mb']:.0f} MB, folder {res['folder_mb']:.0f} MB",
                flush=True,
            )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"scaling {a['slices']} -> {b['slices']} slices ({b['slices'] / a['slices']:.0f}x): "
              f"all candidates {b['total_s'] / a['total_s']:.1f}x, first view "
              f"{b['first_view_s'] / a['first_view_s']:.1f}x, slider "
              f"{b['slider_view_s'] / a['slider_view_s']:.1f}x")  # fmt: skip
    last = rows[-1]
    print(f"targets at {last['slices']} slices: first view <= 60 s: "
          f"{'MET' if last['first_view_s'] <= 60 else 'NOT MET'} ({last['first_view_s']:.1f} s); "
          f"all candidates <= 600 s: {'MET' if last['total_s'] <= 600 else 'NOT MET'} "
          f"({last['total_s']:.1f} s)")  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
