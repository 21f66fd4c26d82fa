"""One series of a batch: its job (options checked on the driver) and its run (in a Ray
worker), written atomically into ``OUT/<name>`` through :func:`ctdid.runner.run_did`."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctdid.batch.series import DEFAULTS, SeriesSpec
from ctdid.errors import CTDIDError, InputError
from ctdid.runner.options import RunOptions


@dataclasses.dataclass(frozen=True)
class SeriesJob:
    """Everything a worker needs to run one series (picklable).

    Attributes
    ----------
    name : str
        Result folder name under the batch's output folder.
    input : Path
        The series.
    model, weights, card : str, Path or None
        The model as :func:`ctdid.runner.console.load_denoiser` takes it.
    options : RunOptions
        The run's options (``resume`` and ``overwrite`` are set by :func:`run_series`).
    reference : Path or None
        Normal-dose scan of this series (adds RMSE labels).
    read : dict
        Keyword arguments of :func:`ctdid.io.read_volume` (the reference is read with them,
        without ``series``).
    device : str or None
        torch device; a CUDA device is the GPU Ray gives the task.
    threads : int
        torch threads of the task.
    cwd : str
        The driver's working folder, where a relative model file is looked for.
    """

    name: str
    input: Path
    model: str
    weights: Path | None
    card: Path | None
    options: RunOptions
    reference: Path | None = None
    read: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str | None = None
    threads: int = 1
    cwd: str = "."


@dataclasses.dataclass(frozen=True)
class SeriesResult:
    """The outcome of one series: a row of ``batch.csv``.

    Attributes
    ----------
    series : str
        Its name (result folder ``OUT/<series>``).
    status : {"done", "skipped", "failed"}
        ``"skipped"``: the folder held this finished run already.
    error : str
        Why it failed (one line), else ``""``.
    seconds : float
        Time the task took, reading and loading included.
    candidates : int or None
        Candidates in the result folder.
    coverage : dict
        How far the candidates reach toward each bound (``high``, ``low``; 1 = the bound).
    warnings : tuple of str
        Warnings of the run (model card missing, input oddities, ...).
    """

    series: str
    status: str
    error: str = ""
    seconds: float = 0.0
    candidates: int | None = None
    coverage: dict[str, float] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def row(self) -> dict[str, str]:
        """The row of ``batch.csv``."""
        cover = ";".join(f"{k}={v:.3f}" for k, v in sorted(self.coverage.items()))
        return {
            "series": self.series,
            "status": self.status,
            "error": self.error,
            "seconds": f"{self.seconds:.2f}",
            "candidates": "" if self.candidates is None else str(self.candidates),
            "coverage": cover,
        }


def partial_folder(out: str | os.PathLike[str], name: str) -> Path:
    """Where series ``name`` is made before it is renamed to ``out/name``."""
    return Path(out).absolute() / f".{name}.partial"


def _window(value: Any) -> tuple[float, float]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"window must be 'LOW,HIGH' in HU, got {value!r}") from None
    return low, high


def _run_options(v: Mapping[str, Any]) -> RunOptions:
    """The :class:`~ctdid.runner.RunOptions` of a series' merged options (InputError if bad)."""
    return RunOptions(
        mode=str(v["mode"]),
        method=str(v["method"]),
        k=int(v["k"]),
        n_candidates=int(v["candidates"]),
        seed=int(v["seed"]),
        shared=not v["per_slice"],
        train_slices=int(v["train_slices"]),
        batch_size=int(v["batch_size"]),
        pick=v["pick"] or None,
        pick_options={
            "target_noise": v["target_noise"],
            "noise_ceiling": v["noise_ceiling"],
            "diameter_mm": v["lesion_mm"],
            "contrast_hu": v["contrast_hu"],
        },
        export=v["export"] or "",
        window=_window(v["window"]),
    )


