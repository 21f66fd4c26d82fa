"""Candidate images along the noise-resolution tradeoff curve, and browsing between them.

The DID engine (:mod:`ctdid.core.did`) makes an ordered set of images from one noisy slice:
fine-tuning the denoiser toward the noisy input gives sharper, noisier images (the
*high-resolution* end), fine-tuning it toward its own repeated output gives smoother ones (the
*low-noise* end). A :class:`CandidateStack` holds them ordered high resolution -> low noise, and
:func:`interpolate` gives an image for any strength ``s`` in [-1, 1] in between.

Strength convention: ``s = -1`` is the high-resolution bound (the noisy input itself), ``s = 0``
the default output of the pretrained model, ``s = +1`` the low-noise bound (the model applied
``k`` times). A candidate's strength is its progress toward its bound, negated on the
high-resolution side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["Candidate", "CandidateStack", "Direction", "interpolate"]

Direction = Literal["high", "low", "default"]


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """One candidate image.

    Parameters
    ----------
    image : ndarray of float32
        The image in HU, shaped like the engine's input: (H, W), (B, 1, H, W) or (Z, H, W).
    direction : {"high", "low", "default"}
        Which bound the model was fine-tuned toward; ``"default"`` for the pretrained output.
    step : int
        Number of fine-tuning iterations (optimizer updates) behind this image; 0 for the
        default. Several candidates can share one Gauss-Newton iteration (they are made
        from its Krylov basis at different dampings).
    progress : float
        Progress toward the bound in [0, 1]: the projection of ``image - default`` on
        ``bound - default`` inside the body mask, divided by ``||bound - default||^2``,
        clipped to [0, 1]. 0 = the default, 1 = the bound.
    progress_raw : float
        The same projection, not clipped (can be < 0 or > 1).
    strength : float
        Position on the tradeoff curve in [-1, 1]: ``-progress`` on the high-resolution
        side, ``+progress`` on the low-noise side, 0 for the default. Non-decreasing along a
        :class:`CandidateStack`.
    elapsed : float
        Seconds from the start of the engine's run to the moment this image was made.
    weights : mapping of str to Tensor, optional
        The network's state dict (CPU copies, names as in ``model.state_dict()``) that made
        this image: the fine-tuned weights, or the pretrained ones for the default. Only
        when the engine runs with ``keep_weights=True``; None otherwise. Load them with
        ``model.load_state_dict(candidate.weights)`` or apply them to other images with
        :meth:`ctdid.core.InteractiveDenoiser.apply`.
    preview : bool, optional
        True for a preview: a pixel blend of the input, the default and the low-noise bound
        at strength ``s`` (``(1 - |s|) y0 + |s| x`` for ``s < 0``, ``(1 - s) y0 + s t_low``
        for ``s > 0``), offered by :meth:`~ctdid.core.InteractiveDenoiser.iter_candidates`
        with ``previews=True`` before the fine-tuning makes the real candidates, which
        replace it (:func:`ctdid.core.did.preview.replaces`). No :class:`CandidateStack` of
        the engine holds a preview. Default False.
    """

    image: NDArray[np.float32]
    direction: Direction
    step: int
    progress: float
    progress_raw: float
    strength: float
    elapsed: float
    weights: Mapping[str, Any] | None = None
    preview: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class CandidateStack:
    """Candidates ordered from the high-resolution end to the low-noise end.

    Parameters
    ----------
    candidates : tuple of Candidate
        Ordered high resolution -> low noise: the high-direction candidates from the last
        (sharpest) to the first, then the default, then the low-direction candidates from
        the first to the last (smoothest). Strengths are non-decreasing.
    default_index : int
        Index of the default (pretrained model's output) in ``candidates``.
    t_high, t_low : ndarray of float32
        The bounds in HU, shaped like the images: the noisy input and the model applied
        ``k`` times.
    body : ndarray of bool
        Body mask used for the progress measure, shaped like the images.
    mode : str
        Engine mode that made the stack (``"robust"``, ``"faithful"`` or ``"fast"``).
    steps : mapping of str to int
        Fine-tuning iterations run per direction.
    stop_reasons : mapping of str to str
        Why each direction stopped (``"coverage"``, ``"stalled"``, ``"converged"``,
        ``"max_steps"``, ``"time_budget"``).
    timings : mapping of str to float
        Seconds spent: ``"bounds"`` (default and low bound), one entry per direction,
        ``"total"``.
    peak_memory_bytes : int
        Peak memory of the run; see ``memory_method`` for what it is.
    memory_method : str
        How ``peak_memory_bytes`` was obtained: ``"cuda.max_memory_allocated"`` on CUDA, or
        ``"estimate"`` elsewhere (parameters, gradients, optimizer state, saved activations
        of one forward pass measured by autograd hooks, images held by the engine).
    info : mapping, optional
        Further details (learning rates, normalisation, ...), JSON-serialisable.
    """

    candidates: tuple[Candidate, ...]
    default_index: int
    t_high: NDArray[np.float32]
    t_low: NDArray[np.float32]
    body: NDArray[np.bool_]
    mode: str
    steps: Mapping[str, int]
    stop_reasons: Mapping[str, str]
    timings: Mapping[str, float]
    peak_memory_bytes: int
    memory_method: str
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        cands = tuple(self.candidates)
        if not cands:
            raise ValueError("a CandidateStack needs at least the default candidate")
        if not 0 <= self.default_index < len(cands):
            raise ValueError(f"default_index {self.default_index} out of range [0, {len(cands)})")
        if cands[self.default_index].direction != "default":
            raise ValueError("the candidate at default_index must have direction 'default'")
        s = np.array([c.strength for c in cands])
        if np.any(np.diff(s) < 0):
            raise ValueError(f"candidate strengths must be non-decreasing, got {s.tolist()}")
        object.__setattr__(self, "candidates", cands)

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, index: int) -> Candidate:
        return self.candidates[index]

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.candidates)

    @property
    def default(self) -> Candidate:
        """The pretrained model's output."""
        return self.candidates[self.default_index]

    @property
    def strengths(self) -> NDArray[np.float64]:
        """Strength of each candidate, non-decreasing, in [-1, 1]."""
        return np.array([c.strength for c in self.candidates], dtype=np.float64)

    @property
    def images(self) -> NDArray[np.float32]:
        """All candidate images stacked on a new first axis, high resolution -> low noise."""
        return np.stack([c.image for c in self.candidates])

    @property
    def coverage(self) -> dict[str, float]:
        """Raw progress of the last candidate in each direction (0 where there is none)."""
        out = {"high": 0.0, "low": 0.0}
        if self.default_index > 0:
            out["high"] = self.candidates[0].progress_raw
        if self.default_index < len(self.candidates) - 1:
            out["low"] = self.candidates[-1].progress_raw
        return out

    def interpolate(self, s: float) -> NDArray[np.float32]:
        """Image at strength ``s``; see :func:`interpolate`."""
        return interpolate(self, s)


def _lerp(a: NDArray[np.float32], b: NDArray[np.float32], w: float) -> NDArray[np.float32]:
    out = a.astype(np.float32, copy=True)
    out += np.float32(w) * (b.astype(np.float32) - a.astype(np.float32))
    return out


def interpolate(stack: CandidateStack, s: float) -> NDArray[np.float32]:
    """Image at a continuous strength ``s`` between the candidates of a stack.

    Parameters
    ----------
    stack : CandidateStack
        Candidates ordered high resolution -> low noise.
    s : float
        Strength in [-1, 1]: negative toward high resolution (more noise, sharper), 0 the
        default, positive toward low noise (smoother). Values beyond the last candidate's
        strength on a side give that last candidate.

    Returns
    -------
    ndarray of float32
        A new array in HU. ``s = 0`` gives the default exactly, ``s = -1`` and ``s = +1`` the
        first and last candidates exactly; in between, the linear blend of the two neighbouring
        candidates (by strength) on the same side of the default.

    Raises
    ------
    ValueError
        If ``s`` is not a finite number in [-1, 1].
    """
    s = float(s)
    if not np.isfinite(s) or abs(s) > 1.0:
        raise ValueError(f"strength s must be a finite number in [-1, 1], got {s}")
    cands = stack.candidates
    d = stack.default_index
    if s == 0.0:
        return cands[d].image.astype(np.float32, copy=True)
    # Walk outward from the default on the side of s; strengths there are monotone in |s|.
    side = list(cands[d:]) if s > 0 else list(reversed(cands[: d + 1]))
    a = abs(s)
    prev = side[0]
    for cand in side[1:]:
        ac = abs(cand.strength)
        if ac >= a:
            ap = abs(prev.strength)
            if ac == a or ac <= ap:
                return cand.image.astype(np.float32, copy=True)
            return _lerp(prev.image, cand.image, (a - ap) / (ac - ap))
        prev = cand
    return prev.image.astype(np.float32, copy=True)
