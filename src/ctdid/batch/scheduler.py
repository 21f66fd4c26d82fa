"""The batch itself: one Ray task per series, ``batch.csv``, a progress bar and a summary."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ctdid.batch.jobs import SeriesJob, SeriesResult, check_defaults, make_job, run_series
from ctdid.batch.ray_cluster import init_ray
from ctdid.batch.series import BATCH_FILE, CSV_COLUMNS, SeriesSpec
from ctdid.errors import CTDIDError, CTDIDWarning, InputError


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """What a batch did.

    Attributes
    ----------
    folder : Path
        The output folder (one result folder per series and ``batch.csv``).
    results : tuple of SeriesResult
        One per series, in the order of the folder or the manifest.
    seconds : float
        Wall time of the batch, Ray's start included.
    csv : Path
        ``batch.csv``.
    """

    folder: Path
    results: tuple[SeriesResult, ...]
    seconds: float
    csv: Path

    def count(self, status: str) -> int:
        """Series with this status (``"done"``, ``"skipped"`` or ``"failed"``)."""
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> tuple[SeriesResult, ...]:
        """The series that failed."""
        return tuple(r for r in self.results if r.status == "failed")


def _write_csv(path: Path, results: Sequence[SeriesResult]) -> None:
    from ctdid.io.atomic import atomic_file

    with atomic_file(path, overwrite=True) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.row() for r in results)


def _uses_gpu(device: str | None) -> bool:
    return device is not None and device.startswith("cuda")


def _execute(
    ray: Any,
    jobs: Sequence[SeriesJob],
    *,
    out: Path,
    overwrite: bool,
    limit: int | None,
    on_result: Callable[[SeriesResult], None],
) -> None:
    """Run the jobs as Ray tasks, at most ``limit`` at a time; ``on_result`` as each ends."""
    task = ray.remote(run_series)
    queue = list(jobs)
    pending: dict[Any, SeriesJob] = {}
    try:
        while queue or pending:
            while queue and (limit is None or len(pending) < limit):
                job = queue.pop(0)
                ref = task.options(
                    num_cpus=max(1, job.threads),
                    num_gpus=1 if _uses_gpu(job.device) else 0,
                    max_retries=1,  # a worker lost (node gone): once more, resuming
                ).remote(job, out=out, overwrite=overwrite)
                pending[ref] = job
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    result = SeriesResult(job.name, "failed", f"the Ray task failed: {first}")
                on_result(result)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _plan(
    specs: Sequence[SeriesSpec], **job_options: Any
) -> tuple[list[SeriesJob], dict[str, SeriesResult]]:
    """The jobs of the series whose options are good, and a failed row for each other."""
    jobs, failed = [], {}
    for spec in specs:
        try:
            jobs.append(make_job(spec, **job_options))
        except InputError as exc:
            failed[spec.name] = SeriesResult(spec.name, "failed", f"bad options: {exc}")
    return jobs, failed


def _warn_once(results: Sequence[SeriesResult]) -> None:
    """Each distinct warning of the tasks once, with the series that gave it."""
    said: dict[str, list[str]] = {}
    for r in results:
        for message in r.warnings:
            said.setdefault(message, []).append(r.series)
    for message, names in said.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warnings.warn(f"{message} (series {shown})", CTDIDWarning, stacklevel=3)


def run_batch(
    specs: Sequence[SeriesSpec],
    *,
    out: str | os.PathLike[str],
    defaults: Mapping[str, Any] | None = None,
    read: Mapping[str, Any] | None = None,
    device: str | None = None,
    threads: int = 1,
    workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: Callable[[SeriesResult, int, int], object] | None = None,
    on_start: Callable[[int], object] | None = None,
) -> BatchSummary:
    """Run every series as one Ray task into ``out/<name>``; write ``out/batch.csv``.

    Parameters
    ----------
    specs : sequence of SeriesSpec
        The series (:func:`find_series`).
    out : path
        Output folder; made if missing.
    defaults : mapping, optional
        Options of every series (keys of :data:`DEFAULTS`, as ``ctdid run`` names them:
        ``model``, ``mode``, ``method``, ``candidates``, ...); a manifest row overrides them.
    read : mapping, optional
        Keyword arguments of :func:`ctdid.io.read_volume` for every series (raw ``shape``,
        ``dtype``, ``hu_offset``, ...).
    device : str, optional
        torch device of the tasks; ``"cuda"`` gives each task one GPU.
    threads : int
        torch threads (and Ray CPUs) per task. Default 1.
    workers : int, optional
        Series run at the same time; a local Ray gets ``workers * threads`` CPUs. Default:
        one per core here, as many as the cluster takes with ``address``.
    address : str, optional
        A running Ray cluster to join (see :func:`init_ray`).
    overwrite : bool
        Run every series again, replacing finished result folders.
    progress : callable, optional
        Called as ``progress(result, done, total)`` after each series.
    on_start : callable, optional
        Called with the number of series once the options are checked, Ray runs and the
        output folder exists (before the first ``progress``).

    Returns
    -------
    BatchSummary
        One result per series; ``batch.csv`` lists them in the series' order.

    Raises
    ------
    CTDIDError
        Ray missing or unreachable, a CUDA device without a GPU in the cluster, or the
        output folder cannot be made.
    """
    start = time.perf_counter()
    folder = Path(out).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError("the output exists and is not a folder", path=folder)
    check_defaults(defaults or {})
    jobs, done = _plan(specs, defaults=defaults, read=read, device=device, threads=threads)
    order = [s.name for s in specs]
    csv_path = folder / BATCH_FILE

    def record(result: SeriesResult) -> None:
        done[result.series] = result
        _write_csv(csv_path, [done[n] for n in order if n in done])
        if progress is not None:
            progress(result, len(done), len(order))

    ray: Any = None
    started = False
    if jobs:  # Ray first: without it, nothing is written
        ray, started = init_ray(workers=workers, threads=threads, address=address)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if on_start is not None:
            on_start(len(order))
        for result in list(done.values()):  # bad options: failed without a task
            record(result)
        if jobs:
            if _uses_gpu(device) and ray.cluster_resources().get("GPU", 0) < 1:
                raise CTDIDError(f"--device {device}, but the Ray cluster has no GPU")
            _execute(ray, jobs, out=folder, overwrite=overwrite, limit=workers, on_result=record)
    finally:
        if started:
            ray.shutdown()
    results = tuple(done[n] for n in order)
    _write_csv(csv_path, results)
    _warn_once(results)
    return BatchSummary(folder, results, time.perf_counter() - start, csv_path)


def run_batch_with_progress(
    specs: Sequence[SeriesSpec], *, console: Any, **kwargs: Any
) -> BatchSummary:
    """:func:`run_batch` with a rich progress bar over the series on ``console``.

    The bar appears once Ray runs, so a bad option or a missing Ray prints only its error.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    tally = {"done": 0, "skipped": 0, "failed": 0}
    bar = Progress(*columns, console=console, transient=False)
    task = bar.add_task("series", total=len(specs), tally="")

    def update(result: SeriesResult, done: int, total: int) -> None:
        tally[result.status] = tally.get(result.status, 0) + 1
        text = ", ".join(f"{n} {k}" for k, n in tally.items() if n)
        bar.update(task, completed=done, total=total, tally=text)

    try:  # the bar appears once Ray runs (a bad option prints only its error)
        return run_batch(specs, progress=update, on_start=lambda n: bar.start(), **kwargs)
    finally:
        if bar.live.is_started:
            bar.stop()


def summary_table(summary: BatchSummary) -> Any:
    """A rich table of the series: status, seconds, candidates, coverage, error."""
    from rich.table import Table

    counts = ", ".join(f"{summary.count(s)} {s}" for s in ("done", "skipped", "failed"))
    table = Table(title=f"ctdid batch: {len(summary.results)} series ({counts})")
    for col in ("series", "status", "seconds", "candidates", "coverage", "error"):
        table.add_column(col, justify="right" if col in ("seconds", "candidates") else "left")
    for r in summary.results:
        cover = " ".join(f"{k} {v:.2f}" for k, v in sorted(r.coverage.items()))
        seconds = f"{r.seconds:.1f}" if math.isfinite(r.seconds) else "n/a"
        table.add_row(
            r.series, r.status, seconds, "" if r.candidates is None else str(r.candidates),
            cover, r.error,
        )  # fmt: skip
    return table
