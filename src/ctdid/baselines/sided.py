"""One curve made of two halves: a method for the high side and one for the low side.

The comparison harness (``benchmarks/eval_curves.py``) measures DID and the free baselines on
each side of the default separately; the better maker need not be the same on both sides
(e.g. the pixel blend toward the input, the model's iterates toward ``t_low``).
:class:`SidedDenoiser` makes each side with its own method and joins them at the shared
default into one :class:`~ctdid.core.CandidateStack`, ordered high resolution -> low noise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from torch import nn

from ctdid.baselines.blend import blend_stack
from ctdid.baselines.engine import EngineLike
from ctdid.baselines.iterate import iterate_images, iterate_stack
from ctdid.baselines.stack import check_image, resolve_body
from ctdid.core.candidates import CandidateStack
from ctdid.core.did import InteractiveDenoiser

__all__ = ["SIDE_METHODS", "SidedDenoiser", "join_sides"]

#: Methods a side can be made with.
SIDE_METHODS: tuple[str, ...] = ("did", "blend", "iterate")


def join_sides(
    high: CandidateStack, low: CandidateStack, *, names: Mapping[str, str]
) -> CandidateStack:
    """The high side of ``high``, its default, and the low side of ``low``, as one stack.

    Parameters
    ----------
    high, low : CandidateStack
        Stacks of the same input and default; only the named side of each is used.
    names : mapping
        ``{"high": method, "low": method}``, recorded as ``info["curve"]``.

    Returns
    -------
    CandidateStack
        ``mode`` ``"high-METHOD+low-METHOD"``; bounds and body from ``high`` (the same
        images as ``low``'s when both come from one input and model).
    """
    dh, dl = high.default_index, low.default_index
    cands = (*high.candidates[: dh + 1], *low.candidates[dl + 1 :])
    info = {
        "method": "sided",
        "curve": {"high": names["high"], "low": names["low"]},
        "high": dict(high.info or {}),
        "low": dict(low.info or {}),
    }
    timings = {"high": float(high.timings.get("total", 0.0)),
               "low": float(low.timings.get("total", 0.0))}  # fmt: skip
    return CandidateStack(
        candidates=cands,
        default_index=dh,
        t_high=high.t_high,
        t_low=low.t_low,
        body=high.body,
        mode=f"high-{names['high']}+low-{names['low']}",
        steps={"high": int(high.steps.get("high", 0)), "low": int(low.steps.get("low", 0))},
        stop_reasons={
            "high": high.stop_reasons.get("high", "baseline"),
            "low": low.stop_reasons.get("low", "baseline"),
        },
        timings=timings,
        peak_memory_bytes=max(high.peak_memory_bytes, low.peak_memory_bytes),
        memory_method=high.memory_method,
        info=info,
    )


class SidedDenoiser(EngineLike):
    """Candidates of one method toward the input and another toward ``t_low``, engine-style.

    Parameters
    ----------
    model : nn.Module
        Pretrained denoiser, HU in and HU out.
    high, low : {"did", "blend", "iterate"}
        The method of each side: DID's fine-tuning toward that bound (in ``did_options``'s
        mode, that direction only), the pixel blend (:func:`~ctdid.baselines.blend_stack`) or
        the path through the model's iterates (:func:`~ctdid.baselines.iterate_stack`).
    k : int, optional
        Model applications of ``t_low``. Default 3.
    n_candidates : int, optional
        Candidates per side. Default 8.
    did_options : mapping, optional
        Keyword options of the DID engine for a DID side (``mode``, ``seed``, ...); default
        the robust mode.
    body_threshold : float, optional
        HU threshold of the automatic body mask. Default -500.
    device : str or torch.device, optional
        Where the model runs.

    Notes
    -----
    It has the parts of :class:`ctdid.core.InteractiveDenoiser` the runner uses (``run``,
    ``iter_candidates``, ``apply``, ``k``, ``n_candidates``, ``coverage``, ``directions``,
    ``body_threshold``). Strengths run from ``-1`` (the input) to ``+1`` (``t_low``) as for
    every stack; each side's strengths are its own method's.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        high: str,
        low: str,
        k: int = 3,
        n_candidates: int = 8,
        did_options: Mapping[str, Any] | None = None,
        body_threshold: float = -500.0,
        device: Any = None,
    ) -> None:
        for side, name in (("high", high), ("low", low)):
            if name not in SIDE_METHODS:
                raise ValueError(f"{side}: unknown side method {name!r}; use one of {SIDE_METHODS}")
        if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 1:
            raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
        opts = dict(did_options or {})
        opts.pop("keep_weights", None)
        opts.pop("directions", None)
        opts.setdefault("mode", "robust")
        self.sides = {"high": high, "low": low}
        common = dict(k=k, n_candidates=n_candidates, body_threshold=body_threshold, device=device)
        self._engines = {
            side: InteractiveDenoiser(model, directions=(side,), **common, **opts)
            for side, name in self.sides.items()
            if name == "did"
        }
        self._engine = InteractiveDenoiser(model, **common, **opts)
        self.model = self._engine.model
        self.k = self._engine.k
        self.n_candidates = int(n_candidates)
        self.coverage = float(self._engine.coverage)
        self.directions: tuple[str, ...] = ("high", "low")
        self.body_threshold = float(body_threshold)
        self.did_options = opts

    def _side(
        self, side: str, xi: NDArray[np.float32], mask: NDArray[np.bool_],
        its: Sequence[NDArray[np.float32]],
    ) -> CandidateStack:  # fmt: skip
        name, n = self.sides[side], self.n_candidates
        if name == "did":
            return self._engines[side].run(xi, body=mask)
        if name == "blend":
            return blend_stack(xi, its[1], its[-1], n_candidates=n, body=mask)
        return iterate_stack(its, n_candidates=n, body=mask)

    def stack(self, x: ArrayLike, *, body: ArrayLike | None = None) -> CandidateStack:
        """Compute the whole joined stack (no streaming)."""
        t0 = time.perf_counter()
        xi = check_image(x)
        mask = resolve_body(xi, body, threshold=self.body_threshold)
        its = iterate_images(self.apply, xi, k=self.k)
        t_bounds = time.perf_counter() - t0
        parts = {side: self._side(side, xi, mask, its) for side in ("high", "low")}
        joined = join_sides(parts["high"], parts["low"], names=self.sides)
        timings = dict(joined.timings)
        timings["bounds"] = t_bounds
        timings["total"] = time.perf_counter() - t0
        return dataclasses.replace(joined, timings=timings)
