"""What a run writes once its candidates are stored: metrics, figures, the pick, the exports."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import InputError
from ctdid.io.atomic import atomic_file, check_output
from ctdid.results import CandidateRecord
from ctdid.runner.labelling import LABEL_NAMES
from ctdid.runner.options import EXPORT_FORMATS, RunOptions
from ctdid.runner.stream import CandidateStream
from ctdid.volume import CTVolume

__all__ = ["Outputs", "write_outputs"]


@dataclasses.dataclass(frozen=True)
class Outputs:
    """The finished run's files: candidates in curve order, the pick and the exports."""

    ordered: list[CandidateRecord]
    picked: dict[str, Any] | None
    exports: list[Path]
    figures_s: float
    exports_s: float


def write_outputs(
    stream: CandidateStream, options: RunOptions, model_desc: Mapping[str, Any]
) -> Outputs:
    """Write ``metrics.csv``, the montage and tradeoff plots, the pick and the exports."""
    writer, folder = stream.writer, stream.writer.folder
    t_fig = time.perf_counter()
    ordered = [writer.records[i] for i in writer.order()]
    write_metrics(folder / "metrics.csv", ordered)
    label = options.curve.describe(options.mode)
    extra = dict(stream.extra_labels)
    write_figures(stream, ordered, extra, model_desc, label, options.window)
    figures_s = time.perf_counter() - t_fig
    t_exp = time.perf_counter()
    picked = None
    if options.pick is not None:
        picked = pick(folder, ordered, options.pick, options.pick_options, stream.extra_labels)
    written: list[Path] = []
    if options.exports:
        chosen = writer.records[picked["candidate"] if picked else stream.default_id]
        written = export(
            folder,
            stream.volume,
            np.load(folder / chosen.file),
            chosen,
            options.exports,
            tag=options.pick or "default",
            model_desc=model_desc,
            options=options,
        )
    return Outputs(ordered, picked, written, figures_s, time.perf_counter() - t_exp)


