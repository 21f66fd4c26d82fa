"""Building a :class:`~ctdid.core.CandidateStack` from images that cost no fine-tuning.

Every baseline of :mod:`ctdid.baselines` returns the same stack type as the DID engine, so the
labels, the viewer, the exports and the evaluation treat them alike. A baseline stack holds
``n`` high-side images (from the sharpest, ``s = -1``, inward), the default (``s = 0``) and
``n`` low-side images (outward to ``s = +1``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.core.body import body_mask
from ctdid.core.candidates import Candidate, CandidateStack, Direction
from ctdid.core.did import progress as _progress

__all__ = ["check_image", "make_stack", "measured_progress", "resolve_body"]


def check_image(x: ArrayLike, name: str = "x") -> NDArray[np.float32]:
    """A finite float32 (H, W) HU image (a writable copy), or ValueError."""
    arr = np.array(x, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{name} must be one (H, W) HU image, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def resolve_body(
    x: NDArray[np.float32], body: ArrayLike | None, *, threshold: float = -500.0
) -> NDArray[np.bool_]:
    """The body mask of ``x`` (as the DID engine finds it), or ``body`` checked."""
    if body is None:
        m = body_mask(x, threshold=threshold)
        return m if m.sum() >= 16 else np.ones(x.shape, dtype=bool)
    m = np.asarray(body, dtype=bool)
    if m.shape != x.shape:
        raise ValueError(f"body mask shape {m.shape} differs from the image's {x.shape}")
    return m


def measured_progress(
    image: NDArray[np.float32],
    default: NDArray[np.float32],
    bound: NDArray[np.float32],
    body: NDArray[np.bool_],
) -> float:
    """Raw progress of ``image`` from ``default`` toward ``bound`` in the body (as the engine)."""
    return float(_progress(image, default, bound, body))


def make_stack(
    *,
    high: Sequence[NDArray[np.float32]],
    default: NDArray[np.float32],
    low: Sequence[NDArray[np.float32]],
    t_high: NDArray[np.float32],
    t_low: NDArray[np.float32],
    body: NDArray[np.bool_],
    method: str,
    high_strengths: Sequence[float] | None = None,
    low_strengths: Sequence[float] | None = None,
    measure: bool = False,
    started: float | None = None,
    timings: Mapping[str, float] | None = None,
    info: Mapping[str, Any] | None = None,
) -> CandidateStack:
    """Order baseline images into a candidate stack (high resolution -> low noise).

    Parameters
    ----------
    high : sequence of ndarray
        High-side images from the default outward (the last one is the sharpest).
    default : ndarray
        The image at ``s = 0``.
    low : sequence of ndarray
        Low-side images from the default outward (the last one is the smoothest).
    t_high, t_low : ndarray
        The bounds (input, and the model applied ``k`` times), HU.
    body : ndarray of bool
        Where progress is measured.
    method : str
        Name recorded as the stack's ``mode`` (``"blend"``, ``"tv"``, ...).
    high_strengths, low_strengths : sequence of float, optional
        Position of each image in [0, 1] on its side (its ``|s|``), non-decreasing outward.
        Default ``i / n``.
    measure : bool, optional
        If true, the strength of each image is its measured progress toward its bound
        (projection in the body, clipped to [0, 1], made non-decreasing outward), as the DID
        engine defines it; ``*_strengths`` are then ignored.
    started : float, optional
        ``time.perf_counter()`` at the start of the baseline (for ``elapsed``).
    timings : mapping, optional
        Seconds spent, recorded in the stack (``"total"`` is added).
    info : mapping, optional
        Further details, JSON-serialisable.

    Returns
    -------
    CandidateStack
    """
    t0 = time.perf_counter() if started is None else started
    elapsed = time.perf_counter() - t0

    def side(
        images: Sequence[NDArray[np.float32]],
        direction: Direction,
        given: Sequence[float] | None,
        bound: NDArray[np.float32],
    ) -> list[Candidate]:
        n = len(images)
        if given is not None and len(given) != n:
            raise ValueError(f"{direction}: {len(given)} strengths for {n} images")
        out: list[Candidate] = []
        best = 0.0
        for i, img in enumerate(images):
            raw = measured_progress(img, default, bound, body)
            if measure:
                best = max(best, min(max(raw, 0.0), 1.0))
                a = best
            else:
                a = float((i + 1) / n if given is None else given[i])
            sign = -1.0 if direction == "high" else 1.0
            out.append(Candidate(
                image=np.asarray(img, dtype=np.float32), direction=direction, step=0,
                progress=a, progress_raw=raw, strength=sign * a, elapsed=elapsed,
            ))  # fmt: skip
        return out

    hi = side(high, "high", high_strengths, t_high)
    lo = side(low, "low", low_strengths, t_low)
    dflt = Candidate(
        image=np.asarray(default, dtype=np.float32), direction="default", step=0,
        progress=0.0, progress_raw=0.0, strength=0.0, elapsed=elapsed,
    )  # fmt: skip
    cands = (*reversed(hi), dflt, *lo)
    times = dict(timings or {})
    times["total"] = time.perf_counter() - t0
    return CandidateStack(
        candidates=cands,
        default_index=len(hi),
        t_high=t_high,
        t_low=t_low,
        body=body,
        mode=method,
        steps={"high": 0, "low": 0},
        stop_reasons={"high": "baseline", "low": "baseline"},
        timings=times,
        peak_memory_bytes=int(sum(c.image.nbytes for c in cands) + t_high.nbytes + t_low.nbytes),
        memory_method="estimate",
        info={"method": method, **dict(info or {})},
    )
