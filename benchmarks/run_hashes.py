"""Fingerprints (sha256) of `ctdid run` result folders: proof that a runner change alters nothing.

Runs :func:`ctdid.runner.run_did` (fast mode, ``unet-d25``, 3 candidates per direction, a
NumPy export) on a small noisy disk phantom made here: one slice, a 3-slice volume with the
shared trajectory, the same per slice, and the blend baseline; prints one sha256 per case
over the candidate images, ``metrics.csv`` without its timing column, the exported image
and ``run.json``'s ``config``. Run it before and after a change and compare::

    .venv/bin/python benchmarks/run_hashes.py --out before.json
    # ... change the runner ...
    .venv/bin/python benchmarks/run_hashes.py --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctdid.models import load_model
from ctdid.runner import run_did
from ctdid.volume import CTVolume


def phantom(z: int) -> np.ndarray:
    """A 40 HU disk with a 300 HU insert in air, 96 x 96, 40 HU noise, ``z`` slices."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96] - 47.5
    img = np.full((96, 96), -1000.0, np.float32)
    img[yy**2 + xx**2 < 40**2] = 40.0
    img[(yy - 10) ** 2 + (xx + 12) ** 2 < 8**2] = 300.0
    return np.stack([img + rng.normal(0, 40, img.shape).astype(np.float32) for _ in range(z)])


def folder_hash(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((d / "candidates").glob("*.npy")):
        h.update(np.load(f).tobytes())
    rows = [line.split(",") for line in (d / "metrics.csv").read_text().splitlines()]
    i = rows[0].index("elapsed_s")
    h.update(json.dumps([r[:i] + r[i + 1 :] for r in rows]).encode())
    for f in sorted((d / "exports").glob("*.npy")):
        h.update(np.load(f).tobytes())
    cfg = json.loads((d / "run.json").read_text())["config"]
    h.update(json.dumps(cfg, sort_keys=True).encode())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("unet-d25")
    vol = phantom(3)
    cases: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        ("single", vol[:1], {}),
        ("shared", vol, {}),
        ("per-slice", vol, {"shared": False}),
        ("blend", vol, {"method": "blend"}),
    ]
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, v, kw in cases:
            d = Path(tmp) / name
            run_did(
                CTVolume(v, spacing=(2.0, 0.8, 0.8)), model, out_dir=d, mode="fast",
                n_candidates=3, export="numpy", **kw,
            )  # fmt: skip
            hashes[name] = folder_hash(d)
            print(f"{name:12s} {hashes[name][:16]}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(hashes, indent=2))
    if args.compare:
        before = json.loads(args.compare.read_text())
        diff = [k for k in hashes if k in before and before[k] != hashes[k]]
        print(f"identical: {len(hashes) - len(diff)}/{len(hashes)}; different: {diff or 'none'}")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
