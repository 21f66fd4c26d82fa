"""DID against the baselines a CT user has for free, compared at equal noise.

Every method makes a set of candidates along a noise-resolution curve on the same noisy slice,
on top of the same pretrained denoiser (``unet-d25`` by default):

* ``did-fast``, ``did-robust``: the DID engine (:class:`ctdid.core.InteractiveDenoiser`);
* ``blend``: pixel blends x <-> y0 <-> t_low (the ASiR-V convention; milliseconds);
* ``iterate``: the path through the model's iterates phi^j(x), j = 0..3;
* ``interp``: weights interpolated between the pretrained ones and DID robust's end weights;
* ``tv``: scikit-image's total variation of the input, weights swept;
* ``bm3d``: BM3D of the input with a noise PSD estimated from flat regions, factor swept.

Each candidate becomes one point (noise, quality). **Noise** is one measure for every method:
the median over flat 10 mm squares of the reference (found once per slice) of the STD after a
least-squares plane is removed (``eval_sets.flat_noise``). **Quality**: RMSE vs the reference
inside the body; edge RMSE (the top 10 % of the reference's gradient); on the simulated slices
also TTF50 of a high-contrast insert and the NPS peak frequency of the noise (image minus the
noise-free truth). The reference is the noise-free truth (simulated slices: same geometry and
FBP kernel, no noise) or the full dose (real slices).

Methods are compared with the blend on each side of the default separately: *high* (noise
between the default's and the input's) and *low* (between t_low's and the default's). On a
side, each curve is read at 16 log-spaced noise levels of the range both cover
(:func:`ctdid.metrics.difference_at_equal_noise`) and the mean difference is one number per
slice. The table gives, per method, measure and side, the median over slices of that
difference to the blend and the number of slices where the method is better (lower RMSE,
higher TTF50, higher NPS peak frequency, higher CHO d').

On the MITA-LCD phantom (``../shared/data/lcd_ct_cct189``) each realisation (signal present
and absent) gets its own candidates; at each strength of a grid the channelized Hotelling
observer's d' of each disc and the mean flat-region noise over the realisations form one
point; curves are compared with the blend's at equal noise as above.

Field protocol: the default of every shipped model on L506, RMSE / PSNR / SSIM after clipping
to [-160, 240] HU with data range 400 HU (as the Mayo 2016 literature reports them).

Results are cached per (slice, method) in ``--cache`` (JSON), so an interrupted run resumes.

Usage, from the checkout::

    .venv/bin/python benchmarks/eval_curves.py [--quick] [--methods did-fast blend ...]
        [--cache /tmp/ctdid-eval-curves] [--json out.json] [--markdown out.md]
        [--figures docs/img] [--threads 2] [--no-lcd]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_sets
from eval_sets import EvalSlice

from ctdid.baselines import (
    blend_stack,
    bm3d_stack,
    iterate_images,
    iterate_stack,
    tv_stack,
    weight_interp_stack,
)
from ctdid.core import CandidateStack, InteractiveDenoiser
from ctdid.metrics import (
    difference_at_equal_noise,
    nps_2d,
    nps_peak_frequency,
    side_range,
    tile_patches,
    ttf_from_insert,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ctdid-eval-curves"
METHODS = ("did-fast", "did-robust", "blend", "iterate", "interp", "tv", "bm3d")
#: Quality measures and which way is better (+1: higher is better, -1: lower is better).
MEASURES: dict[str, int] = {"rmse": -1, "edge_rmse": -1, "ttf50": +1, "nps_peak": +1}
SIDES = ("high", "low")
Log = Callable[[str], None]


def method_order(name: str) -> tuple[int, str]:
    """Sort key: the built-in methods in ``METHODS`` order, then DID variants by name."""
    return (METHODS.index(name), "") if name in METHODS else (len(METHODS), name)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"did-fast-biases=mode:fast,tune:biases"`` -> name and engine options.

    Values are read as int, then float, then ``true``/``false``, else kept as text.
    """
    name, _, spec = text.partition("=")
    if not name.startswith("did-") or name in METHODS or not spec:
        raise argparse.ArgumentTypeError(
            f"a DID variant is NAME=key:value,... with NAME starting 'did-' and not one of "
            f"{', '.join(METHODS)}; got {text!r}"
        )
    opts: dict[str, Any] = {}
    for item in spec.split(","):
        key, _, raw = item.partition(":")
        value: Any = raw
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
        if raw in ("true", "false"):
            value = raw == "true"
        opts[key.strip()] = value
    return name, opts


