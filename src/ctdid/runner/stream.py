"""Streaming candidates into a result folder, with labels, progress and resume state."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import InputError
from ctdid.results import STATE_FILE, CandidateRecord, ResultWriter
from ctdid.runner.labelling import CandidateLabeller
from ctdid.runner.summary import RunProgress
from ctdid.volume import CTVolume

__all__ = ["CandidateStream"]


class CandidateStream:
    """Candidates into the result folder as they are made, each with its quality labels.

    The labels are set up on the default candidate (:class:`~ctdid.runner.labelling.
    CandidateLabeller`); :meth:`store` adds a candidate held in memory, :meth:`commit` one
    rendered to ``partial/`` (volumes). For volumes the finished units are recorded in
    ``resume.json`` (:meth:`load_state`, :meth:`save_state`) so that an interrupted run
    continues where it stopped.
    """

    def __init__(
        self,
        writer: ResultWriter,
        volume: CTVolume,
        reference: CTVolume | None,
        roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None,
        start: float,
        progress: Callable[[RunProgress], object] | None,
        *,
        resuming: bool = False,
        batch_size: int = 8,
    ) -> None:
        self.writer, self.volume, self.reference, self.roi = writer, volume, reference, roi
        self.start, self.progress = start, progress
        self.labeller: CandidateLabeller | None = None
        self.labels_s = 0.0
        self.first_s: float | None = None
        self.default_id = -1
        self.extra_labels: dict[str, dict[str, float]] = {}
        self.resuming = resuming
        self.batch_size = int(batch_size)
        self.state: dict[str, Any] = {}
        self.rendered_slices = 0
        self.render_total: int | None = None
        self.preview_n = 0  # previews per direction of the run (0: none)
        self.previews_shown = 0
        self.previews_ready_s: float | None = None
        self._previews: dict[int, Any] = {}  # listed preview id -> its core Candidate
        self._unlabelled: tuple[int, NDArray[np.float32]] | None = None  # the default's

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
        made: Any = None,
        label_later: bool = False,
    ) -> CandidateRecord:
        """Label and list a candidate held in memory.

        ``made``: the engine's :class:`~ctdid.core.Candidate`; the previews it replaces are
        dropped before the progress callback hears of it. ``label_later`` (the default with
        previews coming): list it unlabelled, and label it (which sets the labels up, most
        of a second on a 512 x 512 slice) after the previews (:meth:`label_deferred`).
        """
        is_default = direction == "default"
        if not is_default:
            self.label_deferred()
        labels = {} if label_later else self._label(image, is_default=is_default)
        rec = self.writer.add(
            image,
            direction=direction,
            strength=strength,
            step=step,
            progress=progress,
            elapsed_s=elapsed,
            labels=labels,
        )
        if label_later:
            self._unlabelled = (rec.id, image)
        if made is not None:
            self.replace_previews(made)
        return self._stored(rec, total)

    def label_deferred(self) -> None:
        """Label the default listed with ``label_later`` (if any) and rewrite its record."""
        if self._unlabelled is None:
            return
        rid, image = self._unlabelled
        self._unlabelled = None
        self.writer.set_labels(rid, self._label(image, is_default=True))

    def _stored(self, rec: CandidateRecord, total: int | None) -> CandidateRecord:
        if rec.direction == "default":
            self.default_id = rec.id
        if self.first_s is None:
            self.first_s = time.perf_counter() - self.start
        n = len(self.writer.records)
        self.emit("candidate", n, None if total is None else max(total, n), rec)
        return rec

    # -- previews (single slices): shown at once, replaced by DID's candidates

    def store_preview(self, cand: Any, *, expected: int) -> CandidateRecord:
        """List a preview candidate (``cand.preview``) in ``previews/``, unlabelled.

        ``run.json`` is rewritten once, with the ``expected``-th preview, so that the whole
        range appears at once; ``previews_ready_s`` records when (seconds from the start).
        """
        last = self.previews_shown + 1 >= expected
        rec = self.writer.add_preview(
            np.asarray(cand.image), direction=cand.direction, strength=cand.strength,
            progress=cand.progress, elapsed_s=time.perf_counter() - self.start,
            write_json=last,
        )  # fmt: skip
        self._previews[rec.id] = cand
        self.previews_shown += 1
        if last:
            self.previews_ready_s = time.perf_counter() - self.start
        self.emit("preview", self.previews_shown, expected, rec)
        if last:
            self.label_deferred()
        return rec

    def list_volume_previews(self, *, n: int, directions: Sequence[str]) -> None:
        """List the on-demand previews of a volume (no files): ``n`` per direction at
        ``s = +-i/n``, all in one rewrite of ``run.json``; the viewer renders their slices."""
        self.preview_n = int(n)
        grid = [
            (direction, (-1.0 if direction == "high" else 1.0) * i / self.preview_n)
            for direction in directions
            for i in range(1, self.preview_n + 1)
        ]
        made = []
        for j, (direction, strength) in enumerate(grid):
            rec = self.writer.list_preview_on_demand(
                direction=direction, strength=strength,
                elapsed_s=time.perf_counter() - self.start, write_json=j == len(grid) - 1,
            )  # fmt: skip
            self._previews[rec.id] = SimpleNamespace(
                preview=True, direction=direction, strength=rec.strength
            )
            made.append(rec)
        if not made:
            return
        self.previews_shown += len(made)
        self.previews_ready_s = time.perf_counter() - self.start
        self.emit("preview", self.previews_shown, self.previews_shown, made[-1])

    def replace_previews(self, cand: Any | None) -> None:
        """Drop the previews that candidate ``cand`` replaces; all of them for None."""
        from ctdid.core.did.preview import replaces

        if not self._previews:
            return
        ids = [
            pid for pid, p in self._previews.items()
            if cand is None or replaces(cand, p, n_candidates=self.preview_n)
        ]  # fmt: skip
        for pid in ids:
            del self._previews[pid]
        self.writer.drop_previews(ids)

    def previews_record(self) -> dict[str, Any] | None:
        """``run.json``'s ``previews_shown``: how many previews, ready when; None if none."""
        if not self.previews_shown:
            return None
        return {"count": self.previews_shown, "ready_s": self.previews_ready_s,
                "method": "blend"}  # fmt: skip

    # -- volumes: streamed, resumable

    def restore(self) -> None:
        """A resumed run: find the listed default and set the labels up on it again."""
        default = next((r for r in self.writer.records if r.direction == "default"), None)
        if default is None:
            return
        self.default_id = default.id
        self._label(np.load(self.writer.folder / default.file, mmap_mode="r"), is_default=True)

    def load_state(self, trajectory: str, fresh: dict[str, Any]) -> dict[str, Any]:
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
        self.save_state()
        return st

    def save_state(self) -> None:
        self.writer.write_state(self.state)

    def image_file(self, cid: int) -> Path:
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
        image = np.load(self.image_file(cid), mmap_mode="r")
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

    def render(
        self,
        engine: Any,
        cid: int,
        weights: Any,
        *,
        t_low: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """Write candidate ``cid`` (model with ``weights``) batch by batch into ``partial/``.

        Batches already recorded in the state are skipped; with ``t_low`` the low-noise bound
        (the model applied ``k`` times) is written beside it, for the progress measure.
        ``batch_size`` overrides the run's slices per forward pass (1: each slice exactly as
        a single-slice run computes it).
        """
        hu, z = self.volume.hu, self.volume.shape[0]
        bs = self.batch_size if batch_size is None else int(batch_size)
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
            self.save_state()
            self.rendered_slices += b - a
            self.emit("render", self.rendered_slices, self.render_total)
        del out, low

    def volume_progress(self, cid: int, direction: str, mask: NDArray[np.bool_]) -> float:
        """Progress of candidate ``cid`` toward its bound over the whole volume, in the body.

        As :func:`ctdid.core.progress` on the whole volume, accumulated batch by batch.
        """
        hu, z, bs = self.volume.hu, self.volume.shape[0], self.batch_size
        y = np.load(self.image_file(cid), mmap_mode="r")
        y0 = np.load(self.image_file(self.default_id), mmap_mode="r")
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
