"""Fingerprints (sha256) of the engine's candidate stacks, to prove a refactor changes nothing.

Runs :class:`ctdid.core.InteractiveDenoiser` in the faithful, robust and fast modes on the
benchmark slices of ``benchmarks/bench_engine.py`` (two simulated quarter-dose phantoms and,
when ``../shared`` has it, the Mayo L506 quarter-dose slice, 512 x 512, model ``unet-d25``),
plus a few smaller cases that reach the other code paths (one direction after the other,
whole-image training, kept weights, a shared volume, the experimental Adam step controls),
and prints one sha256 per case over everything a run returns except timings and memory:
every candidate's image bytes, direction, step, progress and strength, the bounds, the body
mask, the steps, stop reasons and the engine's ``info``.

Run it before and after a change, with the same thread count, and compare::

    .venv/bin/python benchmarks/stack_hashes.py --out before.json
    # ... change the engine ...
    .venv/bin/python benchmarks/stack_hashes.py --out after.json --compare before.json

To fingerprint an older commit without checking it out: ``git worktree add /tmp/old REV`` and
``PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/stack_hashes.py --out before.json``.
Exit status 1 when ``--compare`` finds a difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import mayo_slice, simulated_slice

from ctdid.core import InteractiveDenoiser
from ctdid.core.candidates import CandidateStack
from ctdid.models import load_model

SKIP_INFO = {"timings"}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items()) if k not in SKIP_INFO}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float | int | str | bool) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def fingerprint(stack: CandidateStack) -> str:
    """sha256 over a stack's images, labels and engine info (not its timings or memory)."""
    h = hashlib.sha256()
    for c in stack.candidates:
        h.update(np.ascontiguousarray(c.image, np.float32).tobytes())
        h.update(json.dumps([c.direction, c.step, c.progress, c.progress_raw, c.strength]).encode())
        if c.weights is not None:
            for k in sorted(c.weights):
                h.update(k.encode())
                h.update(c.weights[k].detach().cpu().contiguous().numpy().tobytes())
    for a in (stack.t_high, stack.t_low, stack.body):
        h.update(np.ascontiguousarray(a).tobytes())
    meta = {
        "default_index": stack.default_index,
        "mode": stack.mode,
        "steps": stack.steps,
        "stop_reasons": stack.stop_reasons,
        "info": _jsonable(dict(stack.info)),
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def cases(full: bool) -> list[tuple[str, np.ndarray, dict[str, Any], str]]:
    """(name, input, engine options, entry point) for every fingerprinted run."""
    slices = [(f"sim{seed}", simulated_slice(seed)[0]) for seed in (9001, 9002)]
    mayo = mayo_slice()
    if mayo is not None:
        slices.append(("L506", mayo[0]))
    out: list[tuple[str, np.ndarray, dict[str, Any], str]] = []
    if full:
        for name, img in slices:
            for mode in ("faithful", "robust", "fast"):
                out.append((f"{name}/{mode}", img, {"mode": mode}, "run"))
    small = np.ascontiguousarray(slices[0][1][192:320, 192:320])
    out += [
        ("small/fast-sequential", small, {"mode": "fast", "interleave": False}, "run"),
        ("small/fast-whole", small, {"mode": "fast", "n_crops": 0}, "run"),
        ("small/robust-crops", small, {"mode": "robust", "n_crops": 2, "crop_size": 48}, "run"),
        ("small/fast-keep", small, {"mode": "fast", "keep_weights": True}, "run"),
        ("small/search", small, {"mode": "robust", "step_control": "search"}, "run"),
        ("small/adaptive", small, {"mode": "fast", "step_control": "adaptive"}, "run"),
        ("small/faithful-low", small, {"mode": "faithful", "directions": ("low",)}, "run"),
        ("small/faithful-long", small, {"mode": "faithful", "tol": 1e-5, "max_steps": 6}, "run"),
        (
            "small/faithful-seq",
            small,
            {"mode": "faithful", "tol": 1e-5, "max_steps": 3, "interleave": False},
            "run",
        ),
        ("small/budget-cap", small, {"mode": "fast", "max_steps": 2, "n_candidates": 3}, "run"),
    ]
    vol = np.stack([np.ascontiguousarray(s[1][160:288, 160:288]) for s in slices[:2]] * 2)
    out.append(("volume/fast-shared", vol, {"mode": "fast"}, "volume"))
    out.append(("volume/faithful-shared", vol, {"mode": "faithful", "max_steps": 4}, "volume"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the fingerprints as JSON here")
    ap.add_argument("--compare", type=Path, help="fingerprints JSON to compare with")
    ap.add_argument("--quick", action="store_true", help="only the small cases")
    ap.add_argument("--model", default="unet-d25")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    result: dict[str, Any] = {
        "model": args.model,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    hashes: dict[str, str] = {}
    for name, x, opts, entry in cases(not args.quick):
        t0 = time.perf_counter()
        engine = InteractiveDenoiser(model, **opts)
        stack = engine.run(x) if entry == "run" else engine.run_volume(x, train_slices=3)
        assert isinstance(stack, CandidateStack)
        hashes[name] = fingerprint(stack)
        print(f"{name:28s} {hashes[name][:16]}  {len(stack.candidates):2d} candidates "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)  # fmt: skip
    result["hashes"] = hashes
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.compare:
        old = json.loads(args.compare.read_text())["hashes"]
        diff = [k for k in hashes if k in old and old[k] != hashes[k]]
        missing = [k for k in hashes if k not in old]
        same = len(hashes) - len(diff) - len(missing)
        print(f"identical: {same}/{len(hashes)}; different: {diff or 'none'}", end="; ")
        print(f"new: {missing or 'none'}")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