# ---------------------------------------------------------------------------------------------
# candidates of every method


def method_stacks(
    model: torch.nn.Module,
    low: NDArray[np.float32],
    *,
    spacing: tuple[float, float],
    methods: Sequence[str],
    n_candidates: int = 8,
    bm3d_candidates: int = 3,
    seed: int = 0,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, tuple[CandidateStack, float]]:
    """Each method's candidate stack of one slice and the seconds it took.

    ``interp`` needs ``did-robust`` (its end weights); it is run when ``interp`` is asked for.
    ``variants``: DID runs with other engine options, by name (see :func:`parse_variant`).
    """
    out: dict[str, tuple[CandidateStack, float]] = {}
    base = InteractiveDenoiser(model, seed=seed)
    t0 = time.perf_counter()
    its = iterate_images(base.apply, low, k=3)
    t_bounds = time.perf_counter() - t0
    x, y0, t_low = its[0], its[1], its[-1]

    def timed(name: str, fn: Callable[[], CandidateStack], extra: float = 0.0) -> None:
        t = time.perf_counter()
        st = fn()
        out[name] = (st, time.perf_counter() - t + extra)

    for mode in ("fast", "robust"):
        name = f"did-{mode}"
        if name in methods or (mode == "robust" and "interp" in methods):
            eng = InteractiveDenoiser(
                model, mode=mode, n_candidates=n_candidates, seed=seed,
                keep_weights=mode == "robust" and "interp" in methods,
            )  # fmt: skip

            def run_did(eng: InteractiveDenoiser = eng) -> CandidateStack:
                return eng.run(x)

            timed(name, run_did)
    for name, opts in (variants or {}).items():
        if name in methods:
            eng_v = InteractiveDenoiser(model, **{"n_candidates": n_candidates, "seed": seed,
                                                  **opts})  # fmt: skip
            timed(name, lambda eng_v=eng_v: eng_v.run(x))  # type: ignore[misc]
    if "interp" in methods:
        did, did_s = out["did-robust"]
        ends = {"high": did.candidates[0].weights, "low": did.candidates[-1].weights}
        timed(
            "interp",
            lambda: weight_interp_stack(
                base.apply, x, w0=model.state_dict(), ends=ends,  # type: ignore[arg-type]
                t_low=t_low, default=y0, n_candidates=n_candidates,
            ),
            extra=did_s,
        )  # fmt: skip
        if "did-robust" not in methods:
            del out["did-robust"]
        for c in did.candidates:  # the weights are not needed any more
            object.__setattr__(c, "weights", None)
    if "blend" in methods:
        timed("blend", lambda: blend_stack(x, y0, t_low, n_candidates=2 * n_candidates),
              t_bounds)  # fmt: skip
    if "iterate" in methods:
        timed("iterate", lambda: iterate_stack(its, n_candidates=n_candidates), t_bounds)
    if "tv" in methods:
        timed("tv", lambda: tv_stack(x, default=y0, t_low=t_low, spacing=spacing,
                                     n_candidates=n_candidates))  # fmt: skip
    if "bm3d" in methods:
        timed("bm3d", lambda: bm3d_stack(x, t_low=t_low, spacing=spacing, default=y0,
                                         n_candidates=bm3d_candidates, n_low=1,
                                         max_factor=1.5))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# measurements


def ttf50(img: NDArray[np.float32], s: EvalSlice) -> float:
    """TTF50 (cycles/mm) of the slice's round insert; NaN when not measurable or absent."""
    if s.insert is None:
        return float("nan")
    row, col, radius_mm = s.insert
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(
                ttf_from_insert(
                    img, spacing=s.spacing, center=(row, col), radius_mm=radius_mm
                ).mtf50
            )
    except ValueError:
        return float("nan")


def nps_peak(img: NDArray[np.float32], s: EvalSlice, mask: NDArray[np.bool_]) -> float:
    """NPS peak frequency (cycles/mm) of ``img - reference`` in 32-pixel patches of ``mask``.

    (64-pixel patches seldom fit between the edges of an abdomen slice: 0-1 per slice.)
    """
    patches = tile_patches(img - s.reference, size=32, mask=mask, step=16)
    if len(patches) < 2:
        return float("nan")
    return float(nps_peak_frequency(nps_2d(patches, spacing=s.spacing)))


