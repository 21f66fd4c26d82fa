"""The contract between the engine and a fine-tuning strategy.

The engine (:mod:`ctdid.core.did.generate`) drives one :class:`Direction` per bound: it calls
:meth:`Direction.step` until ``done``, each call one iteration, and turns the returned
:class:`Event` images into candidates. Two kinds exist:

* :class:`ctdid.core.did.sgd.PaperSGD` — the paper's optimizer, every iteration a candidate;
* :class:`ctdid.core.did.progress_control.ProgressTrajectory` — candidates at even progress
  toward the bound, each iteration made by a :class:`StepRule`:
  :class:`ctdid.core.did.gauss_newton.GaussNewtonRule` (robust and fast modes) or the
  experimental Adam rules of :mod:`ctdid.core.did.adam_experimental`.

A new step strategy is a :class:`StepRule` in its own file, registered in
:data:`ctdid.core.did.generate.STEP_RULES` (or, if it decides its candidates differently, a
:class:`Direction`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

if TYPE_CHECKING:
    from ctdid.core.did.progress_control import ProgressTrajectory

__all__ = ["Direction", "Event", "StepRule"]


@dataclasses.dataclass
class Event:
    """A candidate a strategy made: its iteration, full-size HU output, and its weights.

    ``weights`` is set only when the image was made by other weights than the network's
    current ones (a Gauss-Newton candidate inside an iteration).
    """

    step: int
    image: Tensor
    weights: dict[str, Tensor] | None = None


class Direction(Protocol):
    """One direction's fine-tuning, advanced one iteration per :meth:`step`.

    Attributes
    ----------
    net : nn.Module
        The network being fine-tuned (its current weights made the last candidate).
    done : bool
        Whether the direction has stopped; ``reason`` says why ("converged", "coverage",
        "stalled", "max_steps", "time_budget", "diverged", "degenerate").
    steps : int
        Iterations made so far.
    info : dict
        JSON-ready record of the strategy (optimizer, step sizes, products), into the stack.
    activation_bytes, basis_bytes : int
        Memory figures for the engine's estimate on CPU.
    """

    net: nn.Module
    done: bool
    reason: str
    steps: int
    info: dict[str, Any]
    activation_bytes: int
    basis_bytes: int

    def step(self) -> list[Event]:
        """Make one iteration; return the candidates it made (possibly none)."""
        ...


class StepRule(Protocol):
    """How a :class:`~ctdid.core.did.progress_control.ProgressTrajectory` makes an iteration.

    The rule moves ``run.params`` so that progress toward the bound grows by about
    ``run.delta`` (or its own step size), records what it did in ``run.info`` and returns
    the events, using the trajectory's bookkeeping (``trial``, ``check_stop``, ``event``).
    """

    def step(self, run: ProgressTrajectory) -> list[Event]:
        """One iteration on ``run``; the candidates it made."""
        ...
