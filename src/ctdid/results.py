"""The result folder of ``ctdid run``: a candidate stack on disk, written as it is made.

Layout of a result folder::

    run.json              what was run (config, versions, model sha256, seed, timings) and the
                          candidate table; rewritten atomically after every candidate, with
                          ``status`` "running" until the run finishes ("done") or fails ("failed")
    input.npy             the noisy input x, float32 HU, (z, y, x)
    candidates/c000.npy   candidate images, float32 HU, (z, y, x), ordered from the
    candidates/c001.npy   high-resolution end (index 0) to the low-noise end; written atomically,
    ...                   one file per candidate so a viewer can show each as soon as it exists
    candidates/c001.weights.safetensors
                          volumes in the shared trajectory: the fine-tuned state dict that made
                          candidate 1 (the pretrained one for the default), to re-apply it to
                          other slices or scans (:meth:`ResultReader.candidate_weights`)
    resume.json           volumes: progress of the run (finished slices, rendered slice batches,
                          weights made), rewritten atomically after each finished unit, read by
                          ``ctdid run --resume``
    partial/              volumes: candidate volumes (and the low-noise bound) being filled
                          slice by slice (``.npy`` memory maps); a complete one is moved to
                          ``candidates/`` and listed in ``run.json``; removed when the run is done
    metrics.csv           one row per candidate (index, strength, direction, noise, MTF50, ...)
    montage.png           candidates side by side at the display window
    tradeoff.png          noise vs resolution along the candidates
    picks.json            picks made in the viewer (one candidate per task)
    exports/              derived DICOM / NIfTI / PNG of picked candidates
    previews/p000.npy     single slices with previews on, while DID runs: pixel blends of the
    ...                   input, the default and t_low at s = +-i/n, listed under ``previews``
                          in ``run.json`` (``"preview": true``); each is removed when a DID
                          candidate replaces it, and all are gone when the run ends

Every array is HU, float32, (z, y, x); the spacing in mm is in ``run.json`` (``spacing_zyx``).
Candidates are stored in their order along the curve; ``run.json`` lists each with its
``file``, ``direction`` ("high", "default", "low"), ``strength`` in [-1, 1] (-1 = the noisy
input, 0 = the default output, +1 = the model applied k times), ``step``, ``progress`` and
labels. While running, candidates arrive out of order (both directions grow from the default);
``order`` in ``run.json`` is always the current high-to-low order. Only complete candidate
files are listed, so a reader never sees a half-written volume. Previews are never listed
under ``candidates`` nor in ``order``: a finished run with previews equals one without, except
that ``run.json`` records ``previews_shown`` (how many there were and when they were ready).

While a volume's shared trajectory runs, ``run.json`` also lists under ``rendering`` the
candidates whose weights are saved but whose volume is not complete yet (the default at once,
each fine-tuned candidate as it is made; strength and progress measured on the training
slices). A viewer renders their slices on demand from the weights; each leaves ``rendering``
when its volume is listed under ``candidates``, and a finished run lists none. With previews
on, it also lists under ``previews``, from the start until the fine-tuning ends, pixel-blend
previews with no file (``"on_demand": true``): a viewer renders the slice it shows as the
blend of that slice of the input, the default and t_low; each DID candidate replaces the
previews of its side it has reached, as for single slices.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import InputError
from ctdid.io.atomic import atomic_file, check_output

__all__ = [
    "RESULT_FORMAT_VERSION",
    "STATE_FILE",
    "CandidateRecord",
    "ResultReader",
    "ResultWriter",
]

RESULT_FORMAT_VERSION = 1
#: The resume state of a volume run, beside ``run.json``.
STATE_FILE = "resume.json"
_PARTIAL = "partial"
_PREVIEWS = "previews"


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
    weights : str or None
        Path, relative to the result folder, of the state dict (safetensors) that made the
        image, when it was saved (volumes in the shared trajectory); None otherwise.
    preview : bool
        True for a preview (a pixel blend shown while DID runs; listed under ``previews`` in
        ``run.json``, file ``previews/p{id:03d}.npy``, ids counted apart from the
        candidates'); False for a candidate (the key is then left out of ``run.json``).
    on_demand : bool
        True for a preview of a volume's shared trajectory: it has no file; a viewer renders
        the slice it shows as the blend of that slice of the input, the default and t_low
        (:func:`ctdid.core.did.preview_image`). Left out of ``run.json`` when False.
    """

    id: int
    direction: str
    strength: float
    step: int
    progress: float
    elapsed_s: float
    labels: Mapping[str, float] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    preview: bool = False
    on_demand: bool = False

    @property
    def file(self) -> str:
        """Path of the image relative to the result folder."""
        if self.preview:
            return f"{_PREVIEWS}/p{self.id:03d}.npy"
        return f"candidates/c{self.id:03d}.npy"

    def pick_entry(self, task: str, **extra: Any) -> dict[str, Any]:
        """This candidate as the entry of ``task`` in ``picks.json``, then ``extra``'s keys."""
        entry: dict[str, Any] = {
            "task": task,
            "candidate": self.id,
            "file": self.file,
            "direction": self.direction,
            "strength": self.strength,
            "labels": dict(self.labels),
        }
        if self.preview:
            entry["preview"] = True
        entry.update(extra)
        return entry

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.preview:
            del d["preview"]
        if not self.on_demand:
            del d["on_demand"]
        d["labels"] = {k: float(v) for k, v in self.labels.items()}
        d["file"] = self.file
        return d