#: Radial bands of the texture check (0 .. Nyquist in equal parts) and its tolerance: a
#: low-noise candidate passes when its noise power in every band is at most (1 + TOL) times
#: the default's.
TEXTURE_BANDS = 4
TEXTURE_TOL = 0.10


def nps_bands(img: NDArray[np.float32], s: EvalSlice) -> list[float]:
    """Noise power (HU^2) of ``img`` in the flat regions, in :data:`TEXTURE_BANDS` radial
    frequency bands from 0 to Nyquist (a plane removed from each region; no reference
    needed, so the same on real and simulated slices). NaNs without flat regions."""
    rois = [img[r] for r in s.flat_regions]
    full = [r for r, roi in zip(s.flat_regions, rois, strict=True)
            if roi.shape == (r[0].stop - r[0].start, r[1].stop - r[1].start)]  # fmt: skip
    if not full:  # (a region may reach past the image border: only whole ones count)
        return [math.nan] * TEXTURE_BANDS
    ny = min(r[0].stop - r[0].start for r in full)
    nx = min(r[1].stop - r[1].start for r in full)
    patches = np.stack([img[r[0].start : r[0].start + ny, r[1].start : r[1].start + nx]
                        for r in full])  # fmt: skip
    nps = nps_2d(patches, spacing=s.spacing)
    f = nps.radial_frequency
    cell = abs(float(nps.fy[1] - nps.fy[0]) * float(nps.fx[1] - nps.fx[0]))
    edges = np.linspace(0.0, 0.5 / max(s.spacing), TEXTURE_BANDS + 1)
    return [float(nps.nps[(f >= a) & (f < b)].sum() * cell) for a, b in itertools.pairwise(edges)]


def texture_mask(s: EvalSlice) -> NDArray[np.bool_]:
    """Body pixels at least 5 mm inside the body and away from the edge mask (for the NPS)."""
    from scipy import ndimage

    px = min(s.spacing)
    inner = ndimage.binary_erosion(s.body, iterations=max(1, round(5.0 / px)))
    near_edge = ndimage.binary_dilation(s.edges, iterations=max(1, round(2.0 / px)))
    return np.asarray(inner & ~near_edge, dtype=bool)


def measure_stack(stack: CandidateStack, s: EvalSlice) -> dict[str, Any]:
    """Noise and quality of every candidate of a stack (high resolution -> low noise)."""
    sim = s.group == "sim"
    mask = texture_mask(s) if sim else None
    rows: dict[str, list[Any]] = {
        k: [] for k in ("noise", "rmse", "edge_rmse", "strength", "nps_bands")
    }
    if sim:
        rows["ttf50"], rows["nps_peak"] = [], []
    for c in stack.candidates:
        img = np.asarray(c.image, dtype=np.float32).reshape(s.low.shape)
        rows["noise"].append(eval_sets.flat_noise(img, s))
        rows["rmse"].append(eval_sets.rmse_body(img, s))
        rows["edge_rmse"].append(eval_sets.edge_rmse(img, s))
        rows["strength"].append(float(c.strength))
        rows["nps_bands"].append(nps_bands(img, s))
        if sim:
            assert mask is not None
            rows["ttf50"].append(ttf50(img, s))
            rows["nps_peak"].append(nps_peak(img, s, mask))
    return {
        **rows,
        "default_index": int(stack.default_index),
        "input_noise": eval_sets.flat_noise(stack.t_high.reshape(s.low.shape), s),
        "low_noise": eval_sets.flat_noise(stack.t_low.reshape(s.low.shape), s),
    }


def ordering(curve: Mapping[str, Any], *, tol: float = 0.1) -> dict[str, Any]:
    """Whether the noise never rises by more than ``tol`` HU along the candidates, and whether
    the low-noise end is not noisier than the default."""
    n = np.asarray(curve["noise"], dtype=np.float64)
    d = int(curve["default_index"])
    rises = int(np.sum(np.diff(n) > tol))
    out = {
        "rises": rises,
        "max_rise_hu": float(np.max(np.diff(n), initial=0.0)),
        "low_end_above_default": bool(n[-1] > n[d] + tol) if d < n.size - 1 else False,
        "ordered": rises == 0,
    }
    return out | texture(curve)


