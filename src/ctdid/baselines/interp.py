"""Interpolation in weight space between the pretrained weights and DID's end weights.

Deep network interpolation (DNI; Wang et al., CVPR 2019) moves between two networks by
blending their parameters: ``w(a) = w0 + a (w_end - w0)``, a in [0, 1]. Once DID has made its
end candidates (the weights fine-tuned furthest toward ``t_high`` and toward ``t_low``), any
strength in between costs one forward pass and no fine-tuning. Non-floating buffers (counters)
are taken from ``w0``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from ctdid.baselines.stack import check_image, make_stack, resolve_body
from ctdid.core.candidates import CandidateStack

__all__ = ["interpolate_weights", "weight_interp_stack"]


def interpolate_weights(
    w0: Mapping[str, Tensor], w_end: Mapping[str, Tensor], a: float
) -> dict[str, Tensor]:
    """``w0 + a (w_end - w0)`` for every floating-point tensor of a state dict.

    Parameters
    ----------
    w0, w_end : mapping of str to Tensor
        State dicts with the same keys and shapes (the pretrained and a fine-tuned model).
    a : float
        Position, 0 = ``w0``, 1 = ``w_end`` (values outside [0, 1] extrapolate).

    Returns
    -------
    dict of str to Tensor
        New tensors; integer tensors are copies of ``w0``'s.

    Raises
    ------
    ValueError
        If the keys or shapes differ.
    """
    if set(w0) != set(w_end):
        raise ValueError("the two state dicts have different keys")
    out: dict[str, Tensor] = {}
    for name, t0 in w0.items():
        t1 = w_end[name]
        if t0.shape != t1.shape:
            raise ValueError(f"{name}: shapes {tuple(t0.shape)} and {tuple(t1.shape)} differ")
        if torch.is_floating_point(t0):
            out[name] = t0.detach() + float(a) * (t1.detach().to(t0) - t0.detach())
        else:
            out[name] = t0.detach().clone()
    return out


def weight_interp_stack(
    apply: Callable[..., NDArray[np.float32]],
    x: ArrayLike,
    *,
    w0: Mapping[str, Tensor],
    ends: Mapping[str, Mapping[str, Tensor]],
    t_low: ArrayLike,
    default: ArrayLike | None = None,
    n_candidates: int = 8,
    body: ArrayLike | None = None,
) -> CandidateStack:
    """Candidates from weights interpolated toward DID's end weights, as a candidate stack.

    Parameters
    ----------
    apply : callable
        ``apply(x, weights=state_dict)`` -> HU image, e.g.
        :meth:`ctdid.core.InteractiveDenoiser.apply`.
    x : array_like, shape (H, W)
        Noisy image, HU (the high-resolution bound).
    w0 : mapping
        The pretrained state dict.
    ends : mapping
        ``{"high": state_dict, "low": state_dict}``: the weights of DID's last candidate
        toward each bound (a missing side gives no candidates there).
    t_low : array_like
        The low-noise bound (model applied ``k`` times), HU, for the progress measure.
    default : array_like, optional
        ``apply(x, weights=w0)``; computed when not given.
    n_candidates : int, optional
        Candidates per side, at ``a = i / n``. Default 8.
    body : array_like of bool, optional
        Where progress is measured; default the automatic body mask of ``x``.

    Returns
    -------
    CandidateStack
        ``mode="interp"``. Strengths are measured progress toward each bound (as DID's); the
        outermost candidate of a side is the DID end candidate's image.
    """
    t0 = time.perf_counter()
    xi = check_image(x)
    tl = check_image(t_low, "t_low")
    y0 = check_image(apply(xi, weights=w0) if default is None else default, "default")
    mask = resolve_body(xi, body)
    n = int(n_candidates)
    if n < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates!r}")
    unknown = set(ends) - {"high", "low"}
    if unknown:
        raise ValueError(f"ends holds unknown sides {sorted(unknown)} (use 'high', 'low')")
    sides: dict[str, list[NDArray[np.float32]]] = {"high": [], "low": []}
    for direction, w_end in ends.items():
        for i in range(1, n + 1):
            w = interpolate_weights(w0, w_end, i / n)
            sides[direction].append(np.asarray(apply(xi, weights=w), dtype=np.float32))
    return make_stack(
        high=sides["high"],
        default=y0,
        low=sides["low"],
        t_high=xi,
        t_low=tl,
        body=mask,
        method="interp",
        measure=True,
        started=t0,
        info={"grid": [i / n for i in range(1, n + 1)]},
    )
