"""Terminal side of ``ctdid run``: load the model, show progress, print the candidate table."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ctdid.runner.run import run_did
from ctdid.runner.summary import RunProgress, RunSummary
from ctdid.volume import CTVolume

__all__ = ["candidate_table", "load_denoiser", "run_with_progress"]


def load_denoiser(
    spec: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    card: str | os.PathLike[str] | None = None,
    device: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Load a model with :func:`ctdid.models.load_model`; return it and its description.

    The description (for ``run.json``) holds the spec, the name (the card's, else the spec),
    the weights file and its SHA-256 (the card's checksum, else computed from the file).
    """
    from ctdid.models import load_model, sha256_file

    model = load_model(spec, weights=weights, card=card)
    if device is not None:
        model = model.to(device)
    meta = dict(getattr(model, "meta", {}) or {})
    sha = meta.get("weights_sha256")
    if sha is None and weights is not None:
        sha = sha256_file(weights)
    info = {
        "spec": str(spec),
        "name": meta.get("name") or str(spec),
        "weights": None if weights is None else str(Path(weights).absolute()),
        "card": None if card is None else str(Path(card).absolute()),
        "weights_sha256": sha,
    }
    return model, info


def run_with_progress(
    volume: CTVolume,
    model: Any,
    *,
    console: Console,
    on_first_candidate: Callable[[], None] | None = None,
    **kwargs: Any,
) -> RunSummary:
    """:func:`ctdid.runner.run_did` with rich progress bars.

    One bar counts the candidates stored / expected; volumes add one for the shared
    fine-tuning (candidates' weights made), one for the slices rendered over all candidate
    volumes, or, per slice, one for the slices finished.

    ``on_first_candidate`` is called once, when the first candidate (or preview, or, for a
    volume's shared trajectory, the default's weights: rendered on demand) is in the result
    folder (``ctdid run --view`` starts the viewer there, so candidates appear as
    they are made).
    """
    first = [on_first_candidate]
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
    )
    labels = {
        "finetune": "fine-tuning (weights made)",
        "render": "slices rendered",
        "slice": "slices finished",
    }
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("DID candidates", total=None)
        extra: dict[str, Any] = {}

        def update(p: RunProgress) -> None:
            if p.stage in labels:
                if p.stage not in extra:
                    extra[p.stage] = bar.add_task(labels[p.stage], total=p.total)
                bar.update(extra[p.stage], completed=p.done, total=p.total)
            elif p.stage == "preview":
                bar.update(task, description="previews (blend) shown, DID fine-tuning")
            elif p.stage == "candidate":
                bar.update(task, description="DID candidates", completed=p.done, total=p.total)
            elif p.stage == "finishing":
                bar.update(task, description="figures, pick, exports", total=p.done)
            elif p.stage == "done":
                bar.update(task, description="done", completed=p.done, total=p.done)
            # (a resumed run may have every candidate already: then at the end)
            hook = first[0]
            if hook is not None and p.stage in (
                "candidate",
                "preview",
                "rendering",
                "finishing",
                "done",
            ):
                first[0] = None
                hook()

        return run_did(volume, model, progress=update, **kwargs)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def candidate_table(
    summary: RunSummary, *, title: str = "candidates, high resolution -> low noise"
) -> Table:
    """A table of the candidates (strength, noise, transfer f50, skin-edge MTF50, RMSE/CNR).

    ``f50`` is the frequency where the candidate's spectral transfer from the input falls to
    one half (:func:`ctdid.metrics.transfer_label`); ``MTF50`` is measured at the skin edge.
    When the two sides come from different methods (``--method auto``), a ``made by`` column
    names each candidate's.
    """
    records: Sequence[Any] = summary.records
    extra = [k for k in ("rmse_hu", "cnr") if any(k in r.labels for r in records)]
    heads = {"rmse_hu": "RMSE vs reference (HU)", "cnr": "CNR"}
    table = Table(title=title)
    curve = summary.curve or {}
    sided = bool(curve) and curve.get("high") != curve.get("low")
    cols = ("#", "strength", "noise (HU)", "f50 (1/mm)", "skin MTF50 (1/mm)")
    for col in (*cols, *(heads[k] for k in extra), *(("made by",) if sided else ()), ""):
        table.add_column(col, justify="right")
    picked = summary.picked["candidate"] if summary.picked else None
    for pos, rec in enumerate(records):
        lab: Mapping[str, float] = rec.labels
        mark = []
        if rec.direction == "default":
            mark.append("default")
        if rec.id == picked and summary.picked is not None:
            mark.append(f"pick: {summary.picked['task']}")
        table.add_row(
            str(pos),
            f"{rec.strength:+.2f}",
            _fmt(lab.get("noise_hu"), ".1f"),
            _fmt(lab.get("transfer50_per_mm"), ".3f"),
            _fmt(lab.get("mtf50_per_mm"), ".3f"),
            *(_fmt(lab.get(k), ".1f" if k == "rmse_hu" else ".2f") for k in extra),
            *((str(curve.get(rec.direction, "model")),) if sided else ()),
            ", ".join(mark),
        )
    return table
