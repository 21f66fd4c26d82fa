"""Side-by-side benchmark of the DID engine's modes (faithful, robust, fast) on CPU.

For each input slice it runs every mode with the same model and measures:

* coverage: raw progress of the last candidate toward each bound (0 = default, 1 = bound);
* noise: STD in HU over flat regions found automatically once per input (on the default
  image) and used for every candidate; ``mono`` says whether it never rises (0.1 HU slack)
  from the high-resolution end to the low-noise end;
* iterations (both directions), time to the first candidate of each direction (the later of
  the two: both ends visible), total time, peak memory (the engine's own figure: exact on
  CUDA, an estimate on CPU) and the process's peak resident memory;
* curve distance of the other modes (``COMPARED``) to the robust mode: for each robust
  candidate, the RMSE in HU inside the body to the nearest candidate of the other mode;
  median and max;
* speed ratios robust / each compared mode and faithful (paper-sized U-Net) / fast;
* ``faithful_same_time``: the paper's optimizer without its 1 % stop, given the fast mode's
  wall time on the same model and input (how far it gets in that time);
* noise coverage: the share of the flat-region noise gap between the default and each bound
  that the end candidates cover.

Model: a shipped model through :func:`ctdid.models.load_model` when ``--model`` names one
(default ``unet-d25`` when shipped); otherwise a CompactUNet trained here for about a minute
on one simulated phantom pair, labelled ``compact-unet (trained in the benchmark)`` — a
stand-in, not the shipped model. The faithful-versus-fast ratio uses the paper-sized U-Net
(``--paper-model`` when shipped, else untrained; then its iterations are forced to those of
the faithful run of the benchmark model, since an untrained network's stopping point means
nothing). Its iterations are capped by ``--faithful-max-steps``.

Inputs: simulated quarter-dose slices (``abdomen_phantom(seed=9001 + i)`` +
``simulate_low_dose(dose=0.25)``) and, when present, the Mayo L506 quarter-dose slice in
``../shared/data/mayo_pair_L506``. ``--size`` below 512 takes the centre crop.

Usage::

    .venv/bin/python benchmarks/bench_engine.py [--quick] [--size 512] [--model NAME]
        [--slices 2] [--threads N] [--out results.json]

Timings depend on the machine's load: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctdid.core import HUAdapter, InteractiveDenoiser
from ctdid.core.candidates import CandidateStack
from ctdid.metrics import find_flat_regions, noise_label
from ctdid.models import CompactUNet, PaperUNet, available_models, load_model

MAYO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mayo_pair_L506"
MAYO_QD = "L506_QD_3mm_D45_slice32.raw"
MAYO_SPACING = 0.7  # mm, approximately
DEFAULT_MODEL = "unet-d25"
MODES = (
    "faithful", "robust", "robust-previous", "robust-whole", "robust-adam",
    "fast", "fast-previous", "fast-standard", "fast-adam",
)  # fmt: skip
#: Engine options of each benchmarked mode. "robust" and "fast" are the engine's defaults:
#: Gauss-Newton steps (Lanczos basis of at most 40 resp. 12 vectors, 0.2 resp. 0.25 of the
#: way per iteration); for a network without image-wide normalisation both fine-tune on four
#: 128 x 128 body crops and render each candidate on the whole image. "robust-whole"
#: fine-tunes on the whole image instead (the reference for the crops). "robust-adam" and
#: "fast-adam" are the earlier Adam step controls (line search on the whole image; adaptive
#: step on the crops), kept for comparison.
MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "faithful": {"mode": "faithful"},
    "robust": {"mode": "robust"},
    "robust-whole": {"mode": "robust", "n_crops": 0},
    "robust-adam": {"mode": "robust", "step_control": "search", "n_crops": 0},
    "fast": {"mode": "fast"},
    "fast-previous": {"mode": "fast", "jvp": "autodiff"},
    "fast-standard": {"mode": "fast", "jvp": "autodiff", "channels_last": False},
    "robust-previous": {"mode": "robust", "channels_last": False},
    "fast-adam": {"mode": "fast", "step_control": "adaptive"},
}
#: The previous implementation of a mode, for curve distance and speed ratio side by side
#: (issue 16): fast mode before the finite-difference Jacobian products (exact forward-mode
#: products, channels-last); robust mode before channels-last. "fast-standard" is the fast
#: mode before both (the standard memory format, exact products).
PREVIOUS = (("fast", "fast-previous"), ("fast", "fast-standard"), ("robust", "robust-previous"))
#: Modes whose curve is compared with the robust mode's (curve distance).
COMPARED = ("robust-whole", "robust-adam", "fast", "fast-adam")


# ---------------------------------------------------------------------------------------------
# Inputs and models


def simulated_slice(seed: int) -> tuple[np.ndarray, float]:
    """Quarter-dose simulation of ``abdomen_phantom(seed)``; (HU image, pixel size in mm)."""
    from ctdid.sim import abdomen_phantom, simulate_low_dose

    ph = abdomen_phantom(seed=seed)
    noisy = simulate_low_dose(ph.hu, dose=0.25, spacing=ph.spacing, seed=seed)
    return np.asarray(noisy, np.float32), float(ph.spacing[0])


def mayo_slice() -> tuple[np.ndarray, float] | None:
    path = MAYO / MAYO_QD
    if not path.is_file():
        return None
    raw = np.fromfile(path, dtype="<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0, MAYO_SPACING


def centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape
    if size >= min(h, w):
        return img
    y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


def trained_compact(steps: int, seed: int = 0) -> HUAdapter:
    """A CompactUNet trained briefly on one simulated phantom pair (stand-in model)."""
    from ctdid.sim import abdomen_phantom, simulate_low_dose

    ph = abdomen_phantom(seed=1)
    clean = torch.from_numpy(np.asarray(ph.hu, np.float32))
    noisy = torch.from_numpy(
        np.asarray(simulate_low_dose(ph.hu, dose=0.25, spacing=ph.spacing, seed=2), np.float32)
    )
    torch.manual_seed(seed)
    net = HUAdapter(CompactUNet(), size_multiple=16)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    side, batch = 128, 4
    for _ in range(steps):
        ys = torch.randint(64, 512 - 64 - side, (batch,), generator=gen).tolist()
        xs = torch.randint(64, 512 - 64 - side, (batch,), generator=gen).tolist()
        xb = torch.stack([noisy[y : y + side, x : x + side] for y, x in zip(ys, xs, strict=True)])[
            :, None
        ]
        cb = torch.stack([clean[y : y + side, x : x + side] for y, x in zip(ys, xs, strict=True)])[
            :, None
        ]
        loss = ((net(xb) - cb) / 1000.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def get_model(name: str | None, train_steps: int) -> tuple[torch.nn.Module, str]:
    shipped = available_models()
    want = name or (DEFAULT_MODEL if DEFAULT_MODEL in shipped else None)
    if want is not None:
        if want not in shipped:
            sys.exit(f"model {want!r} is not shipped (shipped: {shipped or 'none'})")
        return load_model(want), f"{want} (shipped)"
    return (
        trained_compact(train_steps),
        f"compact-unet (trained in the benchmark, {train_steps} steps; NOT the shipped model)",
    )


def paper_model(name: str | None) -> tuple[torch.nn.Module, str, bool]:
    """(model, label, trained)."""
    if name is not None:
        return load_model(name), f"{name} (shipped)", True
    net = HUAdapter(PaperUNet(), size_multiple=512)
    net.eval()
    return net, "paper-unet, untrained (timing only)", False


# ---------------------------------------------------------------------------------------------
# Measurements


def curve_distance(ref: CandidateStack, other: CandidateStack) -> tuple[float, float]:
    """For each candidate of ``ref``, RMSE (HU, inside the body) to the nearest of ``other``."""
    body = ref.body
    dists = [
        min(float(np.sqrt(np.mean((r.image - o.image)[body] ** 2))) for o in other) for r in ref
    ]
    return float(np.median(dists)), float(np.max(dists))


def noise_coverage(stack: CandidateStack, noise: list[float], spacing: float, regions: Any) -> dict:
    """How far the end candidates get toward each bound in flat-region noise, 0..1.

    High end: (noise(first) - noise(default)) / (noise(t_high) - noise(default)); low end:
    (noise(default) - noise(last)) / (noise(default) - noise(t_low)).
    """
    n0 = noise[stack.default_index]
    n_hi = noise_label(stack.t_high, spacing=spacing, regions=regions)
    n_lo = noise_label(stack.t_low, spacing=spacing, regions=regions)
    out = {"noise_t_high_hu": float(n_hi), "noise_t_low_hu": float(n_lo)}
    out["noise_coverage_high"] = (
        float((noise[0] - n0) / (n_hi - n0)) if n_hi > n0 and stack.default_index > 0 else 0.0
    )
    last = len(noise) - 1
    out["noise_coverage_low"] = (
        float((n0 - noise[-1]) / (n0 - n_lo)) if n0 > n_lo and last > stack.default_index else 0.0
    )
    return out


def summarise(stack: CandidateStack, seconds: float, spacing: float, regions: Any) -> dict:
    noise = [noise_label(c.image, spacing=spacing, regions=regions) for c in stack]
    firsts: dict[str, float] = {}
    for c in stack:
        if c.direction != "default":
            firsts[c.direction] = min(firsts.get(c.direction, np.inf), c.elapsed)
    return {
        "coverage_high": float(stack.coverage["high"]),
        "coverage_low": float(stack.coverage["low"]),
        "noise_hu": [float(v) for v in noise],
        "noise_monotone": bool(np.all(np.diff(noise) <= 0.1)),
        **noise_coverage(stack, noise, spacing, regions),
        "iterations": int(sum(stack.steps.values())),
        "steps": dict(stack.steps),
        "stop_reasons": dict(stack.stop_reasons),
        "n_candidates": len(stack),
        "first_candidate_s": float(min(firsts.values())) if firsts else None,
        "both_ends_s": float(max(firsts.values())) if firsts else None,
        "total_s": float(seconds),
        "per_iteration_s": (
            (float(seconds) - float(stack.timings["bounds"])) / max(sum(stack.steps.values()), 1)
        ),
        "engine_timings_s": {k: float(v) for k, v in stack.timings.items()},
        "peak_memory_mb": stack.peak_memory_bytes / 2**20,
        "memory_method": stack.memory_method,
        "forward_passes": {
            d: stack.info[d].get("forward_passes")
            for d in ("high", "low")
            if isinstance(stack.info.get(d), dict)
        },
        "jacobian_products": {
            d: stack.info[d].get("jvp", 0) + stack.info[d].get("vjp", 0)
            for d in ("high", "low")
            if isinstance(stack.info.get(d), dict)
        },
    }


def run_mode(model: torch.nn.Module, x: np.ndarray, **kwargs: Any) -> tuple[CandidateStack, float]:
    t0 = time.perf_counter()
    stack = InteractiveDenoiser(model, **kwargs).run(x)
    return stack, time.perf_counter() - t0


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="centre crop side (default 512)")
    ap.add_argument("--quick", action="store_true", help="one simulated slice, short runs")
    ap.add_argument("--model", default=None, help="shipped model name (default unet-d25)")
    ap.add_argument("--paper-model", default=None, help="shipped paper-sized U-Net name")
    ap.add_argument("--slices", type=int, default=2, help="simulated test slices (default 2)")
    ap.add_argument("--no-mayo", action="store_true", help="skip the Mayo L506 slice")
    ap.add_argument("--modes", default=",".join(MODES), help="modes to run, comma separated")
    ap.add_argument("--faithful-max-steps", type=int, default=8, help="cap per direction")
    ap.add_argument("--no-paper", action="store_true", help="skip the paper-sized U-Net run")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up run of each mode on a 128 px crop")  # fmt: skip
    ap.add_argument(
        "--no-budget", action="store_true", help="skip faithful mode at the fast mode's wall time"
    )
    ap.add_argument("--train-steps", type=int, default=800, help="stand-in model training")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    ap.add_argument("--out", default=None, help="write all numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    if args.quick:
        args.slices, args.faithful_max_steps = 1, min(args.faithful_max_steps, 3)
        args.train_steps = min(args.train_steps, 400)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    model, model_label = get_model(args.model, args.train_steps)
    print(f"model: {model_label}; threads {torch.get_num_threads()}; load {load0[0]:.2f}")

    inputs: list[tuple[str, np.ndarray, float]] = []
    for i in range(args.slices):
        img, sp = simulated_slice(9001 + i)
        inputs.append((f"sim{9001 + i}", centre(img, args.size), sp))
    mayo = None if (args.no_mayo or args.quick) else mayo_slice()
    if mayo is not None:
        inputs.append(("mayo_L506_QD", centre(mayo[0], args.size), mayo[1]))
    if not args.no_warmup:
        # The first engine run of a process pays a one-off warm-up (oneDNN kernel selection,
        # allocator): run every mode once on a small crop first, untimed, so that the mode
        # that happens to come first is not charged for it.
        small = centre(inputs[0][1], min(128, args.size))
        for mode in modes:
            kw_w = {**MODE_OPTIONS[mode], "max_steps": 1, "n_candidates": 1}
            run_mode(model, small, **kw_w)

    results: dict[str, Any] = {
        "model": model_label,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "load_avg_start": list(load0),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "inputs": {},
    }
    rows = []
    for name, x, spacing in inputs:
        per: dict[str, Any] = {}
        stacks: dict[str, CandidateStack] = {}
        regions = None
        for mode in modes:
            kw: dict[str, Any] = dict(MODE_OPTIONS[mode])
            if mode == "faithful":
                kw["max_steps"] = args.faithful_max_steps
            stack, secs = run_mode(model, x, **kw)
            if regions is None:
                regions = find_flat_regions(
                    stack.default.image, spacing=spacing, body_mask=stack.body
                )
            stacks[mode] = stack
            per[mode] = summarise(stack, secs, spacing, regions)
        for other in COMPARED:
            if "robust" in stacks and other in stacks:
                med, mx = curve_distance(stacks["robust"], stacks[other])
                per[other]["curve_distance_hu"] = {"median": med, "max": mx}
                per[f"speed_robust_over_{other}"] = per["robust"]["total_s"] / per[other]["total_s"]
        for new, old in PREVIOUS:
            if new in stacks and old in stacks:
                med, mx = curve_distance(stacks[old], stacks[new])
                per[new][f"distance_to_{old}_hu"] = {"median": med, "max": mx}
                per[f"speed_{old}_over_{new}"] = per[old]["total_s"] / per[new]["total_s"]
        if "fast" in stacks and not args.no_budget:
            # The paper's optimizer without its early stop, given the fast mode's wall time:
            # how far does it get on the same model in the same time?
            kw = {"mode": "faithful", "tol": 1e-12, "max_steps": 10_000,
                  "time_budget": per["fast"]["total_s"]}  # fmt: skip
            bstack, bsecs = run_mode(model, x, **kw)
            per["faithful_same_time"] = summarise(bstack, bsecs, spacing, regions)
        if not args.no_paper and "fast" in stacks and x.shape[0] % 512 == 0:
            pnet, plabel, trained = paper_model(args.paper_model)
            kw = {"mode": "faithful", "max_steps": args.faithful_max_steps}
            if not trained:
                n = max(
                    per.get("faithful", {}).get("steps", {}).values() or [args.faithful_max_steps]
                )
                kw.update(tol=1e-12, max_steps=min(int(n), args.faithful_max_steps))
            pstack, psecs = run_mode(pnet, x, **kw)
            per["faithful_paper"] = summarise(pstack, psecs, spacing, regions)
            per["faithful_paper"]["model"] = plabel
            per["speed_faithful_paper_over_fast"] = psecs / per["fast"]["total_s"]
        results["inputs"][name] = per
        for mode, r in per.items():
            if isinstance(r, dict) and "total_s" in r:
                dist = r.get("curve_distance_hu", {})
                rows.append(
                    [
                        name,
                        mode,
                        fmt(r["coverage_high"]),
                        fmt(r["coverage_low"]),
                        f"{fmt(r['noise_coverage_high'])}/{fmt(r['noise_coverage_low'])}",
                        f"{r['noise_hu'][0]:.1f}>{r['noise_hu'][-1]:.1f}",
                        fmt(r["noise_monotone"]),
                        str(r["iterations"]),
                        fmt(r["first_candidate_s"]),
                        fmt(r["both_ends_s"]),
                        fmt(r["total_s"], ".1f"),
                        fmt(r["per_iteration_s"]),
                        fmt(r["peak_memory_mb"], ".0f"),
                        fmt(dist.get("median")),
                        fmt(dist.get("max")),
                    ]
                )
        print(f"  {name} done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    head = ["input", "mode", "cov_hi", "cov_lo", "ncov_hi/lo", "noise HU", "mono", "iters",
            "first_s", "both_s", "total_s", "s/iter", "mem_MB", "dist_med", "dist_max"]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    print()
    for name, per in results["inputs"].items():
        parts = []
        for other in COMPARED:
            if f"speed_robust_over_{other}" in per:
                parts.append(f"robust/{other} {per[f'speed_robust_over_{other}']:.1f}x")
        for new, old in PREVIOUS:
            if f"speed_{old}_over_{new}" in per:
                d = per[new][f"distance_to_{old}_hu"]
                parts.append(
                    f"{old}/{new} {per[f'speed_{old}_over_{new}']:.2f}x "
                    f"(curve distance {d['median']:.2f} / {d['max']:.2f} HU median / max)"
                )
        if "speed_faithful_paper_over_fast" in per:
            parts.append(f"faithful(paper U-Net)/fast {per['speed_faithful_paper_over_fast']:.1f}x")
        if parts:
            print(f"{name}: " + ", ".join(parts))
    print(
        "cov: progress of the last candidate toward each bound; ncov: the same in flat-region\n"
        "noise (how much of the noise gap between the default and the bound is covered);\n"
        "faithful_same_time: the paper's SGD without its 1 % stop, given the fast mode's wall\n"
        "time on the same model and input; noise: flat-region STD at the\n"
        "high-resolution end > low-noise end; both_s: time until both directions have shown a\n"
        "candidate; s/iter includes the extra forward passes of the step control. The faithful\n"
        "mode stops at the paper's 1 % relative-change rule, usually long before the bounds."
    )
    load1 = os.getloadavg()
    results["load_avg_end"] = list(load1)
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["wall_s"] = time.perf_counter() - t_start
    print(
        f"wall {results['wall_s']:.0f} s, max RSS {results['max_rss_mb']:.0f} MB, "
        f"load {load0[0]:.2f} -> {load1[0]:.2f} (timings are only comparable on a quiet machine)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
