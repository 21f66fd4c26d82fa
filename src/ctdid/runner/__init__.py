"""Running DID on a CT volume: the result folder, its labels, figures, pick and exports.

:func:`run_did` is what ``ctdid run`` calls; :mod:`ctdid.demo` uses it on a simulated scan.
"""

from ctdid.runner.labelling import LABEL_NAMES, CandidateLabeller
from ctdid.runner.run import (
    EXPORT_FORMATS,
    MODES,
    PICK_TASKS,
    RunProgress,
    RunSummary,
    check_pick,
    parse_exports,
    run_did,
)

__all__ = [
    "EXPORT_FORMATS",
    "LABEL_NAMES",
    "MODES",
    "PICK_TASKS",
    "CandidateLabeller",
    "RunProgress",
    "RunSummary",
    "check_pick",
    "parse_exports",
    "run_did",
]
