"""Small synthetic pairs folders for the training tests (no simulation, fast).

Import it from a test module in ``tests/train`` with ``from pairs_factory import write_pairs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def body_slice(size: int, *, seed: int) -> np.ndarray:
    """A (size, size) HU slice: air around an ellipse of water with a few inserts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    img = np.full((size, size), -1000.0, dtype=np.float32)
    img[((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 < 1] = 40.0
    for _ in range(3):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        img[np.hypot(yy - cy, xx - cx) < size / 12] = rng.uniform(-100, 300)
    return img


def write_pairs(
    folder: Path, *, n: int = 4, size: int = 64, dose: float = 0.25, sigma: float = 20.0
) -> list[Path]:
    """Write ``n`` pair files (normal: slice + sigma noise; low: + sqrt(1/dose - 1) sigma more).

    Also writes a minimal ``dataset.json``. Returns the pair files, sorted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        clean = body_slice(size, seed=i)
        normal = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
        extra = rng.normal(0, sigma * np.sqrt(1 / dose - 1), clean.shape).astype(np.float32)
        path = folder / f"{i:04d}_synthetic.npz"
        np.savez(
            path,
            low=(normal + extra).astype(np.float32),
            normal=normal.astype(np.float32),
            dose=np.float64(dose),
            spacing=np.array([0.7, 0.7]),
            source=np.str_(f"synthetic {i}"),
            kind=np.str_("synthetic"),
            kernel=np.str_("hann"),
        )
        files.append(path)
    info = {
        "format": "ctdid-pairs",
        "version": 1,
        "base_dose": dose,
        "seed": 0,
        "n_phantoms": 0,
        "real_sources": [],
        "pairs": [{"file": f.name, "kind": "synthetic", "kernel": "hann"} for f in files],
    }
    (folder / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    return files
