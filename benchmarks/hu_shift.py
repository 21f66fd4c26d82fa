"""Soft-tissue HU bias of the shipped denoisers: flat ROIs, and band masks (whole, crop, tiles).

For each model and each quarter-dose test input of ``eval_denoisers.py`` (the real Mayo L506
pair when ``../shared`` is present, and the simulated abdomen/chest slices, cached), prints

* ``roi`` (the bias): the mean over :data:`N_ROIS` flat soft-tissue squares of
  :data:`ROI_MM` mm (:func:`ctdid.metrics.find_flat_regions` on the normal dose, inside the
  body) of (ROI mean of the output - ROI mean of the normal dose), the model applied to the
  whole slice, with its standard error over the ROIs: the CT way of checking HU accuracy
  (ROI means in uniform tissue), away from edges;
* ``whole``: the earlier measure, mean of (output - normal dose) over body pixels of the
  normal dose in [-500, 200] HU (a band mask). It is not a bias measure on real data: the
  band takes pixels next to bone, air and contrast, so any smoothing moves it (a Gaussian
  blur of sigma 1 px, which keeps every mean, reads +1.8 HU on L506), and on a noisy
  reference the threshold itself selects pixels by their noise. Kept for comparison;
* ``crop``: the band-mask shift on the central 128 x 128 crop, the model applied to that crop
  alone (the training patch size);
* ``tiles``: the model applied in overlapping 128 x 128 tiles (stride 64, Hann-weighted
  blending), band-mask shift and RMSE inside the body;
* the input's own shift (quarter minus full dose) for comparison, on both measures.

Before the models, a check of the two measures per case: Gaussian blurs of the input (sigma 1
and 2 px; linear, mean-preserving) should read as the input does; the ROI measure does
(within its standard error), the band mask does not.

``--update-cards`` writes the shifts into each model card as ``metrics.soft_tissue_bias_hu``
(run it after ``eval_denoisers.py --update-cards``, which rewrites the metrics).

Usage::

    .venv/bin/python benchmarks/hu_shift.py [--models unet-d25 ...] [--weights-dir DIR]
        [--update-cards]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_denoisers as ev

from ctdid.metrics import find_flat_regions

TILE = 128
STRIDE = 64
#: Side of the flat ROIs of the bias measure, mm (larger than the 10 mm of the noise labels:
#: the sharp-kernel normal dose of L506 carries about 43 HU of noise, so a 10 mm ROI mean of it
#: scatters by about 3 HU, a 15 mm one by about 1.6 HU).
ROI_MM = 15.0
#: Number of flat ROIs.
N_ROIS = 20
#: Mean HU a flat ROI may have (soft tissue: excludes lung, air and bone).
ROI_HU_RANGE = (-300.0, 400.0)
#: Blur widths (px) of the measures' check.
CHECK_SIGMAS = (1.0, 2.0)


def soft_tissue(normal: NDArray[Any], body: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Body pixels of the reference between -500 and 200 HU."""
    return body & (normal > -500) & (normal < 200)


def shift(out: NDArray[Any], normal: NDArray[Any], mask: NDArray[np.bool_]) -> float:
    """Mean of ``out - normal`` over ``mask``, HU."""
    return float((out - normal)[mask].mean())


def flat_rois(case: Any) -> list[tuple[Any, ...]]:
    """The flat soft-tissue ROIs of a case, found on its normal dose inside its body."""
    return find_flat_regions(
        case.normal, spacing=case.spacing, body_mask=case.body, n=N_ROIS, roi_mm=ROI_MM,
        hu_range=ROI_HU_RANGE,
    )  # fmt: skip


def roi_shift(
    out: NDArray[Any], normal: NDArray[Any], rois: Sequence[tuple[Any, ...]]
) -> tuple[float, float]:
    """Mean over ``rois`` of (ROI mean of ``out`` - ROI mean of ``normal``) and its standard
    error over the ROIs, HU."""
    if not rois:
        raise ValueError("no flat region to measure the bias in")
    d = np.array([float(out[r].mean()) - float(normal[r].mean()) for r in rois])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def check_measures(
    case: Any, *, rois: Sequence[tuple[Any, ...]] | None = None
) -> list[dict[str, float]]:
    """Both measures applied to Gaussian blurs of the input (:data:`CHECK_SIGMAS`), minus the
    input's own: a linear blur keeps every mean, so a bias measure should read about 0.
    ``rois``: the case's :func:`flat_rois` (found when not given)."""
    soft = soft_tissue(case.normal, case.body)
    rois = flat_rois(case) if rois is None else rois
    roi_in, _ = roi_shift(case.low, case.normal, rois)
    band_in = shift(case.low, case.normal, soft)
    rows = []
    for sigma in CHECK_SIGMAS:
        blurred = ndimage.gaussian_filter(np.asarray(case.low, np.float64), sigma)
        roi, se = roi_shift(blurred, case.normal, rois)
        rows.append(
            {
                "sigma_px": sigma,
                "roi": roi - roi_in,
                "roi_se": se,
                "band": shift(blurred, case.normal, soft) - band_in,
            }
        )
    return rows


