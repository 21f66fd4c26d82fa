"""Which method makes each side of the curve ``ctdid run`` shows (``--method auto``).

DID's fine-tuned candidates have to earn their time against what a CT user has for free: a
pixel blend of the input, the default and ``t_low`` (the ASiR-V convention) and the model's
own iterates. ``benchmarks/eval_curves.py --verdict`` measures them at equal noise on the
evaluation data and writes ``curve_verdict.json`` next to this module: per engine mode and
side, the method chosen and the numbers behind it. ``--method auto`` (the default) reads it:
each side is made by the method the harness found better; the faithful mode is the paper's
DID on both sides. Any other ``--method`` is used on both sides as asked.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import Any

from ctdid.errors import InputError

__all__ = ["CurveChoice", "choose_curve", "load_verdict"]

VERDICT_FILE = "curve_verdict.json"
SIDES = ("high", "low")


@dataclasses.dataclass(frozen=True)
class CurveChoice:
    """The method of each side and why (recorded in ``run.json`` as ``curve``).

    Parameters
    ----------
    high, low : str
        Method of the high-resolution side (default -> input) and of the low-noise side
        (default -> ``t_low``): ``"did"`` or a baseline name.
    reason : str
        Why, in words (the harness's numbers for ``auto``).
    verdict : str, optional
        Where the choice comes from (the verdict's command and date) for ``auto``.
    """

    high: str
    low: str
    reason: str
    verdict: str | None = None

    @property
    def engine_method(self) -> str:
        """``"did"``, one baseline name (both sides alike), or ``"sided"``."""
        return self.high if self.high == self.low else "sided"

    def source(self, direction: str) -> str:
        """The method behind a candidate of ``direction`` (``"default"``: the model)."""
        if direction == "high":
            return self.high
        if direction == "low":
            return self.low
        return "default"

    def describe(self, mode: str) -> str:
        """The curve in words, e.g. ``"high side: blend, low side: iterate (no DID)"``."""

        def name(m: str) -> str:
            return f"DID {mode}" if m == "did" else m

        if self.high == self.low:
            return f"DID, {mode} mode" if self.high == "did" else f"{self.high} baseline (no DID)"
        no_did = " (no DID)" if "did" not in (self.high, self.low) else ""
        return f"high side: {name(self.high)}, low side: {name(self.low)}{no_did}"

    def to_dict(self) -> dict[str, Any]:
        """As ``run.json`` records it."""
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def load_verdict() -> dict[str, Any]:
    """The packaged verdict of the comparison harness (``curve_verdict.json``).

    Raises
    ------
    InputError
        If the file is missing or malformed (a broken installation).
    """
    try:
        text = resources.files("ctdid.runner").joinpath(VERDICT_FILE).read_text()
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"the packaged {VERDICT_FILE} cannot be read ({exc}); reinstall "
                         "ctdid or pass --method did") from None  # fmt: skip
    if not isinstance(doc, dict) or not isinstance(doc.get("modes"), dict):
        raise InputError(f"the packaged {VERDICT_FILE} has no 'modes'; reinstall ctdid")
    return doc


def choose_curve(method: str, mode: str, verdict: dict[str, Any] | None = None) -> CurveChoice:
    """The method of each side for ``--method METHOD --mode MODE``.

    Parameters
    ----------
    method : str
        ``"auto"``, ``"did"`` or a baseline name.
    mode : {"robust", "faithful", "fast"}
        The engine mode.
    verdict : mapping, optional
        The harness's verdict; default :func:`load_verdict` (read only for ``auto``).

    Returns
    -------
    CurveChoice
    """
    if method != "auto":
        return CurveChoice(method, method, f"--method {method} on both sides, as asked")
    if mode == "faithful":
        return CurveChoice("did", "did", "faithful mode: the paper's DID on both sides")
    doc = load_verdict() if verdict is None else verdict
    entry = doc["modes"].get(mode)
    if not isinstance(entry, dict) or any(s not in entry for s in SIDES):
        raise InputError(f"{VERDICT_FILE} has no verdict for the {mode} mode; use --method did")
    why = "; ".join(f"{side}: {entry[side]['why']}" for side in SIDES)
    where = f"{doc.get('command', '?')} ({doc.get('date', '?')}, model {doc.get('model', '?')})"
    return CurveChoice(str(entry["high"]["choice"]), str(entry["low"]["choice"]), why, where)
