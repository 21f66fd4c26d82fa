"""Running DID on a CT volume: the result folder, its labels, figures, pick and exports.

:func:`run_did` is what ``ctdid run`` calls; :mod:`ctdid.demo` uses it on the embedded real
slice (or a phantom).
Its options are one :class:`RunOptions`; its steps live in :mod:`~ctdid.runner.run`
(the pipeline), :mod:`~ctdid.runner.resume`, :mod:`~ctdid.runner.trajectories`,
:mod:`~ctdid.runner.stream` and :mod:`~ctdid.runner.outputs`.
"""

from ctdid.runner.labelling import LABEL_NAMES, CandidateLabeller
from ctdid.runner.options import (
    EXPORT_FORMATS,
    METHODS,
    MODES,
    PICK_TASKS,
    RunOptions,
    check_pick,
    parse_exports,
)
from ctdid.runner.run import run_did
from ctdid.runner.summary import RunProgress, RunSummary

__all__ = [
    "EXPORT_FORMATS",
    "LABEL_NAMES",
    "METHODS",
    "MODES",
    "PICK_TASKS",
    "CandidateLabeller",
    "RunOptions",
    "RunProgress",
    "RunSummary",
    "check_pick",
    "parse_exports",
    "run_did",
]
