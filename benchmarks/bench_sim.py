"""Time the low-dose simulator at 512 x 512 with the default clinical fan beam.

Times projection, FBP and a full dose insertion (projection + noise + FBP) with the current
implementation and, side by side in the same process, with a reference: the implementation of
commit ``REFERENCE_COMMIT`` (read from git, if available) and the ``method='ray'`` projector.
Ratios are meaningful on a busy machine; absolute times are not. Run from the checkout::

    .venv/bin/python benchmarks/bench_sim.py [--threads 2] [--views 1152] [--repeat 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from ctdid.sim import (
    FanBeamGeometry,
    fbp,
    forward_project,
    hu_to_mu,
    insertion_noise,
    mu_to_hu,
    water_cylinder,
)

REFERENCE_COMMIT = "7a4beec"  # the first simulator (ray-driven, one view chunk at a time)
ROOT = Path(__file__).resolve().parents[1]


def _load_reference() -> tuple[ModuleType, ModuleType] | None:
    """The reference projector and FBP modules from git, or None without git."""
    modules = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_sim_"))
    for name in ("projector", "fbp"):
        try:
            src = subprocess.run(
                ["git", "show", f"{REFERENCE_COMMIT}:src/ctdid/sim/{name}.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        path = tmp / f"ref_{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"ref_{name}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        modules.append(mod)
    return modules[0], modules[1]


def _time(fn: Callable[[], torch.Tensor], repeat: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), torch.empty(0)
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--views", type=int, default=1152, help="views of the fan beam")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument("--no-reference", action="store_true", help="time the new code only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {load:.2f}")

    geometry = FanBeamGeometry(n_views=args.views)
    phantom = water_cylinder(shape=512, fov_mm=512 * 0.7, diameter_mm=300.0)
    spacing = phantom.spacing
    mu = hu_to_mu(torch.tensor(phantom.hu))
    shape = (512, 512)
    gen = torch.Generator().manual_seed(0)

    def insertion(project: Callable[..., torch.Tensor], recon: Callable[..., torch.Tensor]):
        def run() -> torch.Tensor:
            sino = project(mu, geometry, spacing=spacing)
            noise = insertion_noise(sino, dose=0.25, generator=gen)
            return mu + recon(noise, geometry, shape=shape, spacing=spacing, kernel="ramp")

        return run

    rows: list[tuple[str, float, float | None]] = []
    ref = None if args.no_reference else _load_reference()
    with torch.inference_mode():
        t_proj, sino = _time(lambda: forward_project(mu, geometry, spacing=spacing), args.repeat)
        t_fbp, rec = _time(
            lambda: fbp(sino, geometry, shape=shape, spacing=spacing, kernel="ramp"), args.repeat
        )
        t_ins, _ = _time(insertion(forward_project, fbp), args.repeat)
        t_ray, sino_ray = _time(
            lambda: forward_project(mu, geometry, spacing=spacing, method="ray"), args.repeat
        )
        ref_times: list[float | None] = [None, None, None]
        if ref is not None:
            ref_proj, ref_fbp = ref
            ref_times[0], sino_ref = _time(
                lambda: ref_proj.forward_project(mu, geometry, spacing=spacing), args.repeat
            )
            ref_times[1], rec_ref = _time(
                lambda: ref_fbp.fbp(sino, geometry, shape=shape, spacing=spacing, kernel="ramp"),
                args.repeat,
            )
            ref_times[2], _ = _time(insertion(ref_proj.forward_project, ref_fbp.fbp), args.repeat)
    rows = [
        ("projection (joseph)", t_proj, ref_times[0]),
        ("projection (ray)", t_ray, ref_times[0]),
        ("FBP (ramp)", t_fbp, ref_times[1]),
        ("insertion (proj + noise + FBP)", t_ins, ref_times[2]),
    ]
    print(f"512 x 512, {geometry.n_views} views x {geometry.n_cols} bins (fan beam, curved)")
    print(f"{'step':32s} {'new (s)':>9s} {'ref (s)':>9s} {'speed-up':>9s}")
    for name, new, old in rows:
        old_s = f"{old:9.2f}" if old is not None else f"{'-':>9s}"
        ratio = f"{old / new:8.1f}x" if old is not None else f"{'-':>9s}"
        print(f"{name:32s} {new:9.2f} {old_s} {ratio}")
    # Agreement of the fast paths with the references (relative to the peak / in HU).
    peak = float(sino.max())
    rel = float((sino - sino_ray).abs().max()) / peak
    print(f"joseph vs ray projection: max |diff| {rel:.2e} of peak")
    if ref is not None:
        rel = float((sino - sino_ref).abs().max()) / peak
        print(f"joseph vs reference projection: max |diff| {rel:.2e} of peak")
        diff = mu_to_hu(rec) - mu_to_hu(rec_ref)
        print(f"FBP vs reference FBP: max |diff| {float(diff.abs().max()):.3f} HU")
    water = float(mu_to_hu(rec).numpy()[phantom.flat_roi].mean())
    print(f"water mean in the central ROI (noise-free FBP, ramp): {water:.2f} HU")


if __name__ == "__main__":
    main()
