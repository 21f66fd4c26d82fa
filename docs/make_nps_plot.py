"""Radial NPS of simulated quarter-dose noise inserted into a Mayo full-dose slice, beside the
NPS of the real quarter-minus-full difference of the same slice (Mayo L506, slice 32).

Writes ``docs/img/nps_mayo_L506.png`` and prints the table of ``docs/simulator.md``. Needs the
optional ``../shared/data/mayo_pair_L506`` next to the checkout; exits cleanly (status 0)
without it. Run from the checkout::

    .venv/bin/python docs/make_nps_plot.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ctdid.metrics.noise import nps_2d, nps_mean_frequency, radial_average, tile_patches
from ctdid.sim import KERNELS, simulate_low_dose

ROOT = Path(__file__).resolve().parents[1]
PAIR = ROOT.parent / "shared" / "data" / "mayo_pair_L506"
OUT = ROOT / "docs" / "img" / "nps_mayo_L506.png"
PIXEL_MM = 0.7  # assumed in-plane spacing of the Mayo slices
PATCH = 64


def _load(path: Path) -> np.ndarray:
    return np.fromfile(path, "<u2").reshape(512, 512).astype(np.float32) - 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    if not PAIR.is_dir():
        print(f"skipped: {PAIR} is absent (real CT data are optional)")
        return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(args.threads)
    fd = _load(PAIR / "L506_FD_3mm_D45_slice32.raw")
    qd = _load(PAIR / "L506_QD_3mm_D45_slice32.raw")
    # Both differences hold noise only (the object cancels): tile the body, away from its
    # outline (where the noise changes fastest) and from the table.
    body = ndimage.binary_fill_holes(ndimage.binary_opening(fd > -500, iterations=3))
    tissue = ndimage.binary_erosion(body, iterations=8)
    spacing = (PIXEL_MM, PIXEL_MM)

    def spectrum(noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        patches = tile_patches(noise, size=PATCH, mask=tissue, step=PATCH // 2)
        nps = nps_2d(patches, spacing=PIXEL_MM)
        f, radial = radial_average(nps)
        return f, radial, float(np.sqrt(nps.variance)), nps_mean_frequency(nps)

    f, real, real_std, real_mean_f = spectrum(qd - fd)
    rows = [("Mayo QD - FD", real_std, real_mean_f, 0.0)]
    curves = {}
    for kernel in KERNELS:
        sim = simulate_low_dose(
            fd, dose=0.25, spacing=spacing, mode="insert", kernel=kernel, seed=0
        )
        _, radial, std, mean_f = spectrum(sim - fd)
        # Shape mismatch: RMS difference of the spectra normalised to unit variance.
        shape_err = float(np.sqrt(np.nanmean((radial / std**2 - real / real_std**2) ** 2)))
        shape_err /= float(np.nanmax(real / real_std**2))
        rows.append((f"sim, {kernel}", std, mean_f, shape_err))
        curves[kernel] = radial

    n_patches = len(tile_patches(qd - fd, size=PATCH, mask=tissue, step=PATCH // 2))
    print(f"{n_patches} patches of {PATCH} px (50 % overlap) in the body, {PIXEL_MM} mm pixels")
    print("| noise | std (HU) | mean frequency (1/mm) | shape error vs Mayo |")
    print("|---|---|---|---|")
    for name, std, mean_f, err in rows:
        print(f"| {name} | {std:.1f} | {mean_f:.3f} | {err:.3f} |")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
    axes[0].plot(f, real, "k-", lw=2, label="Mayo QD - FD")
    axes[1].plot(f, real / real_std**2, "k-", lw=2, label="Mayo QD - FD")
    for (_, std, _, _), (kernel, radial) in zip(rows[1:], curves.items(), strict=True):
        axes[0].plot(f, radial, lw=1, label=kernel)
        axes[1].plot(f, radial / std**2, lw=1, label=kernel)
    axes[0].set_ylabel("NPS (HU$^2$ mm$^2$)")
    axes[1].set_ylabel("NPS / variance (mm$^2$)")
    for ax in axes:
        ax.set_xlabel("spatial frequency (1/mm)")
        ax.grid(alpha=0.3)
    axes[0].set_title("quarter-dose noise, absolute")
    axes[1].set_title("normalised to unit variance")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