def middle_body_slice(hu: NDArray[np.float32]) -> int:
    counts = (hu > -500).reshape(hu.shape[0], -1).sum(axis=1)
    if hu.shape[0] == 1 or not counts.any():
        return hu.shape[0] // 2
    best = np.flatnonzero(counts >= 0.9 * counts.max())
    return int(best[len(best) // 2])


_CSV_LABELS = tuple(LABEL_NAMES)


def write_metrics(path: Path, ordered: Sequence[CandidateRecord]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    present = [k for k in _CSV_LABELS if any(k in r.labels for r in ordered)]
    w.writerow(
        ["position", "id", "direction", "strength", "step", "progress", "elapsed_s", *present,
         "file"]
    )  # fmt: skip
    for pos, rec in enumerate(ordered):
        vals = [rec.labels.get(k, math.nan) for k in present]
        cells = [f"{v:.6g}" if math.isfinite(v) else "" for v in vals]  # empty: not measured
        w.writerow(
            [pos, rec.id, rec.direction, f"{rec.strength:.6g}", rec.step, f"{rec.progress:.6g}",
             f"{rec.elapsed_s:.3f}", *cells, rec.file]
        )  # fmt: skip
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(buf.getvalue())


def write_figures(
    stream: CandidateStream,
    ordered: Sequence[CandidateRecord],
    extra_points: Mapping[str, Mapping[str, float]],
    model_desc: Mapping[str, Any],
    label: str,
    window: tuple[float, float],
) -> None:
    from ctdid.runner.figures import plot_montage, plot_tradeoff

    folder = stream.writer.folder
    zi = middle_body_slice(stream.volume.hu)
    panels = []
    for rec in ordered:
        img = np.load(folder / rec.file, mmap_mode="r")[zi]
        panels.append((np.array(img), rec.strength, rec.direction, rec.labels))
    z = stream.volume.shape[0]
    where = f", slice {zi + 1}/{z}" if z > 1 else ""
    title = f"ctdid {label}, model {model_desc.get('name')}{where}"
    plot_montage(panels, folder / "montage.png", window=window, title=title, overwrite=True)
    default_pos = next(i for i, r in enumerate(ordered) if r.direction == "default")
    plot_tradeoff(
        [r.strength for r in ordered],
        [r.labels for r in ordered],
        folder / "tradeoff.png",
        default_index=default_pos,
        extra_points=extra_points,
        title=title,
        overwrite=True,
    )


def pick(
    folder: Path,
    ordered: Sequence[CandidateRecord],
    task: str,
    opts: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    from ctdid.metrics import CandidateLabels, pick_candidate

    def _ok(r: CandidateRecord, key: str) -> bool:
        v = r.labels.get(key, math.nan)
        return math.isfinite(v) and v > 0

    # Resolution figure: the spectral transfer from the input (orders DID candidates), cascaded
    # with the input's own skin-edge MTF50 when measured; the skin-edge MTF50 alone otherwise.
    use_transfer = all(_ok(r, "transfer50_per_mm") for r in ordered if _ok(r, "noise_hu"))
    res_key = "transfer50_per_mm" if use_transfer else "mtf50_per_mm"
    usable = [r for r in ordered if _ok(r, "noise_hu") and _ok(r, res_key)]
    if not usable:
        raise InputError(
            f"cannot pick for {task!r}: no candidate has both a noise and a resolution label",
            path=folder,
        )
    kwargs = dict(opts)
    if task == "match-noise" and "target_noise" not in kwargs:
        kwargs["target_noise"] = float(extra.get("normal dose", {}).get("noise_hu", math.nan))
        if not math.isfinite(kwargs["target_noise"]):
            raise InputError("cannot measure the reference's noise; give --target-noise HU")
    input_mtf50 = float(extra.get("noisy input", {}).get("mtf50_per_mm", math.nan))
    if use_transfer:
        labels = [
            CandidateLabels.from_transfer(
                r.labels["noise_hu"],
                r.labels["transfer50_per_mm"],
                input_mtf50=input_mtf50 if math.isfinite(input_mtf50) and input_mtf50 > 0 else None,
            )
            for r in usable
        ]
    else:
        labels = [
            CandidateLabels(noise=r.labels["noise_hu"], mtf50=r.labels["mtf50_per_mm"])
            for r in usable
        ]
    try:
        index = pick_candidate(labels, task=task, **kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InputError(f"cannot pick for {task!r}: {exc}") from None
    rec = usable[index]
    picked = rec.pick_entry(
        task, options=kwargs, resolution_label=res_key, source="ctdid run --pick"
    )
    doc = {"format": "ctdid-picks", "picks": {task: picked}}
    with atomic_file(folder / "picks.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
    return picked


def export(
    folder: Path,
    volume: CTVolume,
    image: NDArray[np.float32],
    rec: CandidateRecord,
    formats: Sequence[str],
    *,
    tag: str,
    model_desc: Mapping[str, Any],
    options: RunOptions,
) -> list[Path]:
    from ctdid import __version__
    from ctdid.io import write_volume

    mode, window = options.mode, options.window
    method = options.curve.source(rec.direction)
    if method == "default":
        method = "did" if options.curve.engine_method == "did" else options.curve.high
    out_dir = folder / "exports"
    out_dir.mkdir(exist_ok=True)
    name = str(model_desc.get("name"))
    sha = model_desc.get("weights_sha256")
    vol = volume.with_hu(image, ctdid_candidate=rec.id, ctdid_strength=rec.strength)
    stem = f"{tag}_s{rec.strength:+.2f}"
    what = f"DID {mode}" if method == "did" else method
    description = f"ctdid {what} {name} s={rec.strength:+.2f}"
    how = (
        f"Deep Interactive Denoiser, {mode} mode"
        if method == "did"
        else f"{method} baseline (no fine-tuning)"
    )
    derivation = (
        f"Denoised by ctdid {__version__}, model {name}"
        + (f" (weights sha256 {sha})" if sha else "")
        + f", {how}, strength {rec.strength:+.3f} ({rec.direction}, candidate {rec.id})"
        + (f", picked for task {tag}" if tag != "default" else ", default candidate")
    )
    params = {
        "tool": "ctdid run",
        "model": name,
        "weights_sha256": sha,
        "mode": mode,
        "method": method,
        "k": int(options.k),
        "seed": int(options.seed),
        "strength": round(rec.strength, 6),
        "direction": rec.direction,
        "step": rec.step,
        "task": tag,
    }
    written: list[Path] = []
    for fmt in formats:
        wfmt, suffix = EXPORT_FORMATS[fmt]
        if fmt == "png" and vol.shape[0] > 1:
            suffix = "_png"
        target = check_output(out_dir / f"{stem}{suffix}", overwrite=True)
        write_volume(
            vol,
            target,
            format=wfmt,
            overwrite=True,
            window=window,
            description=description,
            derivation=derivation,
            params=params,
        )
        written.append(target)
    return written