def texture(curve: Mapping[str, Any], *, tol: float = TEXTURE_TOL) -> dict[str, Any]:
    """The texture check of the low-noise candidates: how many have more noise power than
    the default in some band (by more than ``tol``, relative), and the largest ratio.
    NaN / None when the curve has no band powers (made before they were measured)."""
    if "nps_bands" not in curve:
        return {"texture_checked": 0, "texture_above": None, "texture_max_ratio": math.nan}
    bands = np.asarray(curve["nps_bands"], dtype=np.float64)
    d = int(curve["default_index"])
    low = bands[d + 1 :]
    if low.size == 0 or not np.all(bands[d] > 0):
        return {"texture_checked": 0, "texture_above": 0, "texture_max_ratio": math.nan}
    ratio = low / bands[d]
    return {
        "texture_checked": int(low.shape[0]),
        "texture_above": int(np.sum(np.any(ratio > 1.0 + tol, axis=1))),
        "texture_max_ratio": float(np.nanmax(ratio)),
    }


def _side(curve: Mapping[str, Any], side: str, key: str) -> tuple[NDArray[Any], NDArray[Any]]:
    d = int(curve["default_index"])
    sl = slice(0, d + 1) if side == "high" else slice(d, None)
    return (np.asarray(curve["noise"], dtype=np.float64)[sl],
            np.asarray(curve[key], dtype=np.float64)[sl])  # fmt: skip


def compare_to_blend(
    curves: Mapping[str, Mapping[str, Any]], *, reference: str = "blend"
) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {measure: {side: mean difference to the blend at equal noise}}}``.

    NaN where the two curves share no noise level on that side.
    """
    ref = curves[reference]
    within = {
        side: side_range(
            side,  # type: ignore[arg-type]
            input_noise=float(ref["input_noise"]),
            default_noise=float(ref["noise"][ref["default_index"]]),
            low_noise=float(ref["low_noise"]),
        )
        for side in SIDES
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, cur in curves.items():
        if name == reference:
            continue
        out[name] = {}
        for key in MEASURES:
            if key not in cur or key not in ref:
                continue
            out[name][key] = {}
            for side in SIDES:
                na, qa = _side(cur, side, key)
                nb, qb = _side(ref, side, key)
                diff, _ = difference_at_equal_noise(na, qa, nb, qb, within=within[side])
                out[name][key][side] = diff
    return out


def best_points(curves: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Lowest RMSE along each curve and its reduction vs the learned default's RMSE."""
    d_rmse = float(curves["blend"]["rmse"][curves["blend"]["default_index"]]) \
        if "blend" in curves else float("nan")  # fmt: skip
    out = {}
    for name, cur in curves.items():
        r = np.asarray(cur["rmse"], dtype=np.float64)
        k = int(np.nanargmin(r))
        out[name] = {
            "best_rmse": float(r[k]),
            "best_strength": float(cur["strength"][k]),
            "best_noise": float(cur["noise"][k]),
            "vs_default_pct": 100.0 * (float(r[k]) / d_rmse - 1.0) if d_rmse > 0 else math.nan,
        }
    return out


# ---------------------------------------------------------------------------------------------
# one slice, cached


def _cache_file(cache: Path, s: EvalSlice, method: str, model_name: str) -> Path:
    return cache / f"{s.name}--{model_name}--{method}.json"