def _save_npy_atomic(path: Path, array: NDArray[Any], *, overwrite: bool) -> None:
    with atomic_file(path, overwrite=overwrite) as tmp, tmp.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


def _weights_file(record_id: int) -> str:
    """Path, relative to the result folder, of candidate ``record_id``'s weights file."""
    return f"candidates/c{record_id:03d}.weights.safetensors"


def _records_from_doc(doc: Mapping[str, Any], key: str = "candidates") -> list[CandidateRecord]:
    return [
        CandidateRecord(
            id=int(c["id"]),
            direction=str(c["direction"]),
            strength=float(c["strength"]),
            step=int(c["step"]),
            progress=float(c["progress"]),
            elapsed_s=float(c["elapsed_s"]),
            labels=dict(c.get("labels", {})),
            weights=None if c.get("weights") is None else str(c["weights"]),
            preview=bool(c.get("preview", False)),
            on_demand=bool(c.get("on_demand", False)),
        )
        for c in doc.get(key, None) or []
    ]


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
    resume : bool, optional
        Continue the run in ``folder``: keep its listed candidates (read from ``run.json``),
        their files, weights, ``partial/`` and the resume state; ``input.npy`` is written only
        if missing. The caller checks beforehand that the run is the same one.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        input_hu: NDArray[Any],
        spacing: Sequence[float],
        info: Mapping[str, Any],
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        self.folder = Path(folder).absolute()
        if self.folder.exists() and any(self.folder.iterdir()) and not (overwrite or resume):
            check_output(self.folder, overwrite=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "candidates").mkdir(exist_ok=True)
        self.records: list[CandidateRecord] = []
        self.previews: list[CandidateRecord] = []
        #: Candidates with saved weights whose volume is not listed yet (shared trajectory).
        self.rendering: list[CandidateRecord] = []
        self._preview_ids = 0
        if (overwrite or resume) and (self.folder / _PREVIEWS).is_dir():
            shutil.rmtree(self.folder / _PREVIEWS)  # an interrupted run's previews are stale
        if resume:
            try:
                doc = json.loads((self.folder / "run.json").read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot resume, run.json is unreadable: {exc}") from None
            self.records = sorted(_records_from_doc(doc), key=lambda r: r.id)
            if [r.id for r in self.records] != list(range(len(self.records))):
                raise InputError("cannot resume: run.json lists candidate ids with gaps")
        elif overwrite:
            for pattern in ("c*.npy", "c*.weights.safetensors"):
                for stale in (self.folder / "candidates").glob(pattern):
                    stale.unlink()
            if (self.folder / _PARTIAL).is_dir():
                shutil.rmtree(self.folder / _PARTIAL)
            (self.folder / STATE_FILE).unlink(missing_ok=True)
        arr = np.asarray(input_hu, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        self.shape = arr.shape
        if not (resume and (self.folder / "input.npy").is_file()):
            _save_npy_atomic(self.folder / "input.npy", arr, overwrite=True)
        self.spacing = [float(s) for s in spacing]
        self.info = dict(info)
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

    # -- previews: shown while DID runs, replaced by its candidates

    def add_preview(
        self,
        image_hu: NDArray[Any],
        *,
        direction: str,
        strength: float,
        progress: float,
        elapsed_s: float,
        labels: Mapping[str, float] | None = None,
        write_json: bool = True,
    ) -> CandidateRecord:
        """Store a preview image (HU) in ``previews/`` and list it under ``previews``.

        ``write_json=False`` defers rewriting ``run.json`` (several previews at once: the
        last one writes it). Returns its record (``preview=True``).
        """
        arr = np.asarray(image_hu, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.shape != self.shape:
            raise ValueError(f"preview shape {arr.shape} differs from the input {self.shape}")
        rec = CandidateRecord(
            id=self._preview_ids, direction=direction, strength=float(strength), step=0,
            progress=float(progress), elapsed_s=float(elapsed_s), labels=dict(labels or {}),
            preview=True,
        )  # fmt: skip
        self._preview_ids += 1
        (self.folder / _PREVIEWS).mkdir(exist_ok=True)
        _save_npy_atomic(self.folder / rec.file, arr, overwrite=True)
        self.previews.append(rec)
        if write_json:
            self._write_json()
        return rec

    def list_preview_on_demand(
        self,
        *,
        direction: str,
        strength: float,
        elapsed_s: float,
        write_json: bool = True,
    ) -> CandidateRecord:
        """List a preview of a volume that has no file: a viewer renders its slices on demand
        (the blend of the input, the default and t_low at ``strength``).

        Returns its record (``preview=True``, ``on_demand=True``, progress ``|strength|``).
        """
        if direction not in ("high", "low") or not 0.0 < abs(float(strength)) <= 1.0:
            raise ValueError(f"not a preview: direction {direction!r}, strength {strength!r}")
        rec = CandidateRecord(
            id=self._preview_ids, direction=direction, strength=float(strength), step=0,
            progress=abs(float(strength)), elapsed_s=float(elapsed_s), preview=True,
            on_demand=True,
        )  # fmt: skip
        self._preview_ids += 1
        self.previews.append(rec)
        if write_json:
            self._write_json()
        return rec

    def drop_previews(self, ids: Sequence[int] | None = None, *, write_json: bool = True) -> None:
        """Unlist previews (all when ``ids`` is None) and delete their files.

        ``run.json`` is rewritten before the files go, so a reader never lists a missing one.
        """
        wanted = None if ids is None else {int(i) for i in ids}
        gone = [r for r in self.previews if wanted is None or r.id in wanted]
        if not gone:
            return
        self.previews = [r for r in self.previews if r not in gone]
        if write_json:
            self._write_json()
        self._delete_previews(gone)

    def _delete_previews(self, gone: Sequence[CandidateRecord]) -> None:
        for rec in gone:
            (self.folder / rec.file).unlink(missing_ok=True)
        if not self.previews and (self.folder / _PREVIEWS).is_dir():
            shutil.rmtree(self.folder / _PREVIEWS, ignore_errors=True)

    # -- volumes written slice by slice, weights and the resume state

    def list_rendering(self, rec: CandidateRecord) -> None:
        """List a candidate whose weights are saved and whose volume is still being made.

        ``rec.weights`` must name its saved weights file and ``rec.id`` must not be listed
        under ``candidates`` yet; a record of the same id is replaced. :meth:`commit` of that
        id unlists it. A viewer renders its slices on demand from the weights.
        """
        if rec.weights is None or not (self.folder / rec.weights).is_file():
            raise ValueError(f"candidate {rec.id} has no saved weights file")
        if rec.preview or any(r.id == rec.id for r in self.records):
            raise ValueError(f"candidate {rec.id} is a preview or already listed")
        self.rendering = sorted([r for r in self.rendering if r.id != rec.id] + [rec],
                                key=lambda r: r.id)  # fmt: skip
        self._write_json()

    def partial_file(self, name: str) -> Path:
        """Path of a volume being filled (``partial/<name>``); see :meth:`open_partial`."""
        return self.folder / _PARTIAL / name

    def open_partial(self, name: str) -> np.memmap[Any, np.dtype[np.float32]]:
        """Open ``partial/<name>`` for writing slices, creating it (zeros) if missing.

        Parameters
        ----------
        name : str
            File name, e.g. ``"c003.npy"`` (the future candidate 3).

        Returns
        -------
        numpy.memmap
            A float32 (z, y, x) ``.npy`` memory map of the input's shape; write slices
            into it and ``flush()``. Only the slices touched are held in memory.
        """
        path = self.partial_file(name)
        if path.is_file():
            try:
                mm = np.lib.format.open_memmap(path, mode="r+")
            except (OSError, ValueError):
                mm = None
            if mm is not None and mm.dtype == np.float32 and mm.shape == self.shape:
                return mm
            del mm
            path.unlink()
        path.parent.mkdir(exist_ok=True)
        with atomic_file(path, overwrite=False) as tmp:  # never a half-made header
            made = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=self.shape)
            made.flush()
            del made
        return np.lib.format.open_memmap(path, mode="r+")

    def stored_file(self, record_id: int) -> Path | None:
        """The complete image of a future candidate ``record_id``, if there is one.

        ``candidates/cNNN.npy`` when :meth:`commit` already moved it there (a run stopped
        before listing it), else None.
        """
        final = self.folder / f"candidates/c{record_id:03d}.npy"
        return final if final.is_file() else None

    def commit(
        self,
        record_id: int,
        *,
        direction: str,
        strength: float,
        step: int,
        progress: float,
        elapsed_s: float,
        labels: Mapping[str, float] | None = None,
        weights: str | None = None,
    ) -> CandidateRecord:
        """Move the complete ``partial/cNNN.npy`` to ``candidates/`` and list it.

        ``record_id`` must be the next id (the number of listed candidates). If the partial
        file is gone but ``candidates/cNNN.npy`` exists (an earlier commit stopped before
        listing), that file is listed.
        """
        if record_id != len(self.records):
            raise ValueError(f"next candidate id is {len(self.records)}, got {record_id}")
        rec = CandidateRecord(
            id=record_id,
            direction=direction,
            strength=float(strength),
            step=int(step),
            progress=float(progress),
            elapsed_s=float(elapsed_s),
            labels=dict(labels or {}),
            weights=weights,
        )
        partial = self.partial_file(f"c{record_id:03d}.npy")
        if partial.is_file():
            os.replace(partial, self.folder / rec.file)
        elif self.stored_file(record_id) is None:
            raise ValueError(f"candidate {record_id} has no image (no {partial.name})")
        self.records.append(rec)
        self.rendering = [r for r in self.rendering if r.id != record_id]
        self._write_json()
        return rec

    def save_weights(self, record_id: int, state_dict: Mapping[str, Any]) -> str:
        """Write a candidate's state dict (tensors) atomically as safetensors.

        Returns
        -------
        str
            The path relative to the result folder, ``candidates/cNNN.weights.safetensors``.
        """
        import torch
        from safetensors.torch import save_file

        rel = _weights_file(record_id)
        tensors = {
            str(k): torch.as_tensor(v).detach().to("cpu").contiguous().clone()
            for k, v in state_dict.items()
        }
        with atomic_file(self.folder / rel, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "ctdid-candidate-weights"})
        return rel

    def write_state(self, state: Mapping[str, Any]) -> None:
        """Write the resume state (``resume.json``) atomically."""
        with atomic_file(self.folder / STATE_FILE, overwrite=True) as tmp:
            tmp.write_text(json.dumps(state, indent=1, default=_json_default))

    def read_state(self) -> dict[str, Any] | None:
        """The resume state, or None when there is none (or it is unreadable)."""
        try:
            doc = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def set_labels(self, record_id: int, labels: Mapping[str, float]) -> None:
        """Replace the labels of a stored candidate."""
        self.records[record_id] = dataclasses.replace(self.records[record_id], labels=labels)
        self._write_json()

    def finish(self, *, status: str = "done", **extra: Any) -> None:
        """Mark the run finished (or failed) and add final entries to ``run.json``.

        A finished run (``status="done"``) drops its ``partial/`` folder and lists no
        ``rendering`` candidates; any run drops the previews still listed (a failed one keeps
        ``rendering``: those weights are saved and can still be rendered).
        """
        self.status = status
        self.extra.update(extra)
        if status == "done":
            self.rendering = []
        gone, self.previews = self.previews, []
        if status == "done" and (self.folder / _PARTIAL).is_dir():
            shutil.rmtree(self.folder / _PARTIAL)
        self._write_json()
        self._delete_previews(gone)

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
        if self.previews:
            doc["previews"] = [r.to_json() for r in self.previews]
        if self.rendering:
            doc["rendering"] = [r.to_json() for r in self.rendering]
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
        self.records = {r.id: r for r in _records_from_doc(doc)}
        #: Previews listed now (a running single-slice DID run with previews), by id.
        self.previews = {r.id: r for r in _records_from_doc(doc, "previews")}
        #: Candidates whose weights are saved and whose volume is not listed yet, by id.
        self.rendering = {
            r.id: r
            for r in _records_from_doc(doc, "rendering")
            if r.id not in self.records and r.weights is not None
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

    def preview(self, record_id: int, *, mmap: bool = True) -> NDArray[np.float32]:
        """A preview image listed now, HU (z, y, x); InputError once it was replaced."""
        if record_id not in self.previews:
            raise InputError(f"no preview {record_id} (replaced by DID's candidates?)",
                             path=self.folder)  # fmt: skip
        if self.previews[record_id].on_demand:
            raise InputError(f"preview {record_id} has no file: it is rendered on demand, "
                             "slice by slice, by the viewer", path=self.folder)  # fmt: skip
        return self._load(self.previews[record_id].file, mmap)

    def candidate_weights(self, record_id: int) -> dict[str, Any]:
        """The state dict (name -> CPU tensor) that made a candidate (listed or rendering).

        Load it into the run's model (``model.load_state_dict(...)``) or apply it to other
        images with :meth:`ctdid.core.InteractiveDenoiser.apply`.

        Raises
        ------
        InputError
            No such candidate, its weights were not saved, or the file is unreadable.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        rec = self.records.get(record_id) or self.rendering.get(record_id)
        if rec is None:
            raise InputError(f"no candidate {record_id}", path=self.folder)
        if rec.weights is None:
            raise InputError(
                f"candidate {record_id} has no saved weights (only volumes in the shared "
                "trajectory save them)",
                path=self.folder,
            )
        path = self.folder / rec.weights
        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"cannot read the weights: {exc}", path=path) from None