def tiled(model: torch.nn.Module, hu: NDArray[Any]) -> NDArray[np.float32]:
    """The model applied in overlapping ``TILE`` tiles, blended with Hann weights."""
    h, w = hu.shape
    win = np.outer(np.hanning(TILE + 2)[1:-1], np.hanning(TILE + 2)[1:-1]) + 1e-3
    ys = range(0, h - TILE + 1, STRIDE)
    xs = range(0, w - TILE + 1, STRIDE)
    tiles = np.stack([hu[i : i + TILE, j : j + TILE] for i in ys for j in xs]).astype(np.float32)
    with torch.no_grad():
        outs = model(torch.from_numpy(tiles)[:, None])[:, 0].numpy()
    acc = np.zeros((h, w))
    weight = np.zeros((h, w))
    for k, (i, j) in enumerate((i, j) for i in ys for j in xs):
        acc[i : i + TILE, j : j + TILE] += outs[k] * win
        weight[i : i + TILE, j : j + TILE] += win
    return (acc / weight).astype(np.float32)


def measure(
    model: torch.nn.Module, case: Any, *, rois: Sequence[tuple[Any, ...]] | None = None
) -> dict[str, float]:
    """The shifts and RMSEs of one model on one case (HU); ``rois`` as :func:`check_measures`."""
    low, normal, body = case.low, case.normal, case.body
    soft = soft_tissue(normal, body)
    rois = flat_rois(case) if rois is None else rois
    whole = ev.denoise(model, low)
    roi, roi_se = roi_shift(whole, normal, rois)
    cy, cx = (s // 2 for s in low.shape)
    sl = (slice(cy - TILE // 2, cy + TILE // 2), slice(cx - TILE // 2, cx + TILE // 2))
    crop = ev.denoise(model, np.ascontiguousarray(low[sl]))
    til = tiled(model, low)
    return {
        "roi": roi,
        "roi_se": roi_se,
        "roi_input": roi_shift(low, normal, rois)[0],
        "n_rois": float(len(rois)),
        "input": shift(low, normal, soft),
        "whole": shift(whole, normal, soft),
        "crop": shift(crop, normal[sl], soft[sl]),
        "tiles": shift(til, normal, soft),
        "rmse_whole": float(np.sqrt(((whole - normal)[body] ** 2).mean())),
        "rmse_tiles": float(np.sqrt(((til - normal)[body] ** 2).mean())),
    }


def card_bias(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``metrics.soft_tissue_bias_hu`` of a card from one model's ``{case: measure()}``."""
    sim = [m["roi"] for name, m in results.items() if name != "L506"]
    out: dict[str, Any] = {}
    if sim:
        out["simulated_dose0.25_min"] = round(min(sim), 1)
        out["simulated_dose0.25_max"] = round(max(sim), 1)
    if "L506" in results:
        l506 = results["L506"]
        out["real_L506"] = round(l506["roi"], 1)
        out["real_L506_se"] = round(l506["roi_se"], 1)
        out["real_L506_input"] = round(l506["roi_input"], 1)
        out["real_L506_band_mask"] = round(l506["whole"], 1)
        out["real_L506_band_mask_input"] = round(l506["input"], 1)
    out["how"] = (
        f"benchmarks/hu_shift.py: mean over {N_ROIS} flat soft-tissue ROIs of {ROI_MM:g} mm "
        "(found on the normal dose) of (ROI mean of the output - ROI mean of the normal dose), "
        "whole 512x512 slice, quarter-dose input; se: standard error over the ROIs. "
        "band_mask: the earlier measure, mean over body pixels of the normal dose in "
        "[-500, 200] HU, moved by any smoothing near edges (not a bias)"
    )
    return out


def update_cards(
    per_model: dict[str, dict[str, dict[str, float]]], weights_dir: str | None
) -> list[Path]:
    """Merge :func:`card_bias` into each model card's metrics (weights checked first)."""
    from ctdid.models import SHIPPED_WEIGHTS_DIR, ModelCard

    folder = Path(SHIPPED_WEIGHTS_DIR if weights_dir is None else weights_dir)
    written = []
    for name, results in per_model.items():
        path = folder / f"{name}.card.yaml"
        card = ModelCard.load(path)
        card.verify_weights(folder / f"{name}.safetensors")
        metrics = {**card.metrics, "soft_tissue_bias_hu": card_bias(results)}
        written.append(dataclasses.replace(card, metrics=metrics).save(path, overwrite=True))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--cache", default=str(ev.DEFAULT_CACHE))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update-cards", action="store_true", help="write the shifts into the cards")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [c for c in [ev.load_l506()] if c is not None]
    cases += ev.simulated_cases(args.cache)
    models = ev.load_models(args.models, weights_dir=args.weights_dir)
    print("Check of the measures: Gaussian blur of the input minus the input (should be ~0)")
    print("| input | sigma (px) | ROI measure (+- se) | band mask |")
    print("|---|---|---|---|")
    rois = {case.name: flat_rois(case) for case in cases}  # found once per case
    for case in cases:
        for row in check_measures(case, rois=rois[case.name]):
            print(
                f"| {case.name} | {row['sigma_px']:g} | {row['roi']:+.2f} (+-{row['roi_se']:.2f}) "
                f"| {row['band']:+.2f} |"
            )
    print()
    print(
        "| model | input | bias (ROIs) +- se | input (ROIs) | band mask: input | whole "
        "| 128 crop | 128 tiles | RMSE whole | RMSE tiles |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    for name, model in models.items():
        for case in cases:
            m = measure(model, case, rois=rois[case.name])
            per_model.setdefault(name, {})[case.name] = m
            print(
                f"| {name} | {case.name} | {m['roi']:+.1f} +- {m['roi_se']:.1f} | "
                f"{m['roi_input']:+.1f} | {m['input']:+.1f} | {m['whole']:+.1f} | "
                f"{m['crop']:+.1f} | {m['tiles']:+.1f} | {m['rmse_whole']:.1f} | "
                f"{m['rmse_tiles']:.1f} |"
            )
    if args.update_cards:
        for path in update_cards(per_model, args.weights_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
