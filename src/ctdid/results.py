"""The result folder of ``ctdid run``: a candidate stack on disk, written as it is made.

Layout of a result folder::

    run.json              what was run (config, versions, model sha256, seed, timings) and the
                          candidate table; rewritten atomically after every candidate, with
                          ``status`` "running" until the run finishes ("done") or fails ("failed")
    input.npy             the noisy input x, float32 HU, (z, y, x)
    candidates/c000.npy   candidate images, float32 HU, (z, y, x), ordered from the
    candidates/c001.npy   high-resolution end (index 0) to the low-noise end; written atomically,
    ...                   one file per candidate so a viewer can show each as soon as it exists
    metrics.csv           one row per candidate (index, strength, direction, noise, MTF50, ...)
    montage.png           candidates side by side at the display window
    tradeoff.png          noise vs resolution along the candidates
    picks.json            picks made in the viewer (one candidate per task)
    exports/              derived DICOM / NIfTI / PNG of picked candidates

Every array is HU, float32, (z, y, x); the spacing in mm is in ``run.json`` (``spacing_zyx``).
Candidates are stored in their order along the curve; ``run.json`` lists each with its
``file``, ``direction`` ("high", "default", "low"), ``strength`` in [-1, 1] (-1 = the noisy
input, 0 = the default output, +1 = the model applied k times), ``step``, ``progress`` and
labels. While running, candidates arrive out of order (both directions grow from the default);
``order`` in ``run.json`` is always the current high-to-low order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import InputError
from ctdid.io.atomic import atomic_file, check_output

__all__ = ["RESULT_FORMAT_VERSION", "CandidateRecord", "ResultReader", "ResultWriter"]

RESULT_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CandidateRecord:
    """One candidate as listed in ``run.json``.

    Attributes
    ----------
    id : int
        Stable identifier (the file is ``candidates/c{id:03d}.npy``); ids are given in the
        order candidates are made, not in curve order.
    direction : {"high", "default", "low"}
    strength : float
        Position on the curve in [-1, 1] (-1 high-resolution bound, 0 default, +1 low-noise
        bound).
    step : int
        Fine-tuning iterations behind the image (0 for the default).
    progress : float
        Progress toward its bound in [0, 1].
    elapsed_s : float
        Seconds from the start of the run until the image was made.
    labels : dict
        Per-candidate figures, e.g. ``noise_hu`` (STD over automatic flat regions) and
        ``mtf50_per_mm``.
    """

    id: int
    direction: str
    strength: float
    step: int
    progress: float
    elapsed_s: float
    labels: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def file(self) -> str:
        """Path of the image relative to the result folder."""
        return f"candidates/c{self.id:03d}.npy"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = {k: float(v) for k, v in self.labels.items()}
        d["file"] = self.file
        return d


def _save_npy_atomic(path: Path, array: NDArray[Any], *, overwrite: bool) -> None:
    with atomic_file(path, overwrite=overwrite) as tmp, tmp.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


class ResultWriter:
    """Write a result folder incrementally.

    Parameters
    ----------
    folder : path
        Must not exist, or be empty, unless ``overwrite`` (then the old ``run.json``,
        ``input.npy`` and candidate files are replaced one by one, and stale candidates
        removed).
    input_hu : ndarray, shape (z, y, x) or (y, x)
        The noisy input in HU.
    spacing : (float, float, float)
        Voxel size (dz, dy, dx) in mm.
    info : mapping
        JSON-serialisable description of the run (config, model, versions, seed, input).
    overwrite : bool
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        input_hu: NDArray[Any],
        spacing: Sequence[float],
        info: Mapping[str, Any],
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder).absolute()
        if self.folder.exists() and any(self.folder.iterdir()) and not overwrite:
            check_output(self.folder, overwrite=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "candidates").mkdir(exist_ok=True)
        if overwrite:
            for stale in (self.folder / "candidates").glob("c*.npy"):
                stale.unlink()
        arr = np.asarray(input_hu, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        self.shape = arr.shape
        _save_npy_atomic(self.folder / "input.npy", arr, overwrite=True)
        self.spacing = [float(s) for s in spacing]
        self.info = dict(info)
        self.records: list[CandidateRecord] = []
        self.status = "running"
        self.extra: dict[str, Any] = {}
        self._write_json()

    def add(
        self,
        image_hu: NDArray[Any],
        *,
        direction: str,
        strength: float,
        step: int,
        progress: float,
        elapsed_s: float,
        labels: Mapping[str, float] | None = None,
    ) -> CandidateRecord:
        """Store one candidate image (HU) and list it; returns its record."""
        arr = np.asarray(image_hu, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.shape != self.shape:
            raise ValueError(f"candidate shape {arr.shape} differs from the input {self.shape}")
        rec = CandidateRecord(
            id=len(self.records),
            direction=direction,
            strength=float(strength),
            step=int(step),
            progress=float(progress),
            elapsed_s=float(elapsed_s),
            labels=dict(labels or {}),
        )
        _save_npy_atomic(self.folder / rec.file, arr, overwrite=True)
        self.records.append(rec)
        self._write_json()
        return rec

    def set_labels(self, record_id: int, labels: Mapping[str, float]) -> None:
        """Replace the labels of a stored candidate."""
        self.records[record_id] = dataclasses.replace(self.records[record_id], labels=labels)
        self._write_json()

    def finish(self, *, status: str = "done", **extra: Any) -> None:
        """Mark the run finished (or failed) and add final entries to ``run.json``."""
        self.status = status
        self.extra.update(extra)
        self._write_json()

    def order(self) -> list[int]:
        """Candidate ids in curve order (high-resolution end first)."""
        rank = {"high": 0, "default": 1, "low": 2}
        return [
            r.id for r in sorted(self.records, key=lambda r: (r.strength, rank.get(r.direction, 1)))
        ]

    def _write_json(self) -> None:
        doc = {
            "format": "ctdid-result",
            "format_version": RESULT_FORMAT_VERSION,
            "status": self.status,
            "shape_zyx": list(self.shape),
            "spacing_zyx": self.spacing,
            **self.info,
            **self.extra,
            "candidates": [r.to_json() for r in self.records],
            "order": self.order(),
        }
        with atomic_file(self.folder / "run.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class ResultReader:
    """Read a result folder (finished or still being written).

    Parameters
    ----------
    folder : path
        A folder written by :class:`ResultWriter`.

    Raises
    ------
    InputError
        If the folder is missing, has no ``run.json``, or ``run.json`` is broken.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).absolute()
        if not self.folder.is_dir():
            raise InputError("no such result folder", path=self.folder)
        self.refresh()

    def refresh(self) -> None:
        """Re-read ``run.json`` (a running job adds candidates)."""
        path = self.folder / "run.json"
        if not path.is_file():
            raise InputError("not a ctdid result folder (no run.json)", path=self.folder)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"run.json is unreadable: {exc}", path=path) from exc
        if doc.get("format") != "ctdid-result":
            raise InputError("run.json is not a ctdid result", path=path)
        self.doc: dict[str, Any] = doc
        self.records = {
            int(c["id"]): CandidateRecord(
                id=int(c["id"]),
                direction=str(c["direction"]),
                strength=float(c["strength"]),
                step=int(c["step"]),
                progress=float(c["progress"]),
                elapsed_s=float(c["elapsed_s"]),
                labels=dict(c.get("labels", {})),
            )
            for c in doc.get("candidates", [])
        }

    @property
    def status(self) -> str:
        return str(self.doc.get("status", "unknown"))

    @property
    def spacing(self) -> tuple[float, float, float]:
        dz, dy, dx = self.doc["spacing_zyx"]
        return (float(dz), float(dy), float(dx))

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.doc["shape_zyx"]
        return (int(z), int(y), int(x))

    def ordered(self) -> list[CandidateRecord]:
        """Candidates in curve order, high-resolution end first."""
        return [self.records[i] for i in self.doc.get("order", []) if i in self.records]

    def default_record(self) -> CandidateRecord | None:
        for r in self.records.values():
            if r.direction == "default":
                return r
        return None

    def _load(self, rel: str, mmap: bool) -> NDArray[np.float32]:
        path = self.folder / rel
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read: {exc}", path=path) from exc
        if arr.dtype != np.float32 or arr.ndim != 3:
            raise InputError(f"expected float32 (z, y, x), got {arr.dtype} {arr.shape}", path=path)
        return arr

    def input(self, *, mmap: bool = True) -> NDArray[np.float32]:
        """The noisy input, HU (z, y, x)."""
        return self._load("input.npy", mmap)

    def candidate(self, record_id: int, *, mmap: bool = True) -> NDArray[np.float32]:
        """A candidate image, HU (z, y, x)."""
        if record_id not in self.records:
            raise InputError(f"no candidate {record_id}", path=self.folder)
        return self._load(self.records[record_id].file, mmap)
