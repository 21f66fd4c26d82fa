"""Resuming a run: the one place that decides whether a result folder continues or starts.

:func:`open_result` reads the folder's ``run.json``, refuses one that holds another run
(other options, model weights or input), returns the summary of a finished one, and
otherwise opens the :class:`~ctdid.results.ResultWriter` that continues or starts it. The
finished units of an interrupted volume (slice batches, slices, the fine-tuning) are listed
in ``resume.json``, which :mod:`ctdid.runner.stream` reads and writes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ctdid.errors import InputError
from ctdid.results import ResultReader, ResultWriter
from ctdid.runner.summary import RunProgress, RunSummary
from ctdid.volume import CTVolume

__all__ = ["Opened", "check_same_run", "finished_run", "open_result", "prior_run"]

#: Files of a finished run that a resumed or overwritten one writes again.
STALE_OUTPUTS = ("metrics.csv", "montage.png", "tradeoff.png", "picks.json")


def _json_normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def prior_run(folder: Path) -> dict[str, Any] | None:
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


def check_same_run(
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


def finished_run(
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
        curve=dict(doc["curve"]) if isinstance(doc.get("curve"), dict) else None,
    )


@dataclasses.dataclass(frozen=True)
class Opened:
    """A result folder ready to write: the writer, and whether it continues a volume's run."""

    writer: ResultWriter
    resuming: bool


def open_result(
    folder: Path,
    volume: CTVolume,
    info: dict[str, Any],
    *,
    overwrite: bool,
    resume: bool,
    start: float,
    progress: Callable[[RunProgress], object] | None,
) -> Opened | RunSummary:
    """Open ``folder`` for a run described by ``info`` (the future ``run.json``).

    With ``resume``, a folder that holds the same run continues (volumes) or starts again
    (a single slice), ``info["resumed"]`` is set, and a finished run gives its
    :class:`RunSummary` (``already_done``) without touching the folder. Resumed or
    overwritten folders lose their figures, pick and exports, which the run writes again.

    Raises
    ------
    InputError
        ``resume`` on a folder holding another run, or not a result folder.
    OutputExistsError
        A folder with files and neither ``overwrite`` nor ``resume``.
    """
    resuming = False
    if resume:
        prior = prior_run(folder)
        if prior is not None:
            check_same_run(prior, folder, info["config"], info["model"], info["input_check"])
            if prior.get("status") == "done":
                return finished_run(folder, prior, start, progress)
            resuming = True
            info["resumed"] = True
    z = volume.shape[0]
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
        for name in STALE_OUTPUTS:
            (folder / name).unlink(missing_ok=True)
        if (folder / "exports").is_dir():
            shutil.rmtree(folder / "exports")
    return Opened(writer, resuming and z > 1)
