"""Run the DID engine on a CT volume and write a result folder as the candidates are made.

:func:`run_did` sits around :class:`ctdid.core.InteractiveDenoiser`: it streams every candidate
into a :class:`ctdid.results.ResultWriter` with its quality labels as soon as the engine makes
it (so a viewer can show it at once), then writes ``metrics.csv``, ``montage.png``,
``tradeoff.png``, the optional pick (``picks.json``) and the exports.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn

from ctdid.errors import InputError
from ctdid.io.atomic import atomic_file, check_output
from ctdid.results import CandidateRecord, ResultWriter
from ctdid.runner.labelling import LABEL_NAMES, CandidateLabeller
from ctdid.volume import CTVolume

__all__ = [
    "EXPORT_FORMATS",
    "MODES",
    "PICK_TASKS",
    "RunProgress",
    "RunSummary",
    "check_pick",
    "parse_exports",
    "run_did",
]

MODES = ("robust", "faithful", "fast")
PICK_TASKS = ("detect", "match-noise", "sharpest-below")
#: Export format names accepted by ``export`` -> (format of write_volume, file suffix).
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "dicom": ("dicom", "_dicom"),
    "nifti": ("nifti", ".nii.gz"),
    "png": ("png", ".png"),
    "numpy": ("numpy", ".npy"),
    "tiff": ("tiff", ".tif"),
    "metaimage": ("metaimage", ".mhd"),
}
_EXPORT_ALIASES = {
    "nii": "nifti",
    "npy": "numpy",
    "tif": "tiff",
    "mhd": "metaimage",
    "dcm": "dicom",
}
_STALE = ("metrics.csv", "montage.png", "tradeoff.png", "picks.json")


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """Where a run stands, passed to the ``progress`` callback.

    Attributes
    ----------
    stage : {"candidate", "slice", "finishing", "done"}
        ``"candidate"``: a candidate was just stored (``record``); ``"slice"``: per-slice
        mode finished one more slice; ``"finishing"``: figures, pick and exports are being
        written; ``"done"``: the result folder is complete.
    done : int
        Candidates stored (or slices finished, for ``"slice"``).
    total : int or None
        Expected number (candidates or slices); None when unknown (faithful mode). A run may
        end with fewer candidates (a direction stalled) or one more (a final candidate).
    elapsed_s : float
        Seconds since the run started.
    folder : Path
        The result folder.
    record : CandidateRecord, optional
        The candidate just stored.
    """

    stage: str
    done: int
    total: int | None
    elapsed_s: float
    folder: Path
    record: CandidateRecord | None = None


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a finished run wrote.

    Attributes
    ----------
    folder : Path
        The result folder.
    records : tuple of CandidateRecord
        Candidates in curve order: high-resolution end first, low-noise end last.
    default_id : int
        Id of the default candidate (the pretrained model's output).
    picked : dict or None
        The pick (task, candidate id, strength, labels, options) when ``pick`` was given.
    exports : tuple of Path
        Files and folders written under ``exports/``.
    timings : dict
        Seconds: ``total``, ``first_candidate``, ``engine``, ``labels``, ``figures``,
        ``exports``.
    engine : dict
        Coverage, stop reasons, steps and peak memory reported by the engine.
    notes : tuple of str
        Why some label could not be measured, if any.
    """

    folder: Path
    records: tuple[CandidateRecord, ...]
    default_id: int
    picked: dict[str, Any] | None
    exports: tuple[Path, ...]
    timings: dict[str, float]
    engine: dict[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def default(self) -> CandidateRecord:
        """The default candidate's record."""
        return next(r for r in self.records if r.id == self.default_id)


# ------------------------------------------------------------------------------------------------
# validation


def parse_exports(export: Sequence[str] | str) -> tuple[str, ...]:
    """Normalise export format names (``"dicom,nifti"`` or a sequence); raises InputError."""
    items = export.split(",") if isinstance(export, str) else list(export)
    out: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        name = _EXPORT_ALIASES.get(name, name)
        if name not in EXPORT_FORMATS:
            raise InputError(
                f"unknown export format {item!r}; use {', '.join(EXPORT_FORMATS)} (comma-separated)"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def check_pick(
    pick: str | None, options: Mapping[str, Any], *, has_reference: bool
) -> dict[str, Any]:
    """Validate a pick task and its options; return the options without the unset ones.

    Raises
    ------
    InputError
        Unknown task or option, or a target the task needs is missing.
    """
    opts = dict(options)
    allowed = {"diameter_mm", "contrast_hu", "eye", "target_noise", "noise_ceiling"}
    unknown = set(opts) - allowed
    if unknown:
        raise InputError(f"unknown pick option(s) {sorted(unknown)}; use {sorted(allowed)}")
    opts = {k: v for k, v in opts.items() if v is not None}
    if pick is None:
        return opts
    if pick not in PICK_TASKS:
        raise InputError(f"unknown pick task {pick!r}; use {', '.join(PICK_TASKS)}")
    if pick == "match-noise" and "target_noise" not in opts and not has_reference:
        raise InputError(
            "--pick match-noise needs --target-noise HU (or --reference, whose noise is matched)"
        )
    if pick == "sharpest-below" and "noise_ceiling" not in opts:
        raise InputError("--pick sharpest-below needs --noise-ceiling HU")
    return opts


# ------------------------------------------------------------------------------------------------
# the run


def _versions() -> dict[str, str]:
    import torch

    from ctdid import __version__

    return {
        "ctdid": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _model_description(model: nn.Module, model_info: Mapping[str, Any] | None) -> dict[str, Any]:
    import torch

    meta = getattr(model, "meta", None)
    card = dict(meta) if isinstance(meta, Mapping) else {}
    info: dict[str, Any] = {
        "name": card.get("name"),
        "weights_sha256": card.get("weights_sha256"),
        "class": type(getattr(model, "net", model)).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "hu_offset": getattr(model, "hu_offset", None),
        "hu_scale": getattr(model, "hu_scale", None),
    }
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    info["state_dict_sha256"] = digest.hexdigest()
    if card:
        info["card"] = card
    for key, value in (model_info or {}).items():
        if value is not None or key not in info:
            info[key] = value
    if not info.get("name"):
        info["name"] = info["class"]
    return info


def _middle_body_slice(hu: NDArray[np.float32]) -> int:
    counts = (hu > -500).reshape(hu.shape[0], -1).sum(axis=1)
    if hu.shape[0] == 1 or not counts.any():
        return hu.shape[0] // 2
    best = np.flatnonzero(counts >= 0.9 * counts.max())
    return int(best[len(best) // 2])


def run_did(
    volume: CTVolume,
    model: nn.Module,
    *,
    out_dir: str | Path,
    mode: str = "robust",
    k: int = 3,
    n_candidates: int = 8,
    seed: int = 0,
    shared: bool = True,
    reference: CTVolume | None = None,
    roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None = None,
    pick: str | None = None,
    pick_options: Mapping[str, Any] | None = None,
    export: Sequence[str] | str = (),
    window: tuple[float, float] = (-160.0, 240.0),
    overwrite: bool = False,
    progress: Callable[[RunProgress], object] | None = None,
    model_info: Mapping[str, Any] | None = None,
    engine_options: Mapping[str, Any] | None = None,
    input_info: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Make the DID candidates of a CT volume and write them as a result folder.

    Parameters
    ----------
    volume : CTVolume
        The noisy (e.g. low-dose) scan, HU, (z, y, x).
    model : nn.Module
        Pretrained denoiser mapping (B, 1, H, W) HU to HU (e.g. from
        :func:`ctdid.models.load_model`). It is not modified.
    out_dir : path
        The result folder (see :mod:`ctdid.results`); must not exist or be empty unless
        ``overwrite``.
    mode : {"robust", "faithful", "fast"}, optional
        Engine mode, see :class:`ctdid.core.InteractiveDenoiser`. Default ``"robust"``.
    k : int, optional
        Times the model is applied for the low-noise bound. Default 3.
    n_candidates : int, optional
        Candidates per direction (robust/fast); the run makes about ``2 n + 1``. Default 8.
    seed : int, optional
        Seed of the engine (fast mode's crops); recorded in ``run.json``. Default 0.
    shared : bool, optional
        Volumes (z > 1): one trajectory for the whole scan (default), so a strength means
        the same tradeoff on every slice. False: one trajectory per slice, each slice's
        candidates interpolated (:func:`ctdid.core.interpolate`) to common strengths; the
        candidates are then written only once every slice is done.
    reference : CTVolume, optional
        Normal-dose scan of the same shape: adds ``rmse_hu`` (inside the body) to the labels.
    roi : (lesion, background), optional
        Boolean masks of the volume's shape (or (y, x), for every slice): adds ``cnr``.
    pick : {"detect", "match-noise", "sharpest-below"}, optional
        Choose one candidate for this task from its labels
        (:func:`ctdid.metrics.pick_candidate`) and record it in ``picks.json``.
    pick_options : mapping, optional
        ``diameter_mm`` and ``contrast_hu`` (detect, default 5 mm and 10 HU), ``eye``,
        ``target_noise`` (match-noise; default the reference's noise), ``noise_ceiling``
        (sharpest-below; required).
    export : sequence of str or str, optional
        Formats (``dicom``, ``nifti``, ``png``, ``numpy``, ``tiff``, ``metaimage``) in which to
        write the picked candidate (the default one without ``pick``) under ``exports/``.
        DICOM is a derived series of a DICOM input.
    window : (float, float), optional
        Display window (low, high) in HU for the montage, PNG and DICOM exports.
    overwrite : bool, optional
        Replace an existing result folder's contents.
    progress : callable, optional
        Called with a :class:`RunProgress` after each candidate is stored and at the end.
    model_info : mapping, optional
        Description of the model for ``run.json`` (name, spec, weights file and sha256);
        completed from the adapter's card (``model.meta``) when it has one.
    engine_options : mapping, optional
        Further keyword arguments of :class:`ctdid.core.InteractiveDenoiser`
        (``coverage``, ``step_progress``, ``time_budget``, ``max_steps``, ...).
    input_info : mapping, optional
        Description of the input for ``run.json`` (path, options); default the volume's
        ``meta``.

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        Bad options (unknown mode, pick task or export format, missing pick target, a
        reference of another shape, a bad window).
    OutputExistsError
        If ``out_dir`` holds files and ``overwrite`` is false.
    """
    from ctdid.core import InteractiveDenoiser

    start = time.perf_counter()
    if not isinstance(volume, CTVolume):
        raise TypeError(f"volume must be a CTVolume, got {type(volume).__name__}")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; use {', '.join(MODES)}")
    low, high = float(window[0]), float(window[1])
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InputError(f"window must be LOW,HIGH with HIGH > LOW, got {window!r}")
    exports = parse_exports(export)
    if reference is not None and reference.shape != volume.shape:
        raise InputError(
            f"the reference has shape {reference.shape}, the input {volume.shape}; they must match"
        )
    opts = check_pick(pick, pick_options or {}, has_reference=reference is not None)
    eng_opts = dict(engine_options or {})
    try:
        engine = InteractiveDenoiser(
            model,
            mode=mode,  # type: ignore[arg-type]
            k=k,
            n_candidates=n_candidates,
            seed=seed,
            **eng_opts,
        )
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad engine option: {exc}") from None

    folder = Path(out_dir).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError("the output exists and is not a folder", path=folder)
    z = volume.shape[0]
    per_slice = z > 1 and not shared
    model_desc = _model_description(model, model_info)
    config = {
        "mode": mode,
        "k": int(k),
        "n_candidates": int(n_candidates),
        "seed": int(seed),
        "trajectory": "per-slice" if per_slice else "shared",
        "window_hu": [low, high],
        "pick": pick,
        "pick_options": opts,
        "export": list(exports),
        "engine_options": eng_opts,
        "reference": reference is not None,
        "roi": roi is not None,
    }
    info = {
        "tool": "ctdid run",
        "config": config,
        "versions": _versions(),
        "model": model_desc,
        "seed": int(seed),
        "input": dict(input_info) if input_info is not None else dict(volume.meta),
        "labels_meaning": {k2: v for k2, v in LABEL_NAMES.items()},
    }
    writer = ResultWriter(
        folder, input_hu=volume.hu, spacing=volume.spacing, info=info, overwrite=overwrite
    )
    if overwrite:
        for name in _STALE:
            (folder / name).unlink(missing_ok=True)
        if (folder / "exports").is_dir():
            shutil.rmtree(folder / "exports")

    state = _RunState(writer, volume, reference, roi, start, progress)
    total = None if mode == "faithful" else 1 + 2 * int(n_candidates)
    try:
        if per_slice:
            engine_info = state.run_per_slice(engine, total)
        else:
            engine_info = state.run_shared(engine, total)
        engine_s = time.perf_counter() - start
        state.emit("finishing", len(writer.records), total)
        t_fig = time.perf_counter()
        ordered = [writer.records[i] for i in writer.order()]
        _write_metrics(folder / "metrics.csv", ordered)
        extra_points = dict(state.extra_labels)
        _write_figures(state, ordered, extra_points, model_desc, mode, (low, high))
        figures_s = time.perf_counter() - t_fig
        t_exp = time.perf_counter()
        picked = None
        if pick is not None:
            picked = _pick(folder, ordered, pick, opts, state.extra_labels)
        chosen_id = picked["candidate"] if picked else state.default_id
        written: list[Path] = []
        if exports:
            chosen = writer.records[chosen_id]
            written = _export(
                folder,
                volume,
                np.load(folder / chosen.file),
                chosen,
                exports,
                tag=pick or "default",
                model_desc=model_desc,
                mode=mode,
                k=int(k),
                seed=int(seed),
                window=(low, high),
            )
        exports_s = time.perf_counter() - t_exp
        timings = {
            "total": time.perf_counter() - start,
            "first_candidate": state.first_s if state.first_s is not None else -1.0,
            "engine": engine_s,
            "labels": state.labels_s,
            "figures": figures_s,
            "exports": exports_s,
        }
        writer.finish(
            status="done",
            timings=timings,
            engine=engine_info,
            default_id=state.default_id,
            input_labels=state.extra_labels,
            label_notes=state.notes(),
            picks=None if picked is None else {pick: picked},
            exports=[str(p.relative_to(folder)) for p in written],
        )
    except BaseException as exc:
        writer.finish(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            timings={"total": time.perf_counter() - start},
        )
        raise
    state.emit("done", len(writer.records), len(writer.records))
    return RunSummary(
        folder=folder,
        records=tuple(ordered),
        default_id=state.default_id,
        picked=picked,
        exports=tuple(written),
        timings=timings,
        engine=engine_info,
        notes=tuple(state.notes()),
    )


class _RunState:
    """Streaming of candidates into the writer, with labels."""

    def __init__(
        self,
        writer: ResultWriter,
        volume: CTVolume,
        reference: CTVolume | None,
        roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None,
        start: float,
        progress: Callable[[RunProgress], object] | None,
    ) -> None:
        self.writer, self.volume, self.reference, self.roi = writer, volume, reference, roi
        self.start, self.progress = start, progress
        self.labeller: CandidateLabeller | None = None
        self.labels_s = 0.0
        self.first_s: float | None = None
        self.default_id = -1
        self.extra_labels: dict[str, dict[str, float]] = {}

    def notes(self) -> list[str]:
        return list(self.labeller.notes) if self.labeller is not None else []

    def emit(
        self, stage: str, done: int, total: int | None, record: CandidateRecord | None = None
    ) -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - self.start
            self.progress(RunProgress(stage, done, total, elapsed, self.writer.folder, record))

    def _label(self, image: NDArray[np.float32], *, is_default: bool) -> dict[str, float]:
        t = time.perf_counter()
        if is_default or self.labeller is None:
            try:
                self.labeller = CandidateLabeller.from_default(
                    image,
                    spacing=self.volume.spacing,
                    reference_hu=None if self.reference is None else self.reference.hu,
                    input_hu=self.volume.hu,
                    roi=self.roi,
                )
            except ValueError as exc:
                raise InputError(f"cannot set up the labels: {exc}") from None
            # Reference points on the same pixels: the noisy input and the normal dose.
            self.extra_labels["noisy input"] = self.labeller.labels(self.volume.hu)
            if self.reference is not None:
                self.extra_labels["normal dose"] = self.labeller.labels(self.reference.hu)
        labels = self.labeller.labels(image)
        self.labels_s += time.perf_counter() - t
        return labels

    def store(
        self,
        image: NDArray[np.float32],
        *,
        direction: str,
        strength: float,
        step: int,
        progress: float,
        elapsed: float,
        total: int | None,
    ) -> CandidateRecord:
        is_default = direction == "default"
        labels = self._label(image, is_default=is_default)
        rec = self.writer.add(
            image,
            direction=direction,
            strength=strength,
            step=step,
            progress=progress,
            elapsed_s=elapsed,
            labels=labels,
        )
        if is_default:
            self.default_id = rec.id
        if self.first_s is None:
            self.first_s = time.perf_counter() - self.start
        n = len(self.writer.records)
        self.emit("candidate", n, None if total is None else max(total, n), rec)
        return rec

    def run_shared(self, engine: Any, total: int | None) -> dict[str, Any]:
        hu = np.array(self.volume.hu)  # writable copy for torch
        t0 = time.perf_counter()

        def callback(c: Any) -> None:
            self.store(
                np.asarray(c.image),
                direction=c.direction,
                strength=c.strength,
                step=c.step,
                progress=c.progress,
                elapsed=time.perf_counter() - self.start,
                total=total,
            )

        if hu.shape[0] == 1:
            stack = engine.run(hu[0], callback=callback)
        else:
            stack = engine.run_volume(hu, shared=True, callback=callback)
        return _engine_info(stack, time.perf_counter() - t0)

    def run_per_slice(self, engine: Any, total: int | None) -> dict[str, Any]:
        from ctdid.core import interpolate

        hu = np.array(self.volume.hu)  # writable copy for torch
        t0 = time.perf_counter()
        stacks = []
        for zi in range(hu.shape[0]):
            stacks.append(engine.run(hu[zi]))
            self.emit("slice", zi + 1, hu.shape[0])
        n_side = max(max(s.default_index, len(s) - 1 - s.default_index) for s in stacks)
        n_side = min(n_side, engine.n_candidates) if engine.mode != "faithful" else n_side
        reach = {
            "high": min(-float(s.strengths[0]) for s in stacks),
            "low": min(float(s.strengths[-1]) for s in stacks),
        }
        grid: list[tuple[str, float]] = [("default", 0.0)]
        for direction in ("high", "low"):
            if reach[direction] > 0 and n_side > 0:
                sign = -1.0 if direction == "high" else 1.0
                grid += [
                    (direction, sign * reach[direction] * i / n_side) for i in range(1, n_side + 1)
                ]
        expected = len(grid)
        for direction, s in grid:
            image = np.stack([interpolate(st, s) for st in stacks])
            self.store(
                image,
                direction=direction,
                strength=s,
                step=0,
                progress=abs(s),
                elapsed=time.perf_counter() - self.start,
                total=expected,
            )
        info = _engine_info(stacks, time.perf_counter() - t0)
        info["per_slice_note"] = (
            "each slice ran its own trajectory; candidates are interpolated at common strengths "
            "(step is 0 for all)"
        )
        return info


def _engine_info(stacks: Any, seconds: float) -> dict[str, Any]:
    def one(st: Any) -> dict[str, Any]:
        return {
            "mode": st.mode,
            "n_candidates": len(st),
            "coverage": dict(st.coverage),
            "steps": dict(st.steps),
            "stop_reasons": dict(st.stop_reasons),
            "timings_s": dict(st.timings),
            "peak_memory_bytes": int(st.peak_memory_bytes),
            "memory_method": st.memory_method,
        }

    if isinstance(stacks, list):
        per = [one(st) for st in stacks]
        return {
            "seconds": seconds,
            "per_slice": per,
            "peak_memory_bytes": max(p["peak_memory_bytes"] for p in per),
        }
    out = one(stacks)
    out["seconds"] = seconds
    out["details"] = {
        key: value for key, value in dict(stacks.info).items() if key not in ("high", "low")
    }
    return out


# ------------------------------------------------------------------------------------------------
# outputs


_CSV_LABELS = tuple(LABEL_NAMES)


def _write_metrics(path: Path, ordered: Sequence[CandidateRecord]) -> None:
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


def _write_figures(
    state: _RunState,
    ordered: Sequence[CandidateRecord],
    extra_points: Mapping[str, Mapping[str, float]],
    model_desc: Mapping[str, Any],
    mode: str,
    window: tuple[float, float],
) -> None:
    from ctdid.runner.figures import plot_montage, plot_tradeoff

    folder = state.writer.folder
    zi = _middle_body_slice(state.volume.hu)
    panels = []
    for rec in ordered:
        img = np.load(folder / rec.file, mmap_mode="r")[zi]
        panels.append((np.array(img), rec.strength, rec.direction, rec.labels))
    z = state.volume.shape[0]
    where = f", slice {zi + 1}/{z}" if z > 1 else ""
    title = f"ctdid DID, model {model_desc.get('name')}, {mode} mode{where}"
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


def _pick(
    folder: Path,
    ordered: Sequence[CandidateRecord],
    task: str,
    opts: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    import json

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
    picked = {
        "task": task,
        "candidate": rec.id,
        "file": rec.file,
        "direction": rec.direction,
        "strength": rec.strength,
        "labels": dict(rec.labels),
        "options": kwargs,
        "resolution_label": res_key,
        "source": "ctdid run --pick",
    }
    doc = {"format": "ctdid-picks", "picks": {task: picked}}
    with atomic_file(folder / "picks.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
    return picked


def _export(
    folder: Path,
    volume: CTVolume,
    image: NDArray[np.float32],
    rec: CandidateRecord,
    formats: Sequence[str],
    *,
    tag: str,
    model_desc: Mapping[str, Any],
    mode: str,
    k: int,
    seed: int,
    window: tuple[float, float],
) -> list[Path]:
    from ctdid import __version__
    from ctdid.io import write_volume

    out_dir = folder / "exports"
    out_dir.mkdir(exist_ok=True)
    name = str(model_desc.get("name"))
    sha = model_desc.get("weights_sha256")
    vol = volume.with_hu(image, ctdid_candidate=rec.id, ctdid_strength=rec.strength)
    stem = f"{tag}_s{rec.strength:+.2f}"
    description = f"ctdid DID {name} {mode} s={rec.strength:+.2f}"
    derivation = (
        f"Denoised by ctdid {__version__} Deep Interactive Denoiser, model {name}"
        + (f" (weights sha256 {sha})" if sha else "")
        + f", {mode} mode, strength {rec.strength:+.3f} ({rec.direction}, candidate {rec.id})"
        + (f", picked for task {tag}" if tag != "default" else ", default candidate")
    )
    params = {
        "tool": "ctdid run",
        "model": name,
        "weights_sha256": sha,
        "mode": mode,
        "k": k,
        "seed": seed,
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
