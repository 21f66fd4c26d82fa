"""Instant previews: pixel blends over the whole strength range while DID fine-tunes.

As soon as the engine has the default ``y0 = phi(x)`` and the low-noise bound
``t_low = phi^k(x)``, a slider can already run from the input to ``t_low``: the pixel blend
(the ASiR-V convention, as :func:`ctdid.baselines.blend` computes it, here on the engine's own
three images)

* ``s < 0``: ``(1 - |s|) y0 + |s| x`` (toward the input: sharper, noisier);
* ``s > 0``: ``(1 - s) y0 + s t_low`` (toward the low-noise bound: smoother).

:func:`blend_previews` makes these at ``s = +-i / n`` (i = 1..n) as :class:`~ctdid.core.
candidates.Candidate` objects marked ``preview=True``; the DID candidates replace them as they
arrive (:func:`replaces`: a DID candidate replaces the previews of its direction up to half a
grid step beyond its strength), and a finished run holds none (:class:`LiveCandidates` keeps
the current set). A blend's progress toward its bound is exactly ``|s|``. It costs one
multiply-add per pixel: milliseconds on a 512 x 512 slice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from ctdid.core.candidates import Candidate

__all__ = ["LiveCandidates", "blend_previews", "preview_image", "replaces"]

_RANK = {"high": 0, "default": 1, "low": 2}


def _blend(y0: NDArray[np.float32], end: NDArray[np.float32], a: float) -> NDArray[np.float32]:
    """``(1 - a) y0 + a end`` in float32, as the blend baseline computes it (bit for bit)."""
    if a == 1.0:
        return end.copy()
    out = y0.copy()
    out += np.float32(a) * (end - y0)
    return out


def preview_image(
    x: NDArray[np.float32],
    default: NDArray[np.float32],
    t_low: NDArray[np.float32],
    *,
    strength: float,
) -> NDArray[np.float32]:
    """The preview at one strength: the pixel blend :func:`blend_previews` makes there.

    Parameters
    ----------
    x, default, t_low : ndarray of float32
        The noisy input, the default ``phi(x)`` and the low-noise bound ``phi^k(x)``, HU, all
        the same shape (e.g. one slice of a volume, for a viewer rendering previews on demand).
    strength : float
        In [-1, 1]: ``s < 0`` toward the input (``(1 - |s|) y0 + |s| x``: sharper, noisier),
        ``s > 0`` toward ``t_low`` (smoother), 0 the default.

    Returns
    -------
    ndarray of float32
        Bit for bit the image :func:`blend_previews` gives the preview of that strength.

    Raises
    ------
    ValueError
        If the shapes differ or ``strength`` is outside [-1, 1].
    """
    y0 = np.asarray(default, dtype=np.float32)
    end = np.asarray(x if strength < 0 else t_low, dtype=np.float32)
    if not (np.shape(x) == y0.shape == np.shape(t_low)):
        raise ValueError(
            f"shapes differ: x {np.shape(x)}, default {y0.shape}, t_low {np.shape(t_low)}"
        )
    if not -1.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [-1, 1], got {strength!r}")
    return _blend(y0, end, abs(float(strength)))


def blend_previews(
    x: NDArray[np.float32],
    default: NDArray[np.float32],
    t_low: NDArray[np.float32],
    *,
    n_candidates: int,
    directions: Sequence[str] = ("high", "low"),
    started: float | None = None,
) -> list[Candidate]:
    """Preview candidates: pixel blends at ``s = +-i / n_candidates``, i = 1..n.

    Parameters
    ----------
    x, default, t_low : ndarray of float32
        The noisy input, the default ``phi(x)`` and the low-noise bound ``phi^k(x)``, HU, all
        the same shape (any shape: one image, a batch or a volume).
    n_candidates : int
        Previews per direction (the grid step is ``1 / n_candidates``). Smaller: coarser
        slider; larger: more images to store (each costs one multiply-add per pixel).
    directions : sequence of {"high", "low"}, optional
        Sides to preview, in this order (each from the default outward). Default both.
    started : float, optional
        ``time.perf_counter()`` at the start of the run, for ``elapsed``; default now.

    Returns
    -------
    list of Candidate
        Per direction from the default outward: strength ``-i/n`` (high, toward ``x``) or
        ``+i/n`` (low, toward ``t_low``), ``progress = progress_raw = i/n``, ``step = 0``,
        ``preview=True``. The last one of a side is its bound itself.

    Raises
    ------
    ValueError
        If the shapes differ, ``n_candidates`` is not an integer >= 1 or a direction is
        unknown.
    """
    if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 1:
        raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
    y0 = np.asarray(default, dtype=np.float32)
    ends = {"high": np.asarray(x, dtype=np.float32), "low": np.asarray(t_low, dtype=np.float32)}
    if not (ends["high"].shape == y0.shape == ends["low"].shape):
        raise ValueError(
            f"shapes differ: x {ends['high'].shape}, default {y0.shape}, t_low {ends['low'].shape}"
        )
    t0 = time.perf_counter() if started is None else started
    n = int(n_candidates)
    out: list[Candidate] = []
    for direction in directions:
        if direction not in ends:
            raise ValueError(f"unknown direction {direction!r}; use 'high' or 'low'")
        sign = -1.0 if direction == "high" else 1.0
        for i in range(1, n + 1):
            a = i / n
            out.append(Candidate(
                image=_blend(y0, ends[direction], a), direction=direction,  # type: ignore[arg-type]
                step=0, progress=a, progress_raw=a, strength=sign * a,
                elapsed=time.perf_counter() - t0, preview=True,
            ))  # fmt: skip
    return out


def replaces(candidate: Candidate, preview: Candidate, *, n_candidates: int) -> bool:
    """Whether a DID candidate replaces a preview.

    A candidate of direction ``d`` at strength ``s`` replaces the previews of ``d`` whose
    ``|strength|`` is at most ``|s| + 0.5 / n_candidates`` (those it has reached, and the
    nearest grid point just beyond); previews of the other direction stay. The default (made
    before any preview) and previews replace nothing.

    Parameters
    ----------
    candidate : Candidate
        The new candidate.
    preview : Candidate
        A preview (``preview=True``).
    n_candidates : int
        Previews per direction, as given to :func:`blend_previews`.
    """
    if candidate.preview or not preview.preview or candidate.direction != preview.direction:
        return False
    return abs(preview.strength) <= abs(candidate.strength) + 0.5 / n_candidates + 1e-12


class LiveCandidates:
    """The candidates to show while a run streams: DID's, and the previews not yet replaced.

    Feed it every candidate :meth:`~ctdid.core.InteractiveDenoiser.iter_candidates` yields
    (with ``previews=True``); :attr:`candidates` is the current set ordered high resolution ->
    low noise; :meth:`finish` drops the remaining previews, so that what is left equals the
    run's :class:`~ctdid.core.candidates.CandidateStack`.

    Parameters
    ----------
    n_candidates : int
        Previews per direction (the engine's ``n_candidates``).
    """

    def __init__(self, *, n_candidates: int) -> None:
        self.n_candidates = int(n_candidates)
        self._items: list[tuple[int, Candidate]] = []  # (arrival number, candidate)
        self._seen = 0

    def add(self, candidate: Candidate) -> list[Candidate]:
        """Add a candidate; returns the previews it replaces (removed from the set)."""
        n = self.n_candidates
        gone = [c for _, c in self._items if replaces(candidate, c, n_candidates=n)]
        self._items = [(i, c) for i, c in self._items if not any(c is g for g in gone)]
        self._items.append((self._seen, candidate))
        self._seen += 1
        return gone

    def extend(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """:meth:`add` each candidate; all the previews replaced."""
        return [p for c in candidates for p in self.add(c)]

    def finish(self) -> list[Candidate]:
        """Drop the previews still shown (the run ended); returns them."""
        gone = [c for _, c in self._items if c.preview]
        self._items = [(i, c) for i, c in self._items if not c.preview]
        return gone

    @property
    def previews(self) -> tuple[Candidate, ...]:
        """The previews still shown, ordered high resolution -> low noise."""
        return tuple(c for c in self.candidates if c.preview)

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """The current set, ordered by strength (high resolution -> low noise).

        Ties: the high side first, then the default, then the low side; a DID candidate
        before a preview; within a side the one made later further out (as in the
        engine's :class:`~ctdid.core.candidates.CandidateStack`).
        """

        def key(item: tuple[int, Candidate]) -> tuple[float, int, bool, int]:
            i, c = item
            return (c.strength, _RANK[c.direction], c.preview, -i if c.direction == "high" else i)

        return tuple(c for _, c in sorted(self._items, key=key))
