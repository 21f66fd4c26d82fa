"""Repeated application of the denoiser, and blends between consecutive iterates.

Applying a denoiser again smooths further (MAP-NN, Shan et al. 2019, makes its strength levels
this way). The iterates ``phi^j(x)``, j = 0..k (``phi^0 = x``, ``phi^1`` the default,
``phi^k = t_low``) form a piecewise-linear path from the input through the default to the
low-noise bound; the candidates are evenly spaced along it. On the high side the path is the
blend ``x <-> y0`` (one segment); on the low side it passes through ``phi^2 .. phi^(k-1)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.baselines.stack import check_image, make_stack, resolve_body
from ctdid.core.candidates import CandidateStack

__all__ = ["iterate_images", "iterate_stack"]


def iterate_images(
    apply: Callable[[NDArray[np.float32]], NDArray[np.float32]], x: ArrayLike, *, k: int = 3
) -> list[NDArray[np.float32]]:
    """The iterates ``[x, phi(x), phi(phi(x)), ..., phi^k(x)]``, HU.

    Parameters
    ----------
    apply : callable
        The denoiser, HU image in, HU image out (e.g.
        :meth:`ctdid.core.InteractiveDenoiser.apply`).
    x : array_like, shape (H, W)
        Noisy image in HU.
    k : int, optional
        Number of applications, >= 1. Default 3 (``phi^3`` is DID's ``t_low``).

    Returns
    -------
    list of ndarray of float32
        ``k + 1`` images.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    out = [check_image(x)]
    for _ in range(int(k)):
        out.append(np.asarray(apply(out[-1]), dtype=np.float32))
    return out


def _path_point(images: Sequence[NDArray[np.float32]], t: float) -> NDArray[np.float32]:
    """Point at arc parameter ``t`` in [0, len - 1] on the piecewise-linear path."""
    j = min(int(np.floor(t)), len(images) - 2)
    w = t - j
    if w <= 0.0:
        return images[j].copy()
    if w >= 1.0:
        return images[j + 1].copy()
    out = images[j].copy()
    out += np.float32(w) * (images[j + 1] - images[j])
    return out


def iterate_stack(
    iterates: Sequence[ArrayLike],
    *,
    n_candidates: int = 8,
    body: ArrayLike | None = None,
) -> CandidateStack:
    """Candidates along the iterates' path, as a candidate stack.

    Parameters
    ----------
    iterates : sequence of array_like, shape (H, W)
        ``[x, phi(x), ..., phi^k(x)]`` in HU (:func:`iterate_images`), k >= 1.
    n_candidates : int, optional
        Candidates per side, evenly spaced in the path parameter. Default 8.
    body : array_like of bool, optional
        Where progress is measured; default the automatic body mask of ``x``.

    Returns
    -------
    CandidateStack
        ``mode="iterate"``. Strengths are the measured progress toward each bound (clipped,
        made non-decreasing), as the DID engine defines it; the low-side end is ``phi^k``.
        With ``k = 1`` there is no low side beyond the default.
    """
    t0 = time.perf_counter()
    ims = [check_image(im, f"iterate {j}") for j, im in enumerate(iterates)]
    if len(ims) < 2:
        raise ValueError("need at least the input and the default (k >= 1)")
    if any(im.shape != ims[0].shape for im in ims):
        raise ValueError("the iterates must share one shape")
    n = int(n_candidates)
    if n < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates!r}")
    x, y0, t_low = ims[0], ims[1], ims[-1]
    mask = resolve_body(x, body)
    grid = [i / n for i in range(1, n + 1)]
    high = [_path_point([y0, x], a) for a in grid]
    low_path = ims[1:]
    low = (
        [] if len(low_path) < 2 else [_path_point(low_path, a * (len(low_path) - 1)) for a in grid]
    )
    return make_stack(
        high=high,
        default=y0,
        low=low,
        t_high=x,
        t_low=t_low,
        body=mask,
        method="iterate",
        measure=True,
        started=t0,
        info={"k": len(ims) - 1},
    )
