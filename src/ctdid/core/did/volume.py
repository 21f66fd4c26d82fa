"""Candidates for a CT volume: one shared trajectory fine-tuned on a few slices, or per slice."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from ctdid.core.candidates import Candidate, CandidateStack
from ctdid.core.did.inputs import as_tensor, body_weights

if TYPE_CHECKING:
    from ctdid.core.did.engine import InteractiveDenoiser

__all__ = ["drain", "run_volume", "train_index"]


def train_index(n_slices: int, train_slices: int) -> NDArray[np.int_]:
    """Indices of up to ``train_slices`` evenly spaced slices, the first and last kept."""
    return np.unique(np.linspace(0, n_slices - 1, min(train_slices, n_slices)).round().astype(int))


def drain(
    gen: Generator[Candidate, None, CandidateStack],
    callback: Callable[[Candidate], object] | None,
) -> CandidateStack:
    """Run a candidate generator to its end, calling ``callback`` on each; its stack."""
    while True:
        try:
            cand = next(gen)
        except StopIteration as stop:
            result: CandidateStack = stop.value
            return result
        if callback is not None:
            callback(cand)


def run_volume(
    engine: InteractiveDenoiser,
    x: ArrayLike | Tensor,
    *,
    shared: bool,
    train_slices: int,
    batch_size: int,
    body: ArrayLike | Tensor | None,
    callback: Callable[[Candidate], object] | None,
) -> CandidateStack | list[CandidateStack]:
    """:meth:`InteractiveDenoiser.run_volume <ctdid.core.did.InteractiveDenoiser.run_volume>`."""
    from ctdid.core.did.generate import generate

    xt = as_tensor(x, "x")
    if xt.ndim != 3:
        raise ValueError(f"run_volume expects a (Z, H, W) HU volume, got {tuple(xt.shape)}")
    if train_slices < 1 or batch_size < 1:
        raise ValueError("train_slices and batch_size must be >= 1")
    if not shared:
        masks: list[Any] = [None] * xt.shape[0] if body is None else list(np.asarray(body))
        return [engine.run(xt[z], body=masks[z], callback=callback) for z in range(len(xt))]
    shape = tuple(xt.shape)
    xb = xt.unsqueeze(1).to(engine.device)
    mask = body_weights(
        xb, body, shape, threshold=engine.options.body_threshold, device=engine.device
    )
    idx = train_index(xb.shape[0], train_slices)
    gen = generate(engine.setup, xb, mask, shape, batch_size=batch_size, train_index=idx)
    return drain(gen, callback)
