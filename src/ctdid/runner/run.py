"""Run the DID engine on a CT volume and write a result folder as the candidates are made.

:func:`run_did` sits around :class:`ctdid.core.InteractiveDenoiser` and calls a pipeline of
small steps in order, each in its own module:

1. options -- :class:`~ctdid.runner.options.RunOptions`, built once (CLI or Python);
2. engine -- the DID engine or a baseline (:func:`build_engine`);
3. record -- what ``run.json`` says about the run (:func:`describe_run`);
4. folder -- start, continue or leave a finished run (:mod:`ctdid.runner.resume`);
5. candidates and labels -- streamed into a :class:`ctdid.results.ResultWriter` as soon as
   each is complete, so a viewer can show it at once (:mod:`ctdid.runner.trajectories`,
   :mod:`ctdid.runner.stream`);
6. outputs -- ``metrics.csv``, ``montage.png``, ``tradeoff.png``, the optional pick
   (``picks.json``) and the exports (:mod:`ctdid.runner.outputs`).

Reading the scan and loading the model happen before (``ctdid run``:
:func:`ctdid.io.read_volume`, :func:`ctdid.runner.console.load_denoiser`).

Volumes (z > 1) are streamed with bounded memory and can be resumed:

* shared trajectory: the engine fine-tunes on a few evenly spaced slices only; every
  candidate's weights are saved (``candidates/cNNN.weights.safetensors``) and listed under
  ``rendering`` in ``run.json`` as it is made (the default's first), so the viewer renders
  any slice of it on demand; then the default and each candidate volume are rendered slice
  batch by slice batch into a memory-mapped file, so at most one batch of slices per
  candidate is in memory;
* per-slice trajectories: each slice's candidates, interpolated at a strength grid fixed
  before the first slice, go to disk as soon as that slice is done;
* ``resume.json`` records the finished units (slice batches, slices, the fine-tuning) after
  each one, and ``run_did(..., resume=True)`` skips them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn

from ctdid.errors import InputError
from ctdid.runner.labelling import LABEL_NAMES
from ctdid.runner.options import RunOptions, check_pick
from ctdid.runner.outputs import write_outputs
from ctdid.runner.resume import open_result
from ctdid.runner.stream import CandidateStream
from ctdid.runner.summary import RunProgress, RunSummary
from ctdid.runner.trajectories import run_per_slice, run_single, run_volume_shared
from ctdid.volume import CTVolume

__all__ = ["build_engine", "describe_run", "run_did"]


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
    from ctdid.models import state_dict_sha256

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
    info["state_dict_sha256"] = state_dict_sha256(model)
    if card:
        info["card"] = card
    for key, value in (model_info or {}).items():
        if value is not None or key not in info:
            info[key] = value
    if not info.get("name"):
        info["name"] = info["class"]
    return info


def _array_sha256(array: NDArray[Any]) -> str:
    """SHA-256 of an array's shape and float32 values (C order), slice by slice."""
    arr = np.asarray(array)
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    for part in arr.reshape(-1, *arr.shape[-2:]) if arr.ndim >= 2 else [arr]:
        digest.update(np.ascontiguousarray(part, dtype=np.float32).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How a volume is run: one slice, a shared trajectory streamed, or one per slice."""

    z: int
    per_slice: bool
    streamed: bool

    @classmethod
    def of(cls, volume: CTVolume, options: RunOptions) -> _Plan:
        z = volume.shape[0]
        per_slice = z > 1 and (options.curve.engine_method != "did" or not options.shared)
        return cls(z, per_slice, z > 1 and not per_slice)


def build_engine(
    model: nn.Module,
    options: RunOptions,
    *,
    keep_weights: bool,
    spacing: tuple[float, float] = (1.0, 1.0),
) -> Any:
    """The candidate maker of ``options.method``: the DID engine or a baseline.

    ``keep_weights`` gives every DID candidate its weights (a volume's shared trajectory
    renders the candidate volumes from them); ``spacing`` (y, x) in mm is the pixel size
    the baselines need. Raises :class:`InputError` on a bad engine option.
    """
    from ctdid.core import InteractiveDenoiser

    opts = options
    did_options = {"mode": opts.mode, "seed": opts.seed, **opts.engine_options}
    try:
        curve = opts.curve
        if curve.engine_method == "sided":
            from ctdid.baselines import SidedDenoiser

            return SidedDenoiser(
                model, high=curve.high, low=curve.low, k=opts.k,
                n_candidates=opts.n_candidates, did_options=did_options,
            )  # fmt: skip
        if curve.engine_method != "did":
            from ctdid.baselines import BaselineDenoiser

            return BaselineDenoiser(
                model,
                method=curve.engine_method,
                k=opts.k,
                n_candidates=opts.n_candidates,
                spacing=spacing,
                did_options=did_options,
            )
        return InteractiveDenoiser(
            model,
            mode=opts.mode,
            k=opts.k,
            n_candidates=opts.n_candidates,
            seed=opts.seed,
            keep_weights=keep_weights,
            **opts.engine_options,
        )
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad engine option: {exc}") from None


def describe_run(
    volume: CTVolume,
    model: nn.Module,
    options: RunOptions,
    *,
    engine: Any,
    per_slice: bool,
    reference: CTVolume | None = None,
    roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None = None,
    model_info: Mapping[str, Any] | None = None,
    input_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``run.json`` records about a run before it starts (a resume compares it)."""
    input_check = {
        "shape": list(volume.shape),
        "sha256": _array_sha256(volume.hu),
        "reference_sha256": None if reference is None else _array_sha256(reference.hu),
        "roi_sha256": None if roi is None else [_array_sha256(np.asarray(m)) for m in roi],
    }
    info = {
        "tool": "ctdid run",
        "config": options.config(
            per_slice=per_slice, reference=reference is not None, roi=roi is not None
        ),
        "versions": _versions(),
        "model": _model_description(model, model_info),
        "seed": int(options.seed),
        "input": dict(input_info) if input_info is not None else dict(volume.meta),
        "input_check": input_check,
        "labels_meaning": dict(LABEL_NAMES),
        "curve": options.curve.to_dict(),
    }
    did_options = getattr(engine, "options", None)
    if did_options is not None and hasattr(did_options, "to_dict"):
        # Every option of the engine, its mode's defaults filled in (not compared on resume).
        info["engine_options_resolved"] = did_options.to_dict()
    return info


def _options(options: RunOptions | None, overrides: Mapping[str, Any]) -> RunOptions:
    if options is not None and not isinstance(options, RunOptions):
        raise TypeError(f"options must be a RunOptions, got {type(options).__name__}")
    if options is None:
        return RunOptions(**overrides)
    return dataclasses.replace(options, **overrides)


def _check_inputs(volume: CTVolume, reference: CTVolume | None, options: RunOptions) -> None:
    if not isinstance(volume, CTVolume):
        raise TypeError(f"volume must be a CTVolume, got {type(volume).__name__}")
    if reference is not None and reference.shape != volume.shape:
        raise InputError(
            f"the reference has shape {reference.shape}, the input {volume.shape}; they must match"
        )
    check_pick(options.pick, options.pick_options, has_reference=reference is not None)


def _make_candidates(
    stream: CandidateStream, engine: Any, plan: _Plan, options: RunOptions, total: int | None
) -> dict[str, Any]:
    stream.restore()
    if plan.per_slice:
        return run_per_slice(stream, engine, total)
    previews = options.previews and options.curve.engine_method == "did"
    if plan.streamed:
        return run_volume_shared(
            stream, engine, total, train_slices=int(options.train_slices), previews=previews
        )
    return run_single(stream, engine, total, previews=previews)


def run_did(
    volume: CTVolume,
    model: nn.Module,
    *,
    out_dir: str | Path,
    options: RunOptions | None = None,
    reference: CTVolume | None = None,
    roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None = None,
    progress: Callable[[RunProgress], object] | None = None,
    model_info: Mapping[str, Any] | None = None,
    input_info: Mapping[str, Any] | None = None,
    **overrides: Any,
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
        ``overwrite`` or ``resume``.
    options : RunOptions, optional
        How to run (mode, method, candidates, seed, trajectory, pick, exports, window,
        resume, ...: see :class:`~ctdid.runner.options.RunOptions` for each option, its
        units and default). Default ``RunOptions()``: DID in the robust mode.
    reference : CTVolume, optional
        Normal-dose scan of the same shape: adds ``rmse_hu`` (inside the body) to the labels.
    roi : (lesion, background), optional
        Boolean masks of the volume's shape (or (y, x), for every slice): adds ``cnr``.
    progress : callable, optional
        Called with a :class:`RunProgress` after each candidate is stored and at the end.
    model_info : mapping, optional
        Description of the model for ``run.json`` (name, spec, weights file and sha256);
        completed from the adapter's card (``model.meta``) when it has one.
    input_info : mapping, optional
        Description of the input for ``run.json`` (path, options); default the volume's
        ``meta``.
    **overrides
        Options by keyword (``mode="fast"``, ``export="dicom"``, ``resume=True``, ...),
        replacing those of ``options``.

    Returns
    -------
    RunSummary
        Candidates in curve order (high resolution -> default -> low noise), the pick, the
        exports, timings and the engine's report.

    Notes
    -----
    ``resume`` continues an interrupted run in ``out_dir`` (a missing or empty folder starts
    a new one). The folder's ``run.json`` must record the same options, model (state-dict
    sha256) and input (shape and sha256 of the HU array; also the reference's). Work
    recorded in ``resume.json`` is skipped: finished slices (per-slice mode), rendered slice
    batches and candidate volumes and, once finished, the fine-tuning (shared mode; its
    saved weights are reused). A shared fine-tuning that was interrupted is run again from
    the start: it is deterministic for a seed (except with ``time_budget``), and no
    candidate volume is rendered before it ends. A single slice is run again from the
    start. The figures, pick and exports are redone. A finished run is left as it is
    (``RunSummary.already_done``).

    Raises
    ------
    InputError
        Bad options (unknown mode, pick task or export format, missing pick target, a
        reference of another shape, a bad window, a bad engine option), or ``resume`` on a
        folder holding another run (the message lists what differs).
    OutputExistsError
        If ``out_dir`` holds files and neither ``overwrite`` nor ``resume`` is given.
    TypeError
        ``volume`` is not a :class:`CTVolume` or an override is not an option.
    """
    start = time.perf_counter()
    opts = _options(options, overrides)
    _check_inputs(volume, reference, opts)
    plan = _Plan.of(volume, opts)
    spacing = (float(volume.spacing[-2]), float(volume.spacing[-1]))
    engine = build_engine(model, opts, keep_weights=plan.streamed, spacing=spacing)
    folder = Path(out_dir).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError("the output exists and is not a folder", path=folder)
    info = describe_run(
        volume, model, opts, engine=engine, per_slice=plan.per_slice, reference=reference,
        roi=roi, model_info=model_info, input_info=input_info,
    )  # fmt: skip
    opened = open_result(
        folder, volume, info, overwrite=opts.overwrite, resume=opts.resume, start=start,
        progress=progress,
    )  # fmt: skip
    if isinstance(opened, RunSummary):
        return opened
    writer = opened.writer
    stream = CandidateStream(
        writer, volume, reference, roi, start, progress,
        resuming=opened.resuming, batch_size=opts.batch_size,
    )  # fmt: skip
    baseline = opts.curve.engine_method != "did"
    total = None if opts.mode == "faithful" and not baseline else 1 + 2 * int(engine.n_candidates)
    try:
        engine_info = _make_candidates(stream, engine, plan, opts, total)
        engine_s = time.perf_counter() - start
        if stream.previews_shown:
            writer.extra["previews_shown"] = stream.previews_record()
        stream.emit("finishing", len(writer.records), total)
        out = write_outputs(stream, opts, info["model"])
        timings = {
            "total": time.perf_counter() - start,
            "first_candidate": stream.first_s if stream.first_s is not None else -1.0,
            "engine": engine_s,
            "labels": stream.labels_s,
            "figures": out.figures_s,
            "exports": out.exports_s,
        }
        writer.finish(
            status="done",
            timings=timings,
            engine=engine_info,
            default_id=stream.default_id,
            input_labels=stream.extra_labels,
            label_notes=stream.notes(),
            picks=None if out.picked is None else {opts.pick: out.picked},
            exports=[str(p.relative_to(folder)) for p in out.exports],
        )
    except BaseException as exc:
        writer.finish(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            timings={"total": time.perf_counter() - start},
        )
        raise
    stream.emit("done", len(writer.records), len(writer.records))
    return RunSummary(
        folder=folder,
        records=tuple(out.ordered),
        default_id=stream.default_id,
        picked=out.picked,
        exports=tuple(out.exports),
        timings=timings,
        engine=engine_info,
        notes=tuple(stream.notes()),
        curve=opts.curve.to_dict(),
    )
