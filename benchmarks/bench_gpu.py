"""GPU benchmark of the DID engine: per-iteration time, whole-curve time, CUDA-vs-CPU check.

Three parts, one summary table:

1. Per-iteration time of the paper-sized U-Net (9.45 M parameters) at 512 x 512: forward,
   mean-squared loss, backward and an SGD (momentum 0.9) step, as in the faithful mode.
   Warm-up iterations, then the median of N timed ones (``torch.cuda.synchronize`` around
   each). Variants: eager float32, channels-last, bfloat16 autocast, ``torch.compile``
   (each skipped with its error if it fails). Target: <= 5 ms on an H100.
2. Whole-curve time of the engine (robust and fast modes, both directions) on the device, for
   the shipped ``unet-d25`` (norm-free compact U-Net, when installed), and for a CompactUNet
   (with instance norm) and the paper-sized U-Net, each trained here briefly on synthetic
   pairs (timing stand-ins). Median of ``--curves`` runs after a warm-up run.
   Target: <= 0.5 s.
3. Correctness: the same model, image and seed on the device and on the CPU give close
   candidates (default image max |difference|, curve distance median and max in HU).

``--device cpu --quick`` runs every code path on small sizes in about 3.5 minutes on 2 cores, for
testing on machines without a GPU (its numbers mean nothing).

Needs only torch, numpy, scipy and ctdid importable (``PYTHONPATH=src`` is enough).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctdid.core import HUAdapter, InteractiveDenoiser
from ctdid.core.candidates import CandidateStack
from ctdid.models import CompactUNet, PaperUNet, available_models, load_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phantom(n: int, seed: int, sigma: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float32 HU: an elliptic body with inserts in air, Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) / n
    img = np.full((n, n), -1000.0, np.float32)
    img[(yy / 0.36) ** 2 + (xx / 0.45) ** 2 < 1] = 40.0
    for _ in range(8):
        cy, cx = rng.uniform(-0.25, 0.25, 2)
        r = rng.uniform(0.01, 0.06)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.choice([-80.0, 120.0, 300.0, 800.0])
    noisy = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return img, noisy.astype(np.float32)


def train_briefly(net: nn.Module, n: int, steps: int, device: torch.device) -> nn.Module:
    """A few Adam steps on synthetic pairs so that the network denoises a little."""
    model = HUAdapter(net, size_multiple=int(getattr(net, "required_multiple", 1))).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for i in range(steps):
        clean, noisy = phantom(n, 100 + i)
        c = torch.from_numpy(clean)[None, None].to(device)
        x = torch.from_numpy(noisy)[None, None].to(device)
        loss = ((model(x) - c) / 1000.0).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def time_iterations(
    make_step: Callable[[], Callable[[], None]], device: torch.device, warmup: int, n: int
) -> dict[str, Any]:
    try:
        step = make_step()
        for _ in range(warmup):
            step()
        sync(device)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t0)
    except Exception as exc:  # a variant that fails is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "n": n}


def iteration_variants(
    size: int, depth: int, device: torch.device, warmup: int, n: int, compile_ok: bool
) -> dict[str, dict[str, Any]]:
    x = torch.randn(1, 1, size, size, device=device) * 0.1 + 1.0
    target = x + 0.01 * torch.randn_like(x)

    def factory(
        channels_last: bool, bf16: bool, compiled: bool
    ) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            torch.manual_seed(0)
            net: nn.Module = PaperUNet(depth=depth).to(device)
            xin = x
            if channels_last:
                net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
                xin = x.contiguous(memory_format=torch.channels_last)
            run: Callable[[torch.Tensor], torch.Tensor] = net
            if compiled:
                run = torch.compile(net)
            opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)

            def step() -> None:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    y = run(xin)
                loss = (y.float() - target).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            return step

        return make

    variants = {
        "eager fp32": (False, False, False),
        "channels-last fp32": (True, False, False),
        "eager bf16 autocast": (False, True, False),
    }
    if compile_ok:
        variants["compile fp32"] = (False, False, True)
        variants["compile bf16 autocast"] = (False, True, True)
    out = {}
    for name, flags in variants.items():
        out[name] = time_iterations(factory(*flags), device, warmup, n)
        print(f"  iteration {name}: {out[name]}", flush=True)
    return out


def curve_distance(ref: CandidateStack, other: CandidateStack) -> tuple[float, float]:
    body = ref.body
    d = [min(float(np.sqrt(np.mean((r.image - o.image)[body] ** 2))) for o in other) for r in ref]
    return float(np.median(d)), float(np.max(d))


def time_curves(
    model: nn.Module, x: np.ndarray, device: torch.device, mode: str, runs: int
) -> dict[str, Any]:
    engine = InteractiveDenoiser(model, mode=mode, device=device)
    engine.run(x)  # warm-up: kernels, allocator
    times, stack = [], None
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        stack = engine.run(x)
        sync(device)
        times.append(time.perf_counter() - t0)
    assert stack is not None
    return {
        "median_s": statistics.median(times),
        "iterations": int(sum(stack.steps.values())),
        "candidates": len(stack),
        "coverage": dict(stack.coverage),
        "peak_memory_mb": stack.peak_memory_bytes / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations (median)")
    ap.add_argument("--curves", type=int, default=3, help="timed curves (median)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    ap.add_argument("--out", default=None, help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; run with --device cpu --quick to test the code paths")
        return 2
    t_start = time.perf_counter()
    if args.quick:
        size, depth, warmup, n_it, runs, curve_n, train_steps = 128, 7, 1, 3, 1, 128, 10
    else:
        size, depth, warmup, n_it, runs, curve_n, train_steps = 512, 9, 10, args.iters, 3, 512, 300
        runs = args.curves
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, size {size}, quick {args.quick}")
    res: dict[str, Any] = {"device": name, "torch": torch.__version__, "size": size}

    # 1. Per-iteration time of the paper-sized U-Net.
    compile_ok = not args.no_compile and not args.quick
    res["iteration"] = iteration_variants(size, depth, device, warmup, n_it, compile_ok)

    # 2. Whole curves on the device.
    _, x = phantom(curve_n, 7)
    models: dict[str, nn.Module | None] = {
        # The shipped quarter-dose model (norm-free compact U-Net), when installed.
        "unet-d25 (shipped)": load_model("unet-d25").to(device)
        if "unet-d25" in available_models()
        else None,
        "compact-unet": train_briefly(CompactUNet(), curve_n, train_steps, device),
        "paper-unet": train_briefly(PaperUNet(depth=depth), curve_n, train_steps, device)
        if curve_n % 2**depth == 0
        else None,
    }
    res["curve"] = {}
    for mname, model in models.items():
        if model is None:
            continue
        for mode in ("robust", "fast"):
            r = time_curves(model, x, device, mode, runs)
            res["curve"][f"{mname} {mode}"] = r
            print(f"  curve {mname} {mode}: {r}", flush=True)

    # 3. Device vs CPU: same model, image and seed.
    n_chk = 64 if args.quick else 128
    _, xc = phantom(n_chk, 11)
    cpu_model = train_briefly(CompactUNet(), n_chk, 20, torch.device("cpu"))
    on_dev = InteractiveDenoiser(cpu_model, mode="fast", device=device, seed=3).run(xc)
    on_cpu = InteractiveDenoiser(cpu_model, mode="fast", device="cpu", seed=3).run(xc)
    med, mx = curve_distance(on_cpu, on_dev)
    res["check"] = {
        "compared": f"{device.type} vs cpu",
        "default_max_abs_hu": float(np.max(np.abs(on_dev.default.image - on_cpu.default.image))),
        "curve_distance_median_hu": med,
        "curve_distance_max_hu": mx,
        "candidates": [len(on_cpu), len(on_dev)],
    }
    res["check"]["pass"] = bool(res["check"]["default_max_abs_hu"] < 0.5 and med < 1.0)

    # Summary table.
    print()
    print(f"{'measurement':44s} {'value':>14s}  target")
    for k, r in res["iteration"].items():
        v = f"{r['median_ms']:.2f} ms" if "median_ms" in r else "failed"
        print(f"{'iteration ' + k + f' ({size}px)':44s} {v:>14s}  <= 5 ms (H100, 512px)")
        if "error" in r:
            print(f"    {r['error']}")
    for k, r in res["curve"].items():
        v = f"{r['median_s']:.3f} s"
        cov = r["coverage"]
        extra = f"  <= 0.5 s; {r['iterations']} it, cov {cov['high']:.2f}/{cov['low']:.2f}"
        print(f"{'curve ' + k + f' ({curve_n}px)':44s} {v:>14s}{extra}")
    c = res["check"]
    print(
        f"{'check ' + c['compared'] + ' (default max |d|, curve med/max)':44s} "
        f"{c['default_max_abs_hu']:.3f} HU, {c['curve_distance_median_hu']:.2f}/"
        f"{c['curve_distance_max_hu']:.2f} HU  {'PASS' if c['pass'] else 'FAIL'}"
    )
    res["wall_s"] = time.perf_counter() - t_start
    print(f"wall {res['wall_s']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0 if c["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
