"""Run the DID engine on a CT volume and write a result folder as the candidates are made.

:func:`run_did` sits around :class:`ctdid.core.InteractiveDenoiser`: it streams every candidate
into a :class:`ctdid.results.ResultWriter` with its quality labels as soon as it is complete
(so a viewer can show it at once), then writes ``metrics.csv``, ``montage.png``,
``tradeoff.png``, the optional pick (``picks.json``) and the exports.

Volumes (z > 1) are streamed with bounded memory and can be resumed:

* shared trajectory: the engine fine-tunes on a few evenly spaced slices only; every
  candidate's weights are saved (``candidates/cNNN.weights.safetensors``), then each candidate
  volume is rendered slice batch by slice batch into a memory-mapped file, so at most one
  batch of slices per candidate is in memory;
* per-slice trajectories: each slice's candidates, interpolated at a strength grid fixed
  before the first slice, go to disk as soon as that slice is done;
* ``resume.json`` records the finished units (slice batches, slices, the fine-tuning) after
  each one, and ``run_did(..., resume=True)`` skips them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
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
from ctdid.results import STATE_FILE, CandidateRecord, ResultReader, ResultWriter
from ctdid.runner.labelling import LABEL_NAMES, CandidateLabeller
from ctdid.volume import CTVolume

__all__ = [
    "EXPORT_FORMATS",
    "METHODS",
    "MODES",
    "PICK_TASKS",
    "RunProgress",
    "RunSummary",
    "check_pick",
    "parse_exports",
    "run_did",
]

MODES = ("robust", "faithful", "fast")
#: Candidate makers of ``ctdid run --method``: the DID engine and its baselines.
METHODS = ("did", "blend", "iterate", "interp", "tv", "bm3d")
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
    stage : {"candidate", "finetune", "render", "slice", "finishing", "done"}
        ``"candidate"``: a candidate was just stored (``record``); ``"finetune"``: the
        shared trajectory of a volume made one more candidate's weights; ``"render"``: one
        more batch of slices of a candidate volume was written; ``"slice"``: per-slice mode
        finished one more slice; ``"finishing"``: figures, pick and exports are being
        written; ``"done"``: the result folder is complete.
    done : int
        Candidates stored (weights made for ``"finetune"``, slices rendered over all
        candidates for ``"render"``, slices finished for ``"slice"``); counts include the
        work a resumed run found done.
    total : int or None
        Expected number; None when unknown (faithful mode). A run may end with fewer
        candidates (a direction stalled) or one more (a final candidate).
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
    already_done : bool
        True when ``resume`` found the run finished and did nothing (``timings`` and
        ``engine`` are then those of the finished run).
    """

    folder: Path
    records: tuple[CandidateRecord, ...]
    default_id: int
    picked: dict[str, Any] | None
    exports: tuple[Path, ...]
    timings: dict[str, float]
    engine: dict[str, Any]
    notes: tuple[str, ...] = ()
    already_done: bool = False

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


