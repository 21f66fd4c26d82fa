"""What a run reports: :class:`RunProgress` along the way and :class:`RunSummary` at the end."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ctdid.results import CandidateRecord

__all__ = ["RunProgress", "RunSummary"]


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """Where a run stands, passed to the ``progress`` callback.

    Attributes
    ----------
    stage : {"candidate", "preview", "rendering", "finetune", "render", "slice", "finishing", \
             "done"}
        ``"candidate"``: a candidate was just stored (``record``); ``"preview"``: a preview
        was stored (``record``, ``record.preview``; ``done`` of ``total`` previews, listed in
        ``run.json`` with the last one); ``"rendering"``: a volume's shared trajectory listed
        one more candidate under ``rendering`` (``record``; its weights are saved, a viewer
        renders its slices on demand; ``done`` counts those listed); ``"finetune"``: the
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
    curve : dict, optional
        Which method made each side of the curve and why (``run.json``'s ``curve``:
        ``high``, ``low``, ``reason``, ``verdict``; see :mod:`ctdid.runner.curve_choice`).
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
    curve: dict[str, Any] | None = None

    @property
    def default(self) -> CandidateRecord:
        """The default candidate's record."""
        return next(r for r in self.records if r.id == self.default_id)
