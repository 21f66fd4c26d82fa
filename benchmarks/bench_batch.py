"""Throughput of ``ctdid batch``: the same series with 1 and with 2 Ray workers, side by side.

Makes ``--series`` small series (``--slices`` simulated abdomen slices of ``--size`` pixels,
40 HU Gaussian noise, one NumPy file each), then runs the whole batch with each worker count
in turn (``--repeat`` rounds, alternating 1, 2, 1, 2, ...), each in its own fresh local Ray
and output folder, through :func:`ctdid.batch.run_batch` as ``ctdid batch`` does. Reports per
worker count: wall time (Ray's start included), the time from Ray running to the last series
(the batch itself), series per minute of the batch, and the speed-up of 2 workers over 1
(best round of each; the batch time includes the start of the worker processes, a few
seconds each, in parallel). It also checks that both worker counts wrote identical candidates.
Every task uses one torch thread; ratios are meaningful on a busy machine, absolute times
are not (the load average is printed). Run from the checkout::

    .venv/bin/python benchmarks/bench_batch.py [--series 8] [--size 128] [--slices 2]
        [--model unet-d25] [--mode fast] [--candidates 4] [--repeat 1] [--out bench.json]
    .venv/bin/python benchmarks/bench_batch.py --quick   # 4 tiny series: checks it works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctdid.batch import find_series, run_batch
from ctdid.sim import abdomen_phantom

WORKERS = (1, 2)


def make_series(folder: Path, *, n: int, size: int, slices: int) -> None:
    """``n`` NumPy series of ``slices`` noisy phantom slices each (with a spacing sidecar)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixel = 380.0 / size
    for i in range(n):
        hu = np.stack(
            [abdomen_phantom(seed=100 * i + z, shape=size).hu for z in range(slices)]
        ).astype(np.float32)
        noisy = hu + rng.normal(0.0, 40.0, hu.shape).astype(np.float32)
        np.save(folder / f"s{i:02d}.npy", noisy)
        (folder / f"s{i:02d}.json").write_text(json.dumps({"spacing": [3.0, pixel, pixel]}))


def time_batch(
    series: Path, out: Path, *, workers: int, defaults: dict[str, Any]
) -> dict[str, Any]:
    """One batch in a fresh local Ray: wall and batch seconds, series per minute."""
    started: list[float] = []
    t0 = time.perf_counter()
    summary = run_batch(
        find_series(series),
        out=out,
        defaults=defaults,
        workers=workers,
        on_start=lambda n: started.append(time.perf_counter()),
    )
    end = time.perf_counter()
    failed = [f"{r.series}: {r.error}" for r in summary.failed]
    if failed:
        raise SystemExit("series failed: " + "; ".join(failed))
    batch_s = end - (started[0] if started else t0)
    return {
        "workers": workers,
        "wall_s": end - t0,
        "batch_s": batch_s,
        "series_per_min": 60.0 * len(summary.results) / batch_s,
        "series_s_median": float(np.median([r.seconds for r in summary.results])),
    }


def same_candidates(a: Path, b: Path) -> bool:
    """Whether two batch folders hold byte-identical candidate files."""
    files = sorted(p.relative_to(a) for p in a.glob("*/candidates/*.npy"))
    if not files or files != sorted(p.relative_to(b) for p in b.glob("*/candidates/*.npy")):
        return False
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--series", type=int, default=8, help="series in the batch")
    parser.add_argument("--size", type=int, default=128, help="slice size in pixels")
    parser.add_argument("--slices", type=int, default=2, help="slices per series")
    parser.add_argument("--model", default="unet-d25", help="model spec (as --model)")
    parser.add_argument("--mode", default="fast", help="DID mode")
    parser.add_argument("--method", default="did", help="candidate maker (as --method)")
    parser.add_argument("--candidates", type=int, default=4, help="candidates per direction")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per worker count")
    parser.add_argument("--quick", action="store_true", help="4 series of 2 x 48 x 48, 1 cand.")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.series, args.size, args.slices, args.candidates = 4, 48, 2, 1
    return args


def main() -> None:
    args = _args()
    defaults = {
        "model": args.model,
        "mode": args.mode,
        "method": args.method,
        "candidates": args.candidates,
        "train_slices": args.slices,
    }
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        make_series(root / "series", n=args.series, size=args.size, slices=args.slices)
        for rnd in range(args.repeat):
            for workers in WORKERS:
                out = root / f"out_w{workers}_r{rnd}"
                run = time_batch(root / "series", out, workers=workers, defaults=defaults)
                runs.append({**run, "round": rnd})
                print(
                    f"round {rnd}, {workers} worker(s): wall {run['wall_s']:.1f} s, batch "
                    f"{run['batch_s']:.1f} s, {run['series_per_min']:.2f} series/min",
                    flush=True,
                )
        identical = same_candidates(root / "out_w1_r0", root / "out_w2_r0")
    best = {w: max(r["series_per_min"] for r in runs if r["workers"] == w) for w in WORKERS}
    ratio = best[2] / best[1]
    load = os.getloadavg()
    print(
        f"{args.series} series of {args.slices} x {args.size} x {args.size}, {args.model} "
        f"{args.mode} ({args.method}), {args.candidates} candidates per side; "
        f"{os.cpu_count()} cores, load {load[0]:.2f}"
    )
    print(f"throughput, best of {args.repeat}: 1 worker {best[1]:.2f} series/min, 2 workers "
          f"{best[2]:.2f} series/min; ratio 2/1 = {ratio:.2f}")  # fmt: skip
    print(f"candidates identical with 1 and 2 workers: {'yes' if identical else 'NO'}")
    if args.out is not None:
        doc = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "runs": runs,
            "best_series_per_min": {str(w): v for w, v in best.items()},
            "ratio_2_over_1": ratio,
            "identical": identical,
            "cores": os.cpu_count(),
            "load": list(load),
            "platform": platform.platform(terse=True),
        }
        args.out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