def _array_sha256(array: NDArray[Any]) -> str:
    """SHA-256 of an array's shape and float32 values (C order), slice by slice."""
    arr = np.asarray(array)
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    for part in arr.reshape(-1, *arr.shape[-2:]) if arr.ndim >= 2 else [arr]:
        digest.update(np.ascontiguousarray(part, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _prior_run(folder: Path) -> dict[str, Any] | None:
    """``run.json`` of the run to resume; None for a missing or empty folder."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    try:
        doc = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != "ctdid-result":
        raise InputError(
            "cannot resume: not a ctdid result folder (no readable run.json)", path=folder
        )
    return doc


def _json_normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _check_same_run(
    doc: Mapping[str, Any],
    folder: Path,
    config: Mapping[str, Any],
    model_desc: Mapping[str, Any],
    input_check: Mapping[str, Any],
) -> None:
    """Refuse to resume a folder that holds another run; the message lists the differences."""
    problems = []
    old_cfg = doc.get("config") or {}
    new_cfg = _json_normal(config)
    changed = [
        f"{key} {old_cfg.get(key)!r} -> {new_cfg.get(key)!r}"
        for key in sorted(set(old_cfg) | set(new_cfg))
        if old_cfg.get(key) != new_cfg.get(key)
    ]
    if changed:
        problems.append("options differ (" + "; ".join(changed) + ")")
    old_sha = (doc.get("model") or {}).get("state_dict_sha256")
    if old_sha != model_desc.get("state_dict_sha256"):
        problems.append("the model's weights differ (state dict sha256)")
    old_in = doc.get("input_check") or {}
    if not old_in:
        problems.append("run.json has no input checksum (made by an older ctdid)")
    elif old_in.get("shape") != list(input_check["shape"]):
        problems.append(
            f"the input's shape differs ({old_in.get('shape')} -> {input_check['shape']})"
        )
    else:
        for key, what in (
            ("sha256", "the input's values"),
            ("reference_sha256", "the reference"),
            ("roi_sha256", "the ROI masks"),
        ):
            if old_in.get(key) != input_check.get(key):
                problems.append(f"{what} differ (sha256)")
    if problems:
        raise InputError(
            "cannot resume, the folder holds another run: "
            + "; ".join(problems)
            + ". Give the same input and options, or use --overwrite to start again",
            path=folder,
        )


def _finished_run(
    folder: Path,
    doc: Mapping[str, Any],
    start: float,
    progress: Callable[[RunProgress], object] | None,
) -> RunSummary:
    """The summary of a finished run, which ``resume`` leaves as it is."""
    reader = ResultReader(folder)
    records = tuple(reader.ordered())
    default = reader.default_record()
    picks = doc.get("picks") or {}
    picked = next(iter(picks.values())) if picks else None
    timings = {key: float(v) for key, v in (doc.get("timings") or {}).items()}
    if progress is not None:
        n = len(records)
        progress(RunProgress("done", n, n, time.perf_counter() - start, folder))
    return RunSummary(
        folder=folder,
        records=records,
        default_id=-1 if default is None else default.id,
        picked=dict(picked) if picked else None,
        exports=tuple(folder / rel for rel in doc.get("exports") or ()),
        timings=timings,
        engine=dict(doc.get("engine") or {}),
        notes=tuple(doc.get("label_notes") or ()),
        already_done=True,
    )


def run_did(
    volume: CTVolume,
    model: nn.Module,
    *,
    out_dir: str | Path,
    mode: str = "robust",
    method: str = "did",
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
    train_slices: int = 8,
    batch_size: int = 8,
    resume: bool = False,
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
    method : {"did", "blend", "iterate", "interp", "tv", "bm3d"}, optional
        What makes the candidates: the DID engine (default) or one of its baselines
        (:class:`ctdid.baselines.BaselineDenoiser`: pixel blends x <-> y0 <-> t_low, the
        iterates of the model, weights interpolated toward DID's end weights (DID runs in
        ``mode`` first), or TV / BM3D sweeps of the input). Every method writes the same
        result folder; ``run.json`` records it under ``config.method``. Baselines run each
        slice of a volume on its own at the strengths ``0, +-i / n_candidates`` (``shared``
        does not apply).
    k : int, optional
        Times the model is applied for the low-noise bound. Default 3.
    n_candidates : int, optional
        Candidates per direction (robust/fast); the run makes about ``2 n + 1``. Default 8.
    seed : int, optional
        Seed of the engine (the positions of the training crops); recorded in ``run.json``.
        Default 0.
    shared : bool, optional
        Volumes (z > 1): one trajectory for the whole scan (default), so a strength means
        the same tradeoff on every slice: the engine fine-tunes on ``train_slices`` evenly
        spaced slices, each candidate's weights are saved
        (``candidates/cNNN.weights.safetensors``, listed as ``weights`` in ``run.json``), then
        each candidate volume is rendered ``batch_size`` slices at a time into a memory map,
        the default first (the pretrained model on every slice). Memory: one batch of
        slices per candidate, plus the input, the engine's training slices and one copy of
        the weights per candidate. Strengths are measured on the whole volume, as
        :meth:`ctdid.core.InteractiveDenoiser.run_volume` does.
        False: one trajectory per slice; each slice's candidates are interpolated
        (:func:`ctdid.core.interpolate`) at the strengths ``0, +-coverage * i / n_candidates``
        (i = 1..n, the engine's target grid, fixed before the first slice) and written as soon
        as the slice is done. A slice whose trajectory stopped short of a strength gives its
        last candidate there (clamped); ``run.json`` lists each slice's reach
        (``engine.per_slice[i].reach``) and the clamped strengths (``engine.clamped``). Single
        slices (z = 1) stream every candidate as the engine makes it.
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
    train_slices : int, optional
        Volumes, shared trajectory: number of evenly spaced slices the weights are
        fine-tuned on. Default 8.
    batch_size : int, optional
        Volumes: slices per forward pass when rendering candidate volumes (and per unit of
        progress saved for a resume). Default 8.
    resume : bool, optional
        Continue an interrupted run in ``out_dir`` (a missing or empty folder starts a new
        one). The folder's ``run.json`` must record the same options, model (state-dict
        sha256) and input (shape and sha256 of the HU array; also the reference's). Work
        recorded in ``resume.json`` is skipped: finished slices (per-slice mode), rendered
        slice batches and candidate volumes and, once finished, the fine-tuning (shared
        mode; its saved weights are reused). A shared fine-tuning that was interrupted is
        run again from the start: it is deterministic for a seed (except with
        ``time_budget``), and no candidate volume is rendered before it ends. A single
        slice is run again from the start. The figures, pick and exports are redone. A
        finished run is left as it is (``RunSummary.already_done``). Excludes
        ``overwrite``.

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        Bad options (unknown mode, pick task or export format, missing pick target, a
        reference of another shape, a bad window), or ``resume`` on a folder holding
        another run (the message lists what differs).
    OutputExistsError
        If ``out_dir`` holds files and neither ``overwrite`` nor ``resume`` is given.
    """
    from ctdid.core import InteractiveDenoiser

    start = time.perf_counter()
    if not isinstance(volume, CTVolume):
        raise TypeError(f"volume must be a CTVolume, got {type(volume).__name__}")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; use {', '.join(MODES)}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use {', '.join(METHODS)}")
    low, high = float(window[0]), float(window[1])
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InputError(f"window must be LOW,HIGH with HIGH > LOW, got {window!r}")
    exports = parse_exports(export)
    if reference is not None and reference.shape != volume.shape:
        raise InputError(
            f"the reference has shape {reference.shape}, the input {volume.shape}; they must match"
        )
    opts = check_pick(pick, pick_options or {}, has_reference=reference is not None)
    for name, value in (("train_slices", train_slices), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    if resume and overwrite:
        raise InputError(
            "resume and overwrite exclude each other (resume continues the run in the folder, "
            "overwrite starts it again)"
        )
    z = volume.shape[0]
    baseline = method != "did"
    per_slice = z > 1 and (baseline or not shared)
    streamed = z > 1 and not per_slice
    eng_opts = dict(engine_options or {})
    eng_opts.pop("keep_weights", None)
    engine: Any
    try:
        if baseline:
            from ctdid.baselines import BaselineDenoiser

            engine = BaselineDenoiser(
                model,
                method=method,
                k=k,
                n_candidates=n_candidates,
                spacing=tuple(volume.spacing[-2:]),
                did_options={"mode": mode, "seed": seed, **eng_opts},
            )
        else:
            engine = InteractiveDenoiser(
                model,
                mode=mode,  # type: ignore[arg-type]
                k=k,
                n_candidates=n_candidates,
                seed=seed,
                keep_weights=streamed,
                **eng_opts,
            )
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad engine option: {exc}") from None

    folder = Path(out_dir).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError("the output exists and is not a folder", path=folder)
    model_desc = _model_description(model, model_info)
    config = {
        "mode": mode,
        "method": method,
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
        "train_slices": int(train_slices),
        "batch_size": int(batch_size),
    }
    input_check = {
        "shape": list(volume.shape),
        "sha256": _array_sha256(volume.hu),
        "reference_sha256": None if reference is None else _array_sha256(reference.hu),
        "roi_sha256": None if roi is None else [_array_sha256(np.asarray(m)) for m in roi],
    }
    info = {
        "tool": "ctdid run",
        "config": config,
        "versions": _versions(),
        "model": model_desc,
        "seed": int(seed),
        "input": dict(input_info) if input_info is not None else dict(volume.meta),
        "input_check": input_check,
        "labels_meaning": {k2: v for k2, v in LABEL_NAMES.items()},
    }
    resuming = False
    if resume:
        prior = _prior_run(folder)
        if prior is not None:
            _check_same_run(prior, folder, config, model_desc, input_check)
            if prior.get("status") == "done":
                return _finished_run(folder, prior, start, progress)
            resuming = True
            info["resumed"] = True
    # A single slice is run again from the start; volumes continue where they stopped.
    writer = ResultWriter(
        folder,
        input_hu=volume.hu,
        spacing=volume.spacing,
        info=info,
        overwrite=overwrite or (resuming and z == 1),
        resume=resuming and z > 1,
    )
    if overwrite or resuming:
        for name in _STALE:
            (folder / name).unlink(missing_ok=True)
        if (folder / "exports").is_dir():
            shutil.rmtree(folder / "exports")

    state = _RunState(writer, volume, reference, roi, start, progress)
    state.resuming = resuming and z > 1
    state.batch_size = int(batch_size)
    total = None if mode == "faithful" and not baseline else 1 + 2 * int(engine.n_candidates)
    try:
        state.restore()
        if per_slice:
            engine_info = state.run_per_slice(engine, total)
        elif streamed:
            engine_info = state.run_volume_shared(engine, total, train_slices=int(train_slices))
        else:
            engine_info = state.run_shared(engine, total)
        engine_s = time.perf_counter() - start
        state.emit("finishing", len(writer.records), total)
        t_fig = time.perf_counter()
        ordered = [writer.records[i] for i in writer.order()]
        _write_metrics(folder / "metrics.csv", ordered)
        extra_points = dict(state.extra_labels)
        label = f"DID, {mode} mode" if method == "did" else f"{method} baseline (no DID)"
        _write_figures(state, ordered, extra_points, model_desc, label, (low, high))
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
                method=method,
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
        self.resuming = False
        self.batch_size = 8
        self.state: dict[str, Any] = {}
        self.rendered_slices = 0
        self.render_total: int | None = None

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
        return self._stored(rec, total)

    def _stored(self, rec: CandidateRecord, total: int | None) -> CandidateRecord:
        if rec.direction == "default":
            self.default_id = rec.id
        if self.first_s is None:
            self.first_s = time.perf_counter() - self.start
        n = len(self.writer.records)
        self.emit("candidate", n, None if total is None else max(total, n), rec)
        return rec

    # -- volumes: streamed, resumable

    def restore(self) -> None:
        """A resumed run: find the listed default and set the labels up on it again."""
        default = next((r for r in self.writer.records if r.direction == "default"), None)
        if default is None:
            return
        self.default_id = default.id
        self._label(np.load(self.writer.folder / default.file, mmap_mode="r"), is_default=True)

    def _load_state(self, trajectory: str, fresh: dict[str, Any]) -> dict[str, Any]:
        st = self.writer.read_state() if self.resuming else None
        if st is None:
            if self.writer.records:
                raise InputError(
                    f"cannot resume: no readable {STATE_FILE} beside the listed candidates "
                    "(made by an older ctdid?); use --overwrite to start again",
                    path=self.writer.folder,
                )
            st = fresh
        elif (
            st.get("format") != "ctdid-run-state"
            or st.get("trajectory") != trajectory
            or st.get("shape_zyx") != list(self.volume.shape)
            or st.get("batch_size") != self.batch_size
        ):
            raise InputError(
                f"cannot resume: {STATE_FILE} belongs to another run; use --overwrite",
                path=self.writer.folder,
            )
        self.state = st
        self._save_state()
        return st

    def _save_state(self) -> None:
        self.writer.write_state(self.state)

    def _image_file(self, cid: int) -> Path:
        stored = self.writer.stored_file(cid)
        return stored if stored is not None else self.writer.partial_file(f"c{cid:03d}.npy")

    def commit(
        self,
        cid: int,
        *,
        direction: str,
        strength: float,
        step: int,
        progress: float,
        total: int | None,
        weights: str | None = None,
    ) -> CandidateRecord:
        """Label the complete image of candidate ``cid`` (from disk) and list it."""
        image = np.load(self._image_file(cid), mmap_mode="r")
        labels = self._label(image, is_default=direction == "default")
        del image
        rec = self.writer.commit(
            cid,
            direction=direction,
            strength=strength,
            step=step,
            progress=progress,
            elapsed_s=time.perf_counter() - self.start,
            labels=labels,
            weights=weights,
        )
        return self._stored(rec, total)

    def _render(self, engine: Any, cid: int, weights: Any, *, t_low: bool = False) -> None:
        """Write candidate ``cid`` (model with ``weights``) batch by batch into ``partial/``.

        Batches already recorded in the state are skipped; with ``t_low`` the low-noise bound
        (the model applied ``k`` times) is written beside it, for the progress measure.
        """
        hu, z, bs = self.volume.hu, self.volume.shape[0], self.batch_size
        rendered: dict[str, int] = self.state["rendered"]
        key = str(cid)
        done = int(rendered.get(key, 0))
        names = [f"c{cid:03d}.npy"] + (["t_low.npy"] if t_low else [])
        if done and not all(self.writer.partial_file(n).is_file() for n in names):
            self.rendered_slices -= done  # the partial volume went missing: start it again
            done = 0
        if done >= z:
            return
        out = self.writer.open_partial(names[0])
        low = self.writer.open_partial(names[1]) if t_low else None
        for a in range(done, z, bs):
            b = min(a + bs, z)
            y = engine.apply(np.array(hu[a:b], dtype=np.float32), weights=weights, batch_size=bs)
            if low is not None:
                t = y
                for _ in range(engine.k - 1):
                    t = engine.apply(t, batch_size=bs)
                low[a:b] = t
                low.flush()
            out[a:b] = y
            out.flush()
            rendered[key] = b
            self._save_state()
            self.rendered_slices += b - a
            self.emit("render", self.rendered_slices, self.render_total)
        del out, low

    def _volume_progress(self, cid: int, direction: str, mask: NDArray[np.bool_]) -> float:
        """Progress of candidate ``cid`` toward its bound over the whole volume, in the body.

        As :func:`ctdid.core.progress` on the whole volume, accumulated batch by batch.
        """
        hu, z, bs = self.volume.hu, self.volume.shape[0], self.batch_size
        y = np.load(self._image_file(cid), mmap_mode="r")
        y0 = np.load(self._image_file(self.default_id), mmap_mode="r")
        t_low = None
        if direction == "low":
            t_low = np.load(self.writer.partial_file("t_low.npy"), mmap_mode="r")
        num = den = 0.0
        for a in range(0, z, bs):
            b = min(a + bs, z)
            base = np.asarray(y0[a:b], dtype=np.float32)
            target = np.asarray(hu[a:b] if t_low is None else t_low[a:b], dtype=np.float32)
            dt = (target - base).astype(np.float64) * mask[a:b]
            num += float(((np.asarray(y[a:b], dtype=np.float64) - base) * dt).sum())
            den += float((dt * dt).sum())
        return num / den if den > 0.0 else 0.0

    def run_volume_shared(
        self, engine: Any, total: int | None, *, train_slices: int
    ) -> dict[str, Any]:
        """Shared trajectory of a volume: default, fine-tuning, then candidate volumes."""
        from safetensors.torch import load_file

        from ctdid.core import body_mask

        writer, hu, z = self.writer, self.volume.hu, self.volume.shape[0]
        t0 = time.perf_counter()
        idx = np.unique(np.linspace(0, z - 1, min(train_slices, z)).round().astype(int))
        fresh = {
            "format": "ctdid-run-state",
            "trajectory": "shared",
            "shape_zyx": list(self.volume.shape),
            "batch_size": self.batch_size,
            "train_slices": idx.tolist(),
            "rendered": {},
            "finetune": None,
            "progress_raw": {},
        }
        st = self._load_state("shared", fresh)
        # Body mask as the engine makes it for a volume (empty: the whole image).
        mask = body_mask(np.asarray(hu), threshold=engine.body_threshold)
        if mask.sum() < 16:
            mask = np.ones_like(mask)
        self.rendered_slices = sum(int(v) for v in st["rendered"].values())
        self.render_total = None if total is None else z * total

        # 1. The default: the pretrained model on every slice (and t_low, for progress).
        if not writer.records:
            if writer.stored_file(0) is None:
                self._render(engine, 0, None, t_low=True)
            rel = writer.save_weights(0, engine.model.state_dict())
            self.commit(
                0, direction="default", strength=0.0, step=0, progress=0.0, total=total,
                weights=rel,
            )  # fmt: skip

        # 2. Fine-tuning on the training slices; every candidate's weights saved as made.
        ft = st.get("finetune")
        if ft is None:
            made: list[dict[str, Any]] = []
            expected = None if total is None else total - 1

            def on_candidate(c: Any) -> None:
                if c.direction == "default":
                    return
                cid = len(made) + 1
                rel = writer.save_weights(cid, c.weights)
                made.append({"id": cid, "direction": c.direction, "step": c.step, "weights": rel})
                self.emit("finetune", len(made), None if expected is None else max(expected, cid))

            t_ft = time.perf_counter()
            x_tr = np.array(hu[idx], dtype=np.float32)[:, None]
            stack = engine.run(x_tr, body=mask[idx][:, None], callback=on_candidate)
            info = _engine_info(stack, time.perf_counter() - t_ft)
            info["coverage_train_slices"] = info.pop("coverage")
            info["train_slices"] = idx.tolist()
            ft = {"candidates": made, "engine": info}
            st["finetune"] = ft
            self._save_state()
            self.emit("finetune", len(made), len(made))  # the directions may stop early
            del stack
            for stale in writer.folder.glob("candidates/c*.weights.safetensors"):
                if int(stale.name.split(".")[0][1:]) > len(made):  # an interrupted fine-tuning
                    stale.unlink()

        # 3. Candidate volumes, in the order they were made, batch by batch.
        n_all = 1 + len(ft["candidates"])
        self.render_total = z * n_all
        best = {"high": 0.0, "low": 0.0}
        for rec in writer.records:
            if rec.direction in best:
                best[rec.direction] = max(best[rec.direction], rec.progress)
        for entry in ft["candidates"]:
            cid, direction = int(entry["id"]), str(entry["direction"])
            if cid < len(writer.records):
                continue
            if writer.stored_file(cid) is None:
                weights = load_file(str(writer.folder / entry["weights"]), device="cpu")
                self._render(engine, cid, weights)
            raw = self._volume_progress(cid, direction, mask)
            best[direction] = max(best[direction], min(max(raw, 0.0), 1.0))
            st["progress_raw"][str(cid)] = raw
            self._save_state()
            self.commit(
                cid,
                direction=direction,
                strength=-best[direction] if direction == "high" else best[direction],
                step=int(entry["step"]),
                progress=best[direction],
                total=n_all,
                weights=str(entry["weights"]),
            )
        out = dict(ft["engine"])
        raws = st["progress_raw"]
        coverage = {"high": 0.0, "low": 0.0}
        for entry in ft["candidates"]:
            coverage[entry["direction"]] = float(raws.get(str(entry["id"]), 0.0))
        out["coverage"] = coverage
        out["trajectory_seconds"] = out.pop("seconds")
        out["seconds"] = time.perf_counter() - t0
        out["rendered_in_batches_of"] = self.batch_size
        return out

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
        """One trajectory per slice; each slice's candidates on disk as soon as it is done."""
        from ctdid.core import interpolate

        writer, hu, z = self.writer, self.volume.hu, self.volume.shape[0]
        t0 = time.perf_counter()
        fresh = {
            "format": "ctdid-run-state",
            "trajectory": "per-slice",
            "shape_zyx": list(self.volume.shape),
            "batch_size": self.batch_size,
            "grid": [list(g) for g in _strength_grid(engine)],
            "slices": {},
        }
        st = self._load_state("per-slice", fresh)
        grid = [(str(d), float(s)) for d, s in st["grid"]]
        finished: dict[str, Any] = st["slices"]
        if len(finished) < z and writer.records:
            raise InputError(
                f"cannot resume: candidates are listed but {STATE_FILE} has unfinished slices",
                path=writer.folder,
            )
        for zi in range(z):
            if str(zi) in finished:
                continue
            stack = engine.run(np.array(hu[zi], dtype=np.float32))
            for cid, (_, s) in enumerate(grid):
                out = writer.open_partial(f"c{cid:03d}.npy")
                out[zi] = interpolate(stack, s)  # beyond the slice's reach: its last candidate
                out.flush()
                del out
            item = _stack_info(stack)
            item["reach"] = {"high": -float(stack.strengths[0]), "low": float(stack.strengths[-1])}
            finished[str(zi)] = item
            self._save_state()
            self.emit("slice", len(finished), z)
        for cid, (direction, s) in enumerate(grid):
            if cid >= len(writer.records):
                self.commit(
                    cid, direction=direction, strength=s, step=0, progress=abs(s),
                    total=len(grid),
                )  # fmt: skip
        per = [finished[str(zi)] for zi in range(z)]
        clamped = []
        for zi, item in enumerate(per):
            for direction, s in grid:
                if direction != "default" and abs(s) > item["reach"][direction] + 1e-9:
                    clamped.append({"slice": zi, "strength": s, "reach": item["reach"][direction]})
        return {
            "seconds": time.perf_counter() - t0,
            "per_slice": per,
            "peak_memory_bytes": max(item["peak_memory_bytes"] for item in per),
            "strength_grid": [s for _, s in grid],
            "clamped": clamped,
            "per_slice_note": (
                "each slice ran its own trajectory; candidates are interpolated at the engine's "
                "target strengths 0, +-coverage*i/n_candidates (step is 0 for all); where a "
                "slice's trajectory stopped short of a strength (listed in 'clamped', with the "
                "slice's reach), that slice holds its last candidate"
            ),
        }


def _strength_grid(engine: Any) -> list[tuple[str, float]]:
    """The per-slice candidates' strengths: the default and the engine's progress targets."""
    grid: list[tuple[str, float]] = [("default", 0.0)]
    n = int(engine.n_candidates)
    for direction in ("high", "low"):
        if direction in engine.directions:
            sign = -1.0 if direction == "high" else 1.0
            grid += [(direction, sign * engine.coverage * i / n) for i in range(1, n + 1)]
    return grid


def _stack_info(st: Any) -> dict[str, Any]:
    per_dir = {
        d: v for d, v in dict(st.info).items() if d in ("high", "low") and isinstance(v, dict)
    }
    out = {
        "mode": st.mode,
        "optimizer": {d: v.get("optimizer") for d, v in per_dir.items()},
        "n_candidates": len(st),
        "coverage": dict(st.coverage),
        "steps": dict(st.steps),
        "stop_reasons": dict(st.stop_reasons),
        "timings_s": dict(st.timings),
        "peak_memory_bytes": int(st.peak_memory_bytes),
        "memory_method": st.memory_method,
    }
    fallback = {d: v["fallback"] for d, v in per_dir.items() if "fallback" in v}
    if fallback:
        out["fallback"] = fallback  # why the Gauss-Newton steps gave way to Adam
    return out


def _engine_info(stacks: Any, seconds: float) -> dict[str, Any]:
    out = _stack_info(stacks)
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
    label: str,
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
    method: str,
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
