"""A direction whose candidates are evenly spaced in progress toward the bound.

The robust and fast modes do not show every iteration: they place ``n_candidates``
candidates at progress ``coverage * i / n_candidates`` and stop when the last is reached or
progress stalls. :class:`ProgressTrajectory` holds that bookkeeping; how an iteration moves
the weights is its :class:`~ctdid.core.did.strategy.StepRule` (Gauss-Newton by default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ctdid.core.did.network import forward_measured, model_output
from ctdid.core.did.problem import Problem
from ctdid.core.did.strategy import Event, StepRule

__all__ = ["ProgressTrajectory"]


class ProgressTrajectory:
    """One direction of the robust or fast mode (a :class:`~ctdid.core.did.strategy.Direction`).

    Parameters
    ----------
    net, params, problem
        The network copy, its trainable parameters and the one-sample problem.
    n_candidates, coverage : int, float
        Candidates at progress ``coverage * i / n_candidates``, i = 1..n.
    step_progress : float
        Progress an iteration aims for; ``delta`` is it capped at the candidate spacing.
    lr : float, optional
        First step length of the Adam rules (default 1e-4).
    tol, patience, max_steps, deadline
        Stall after ``patience`` iterations not beating the best progress by ``tol``; stop
        after ``max_steps`` iterations or at the ``time.perf_counter()`` value ``deadline``.
    render : callable
        Full-size HU output from a training output, or (``None``) from the current weights.
    rule : callable
        ``rule(trajectory) -> StepRule``, called once at the end of construction.
    """

    def __init__(
        self,
        net: nn.Module,
        params: list[nn.Parameter],
        problem: Problem,
        *,
        n_candidates: int,
        coverage: float,
        step_progress: float,
        lr: float | None,
        tol: float,
        patience: int,
        max_steps: int,
        deadline: float,
        render: Callable[[Tensor | None], Tensor],
        rule: Callable[[ProgressTrajectory], StepRule],
    ) -> None:
        self.net, self.params, self.problem = net, params, problem
        self.targets = [coverage * (i + 1) / n_candidates for i in range(n_candidates)]
        self.spacing = coverage / n_candidates
        self.step_progress = float(step_progress)
        self.delta = min(step_progress, self.spacing)
        self.lr = lr
        self.tol, self.patience, self.max_steps = tol, patience, max_steps
        self.deadline, self.render = deadline, render
        self.y, self.activation_bytes = forward_measured(net, problem.x)
        self.basis_bytes = 0
        self.p = problem.progress(self.y)
        self.next_target = 0
        self.last_recorded = self.p
        self.stall = 0
        self.p_best = self.p
        self.steps = 0
        self.done, self.reason = False, ""
        self.info: dict[str, Any] = {
            "optimizer": "",
            "delta": self.delta,
            "alphas": [],
            "forward_passes": 1,
        }
        if problem.degenerate:
            self.done, self.reason = True, "degenerate"
        self.rule: StepRule = rule(self)

    def step(self) -> list[Event]:
        """One iteration of the step rule; the candidates whose progress it reached."""
        return self.rule.step(self)

    def forward(self) -> Tensor:
        """The training output at the current weights (with gradients)."""
        with torch.enable_grad():
            return model_output(self.net, self.problem.x)

    def trial(self) -> tuple[Tensor, float, float]:
        """Forward pass at the current weights: output, progress gained since ``p``, loss.

        A non-finite progress or loss gives ``-inf`` progress and ``inf`` loss.
        """
        self.info["forward_passes"] += 1
        y = self.forward()
        dp = self.problem.progress(y) - self.p
        loss = float(self.problem.loss(y.detach()))
        if not (math.isfinite(dp) and math.isfinite(loss)):
            return y, -math.inf, math.inf
        return y, dp, loss

    def cross_targets(self) -> bool:
        """Advance ``next_target`` past the targets ``p`` has reached; whether any were."""
        crossed = False
        while self.next_target < len(self.targets) and self.p >= self.targets[self.next_target]:
            self.next_target += 1
            crossed = True
        return crossed

    def check_stop(self, events: list[Event]) -> list[Event]:
        """Set ``done`` and ``reason`` if the direction is finished; add a last candidate."""
        if self.next_target >= len(self.targets):
            self.done, self.reason = True, "coverage"
        elif self.stall >= self.patience:
            self.done, self.reason = True, "stalled"
        elif self.steps >= self.max_steps:
            self.done, self.reason = True, "max_steps"
        elif time.perf_counter() >= self.deadline:
            self.done, self.reason = True, "time_budget"
        if self.done and self.reason != "coverage":
            events.extend(self.final_events())
        return events

    def event(self) -> Event:
        """A candidate from the current output (records its progress)."""
        self.last_recorded = self.p
        return Event(self.steps, self.render(self.y))

    def final_events(self) -> list[Event]:
        """On an early stop: the current output, if it went far enough past the last one."""
        if self.steps > 0 and self.p >= self.last_recorded + max(self.delta, self.spacing / 4):
            return [self.event()]
        return []
