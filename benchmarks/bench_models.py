"""Shipped denoisers side by side: one forward pass and one DID run per model, same slice.

Which shipped model is fast enough to be the CPU default? For every model named (the first is
the reference of the ratios) this measures, on one 512 x 512 slice (the real L506 quarter-dose
slice when ``../shared`` has it, else the embedded demo slice with quarter-dose noise):

* the forward pass (``y0 = phi_w0(x)``), median of ``--repeats`` runs, the models taking turns so
  that the machine's load hits them alike;
* one DID run of ``--mode`` (default ``fast``): its wall time, until both bounds are reached or
  the engine stops.

Speed ratios are printed against the first model; nothing is asserted (speed is measured here,
not in tests). Usage, from the checkout::

    .venv/bin/python benchmarks/bench_models.py [--models unet-d25 unet-wide-d25]
        [--mode fast] [--repeats 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_denoisers as ev

from ctdid.core import InteractiveDenoiser
from ctdid.models import load_model


def timed_slice() -> tuple[str, np.ndarray]:
    """The slice timed: L506 quarter dose if present, else the demo slice with noise (HU)."""
    real = ev.load_l506(log=lambda _m: None)
    if real is not None:
        return "L506 quarter dose", real.low.astype(np.float32)
    from ctdid.demo import simulate_demo_scan  # the embedded TotalSegmentator slice

    scan = simulate_demo_scan(size=512)
    return "demo slice (quarter dose)", np.asarray(scan.low_dose.hu[0], dtype=np.float32)


def forward_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Wall time of one forward pass without gradients."""
    t0 = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["unet-d25", "unet-wide-d25"])
    ap.add_argument("--mode", default="fast", choices=["fast", "robust", "faithful"])
    ap.add_argument("--repeats", type=int, default=5, help="forward passes per model")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-did", action="store_true", help="forward passes only")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    label, hu = timed_slice()
    models = {name: load_model(name).eval() for name in args.models}
    x = torch.from_numpy(hu)[None, None]
    for m in models.values():  # warm-up
        forward_seconds(m, x)
    fwd: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            fwd[name].append(forward_seconds(m, x))
    rows: list[dict[str, Any]] = []
    for name, m in models.items():
        row: dict[str, Any] = {
            "model": name,
            "parameters": sum(p.numel() for p in m.parameters()),
            "forward_s": statistics.median(fwd[name]),
        }
        if not args.no_did:
            t0 = time.perf_counter()
            stack = InteractiveDenoiser(m, mode=args.mode).run(hu)
            row["did_s"] = time.perf_counter() - t0
            row["candidates"] = len(stack)
        rows.append(row)
    ref = rows[0]
    print(
        f"{label}, {hu.shape[0]} x {hu.shape[1]}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"| model | parameters | forward (s) | x {ref['model']} | DID {args.mode} (s) | x |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        did = r.get("did_s")
        did_text = "-" if did is None else f"{did:.1f} | {did / ref['did_s']:.2f}"
        print(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['forward_s']:.3f} "
            f"| {r['forward_s'] / ref['forward_s']:.2f} | {did_text} |"
        )
    if args.json is not None:
        doc = {"slice": label, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "mode": args.mode, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
