"""The paper's claims as checks on numbers, and their summary as HELD / NOT HELD.

Each ``check_*`` function takes the measurements of one candidate stack (ordered from the
high-resolution end to the low-noise end, as :class:`ctdid.core.CandidateStack`; for
:func:`check_beats_blend` also those of the pixel-blend stack of the same input) and returns a
:class:`CaseCheck`: whether the claim holds on that case and the numbers that say so.
:func:`summarise` folds the cases of each claim into one :class:`Claim` row of the report: HELD
when every case holds, NOT HELD (with the failing cases and a likely reason) otherwise, NOT
CHECKED when no experiment could test it (for example a shipped model is missing).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "CLAIMS",
    "CaseCheck",
    "Claim",
    "check_beats_blend",
    "check_cnr_rises",
    "check_resolution_falls",
    "check_smoothing",
    "check_std_falls",
    "summarise",
]

#: Claim key -> (statement, likely reason when it does not hold).
CLAIMS: dict[str, tuple[str, str]] = {
    "std-falls": (
        "Noise (STD of a flat ROI) falls monotonically from the high-resolution end to the "
        "low-noise end of the candidates.",
        "a fine-tuning direction overshot or stalled, so neighbouring candidates swap places in "
        "noise; or the flat ROI holds structure whose smoothing changes the STD non-monotonically.",
    ),
    "cnr-rises": (
        "The CNR of a low-contrast lesion rises toward the low-noise end.",
        "smoothing toward t_low also erodes the lesion's contrast (small or very faint lesions), "
        "or the lesion's ROIs hold too few pixels for a stable CNR.",
    ),
    "lower-dose-oversmooths": (
        "A model trained at a lower dose than the input over-smooths it, and a high-resolution "
        "candidate lowers the RMSE vs the reference.",
        "the dose gap is too small for the model's output to be visibly too smooth, or the model "
        "generalises across doses (it removes only the noise it sees); then the default is "
        "already the best candidate. Or the high-resolution candidates are too coarse near the "
        "default: toward t_high = x the noise comes back fast (the first candidate, about 12 % "
        "of the way, already adds about 12 % of the input's noise), so a better image between "
        "the default and that candidate is not among the candidates.",
    ),
    "higher-dose-undersmooths": (
        "A model trained at a higher dose than the input under-smooths it, and a low-noise "
        "candidate lowers the RMSE vs the reference.",
        "the model removes more noise than its training dose had (it adapts to the input's "
        "noise), so the default is already the best candidate; or the reference's own noise "
        "makes RMSE favour noisier images (real full-dose references).",
    ),
    "resolution-falls": (
        "(supplementary) Resolution (TTF50 of a high-contrast insert) falls from the "
        "high-resolution end to the low-noise end.",
        "the denoiser keeps high-contrast edges (edge-preserving), so the TTF of a 300 HU insert "
        "barely changes along the curve and noise in the ESF decides the order.",
    ),
    "beats-blend": (
        "DID candidates are at least as good as a pixel blend at equal noise.",
        "the fine-tuned weights trade noise for resolution no better than a pixel blend of the "
        "same three images (x, the default, t_low; the ASiR-V-style percentage blend every CT "
        "user has for free): toward t_high the network re-learns the input's noise and detail "
        "together; toward t_low it blurs edges faster than its noise falls.",
    ),
}

Status = Literal["HELD", "NOT HELD", "NOT CHECKED"]


@dataclasses.dataclass(frozen=True)
class CaseCheck:
    """One claim checked on one candidate stack.

    Attributes
    ----------
    claim : str
        Key of :data:`CLAIMS`.
    case : str
        What was tested (experiment, model, input), e.g. ``"Fig. 5: unet-d25 on dose 1/2"``.
    held : bool
        Whether the claim holds on this case.
    numbers : str
        The measured numbers behind the verdict, with units.
    """

    claim: str
    case: str
    held: bool
    numbers: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper and its verdict over all cases.

    Attributes
    ----------
    key : str
        Key of :data:`CLAIMS`.
    statement : str
        The claim in words.
    status : {"HELD", "NOT HELD", "NOT CHECKED"}
        Verdict: HELD when every case holds, NOT HELD when any does not.
    cases : tuple of CaseCheck
        The cases behind the verdict.
    reason : str
        Likely reason when NOT HELD, why it could not be checked when NOT CHECKED, else "".
    """

    key: str
    statement: str
    status: Status
    cases: tuple[CaseCheck, ...]
    reason: str = ""

    @property
    def n_held(self) -> int:
        """Number of cases where the claim holds."""
        return sum(c.held for c in self.cases)


