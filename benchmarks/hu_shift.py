"""Soft-tissue HU shift of the shipped denoisers: whole slice, 128 x 128 crop, 128 x 128 tiles.

For each model and each quarter-dose test input of ``eval_denoisers.py`` (the real Mayo L506
pair when ``../shared`` is present, and the simulated abdomen/chest slices, cached), prints

* ``whole``: mean of (output - normal dose) over body pixels of the normal dose in
  [-500, 200] HU, the model applied to the whole 512 x 512 slice;
* ``crop``: the same on the central 128 x 128 crop, the model applied to that crop alone
  (the training patch size);
* ``tiles``: the model applied in overlapping 128 x 128 tiles (stride 64, Hann-weighted
  blending), shift and RMSE inside the body;
* the input's own shift (quarter minus full dose) for comparison.

``--update-cards`` writes the whole-slice shifts into each model card as
``metrics.soft_tissue_bias_hu`` (run it after ``eval_denoisers.py --update-cards``, which
rewrites the metrics).

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_denoisers as ev

TILE = 128
STRIDE = 64


def soft_tissue(normal: NDArray[Any], body: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Body pixels of the reference between -500 and 200 HU."""
    return body & (normal > -500) & (normal < 200)


def shift(out: NDArray[Any], normal: NDArray[Any], mask: NDArray[np.bool_]) -> float:
    """Mean of ``out - normal`` over ``mask``, HU."""
    return float((out - normal)[mask].mean())


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


def measure(model: torch.nn.Module, case: Any) -> dict[str, float]:
    """The shifts and RMSEs of one model on one case (HU)."""
    low, normal, body = case.low, case.normal, case.body
    soft = soft_tissue(normal, body)
    whole = ev.denoise(model, low)
    cy, cx = (s // 2 for s in low.shape)
    sl = (slice(cy - TILE // 2, cy + TILE // 2), slice(cx - TILE // 2, cx + TILE // 2))
    crop = ev.denoise(model, np.ascontiguousarray(low[sl]))
    til = tiled(model, low)
    return {
        "input": shift(low, normal, soft),
        "whole": shift(whole, normal, soft),
        "crop": shift(crop, normal[sl], soft[sl]),
        "tiles": shift(til, normal, soft),
        "rmse_whole": float(np.sqrt(((whole - normal)[body] ** 2).mean())),
        "rmse_tiles": float(np.sqrt(((til - normal)[body] ** 2).mean())),
    }


def card_bias(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``metrics.soft_tissue_bias_hu`` of a card from one model's ``{case: measure()}``."""
    sim = [m["whole"] for name, m in results.items() if name != "L506"]
    out: dict[str, Any] = {}
    if sim:
        out["simulated_dose0.25_min"] = round(min(sim), 1)
        out["simulated_dose0.25_max"] = round(max(sim), 1)
    if "L506" in results:
        out["real_L506"] = round(results["L506"]["whole"], 1)
        out["real_L506_input"] = round(results["L506"]["input"], 1)
    out["how"] = (
        "benchmarks/hu_shift.py: mean of (output - normal dose) over body pixels of the normal "
        "dose in [-500, 200] HU, whole 512x512 slice, quarter-dose input"
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
    print(
        "| model | input | shift input | shift whole | shift 128 crop | shift 128 tiles "
        "| RMSE whole | RMSE tiles |"
    )
    print("|---|---|---|---|---|---|---|---|")
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    for name, model in models.items():
        for case in cases:
            m = measure(model, case)
            per_model.setdefault(name, {})[case.name] = m
            print(
                f"| {name} | {case.name} | {m['input']:+.1f} | {m['whole']:+.1f} | "
                f"{m['crop']:+.1f} | {m['tiles']:+.1f} | {m['rmse_whole']:.1f} | "
                f"{m['rmse_tiles']:.1f} |"
            )
    if args.update_cards:
        for path in update_cards(per_model, args.weights_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
