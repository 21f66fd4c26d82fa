"""``ctdid reproduce``: the paper's experiments (Bai et al., arXiv 2011.14873) and their report.

:func:`run_reproduction` simulates the inputs, loads the shipped denoisers, runs DID, measures
every candidate (STD, CNR, RMSE in HU; TTF50 in cycles/mm), draws the analogs of the paper's
Figs. 2-8 and writes ``report.md``, where each of the paper's claims is reported as HELD or
NOT HELD with its numbers (:mod:`ctdid.reproduce.claims`).

Examples
--------
>>> from ctdid.reproduce import run_reproduction
>>> result = run_reproduction("docs/reproduction", quick=True)        # doctest: +SKIP
>>> [(c.key, c.status) for c in result.claims]                       # doctest: +SKIP
"""

from ctdid.reproduce.claims import (
    CLAIMS,
    CaseCheck,
    Claim,
    check_beats_blend,
    check_cnr_rises,
    check_resolution_falls,
    check_smoothing,
    check_std_falls,
    summarise,
)
from ctdid.reproduce.experiments import ReproConfig, make_config
from ctdid.reproduce.report import REQUIRED_MODELS, ReproResult, run_reproduction, write_report

__all__ = [
    "CLAIMS",
    "REQUIRED_MODELS",
    "CaseCheck",
    "Claim",
    "ReproConfig",
    "ReproResult",
    "check_beats_blend",
    "check_cnr_rises",
    "check_resolution_falls",
    "check_smoothing",
    "check_std_falls",
    "make_config",
    "run_reproduction",
    "summarise",
    "write_report",
]
