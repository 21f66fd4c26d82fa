"""Where a fast-mode DID run spends its time, and what the memory format changes (issue 16).

1. ``torch.profiler`` over one fast-mode run (after a warm-up run) of a shipped model on the
   Mayo L506 quarter-dose slice (or a simulated abdomen slice without ``../shared``), with
   the channels-last format on and off: the operators with the most self CPU time, as shares.
2. Side by side on the engine's training batch (four 128 x 128 crops) and on a whole 512 x 512
   slice: forward pass, Jacobian-vector product (``torch.func.jvp``), vector-Jacobian product
   (applying ``torch.func.vjp``'s function) in the standard and the channels-last format, and
   ``torch.func.linearize`` (its build once per Gauss-Newton iteration, then each product).

Usage::

    .venv/bin/python benchmarks/profile_engine.py [--model unet-d25] [--threads 2] [--repeat 5]

Timings depend on the machine's load (printed); compare the rows of one run only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ctdid.core import InteractiveDenoiser
from ctdid.models import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine as be


def test_slice() -> tuple[np.ndarray, str]:
    """The L506 quarter-dose slice in HU (bench_engine's), or its simulated slice 9001."""
    mayo = be.mayo_slice()
    if mayo is not None:
        return mayo[0], "Mayo L506 QD"
    return be.simulated_slice(9001)[0], "simulated 9001"


def timed(f: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def profile_run(model: torch.nn.Module, hu: np.ndarray, *, channels_last: bool) -> None:
    from torch.profiler import ProfilerActivity, profile

    engine = InteractiveDenoiser(model, mode="fast", seed=0, channels_last=channels_last)
    engine.run(hu)  # warm-up
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.run(hu)
    wall = time.perf_counter() - t
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nfast mode, channels_last={channels_last}: {wall:.1f} s under the profiler")
    for e in events[:10]:
        print(f"  {e.key:<40} {100 * e.self_cpu_time_total / total:5.1f} %  ({e.count} calls)")


def products(model: torch.nn.Module, shape: tuple[int, ...], repeat: int) -> None:
    net: torch.nn.Module = getattr(model, "net", model)
    names = [n for n, _ in net.named_parameters()]
    w_std = tuple(p.detach().clone() for _, p in net.named_parameters())
    x_std = torch.randn(*shape)
    rows: dict[str, tuple[float, ...]] = {}
    for fmt in ("standard", "channels-last"):
        cl = fmt == "channels-last"
        mf = torch.channels_last if cl else torch.contiguous_format
        x = x_std.contiguous(memory_format=mf)
        w = tuple(t.contiguous(memory_format=mf) if t.dim() == 4 else t for t in w_std)
        tangents = tuple(torch.randn(t.shape) for t in w)

        def func(*ws: torch.Tensor, x: torch.Tensor = x) -> torch.Tensor:
            return torch.func.functional_call(net, dict(zip(names, ws, strict=True)), (x,))

        with torch.no_grad():
            fwd = timed(lambda w=w, func=func: func(*w), repeat)  # type: ignore[misc]
        jvp = timed(
            lambda w=w, q=tangents, func=func: torch.func.jvp(func, w, q),  # type: ignore[misc]
            repeat,
        )
        y, vjp_fn = torch.func.vjp(func, *w)[:2]
        u = torch.randn(y.shape)
        vjp = timed(lambda vjp_fn=vjp_fn, u=u: vjp_fn(u), repeat)  # type: ignore[misc]
        t = time.perf_counter()
        _, jvp_fn = torch.func.linearize(func, *w)
        build = time.perf_counter() - t
        lin = timed(lambda jvp_fn=jvp_fn, q=tangents: jvp_fn(*q), repeat)  # type: ignore[misc]
        rows[fmt] = (fwd, jvp, vjp, build, lin)
    print(f"\n{tuple(shape)}: seconds (ratio standard / channels-last)")
    labels = ("forward", "jvp", "vjp (apply)", "linearize build", "linearized jvp")
    for i, label in enumerate(labels):
        a, b = rows["standard"][i], rows["channels-last"][i]
        print(f"  {label:<16} standard {a:.4f}  channels-last {b:.4f}  ({a / b:.2f}x)")
    fwd = rows["standard"][0]
    print(
        f"  jvp = {rows['standard'][1] / fwd:.1f} forwards, vjp = {rows['standard'][2] / fwd:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-d25")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-profile", action="store_true", help="only the product timings")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    model = load_model(args.model)
    hu, label = test_slice()
    print(f"model {args.model}, {label}, {args.threads} threads, torch {torch.__version__}")
    if not args.no_profile:
        for cl in (False, True):
            profile_run(model, hu, channels_last=cl)
    for shape in ((4, 1, 128, 128), (1, 1, 512, 512)):
        products(model, shape, args.repeat)
    print(f"\nload {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