def _merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` under the given options; a None option is one not given."""
    out = dict(DEFAULTS)
    for layer in layers:
        out.update({k: v for k, v in layer.items() if v is not None})
    return out


def check_defaults(defaults: Mapping[str, Any]) -> None:
    """Check the batch's own options before any series runs.

    Raises
    ------
    InputError
        An option that would fail every series (unknown mode, method, pick task or export
        format, a bad window, a pick without its target).
    """
    unknown = set(defaults) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown batch option(s): {sorted(unknown)}")
    _run_options(_merged(defaults))


def make_job(
    spec: SeriesSpec,
    *,
    defaults: Mapping[str, Any] | None = None,
    read: Mapping[str, Any] | None = None,
    device: str | None = None,
    threads: int = 1,
) -> SeriesJob:
    """The job of one series: its options (:data:`DEFAULTS` < ``defaults`` < its row) checked.

    Raises
    ------
    InputError
        A bad option of this series (unknown mode, method, pick task or export format, a
        bad window, no model, a manifest cell that could not be read).
    """
    from ctdid.runner import check_pick

    v = _merged(defaults or {}, spec.values)
    if "_error" in v:
        raise InputError(str(v["_error"]))
    if not v["model"]:
        raise InputError("no model: give --model or a 'model' column in the manifest")
    options = _run_options(v)
    reference = None if v["reference"] is None else Path(v["reference"]).absolute()
    check_pick(options.pick, options.pick_options, has_reference=reference is not None)
    paths = {k: None if v[k] is None else Path(v[k]).absolute() for k in ("weights", "card")}
    return SeriesJob(
        name=spec.name, input=spec.input, model=str(v["model"]), **paths, options=options,
        reference=reference, read={**(read or {}), "series": v["series"]}, device=device,
        threads=int(threads), cwd=os.getcwd(),
    )  # fmt: skip


@contextmanager
def _in_folder(folder: str) -> Iterator[None]:
    """Work in the driver's folder while a task runs (where it exists, e.g. not on a node)."""
    old = os.getcwd()
    if not os.path.isdir(folder):
        yield
        return
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def _coverage(summary: Any) -> dict[str, float]:
    cover = (summary.engine or {}).get("coverage")
    if isinstance(cover, Mapping) and all(isinstance(x, int | float) for x in cover.values()):
        return {str(k): float(x) for k, x in cover.items()}
    strengths = [float(r.strength) for r in summary.records]
    if not strengths:
        return {}
    return {"high": max(0.0, -min(strengths)), "low": max(0.0, max(strengths))}


def _publish(part: Path, final: Path) -> None:
    """Rename a finished partial folder to its result folder (replacing an older one)."""
    if not final.exists():
        part.rename(final)
        return
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    final.rename(old)
    part.rename(final)
    shutil.rmtree(old)


def _run_one(job: SeriesJob, out: Path, *, overwrite: bool) -> tuple[Any, str]:
    """Read, load and run one series; the run's summary and status (done or skipped)."""
    from ctdid.io import read_volume
    from ctdid.runner import run_did
    from ctdid.runner.console import load_denoiser

    volume = read_volume(job.input, **job.read)
    reference = None
    if job.reference is not None:
        reference = read_volume(job.reference, **{**job.read, "series": None})
    device = job.device
    if device is not None and device.startswith("cuda"):
        device = "cuda"  # the GPU Ray gave this task (CUDA_VISIBLE_DEVICES)
    model, model_info = load_denoiser(job.model, weights=job.weights, card=job.card, device=device)
    kwargs: dict[str, Any] = {
        "reference": reference,
        "model_info": model_info,
        "input_info": {"path": str(job.input), "series": job.read.get("series"), **volume.meta},
    }
    final, part = out / job.name, partial_folder(out, job.name)
    if final.exists() and not overwrite:
        options = dataclasses.replace(job.options, resume=True, overwrite=False)
        summary = run_did(volume, model, out_dir=final, options=options, **kwargs)
        return summary, "skipped" if summary.already_done else "done"
    options = dataclasses.replace(job.options, resume=not overwrite, overwrite=overwrite)
    summary = run_did(volume, model, out_dir=part, options=options, **kwargs)
    _publish(part, final)
    return summary, "done"


def run_series(
    job: SeriesJob, *, out: str | os.PathLike[str], overwrite: bool = False
) -> SeriesResult:
    """Run one series into ``out/<name>``: the body of a batch's Ray task.

    A finished run of the same series and options in ``out/<name>`` is left as it is
    (``"skipped"``); an interrupted one in :func:`partial_folder` (or in ``out/<name>``) is
    finished; otherwise a new run is made in the partial folder and renamed when done.
    ``overwrite`` runs the series again and replaces ``out/<name>``. Never raises for a bad
    series: the error is the result's ``error``.
    """
    import torch

    start = time.perf_counter()
    torch.set_num_threads(max(1, int(job.threads)))
    with warnings.catch_warnings(record=True) as caught, _in_folder(job.cwd):
        warnings.simplefilter("always", UserWarning)  # ctdid's own; hidden ones stay hidden
        try:
            summary, status = _run_one(job, Path(out).absolute(), overwrite=overwrite)
        except CTDIDError as exc:
            error: str | None = str(exc)
        except Exception as exc:  # a bug or a broken file: one row, not the whole batch
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None
    said = tuple(dict.fromkeys(str(w.message) for w in caught))
    seconds = time.perf_counter() - start
    if error is not None:
        one_line = " ".join(error.split())
        return SeriesResult(job.name, "failed", one_line, seconds, warnings=said)
    return SeriesResult(
        job.name, status, "", seconds, len(summary.records), _coverage(summary), said
    )