def _values(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size < 2:
        raise ValueError(f"{name} needs at least two candidates, got {arr.size}")
    return arr


def _lowest(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else float("nan")


def _fmt_list(values: np.ndarray, spec: str) -> str:
    return ", ".join("n/a" if not math.isfinite(v) else f"{v:{spec}}" for v in values)


def check_std_falls(
    std_hu: ArrayLike, *, case: str, default_index: int | None = None, slack_hu: float = 0.1
) -> CaseCheck:
    """Claim ``"std-falls"``: STD never rises (by more than ``slack_hu``) along the candidates.

    Parameters
    ----------
    std_hu : array_like
        STD in HU of a flat ROI per candidate, high-resolution end first.
    case : str
        Label of the case.
    default_index : int, optional
        Index of the default, marked in the numbers.
    slack_hu : float, optional
        Rise in HU between neighbours tolerated as measurement noise. Default 0.1 HU.

    Returns
    -------
    CaseCheck
    """
    s = _values(std_hu, "std_hu")
    rises = np.nonzero(np.diff(s) > slack_hu)[0]
    held = bool(np.all(np.isfinite(s)) and rises.size == 0 and s[-1] < s[0])
    parts = [f"STD {s[0]:.1f} -> {s[-1]:.1f} HU"]
    if default_index is not None:
        parts.append(f"default {s[default_index]:.1f} HU")
    if rises.size:
        parts.append(
            "rises at " + ", ".join(f"#{i}->{i + 1} (+{s[i + 1] - s[i]:.2f} HU)" for i in rises)
        )
    else:
        parts.append(f"monotone within {slack_hu:g} HU over {s.size} candidates")
    return CaseCheck("std-falls", case, held, "; ".join(parts))


def check_cnr_rises(
    cnr: ArrayLike, *, case: str, default_index: int | None = None, rel_slack: float = 0.02
) -> CaseCheck:
    """Claim ``"cnr-rises"``: CNR never falls (by more than ``rel_slack``) along the candidates.

    Parameters
    ----------
    cnr : array_like
        CNR (dimensionless) of the lesion per candidate, high-resolution end first.
    case : str
        Label of the case.
    default_index : int, optional
        Index of the default, marked in the numbers.
    rel_slack : float, optional
        Relative drop between neighbours tolerated. Default 0.02 (2 %).

    Returns
    -------
    CaseCheck
        Held when the low-noise end's CNR exceeds the high-resolution end's and no step drops
        by more than ``rel_slack``.
    """
    c = _values(cnr, "cnr")
    drops = np.nonzero(c[1:] < c[:-1] * (1.0 - rel_slack))[0]
    held = bool(np.all(np.isfinite(c)) and drops.size == 0 and c[-1] > c[0])
    parts = [f"CNR {c[0]:.2f} -> {c[-1]:.2f}"]
    if default_index is not None:
        parts.append(f"default {c[default_index]:.2f}")
    if drops.size:
        parts.append("falls at " + ", ".join(f"#{i}->{i + 1}" for i in drops))
        parts.append(f"peak {c.max():.2f} at #{int(np.argmax(c))}")
    else:
        parts.append(f"non-decreasing within {100 * rel_slack:g} %")
    return CaseCheck("cnr-rises", case, held, "; ".join(parts))


def check_resolution_falls(
    mtf50: ArrayLike, *, case: str, default_index: int | None = None, rel_slack: float = 0.02
) -> CaseCheck:
    """Claim ``"resolution-falls"``: MTF50/TTF50 never rises along the candidates.

    Parameters
    ----------
    mtf50 : array_like
        MTF50 (or TTF50) in cycles/mm per candidate, high-resolution end first.
    case : str
        Label of the case.
    default_index : int, optional
        Index of the default, marked in the numbers.
    rel_slack : float, optional
        Relative rise between neighbours tolerated. Default 0.02 (2 %).

    Returns
    -------
    CaseCheck
    """
    m = _values(mtf50, "mtf50")
    rises = np.nonzero(m[1:] > m[:-1] * (1.0 + rel_slack))[0]
    held = bool(np.all(np.isfinite(m)) and rises.size == 0 and m[-1] < m[0])
    parts = [f"TTF50 {m[0]:.3f} -> {m[-1]:.3f} /mm"]
    if default_index is not None:
        parts.append(f"default {m[default_index]:.3f} /mm")
    if rises.size:
        parts.append("rises at " + ", ".join(f"#{i}->{i + 1}" for i in rises))
    else:
        parts.append(f"non-increasing within {100 * rel_slack:g} %")
    return CaseCheck("resolution-falls", case, held, "; ".join(parts))


def check_smoothing(
    strengths: ArrayLike,
    rmse_hu: ArrayLike,
    default_index: int,
    *,
    expect: Literal["over", "under"],
    case: str,
    min_gain_hu: float = 0.05,
) -> CaseCheck:
    """Claims ``"lower-dose-oversmooths"`` (``expect="over"``) and ``"higher-dose-undersmooths"``.

    Over-smoothing means the candidate closest to the reference (lowest RMSE) lies on the
    high-resolution side (strength < 0); the claim holds when it does and the best
    high-resolution candidate beats the default's RMSE by at least ``min_gain_hu``.
    Under-smoothing is the mirror image on the low-noise side (strength > 0).

    Parameters
    ----------
    strengths : array_like
        Strength of each candidate in [-1, 1], non-decreasing (high resolution first).
    rmse_hu : array_like
        RMSE in HU of each candidate vs the reference.
    default_index : int
        Index of the default.
    expect : {"over", "under"}
        Which failure of the default the claim predicts.
    case : str
        Label of the case.
    min_gain_hu : float, optional
        Smallest RMSE gain in HU that counts as "lowers". Default 0.05 HU.

    Returns
    -------
    CaseCheck
    """
    s = _values(strengths, "strengths")
    r = _values(rmse_hu, "rmse_hu")
    if s.size != r.size:
        raise ValueError(f"{s.size} strengths but {r.size} RMSE values")
    if not 0 <= default_index < s.size:
        raise ValueError(f"default_index {default_index} out of range")
    if expect not in ("over", "under"):
        raise ValueError(f"expect must be 'over' or 'under', got {expect!r}")
    key = "lower-dose-oversmooths" if expect == "over" else "higher-dose-undersmooths"
    side = s < 0 if expect == "over" else s > 0
    side_name = "high-resolution" if expect == "over" else "low-noise"
    r_def = float(r[default_index])
    best = int(np.nanargmin(r))
    parts = [f"default RMSE {r_def:.2f} HU", f"best s = {s[best]:+.2f} ({r[best]:.2f} HU)"]
    if not side.any():
        parts.append(f"no {side_name} candidate")
        return CaseCheck(key, case, False, "; ".join(parts))
    idx = np.nonzero(side)[0]
    k = int(idx[np.nanargmin(r[idx])])
    gain = r_def - float(r[k])
    parts.append(
        f"best {side_name} s = {s[k]:+.2f}: {r[k]:.2f} HU ({-100 * gain / r_def:+.1f} %)"
        if r_def > 0
        else f"best {side_name} s = {s[k]:+.2f}: {r[k]:.2f} HU"
    )
    held = bool(bool(side[best]) and gain >= min_gain_hu)
    return CaseCheck(key, case, held, "; ".join(parts))


def check_beats_blend(
    did_noise: ArrayLike,
    did_rmse: ArrayLike,
    blend_noise: ArrayLike,
    blend_rmse: ArrayLike,
    *,
    default_index_did: int,
    default_index_blend: int,
    input_noise: float,
    low_noise: float,
    case: str,
    tol: float = 0.1,
) -> CaseCheck:
    """Claim ``"beats-blend"``: DID's RMSE at equal noise is no worse than the pixel blend's.

    Each side of the default is compared on its own: ``"high"`` with the candidates from the
    high-resolution end up to the default (noise between the default's and ``input_noise``),
    ``"low"`` with those from the default to the low-noise end (noise between ``low_noise``
    and the default's). On each side the mean of ``RMSE_DID - RMSE_blend`` is taken over
    noise levels both curves reach (:func:`ctdid.metrics.difference_at_equal_noise`, linear
    interpolation in noise). A side where the curves share no noise level is left out. The
    case holds when at least one side was compared and on every compared side the mean
    difference is at most ``tol``.

    Parameters
    ----------
    did_noise, did_rmse : array_like
        Noise (e.g. flat-region STD) and RMSE vs the reference of each DID candidate, HU,
        high-resolution end first.
    blend_noise, blend_rmse : array_like
        The same for the blend candidates of the same input, default and t_low.
    default_index_did, default_index_blend : int
        Index of the default in each curve.
    input_noise, low_noise : float
        Noise of the input (t_high) and of t_low, HU.
    case : str
        Label of the case.
    tol : float, optional
        How much higher (HU) DID's mean RMSE may be than the blend's on a side. Default 0.1.

    Returns
    -------
    CaseCheck
    """
    from ctdid.metrics import difference_at_equal_noise, side_range

    dn, dr = _values(did_noise, "did_noise"), _values(did_rmse, "did_rmse")
    bn, br = _values(blend_noise, "blend_noise"), _values(blend_rmse, "blend_rmse")
    if dn.size != dr.size or bn.size != br.size:
        raise ValueError(
            f"noise and RMSE differ in length: DID {dn.size}/{dr.size}, blend {bn.size}/{br.size}"
        )
    d, b = int(default_index_did), int(default_index_blend)
    if not (0 <= d < dn.size and 0 <= b < bn.size):
        raise ValueError(
            f"default index out of range: DID {d} of {dn.size}, blend {b} of {bn.size}"
        )
    sides: tuple[tuple[Literal["high", "low"], slice, slice], ...] = (
        ("high", slice(0, d + 1), slice(0, b + 1)),  # high-resolution end .. default
        ("low", slice(d, None), slice(b, None)),  # default .. low-noise end
    )
    parts: list[str] = []
    verdicts: list[bool] = []
    for side, did_idx, blend_idx in sides:
        within = side_range(
            side,
            input_noise=float(input_noise),
            default_noise=float(dn[d]),
            low_noise=float(low_noise),
        )
        diff, n = float("nan"), 0
        a_n, a_r, b_n, b_r = dn[did_idx], dr[did_idx], bn[blend_idx], br[blend_idx]
        ok_a, ok_b = np.isfinite(a_n) & np.isfinite(a_r), np.isfinite(b_n) & np.isfinite(b_r)
        if ok_a.any() and ok_b.any():
            diff, n = difference_at_equal_noise(
                a_n[ok_a], a_r[ok_a], b_n[ok_b], b_r[ok_b], within=within
            )
        if n == 0 or not math.isfinite(diff):
            parts.append(f"{side}: no common noise level")
            continue
        verdicts.append(diff <= tol)
        parts.append(f"{side}: DID - blend {diff:+.2f} HU over {n} noise levels")
    parts.append(
        f"lowest RMSE DID {_lowest(dr):.2f} HU, blend {_lowest(br):.2f} HU, default {dr[d]:.2f} HU"
    )
    held = bool(verdicts) and all(verdicts)
    return CaseCheck("beats-blend", case, held, "; ".join(parts))


def summarise(
    checks: Sequence[CaseCheck], *, not_checked: dict[str, str] | None = None
) -> list[Claim]:
    """One :class:`Claim` per key of :data:`CLAIMS`, in that order.

    Parameters
    ----------
    checks : sequence of CaseCheck
        All cases checked, any claims.
    not_checked : dict of str to str, optional
        Why a claim without cases could not be checked (e.g. missing models).

    Returns
    -------
    list of Claim
    """
    notes = not_checked or {}
    out = []
    for key, (statement, reason) in CLAIMS.items():
        cases = tuple(c for c in checks if c.claim == key)
        if not cases:
            why = notes.get(key, "no experiment that tests it could run")
            out.append(Claim(key, statement, "NOT CHECKED", cases, why))
        elif all(c.held for c in cases):
            out.append(Claim(key, statement, "HELD", cases))
        else:
            out.append(Claim(key, statement, "NOT HELD", cases, reason))
    return out
