"""Pixel blends of the input, the default and the low-noise bound (the ASiR-V convention).

CT users already own a free noise-resolution knob: a percentage blend of two images (GE's
ASiR-V blends an iterative and an FBP reconstruction in 10 % steps). With the same three images
DID starts from, ``x`` (the noisy input), ``y0 = phi(x)`` (the default) and
``t_low = phi^k(x)``, a strength ``s`` in [-1, 1] gives

* ``s <= 0``: ``(1 - |s|) y0 + |s| x`` (toward the input: sharper, noisier);
* ``s >= 0``: ``(1 - s) y0 + s t_low`` (toward the low-noise bound: smoother).

It costs one multiply-add per pixel. A blend's progress toward its bound (as the DID engine
measures it) is exactly ``|s|``.
"""

from __future__ import annotations

import math
import time

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctdid.baselines.stack import check_image, make_stack, resolve_body
from ctdid.core.candidates import CandidateStack

__all__ = ["blend", "blend_stack"]


def blend(x: ArrayLike, default: ArrayLike, t_low: ArrayLike, s: float) -> NDArray[np.float32]:
    """The blend at strength ``s`` (ASiR-V-style percentage blend), in HU.

    Parameters
    ----------
    x, default, t_low : array_like
        The noisy input, the denoiser's output and the denoiser applied ``k`` times, HU,
        all the same shape.
    s : float
        Strength in [-1, 1]: -1 the input (highest resolution and noise), 0 the default,
        +1 the low-noise bound.

    Returns
    -------
    ndarray of float32
        A new image. ``s = 0`` returns the default exactly, ``s = -1`` the input, ``s = +1``
        ``t_low``.

    Raises
    ------
    ValueError
        If the shapes differ or ``s`` is not a finite number in [-1, 1].
    """
    s = float(s)
    if not math.isfinite(s) or abs(s) > 1.0:
        raise ValueError(f"strength s must be a finite number in [-1, 1], got {s}")
    y0 = np.asarray(default, dtype=np.float32)
    end = np.asarray(x if s < 0 else t_low, dtype=np.float32)
    if end.shape != y0.shape:
        raise ValueError(f"shapes differ: default {y0.shape}, bound {end.shape}")
    a = abs(s)
    if a == 0.0:
        return y0.copy()
    if a == 1.0:
        return end.copy()
    out = y0.copy()
    out += np.float32(a) * (end - y0)
    return out


def blend_stack(
    x: ArrayLike,
    default: ArrayLike,
    t_low: ArrayLike,
    *,
    n_candidates: int = 8,
    body: ArrayLike | None = None,
) -> CandidateStack:
    """Blend candidates at ``s = +-i / n_candidates`` (i = 1..n), as a candidate stack.

    Parameters
    ----------
    x, default, t_low : array_like, shape (H, W)
        Noisy input, default output and low-noise bound, HU.
    n_candidates : int, optional
        Candidates per side. Default 8 (steps of 12.5 %).
    body : array_like of bool, optional
        Where progress is measured (recorded in the candidates); default the automatic body
        mask of ``x``.

    Returns
    -------
    CandidateStack
        Ordered high resolution -> low noise, ``mode="blend"``; the high-side end is ``x``,
        the low-side end ``t_low``.
    """
    t0 = time.perf_counter()
    xi = check_image(x, "x")
    y0 = check_image(default, "default")
    tl = check_image(t_low, "t_low")
    if not (xi.shape == y0.shape == tl.shape):
        raise ValueError(f"shapes differ: x {xi.shape}, default {y0.shape}, t_low {tl.shape}")
    n = _count(n_candidates)
    mask = resolve_body(xi, body)
    grid = [i / n for i in range(1, n + 1)]
    return make_stack(
        high=[blend(xi, y0, tl, -a) for a in grid],
        default=y0,
        low=[blend(xi, y0, tl, a) for a in grid],
        t_high=xi,
        t_low=tl,
        body=mask,
        method="blend",
        started=t0,
        info={"convention": "s<0: (1-|s|) y0 + |s| x; s>0: (1-s) y0 + s t_low"},
    )


def _count(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n_candidates must be an integer >= 1, got {n!r}")
    return int(n)
