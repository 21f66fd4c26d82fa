"""The three ways a run makes its candidates, each streaming into a :class:`CandidateStream`.

* :func:`run_single` -- one slice (or a volume the engine holds at once): every candidate is
  stored as the engine makes it;
* :func:`run_volume_shared` -- a volume with one shared trajectory: the weights fine-tuned
  on a few slices (each candidate's weights saved and listed under ``rendering`` as made, so
  a viewer renders any slice of it on demand), then the default and each candidate volume
  rendered batch by batch (bounded memory, resumable);
* :func:`run_per_slice` -- a volume with one trajectory per slice: the default volume
  first (listed at once, so a viewer shows the scan long before the slices' candidates),
  then each slice's candidates interpolated at a fixed strength grid and written when the
  slice is done (resumable).

Each returns the ``engine`` section of ``run.json``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import InputError
from ctdid.results import STATE_FILE
from ctdid.runner.stream import CandidateStream

__all__ = ["engine_info", "run_per_slice", "run_single", "run_volume_shared", "stack_info"]

_PER_SLICE_NOTE = (
    "each slice ran its own trajectory; candidates are interpolated at the engine's "
    "target strengths 0, +-coverage*i/n_candidates (step is 0 for all); where a "
    "slice's trajectory stopped short of a strength (listed in 'clamped', with the "
    "slice's reach), that slice holds its last candidate"
)


def run_single(
    stream: CandidateStream, engine: Any, total: int | None, *, previews: bool = False
) -> dict[str, Any]:
    """Run the engine on the whole input at once; store each candidate as it is made.

    ``previews`` (a single slice and the DID engine only): the engine's blend previews
    (:meth:`ctdid.core.InteractiveDenoiser.iter_candidates`) go to ``previews/`` right after
    the default (which is labelled after them, so that they appear within milliseconds);
    each DID candidate stored drops the previews it replaces, and the rest go when the
    engine ends.
    """
    hu = np.array(stream.volume.hu)  # writable copy for torch
    t0 = time.perf_counter()
    use_previews = bool(previews) and hu.shape[0] == 1
    stream.preview_n = int(engine.n_candidates) if use_previews else 0
    expected = stream.preview_n * len(tuple(getattr(engine, "directions", ())))

    def callback(c: Any) -> None:
        if getattr(c, "preview", False):
            stream.store_preview(c, expected=expected)
            return
        stream.store(
            np.asarray(c.image),
            direction=c.direction,
            strength=c.strength,
            step=c.step,
            progress=c.progress,
            elapsed=time.perf_counter() - stream.start,
            total=total,
            made=c,
            label_later=expected > 0 and c.direction == "default",
        )

    if hu.shape[0] == 1:
        more = {"previews": True} if use_previews else {}
        stack = engine.run(hu[0], callback=callback, **more)
    else:
        stack = engine.run_volume(hu, shared=True, callback=callback)
    stream.label_deferred()  # (no-op unless the engine made no candidate after the default)
    stream.replace_previews(None)  # the engine ended: what DID did not reach goes too
    return engine_info(stack, time.perf_counter() - t0)


def run_volume_shared(
    stream: CandidateStream,
    engine: Any,
    total: int | None,
    *,
    train_slices: int,
    previews: bool = False,
) -> dict[str, Any]:
    """Shared trajectory of a volume: fine-tuning, then the default and candidate volumes.

    The default's weights are saved and listed under ``rendering`` first, each fine-tuned
    candidate's as it is made: a viewer shows any slice of them on demand long before
    their volumes are complete (rendered after the fine-tuning, in id order). With
    ``previews``, blend previews with no file are listed with the default (the viewer renders
    the slice it shows from the input, the default and t_low); each fine-tuned candidate
    replaces those of its side it has reached, and the rest go when the fine-tuning ends.
    """
    from ctdid.core import body_mask

    hu, z = stream.volume.hu, stream.volume.shape[0]
    t0 = time.perf_counter()
    idx = np.unique(np.linspace(0, z - 1, min(train_slices, z)).round().astype(int))
    fresh = {
        "format": "ctdid-run-state",
        "trajectory": "shared",
        "shape_zyx": list(stream.volume.shape),
        "batch_size": stream.batch_size,
        "train_slices": idx.tolist(),
        "rendered": {},
        "finetune": None,
        "progress_raw": {},
    }
    st = stream.load_state("shared", fresh)
    # Body mask as the engine makes it for a volume (empty: the whole image).
    mask = body_mask(np.asarray(hu), threshold=engine.body_threshold)
    if mask.sum() < 16:
        mask = np.ones_like(mask)
    stream.rendered_slices = sum(int(v) for v in st["rendered"].values())
    stream.render_total = None if total is None else z * total
    writer = stream.writer
    default_weights = None  # the default's weights file, while its volume is not listed
    if not writer.records:  # the default is renderable on demand at once
        default_weights = writer.save_weights(0, engine.model.state_dict())
        _list_rendering(stream, 0, "default", 0.0, 0, default_weights)
    ft = st.get("finetune")
    if ft is None:
        if previews:
            stream.list_volume_previews(n=engine.n_candidates, directions=engine.directions)
        ft = _finetune(stream, engine, total, idx, mask)
        stream.replace_previews(None)
    else:  # resumed: the weights made are renderable again
        for entry in ft["candidates"]:
            if int(entry["id"]) >= len(writer.records):
                _list_rendering(stream, int(entry["id"]), str(entry["direction"]),
                                float(entry.get("strength", 0.0)), int(entry["step"]),
                                str(entry["weights"]))  # fmt: skip
    if default_weights is not None:
        _render_default(stream, engine, total, default_weights)
    _render_candidates(stream, engine, ft["candidates"], mask)
    out = dict(ft["engine"])
    raws = st["progress_raw"]
    coverage = {"high": 0.0, "low": 0.0}
    for entry in ft["candidates"]:
        coverage[entry["direction"]] = float(raws.get(str(entry["id"]), 0.0))
    out["coverage"] = coverage
    out["trajectory_seconds"] = out.pop("seconds")
    out["seconds"] = time.perf_counter() - t0
    out["rendered_in_batches_of"] = stream.batch_size
    return out


def _list_rendering(
    stream: CandidateStream,
    cid: int,
    direction: str,
    strength: float,
    step: int,
    weights: str,
    made: Any = None,
) -> None:
    """List candidate ``cid`` under ``rendering``: its weights are saved, its volume is not.

    ``made``: the engine's candidate; the previews it replaces are dropped before the progress
    callback hears of it.
    """
    from ctdid.results import CandidateRecord

    rec = CandidateRecord(
        id=cid, direction=direction, strength=strength, step=step, progress=abs(strength),
        elapsed_s=time.perf_counter() - stream.start, weights=weights,
    )  # fmt: skip
    stream.writer.list_rendering(rec)
    if made is not None:
        stream.replace_previews(made)
    stream.emit("rendering", len(stream.writer.rendering), None, rec)


def _render_default(stream: CandidateStream, engine: Any, total: int | None, weights: str) -> None:
    """The default, the pretrained model on every slice (and t_low, for progress), listed
    with its saved ``weights`` file."""
    if stream.writer.stored_file(0) is None:
        stream.render(engine, 0, None, t_low=True)
    stream.commit(
        0, direction="default", strength=0.0, step=0, progress=0.0, total=total, weights=weights
    )


def _finetune(
    stream: CandidateStream,
    engine: Any,
    total: int | None,
    idx: NDArray[np.int_],
    mask: NDArray[np.bool_],
) -> dict[str, Any]:
    """Fine-tune on the training slices; every candidate's weights saved and listed as made.

    Each is listed under ``rendering`` (strength measured on the training slices) so that a
    viewer renders it on demand before its volume exists.
    """
    writer, hu = stream.writer, stream.volume.hu
    made: list[dict[str, Any]] = []
    expected = None if total is None else total - 1

    def on_candidate(c: Any) -> None:
        if c.direction == "default":
            return
        cid = len(made) + 1
        rel = writer.save_weights(cid, c.weights)
        strength = float(c.strength)
        made.append(
            {"id": cid, "direction": c.direction, "step": c.step, "weights": rel,
             "strength": strength}
        )  # fmt: skip
        _list_rendering(stream, cid, str(c.direction), strength, int(c.step), rel, made=c)
        stream.emit("finetune", len(made), None if expected is None else max(expected, cid))

    t_ft = time.perf_counter()
    x_tr = np.array(hu[idx], dtype=np.float32)[:, None]
    stack = engine.run(x_tr, body=mask[idx][:, None], callback=on_candidate)
    info = engine_info(stack, time.perf_counter() - t_ft)
    info["coverage_train_slices"] = info.pop("coverage")
    info["train_slices"] = idx.tolist()
    ft = {"candidates": made, "engine": info}
    stream.state["finetune"] = ft
    stream.save_state()
    stream.emit("finetune", len(made), len(made))  # the directions may stop early
    del stack
    for stale in writer.folder.glob("candidates/c*.weights.safetensors"):
        if int(stale.name.split(".")[0][1:]) > len(made):  # an interrupted fine-tuning
            stale.unlink()
    return ft


def _render_candidates(
    stream: CandidateStream,
    engine: Any,
    made: list[dict[str, Any]],
    mask: NDArray[np.bool_],
) -> None:
    """Candidate volumes, in the order they were made, batch by batch."""
    from safetensors.torch import load_file

    writer = stream.writer
    n_all = 1 + len(made)
    stream.render_total = stream.volume.shape[0] * n_all
    best = {"high": 0.0, "low": 0.0}
    for rec in writer.records:
        if rec.direction in best:
            best[rec.direction] = max(best[rec.direction], rec.progress)
    for entry in made:
        cid, direction = int(entry["id"]), str(entry["direction"])
        if cid < len(writer.records):
            continue
        if writer.stored_file(cid) is None:
            weights = load_file(str(writer.folder / entry["weights"]), device="cpu")
            stream.render(engine, cid, weights)
        raw = stream.volume_progress(cid, direction, mask)
        best[direction] = max(best[direction], min(max(raw, 0.0), 1.0))
        stream.state["progress_raw"][str(cid)] = raw
        stream.save_state()
        stream.commit(
            cid,
            direction=direction,
            strength=-best[direction] if direction == "high" else best[direction],
            step=int(entry["step"]),
            progress=best[direction],
            total=n_all,
            weights=str(entry["weights"]),
        )


def run_per_slice(stream: CandidateStream, engine: Any, total: int | None) -> dict[str, Any]:
    """One trajectory per slice; the default volume first, then each slice's candidates.

    The default (the pretrained model, one slice per forward pass: bit for bit each slice's
    own default) is rendered and listed before any slice's trajectory runs, so that a viewer
    shows the whole scan denoised after one forward pass per slice; every other candidate is
    listed when all slices are done.
    """
    from ctdid.core import interpolate

    writer, hu, z = stream.writer, stream.volume.hu, stream.volume.shape[0]
    t0 = time.perf_counter()
    fresh = {
        "format": "ctdid-run-state",
        "trajectory": "per-slice",
        "shape_zyx": list(stream.volume.shape),
        "batch_size": stream.batch_size,
        "grid": [list(g) for g in strength_grid(engine)],
        "slices": {},
        "default_first": True,
        "rendered": {},
    }
    st = stream.load_state("per-slice", fresh)
    grid = [(str(d), float(s)) for d, s in st["grid"]]
    finished: dict[str, Any] = st["slices"]
    default_first = bool(st.get("default_first", False))  # False: a run of an older ctdid
    listed_before = 1 if default_first else 0  # candidates listed before the slices are done
    if len(finished) < z and len(writer.records) > listed_before:
        raise InputError(
            f"cannot resume: candidates are listed but {STATE_FILE} has unfinished slices",
            path=writer.folder,
        )
    if default_first and not writer.records:
        _render_default_first(stream, engine, len(grid))
    for zi in range(z):
        if str(zi) in finished:
            continue
        stack = engine.run(np.array(hu[zi], dtype=np.float32))
        for cid, (_, s) in enumerate(grid):
            if cid == 0 and default_first:
                continue  # listed before the slices (the same image, bit for bit)
            out = writer.open_partial(f"c{cid:03d}.npy")
            out[zi] = interpolate(stack, s)  # beyond the slice's reach: its last candidate
            out.flush()
            del out
        item = stack_info(stack)
        item["reach"] = {"high": -float(stack.strengths[0]), "low": float(stack.strengths[-1])}
        finished[str(zi)] = item
        stream.save_state()
        stream.emit("slice", len(finished), z)
    for cid, (direction, s) in enumerate(grid):
        if cid >= len(writer.records):
            stream.commit(
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
        "per_slice_note": _PER_SLICE_NOTE,
    }


def _render_default_first(stream: CandidateStream, engine: Any, total: int) -> None:
    """The default volume of a per-slice run, one slice per pass, labelled and listed."""
    if stream.writer.stored_file(0) is None:
        stream.render_total = stream.volume.shape[0]
        stream.render(engine, 0, None, batch_size=1)
    stream.commit(0, direction="default", strength=0.0, step=0, progress=0.0, total=total)


def strength_grid(engine: Any) -> list[tuple[str, float]]:
    """The per-slice candidates' strengths: the default and the engine's progress targets."""
    grid: list[tuple[str, float]] = [("default", 0.0)]
    n = int(engine.n_candidates)
    for direction in ("high", "low"):
        if direction in engine.directions:
            sign = -1.0 if direction == "high" else 1.0
            grid += [(direction, sign * engine.coverage * i / n) for i in range(1, n + 1)]
    return grid


def stack_info(st: Any) -> dict[str, Any]:
    """A candidate stack's report for ``run.json``: coverage, steps, stop reasons, memory."""
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


def engine_info(stacks: Any, seconds: float) -> dict[str, Any]:
    """:func:`stack_info` with the seconds spent and the engine's other details."""
    out = stack_info(stacks)
    out["seconds"] = seconds
    out["details"] = {
        key: value for key, value in dict(stacks.info).items() if key not in ("high", "low")
    }
    return out