def evaluate_slice(
    model: torch.nn.Module,
    s: EvalSlice,
    *,
    methods: Sequence[str],
    cache: Path,
    model_name: str,
    log: Log = print,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Curves of every method on one slice (read from the cache where present)."""
    curves: dict[str, Any] = {}
    todo = []
    cache.mkdir(parents=True, exist_ok=True)
    for m in methods:
        f = _cache_file(cache, s, m, model_name)
        if f.is_file():
            curves[m] = json.loads(f.read_text())
        else:
            todo.append(m)
    if todo:
        t0 = time.perf_counter()
        stacks = method_stacks(model, s.low, spacing=s.spacing, methods=todo, variants=variants)
        for m, (st, sec) in stacks.items():
            cur = measure_stack(st, s)
            cur["seconds"] = sec
            cur["coverage"] = dict(st.coverage)
            curves[m] = cur
            f = _cache_file(cache, s, m, model_name)
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(cur))
            tmp.replace(f)
        log(f"  {s.name}: {', '.join(todo)} in {time.perf_counter() - t0:.0f} s")
    order = {m: ordering(curves[m]) for m in curves}
    return {
        "name": s.name,
        "group": s.group,
        "dose": s.dose,
        "kernel": s.kernel,
        "curves": curves,
        "vs_blend": compare_to_blend(curves) if "blend" in curves else {},
        "best": best_points(curves),
        "ordering": order,
    }


# ---------------------------------------------------------------------------------------------
# the LCD phantom


def evaluate_lcd(
    model: torch.nn.Module,
    lcd: Mapping[str, Any],
    *,
    methods: Sequence[str],
    n_candidates: int = 8,
    log: Log = print,
) -> dict[str, Any]:
    """CHO d' of each disc vs mean flat-region noise, per method, compared with the blend.

    Every realisation gets its own stack; at each strength of ``-1, -7/8 .. 1`` every stack is
    read with :meth:`CandidateStack.interpolate` (a stack that does not reach a strength gives
    its last candidate). BM3D is left out here (seconds per realisation times hundreds).
    """
    strengths = np.linspace(-1.0, 1.0, 2 * n_candidates + 1)
    out: dict[str, Any] = {}
    for dose_key, data in lcd["doses"].items():
        t0 = time.perf_counter()
        present, absent = data["present"], data["absent"]
        spacing = (float(data["spacing"][0]), float(data["spacing"][1]))
        images: dict[str, dict[str, list[NDArray[np.float32]]]] = {}
        for kind, stack_imgs in (("present", present), ("absent", absent)):
            for img in stack_imgs:
                st = method_stacks(
                    model, np.asarray(img, dtype=np.float32), spacing=spacing,
                    methods=[m for m in methods if m != "bm3d"], n_candidates=n_candidates,
                )  # fmt: skip
                for m, (stack, _) in st.items():
                    images.setdefault(m, {"present": [], "absent": []})[kind].append(
                        np.stack([stack.interpolate(float(a)) for a in strengths])
                    )
        curves: dict[str, Any] = {}
        for m, by_kind in images.items():
            p = np.stack(by_kind["present"])  # (realisation, strength, y, x)
            a = np.stack(by_kind["absent"])
            noise = [
                float(np.mean([eval_sets.lcd_flat_noise(a[r, j], data) for r in range(len(a))]))
                for j in range(len(strengths))
            ]
            dprime = {
                str(disc["contrast_hu"]): [
                    float(eval_sets.lcd_dprime(p[:, j], a[:, j], disc, data))
                    for j in range(len(strengths))
                ]
                for disc in data["discs"]
            }
            curves[m] = {"noise": noise, "dprime": dprime, "strength": strengths.tolist()}
        vs: dict[str, dict[str, dict[str, float]]] = {}
        mid = n_candidates  # strength 0: the default
        ref = curves.get("blend")
        if ref is not None:
            n_in, n_def, n_lo = ref["noise"][0], ref["noise"][mid], ref["noise"][-1]
            for m, cur in curves.items():
                if m == "blend":
                    continue
                vs[m] = {}
                for disc, dp in cur["dprime"].items():
                    vs[m][disc] = {}
                    for side in SIDES:
                        sl = slice(0, mid + 1) if side == "high" else slice(mid, None)
                        within = side_range(side, input_noise=n_in, default_noise=n_def,  # type: ignore[arg-type]
                                            low_noise=n_lo)  # fmt: skip
                        diff, _ = difference_at_equal_noise(
                            np.asarray(cur["noise"])[sl], np.asarray(dp)[sl],
                            np.asarray(ref["noise"])[sl], np.asarray(ref["dprime"][disc])[sl],
                            within=within,
                        )  # fmt: skip
                        vs[m][disc][side] = diff
        out[dose_key] = {"curves": curves, "vs_blend": vs}
        log(f"  LCD {dose_key}: {len(present)}+{len(absent)} realisations in "
            f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# field protocol


def field_protocol(models: Mapping[str, torch.nn.Module], s: EvalSlice) -> list[dict[str, Any]]:
    """RMSE, PSNR and SSIM of each model's default after clipping to [-160, 240] HU."""
    from ctdid.metrics import psnr, ssim

    lo, hi = -160.0, 240.0
    ref = np.clip(s.reference, lo, hi)
    rows = []
    for name, model in [("input (quarter dose)", None), *models.items()]:
        img = s.low if model is None else InteractiveDenoiser(model).apply(s.low)
        c = np.clip(img, lo, hi)
        rows.append({
            "model": name,
            "rmse_hu": float(np.sqrt(np.mean((c - ref) ** 2))),
            "psnr_db": float(psnr(c, ref, data_range=hi - lo)),
            "ssim": float(ssim(img, s.reference, window=(lo, hi))),
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------
# tables and figures


def _median(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")


def summary_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per group, method, measure and side: median difference to the blend and wins."""
    rows = []
    groups = sorted({r["group"] for r in results})
    for group in groups:
        res = [r for r in results if r["group"] == group]
        names = sorted({m for r in res for m in r["vs_blend"]}, key=method_order)
        for m in names:
            for key, sign in MEASURES.items():
                for side in SIDES:
                    d = [r["vs_blend"][m][key][side] for r in res
                         if m in r["vs_blend"] and key in r["vs_blend"][m]]  # fmt: skip
                    d = [x for x in d if np.isfinite(x)]
                    if not d:
                        continue
                    rows.append({
                        "group": group, "method": m, "measure": key, "side": side,
                        "median_diff": _median(d), "better": int(sum(sign * x > 0 for x in d)),
                        "slices": len(d),
                    })  # fmt: skip
    return rows


def ordering_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method: slices whose noise is ordered, and whose low-noise end is not above y0."""
    names = sorted({m for r in results for m in r["ordering"]}, key=method_order)
    rows = []
    for m in names:
        o = [r["ordering"][m] for r in results if m in r["ordering"]]
        rows.append({
            "method": m, "slices": len(o), "ordered": sum(x["ordered"] for x in o),
            "low_end_above_default": sum(x["low_end_above_default"] for x in o),
            "max_rise_hu": max(x["max_rise_hu"] for x in o),
            "texture_slices": sum(1 for x in o if x.get("texture_checked")),
            "texture_ok": sum(1 for x in o if x.get("texture_checked")
                              and x.get("texture_above") == 0),
            "texture_max_ratio": max([float(x["texture_max_ratio"]) for x in o
                                      if x.get("texture_checked")], default=math.nan),
        })  # fmt: skip
    return rows


def markdown(report: Mapping[str, Any]) -> str:
    """The report's tables in Markdown."""
    unit = {"rmse": "HU", "edge_rmse": "HU", "ttf50": "1/mm", "nps_peak": "1/mm"}
    lines = [
        "| data | method | measure | side | median diff. to blend | better / slices |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["summary"]:
        lines.append(
            f"| {r['group']} | {r['method']} | {r['measure']} ({unit[r['measure']]}) | "
            f"{r['side']} | {r['median_diff']:+.3f} | {r['better']} / {r['slices']} |"
        )
    lines += ["", "| method | slices | noise ordered (0.1 HU) | low end noisier than default "
              f"| largest rise (HU) | low side below the default's NPS in all {TEXTURE_BANDS} "
              f"bands (+{TEXTURE_TOL:.0%}) | largest band ratio |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["ordering"]:
        tex = (f"{r['texture_ok']} / {r['texture_slices']} | {r['texture_max_ratio']:.2f}"
               if r.get("texture_slices") else "not measured | -")  # fmt: skip
        lines.append(f"| {r['method']} | {r['slices']} | {r['ordered']} | "
                     f"{r['low_end_above_default']} | {r['max_rise_hu']:.2f} | "
                     f"{tex} |")  # fmt: skip
    best = report.get("best_summary") or []
    if best:
        lines += ["", "| data | method | median lowest RMSE vs default (%) | median seconds |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in best:
            lines.append(f"| {r['group']} | {r['method']} | {r['vs_default_pct']:+.1f} | "
                         f"{r['seconds']:.1f} |")  # fmt: skip
    lcd = report.get("lcd") or {}
    if lcd:
        lines += ["", "| LCD dose | method | disc (HU) | d' diff. to blend, high | low |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for dose, res in lcd.items():
            for m, discs in res["vs_blend"].items():
                for disc, sides in discs.items():
                    lines.append(f"| {dose} | {m} | {disc} | {sides['high']:+.3f} | "
                                 f"{sides['low']:+.3f} |")  # fmt: skip
    field = report.get("field_protocol") or []
    if field:
        lines += ["", "| L506, clipped [-160, 240] HU | RMSE (HU) | PSNR (dB) | SSIM |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in field:
            lines.append(f"| {r['model']} | {r['rmse_hu']:.1f} | {r['psnr_db']:.2f} | "
                         f"{r['ssim']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def best_summary(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for group in sorted({r["group"] for r in results}):
        res = [r for r in results if r["group"] == group]
        names = sorted({m for r in res for m in r["best"]}, key=method_order)
        for m in names:
            rows.append({
                "group": group, "method": m,
                "vs_default_pct": _median([r["best"][m]["vs_default_pct"] for r in res
                                           if m in r["best"]]),
                "seconds": _median([r["curves"][m].get("seconds", math.nan) for r in res
                                    if m in r["curves"]]),
            })  # fmt: skip
    return rows


def _row(rows: Sequence[Mapping[str, Any]], group: str, method: str, key: str,
         side: str) -> Mapping[str, Any] | None:  # fmt: skip
    return next((r for r in rows if (r["group"], r["method"], r["measure"], r["side"])
                 == (group, method, key, side)), None)  # fmt: skip


def _side_figures(report: Mapping[str, Any], method: str, side: str) -> dict[str, Any] | None:
    """One contender's medians (difference to the blend) on one side, and its ordering."""
    rows = report["summary"]
    edge, rmse = (
        _row(rows, "real", method, "edge_rmse", side),
        _row(rows, "real", method, "rmse", side),
    )
    sim = _row(rows, "sim", method, "rmse", side)
    order = next((o for o in report["ordering"] if o["method"] == method), None)
    if edge is None or rmse is None or sim is None or order is None:
        return None
    return {
        "real_edge_rmse_hu": round(edge["median_diff"], 3), "real_rmse_hu": round(
            rmse["median_diff"], 3), "sim_rmse_hu": round(sim["median_diff"], 3),
        "real_slices": edge["slices"], "sim_slices": sim["slices"],
        "ordered": f"{order['ordered']}/{order['slices']}",
        "passes": bool(edge["median_diff"] < 0 and rmse["median_diff"] <= 0
                       and sim["median_diff"] <= 0 and order["ordered"] == order["slices"]),
    }  # fmt: skip


VERDICT_RULE = (
    "On each side, a method replaces the blend only if, at equal noise and against the blend, "
    "its median edge RMSE on the real slices is lower, its median RMSE on the real and on the "
    "simulated slices is not higher, and its noise is ordered on every slice (0.1 HU); among "
    "those that pass, the lowest real edge RMSE wins."
)


def verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    """Per engine mode and side, the curve ``ctdid run --method auto`` shows (VERDICT_RULE)."""
    modes: dict[str, Any] = {}
    for mode in ("fast", "robust"):
        did = f"did-{mode}"
        if _side_figures(report, did, "high") is None:
            continue
        modes[mode] = {}
        for side in SIDES:
            figs = {name: f for name in (did, "iterate")
                    if (f := _side_figures(report, name, side)) is not None}  # fmt: skip
            ok = sorted((f["real_edge_rmse_hu"], n) for n, f in figs.items() if f["passes"])
            choice = ok[0][1] if ok else "blend"
            label = "did" if choice == did else choice

            def words(n: str, f: Mapping[str, Any], did: str = did) -> str:
                return (f"{'DID ' + did[4:] if n == did else n} vs blend: edge RMSE "
                        f"{f['real_edge_rmse_hu']:+.2f} HU, RMSE {f['real_rmse_hu']:+.2f} HU "
                        f"({f['real_slices']} real slices), {f['sim_rmse_hu']:+.2f} HU "
                        f"({f['sim_slices']} simulated), ordered {f['ordered']}")  # fmt: skip

            why = f"{label} chosen; " + "; ".join(words(n, f) for n, f in figs.items())
            modes[mode][side] = {"choice": label, "why": why,
                                 "measured": {("did" if n == did else n): f
                                              for n, f in figs.items()}}  # fmt: skip
    return {"rule": VERDICT_RULE, "modes": modes}


def write_figures(results: Sequence[Mapping[str, Any]], folder: Path, *, key: str = "rmse",
                  ) -> list[Path]:  # fmt: skip
    """``curves_<group>.png``: quality vs noise per slice, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    folder.mkdir(parents=True, exist_ok=True)
    colours = dict(zip(METHODS, ("C3", "C1", "k", "C2", "C4", "C0", "C5"), strict=True))
    paths = []
    for group in sorted({r["group"] for r in results}):
        for measure in (key, "edge_rmse"):
            res = [r for r in results if r["group"] == group]
            n = len(res)
            cols = min(6, n)
            rows = math.ceil(n / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False)
            for ax, r in zip(axes.ravel(), res, strict=False):
                for m, cur in r["curves"].items():
                    ax.plot(cur["noise"], cur[measure], "-", marker=".", ms=3, lw=1,
                            color=colours.get(m, "grey"), label=m)  # fmt: skip
                    d = cur["default_index"]
                    if m == "blend":
                        ax.plot(cur["noise"][d], cur[measure][d], "o", color="k", ms=4)
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_title(r["name"], fontsize=7)
                ax.tick_params(labelsize=6)
            for ax in axes.ravel()[n:]:
                ax.axis("off")
            handles, labels = axes[0, 0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7)
            fig.supxlabel("flat-region noise (HU, log)", fontsize=8)
            fig.supylabel(f"{measure.replace('_', ' ')} vs reference (HU)", fontsize=8)
            fig.tight_layout(rect=(0, 0, 1, 0.94))
            p = folder / f"curves_{group}_{measure}.png"
            fig.savefig(p, dpi=90)
            plt.close(fig)
            paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def _commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 simulated, 2 L067 slices, 1 LCD dose")
    ap.add_argument("--model", default="unet-d25")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--verdict", type=Path, default=None,
                    help="write the per-side verdict of --method auto here (the packaged "
                         "file is src/ctdid/runner/curve_verdict.json)")  # fmt: skip
    ap.add_argument("--figures", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-lcd", action="store_true")
    ap.add_argument(
        "--lcd-methods", nargs="+", default=["did-fast", "blend", "iterate", "tv"],
        choices=[m for m in METHODS if m != "bm3d"],
        help="methods on the LCD realisations (each realisation gets its own candidates)",
    )  # fmt: skip
    ap.add_argument("--groups", nargs="+", default=["sim", "real"], choices=["sim", "real"])
    ap.add_argument(
        "--did-variant", action="append", type=parse_variant, default=[], metavar="NAME=K:V,...",
        help="an extra DID run with other engine options, e.g. did-fast-biases=mode:fast,"
             "tune:biases (cached under its name; repeatable)",
    )  # fmt: skip
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ctdid.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = load_model(args.model)
    model.eval()
    slices: list[EvalSlice] = []
    if "sim" in args.groups:
        slices += eval_sets.simulated_slices(cache / "data", quick=args.quick)
    if "real" in args.groups:
        l506 = eval_sets.l506_slice(args.shared)
        slices += [] if l506 is None else [l506]
        slices += eval_sets.l067_slices(args.shared, quick=args.quick)
    print(f"{len(slices)} slices, methods {' '.join(args.methods)}, model {args.model}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    variants = dict(args.did_variant)
    methods = [*args.methods, *variants]
    results = []
    for s in slices:
        results.append(evaluate_slice(model, s, methods=methods, cache=cache / "curves",
                                      model_name=args.model, variants=variants))  # fmt: skip
    report: dict[str, Any] = {
        "command": "benchmarks/eval_curves.py " + " ".join(sys.argv[1:] if argv is None
                                                            else list(argv)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                   f"{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "model": args.model,
        "slices": [{"name": r["name"], "group": r["group"], "dose": r["dose"],
                    "kernel": r["kernel"]} for r in results],
        "results": results,
        "summary": summary_rows(results),
        "ordering": ordering_rows(results),
        "best_summary": best_summary(results),
    }  # fmt: skip
    (cache / "curves").mkdir(parents=True, exist_ok=True)
    if not args.no_lcd:
        lcd = eval_sets.lcd_sets(args.shared, quick=args.quick)
        if lcd is not None:
            lcd_methods = sorted({*args.lcd_methods, "blend"}, key=method_order)
            report["lcd"] = evaluate_lcd(model, lcd, methods=lcd_methods)
    l506 = next((s for s in slices if s.name == "L506"), None)
    if l506 is not None:
        from ctdid.models import available_models

        names = [m for m in available_models() if m.startswith(("unet", "plain"))]
        report["field_protocol"] = field_protocol({m: load_model(m) for m in names}, l506)
    report["seconds"] = time.perf_counter() - t_start
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(_jsonable(report), indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    if args.verdict:
        doc = {"command": report["command"], "date": report["date"], "commit": _commit(),
               "model": args.model, "machine": report["machine"], "torch": report["torch"],
               **verdict(report)}  # fmt: skip
        args.verdict.write_text(json.dumps(doc, indent=1) + "\n")
    if args.figures:
        for p in write_figures(results, args.figures):
            print(f"wrote {p}")
    print(f"total {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
