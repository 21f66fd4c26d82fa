"""One engine-like front for every baseline, so that ``ctdid run --method`` treats them as DID.

:class:`BaselineDenoiser` has the parts of :class:`ctdid.core.InteractiveDenoiser` that the
runner uses (``run``, ``iter_candidates``, ``apply``, ``k``, ``n_candidates``, ``coverage``,
``directions``, ``body_threshold``): it computes the default ``y0 = phi(x)`` and the low-noise
bound ``t_low = phi^k(x)`` exactly as the engine does, then the method's candidates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from torch import nn

from ctdid.baselines.blend import blend_stack
from ctdid.baselines.classical import bm3d_stack, tv_stack
from ctdid.baselines.interp import weight_interp_stack
from ctdid.baselines.iterate import iterate_images, iterate_stack
from ctdid.baselines.stack import check_image, resolve_body
from ctdid.core.candidates import Candidate, CandidateStack
from ctdid.core.did import InteractiveDenoiser

__all__ = ["METHODS", "BaselineDenoiser", "EngineLike"]

#: Baseline methods; ``"did"`` (the engine itself) is not one of them.
METHODS: tuple[str, ...] = ("blend", "iterate", "interp", "tv", "bm3d")


class EngineLike:
    """The engine's ``apply``, ``run`` and ``iter_candidates`` on top of a whole-stack maker.

    Subclasses set ``_engine`` (an :class:`~ctdid.core.InteractiveDenoiser` whose ``apply``
    runs the pretrained model) and define ``stack(x, body=...)``; the candidates are
    streamed after the whole stack is made.
    """

    _engine: InteractiveDenoiser

    def stack(self, x: ArrayLike, *, body: ArrayLike | None = None) -> CandidateStack:
        """Compute the whole stack (no streaming)."""
        raise NotImplementedError

    def apply(
        self, x: ArrayLike, *, weights: Mapping[str, Any] | None = None, batch_size: int = 8
    ) -> NDArray[np.float32]:
        """The pretrained model (or given weights) applied to images; see the DID engine."""
        return self._engine.apply(x, weights=weights, batch_size=batch_size)

    def run(
        self,
        x: ArrayLike,
        *,
        body: ArrayLike | None = None,
        callback: Callable[[Candidate], object] | None = None,
    ) -> CandidateStack:
        """The candidate stack of one (H, W) HU image.

        ``callback`` is called with each candidate, the default first, then each side from
        the default outward (high side first).
        """
        stack = self.stack(x, body=body)
        if callback is not None:
            for cand in _stream_order(stack):
                callback(cand)
        return stack

    def iter_candidates(
        self, x: ArrayLike, *, body: ArrayLike | None = None
    ) -> Generator[Candidate, None, CandidateStack]:
        """Yield the candidates (default first); the generator returns the stack."""
        stack = self.stack(x, body=body)
        yield from _stream_order(stack)
        return stack


class BaselineDenoiser(EngineLike):
    """Candidates of a baseline method on top of a pretrained denoiser, engine-style.

    Parameters
    ----------
    model : nn.Module
        Pretrained denoiser, HU in and HU out (as for :class:`~ctdid.core.InteractiveDenoiser`).
    method : {"blend", "iterate", "interp", "tv", "bm3d"}
        ``blend``: pixel blends x <-> y0 <-> t_low (:func:`~ctdid.baselines.blend_stack`);
        ``iterate``: the path through ``phi^j(x)`` (:func:`~ctdid.baselines.iterate_stack`);
        ``interp``: weights interpolated toward DID's end weights (runs DID once, then
        :func:`~ctdid.baselines.weight_interp_stack`); ``tv`` and ``bm3d``: classical sweeps
        of the input (:func:`~ctdid.baselines.tv_stack`, :func:`~ctdid.baselines.bm3d_stack`).
    k : int, optional
        Model applications of ``t_low``. Default 3.
    n_candidates : int, optional
        Candidates per side. Default 8 (``bm3d``: at most 4 unless more are asked for
        explicitly with ``bm3d_candidates``).
    spacing : float or (float, float), optional
        Pixel size (dy, dx) in mm, for the flat regions of ``tv`` and ``bm3d``. Default 1.
    did_options : mapping, optional
        ``interp``: keyword options of the DID engine that makes the end weights (``mode``,
        ``seed``, ...); default the robust mode.
    bm3d_candidates : int, optional
        Candidates per side of ``bm3d``. Default ``min(n_candidates, 4)``.
    body_threshold : float, optional
        HU threshold of the automatic body mask. Default -500.
    device : str or torch.device, optional
        Where the model runs.

    Notes
    -----
    The candidates of a side are ordered from the default outward; the stack runs from the
    high-resolution end (``s = -1``, the input) to the low-noise end (``s = +1``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str,
        k: int = 3,
        n_candidates: int = 8,
        spacing: float | Sequence[float] = 1.0,
        did_options: Mapping[str, Any] | None = None,
        bm3d_candidates: int | None = None,
        body_threshold: float = -500.0,
        device: Any = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown baseline method {method!r}; use one of {METHODS}")
        if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 1:
            raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
        opts = dict(did_options or {})
        opts.pop("keep_weights", None)
        opts.setdefault("mode", "robust")
        self.method = method
        self._engine = InteractiveDenoiser(
            model,
            k=k,
            n_candidates=n_candidates,
            body_threshold=body_threshold,
            device=device,
            keep_weights=method == "interp",
            **opts,
        )
        self.model = self._engine.model
        self.k = self._engine.k
        self.n_candidates = int(n_candidates)
        self.bm3d_candidates = (
            min(self.n_candidates, 4) if bm3d_candidates is None else int(bm3d_candidates)
        )
        if method == "bm3d":
            self.n_candidates = self.bm3d_candidates
        self.coverage = 1.0
        self.directions: tuple[str, ...] = ("high", "low")
        self.body_threshold = float(body_threshold)
        self.spacing = spacing
        self.did_options = opts

    def stack(self, x: ArrayLike, *, body: ArrayLike | None = None) -> CandidateStack:
        """Compute the whole stack (no streaming)."""
        t0 = time.perf_counter()
        xi = check_image(x)
        mask = resolve_body(xi, body, threshold=self.body_threshold)
        its = iterate_images(self.apply, xi, k=self.k)
        y0, t_low = its[1], its[-1]
        t_bounds = time.perf_counter() - t0
        n = self.n_candidates
        if self.method == "blend":
            st = blend_stack(xi, y0, t_low, n_candidates=n, body=mask)
        elif self.method == "iterate":
            st = iterate_stack(its, n_candidates=n, body=mask)
        elif self.method == "tv":
            st = tv_stack(xi, default=y0, t_low=t_low, spacing=self.spacing, n_candidates=n,
                          body=mask)  # fmt: skip
        elif self.method == "bm3d":
            st = bm3d_stack(xi, t_low=t_low, spacing=self.spacing, default=y0,
                            n_candidates=self.bm3d_candidates, body=mask)  # fmt: skip
        else:  # interp
            did = self._engine.run(xi, body=mask)
            ends = {}
            if did.default_index > 0:
                ends["high"] = did.candidates[0].weights
            if did.default_index < len(did) - 1:
                ends["low"] = did.candidates[-1].weights
            st = weight_interp_stack(
                self.apply, xi, w0=self.model.state_dict(), ends=ends,  # type: ignore[arg-type]
                t_low=t_low, default=y0, n_candidates=n, body=mask,
            )  # fmt: skip
            st.info["did"] = {  # type: ignore[index]
                "mode": did.mode, "coverage": dict(did.coverage), "seconds": did.timings["total"],
            }  # fmt: skip
        timings = dict(st.timings)
        timings["bounds"] = t_bounds
        timings["total"] = time.perf_counter() - t0
        return dataclasses.replace(st, timings=timings)


def _stream_order(stack: CandidateStack) -> list[Candidate]:
    """The default, then the high side from the default outward, then the low side."""
    d = stack.default_index
    return [stack.candidates[d], *reversed(stack.candidates[:d]), *stack.candidates[d + 1 :]]
