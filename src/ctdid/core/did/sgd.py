"""The paper's fine-tuning (faithful mode): SGD on the one-sample loss, every iteration shown.

Bai et al. fine-tune all weights with SGD (momentum 0.9, learning rate 1e-2) on the mean
squared error in network units and stop when the relative change between consecutive
outputs (whole image, network units) is below 1 %.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ctdid.core.did.network import forward_measured, model_output
from ctdid.core.did.options import FAITHFUL_LR, FAITHFUL_MOMENTUM, OptimizerFactory
from ctdid.core.did.problem import Problem
from ctdid.core.did.strategy import Event

__all__ = ["PaperSGD"]


class PaperSGD:
    """One direction of the faithful mode (a :class:`~ctdid.core.did.strategy.Direction`).

    Parameters
    ----------
    net, params, problem
        The network copy, its trainable parameters and the one-sample problem.
    optimizer : callable, optional
        ``optimizer(params)`` instead of the paper's SGD; ``lr`` overrides its rate.
    hu_scale, hu_offset : float
        HU per network unit and the HU of network value 0 (the loss is in network units).
    tol, max_steps, deadline
        Stop at a relative change below ``tol``, after ``max_steps`` iterations or at the
        ``time.perf_counter()`` value ``deadline``.
    render : callable
        Full-size HU output from the training output (the same when training on it).
    """

    basis_bytes = 0

    def __init__(
        self,
        net: nn.Module,
        params: list[nn.Parameter],
        problem: Problem,
        *,
        optimizer: OptimizerFactory | None,
        lr: float | None,
        hu_scale: float,
        hu_offset: float,
        tol: float,
        max_steps: int,
        deadline: float,
        render: Callable[[Tensor], Tensor],
    ) -> None:
        self.net, self.params, self.problem = net, params, problem
        if optimizer is None:
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=FAITHFUL_LR if lr is None else lr, momentum=FAITHFUL_MOMENTUM
            )
        else:
            self.optimizer = optimizer(params)
            if lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
        self.hu_scale, self.hu_offset = hu_scale, hu_offset
        self.tol, self.max_steps, self.deadline, self.render = tol, max_steps, deadline, render
        self.y, self.activation_bytes = forward_measured(net, problem.x)
        self.y_prev = self._to_net(self.y)
        self.done, self.reason, self.steps = False, "", 0
        group = self.optimizer.param_groups[0]
        self.info: dict[str, Any] = {
            "optimizer": type(self.optimizer).__name__,
            "lr": float(group["lr"]),
            "momentum": float(group.get("momentum", 0.0)),
            "loss": "mean squared error in network units, (HU difference / hu_scale)^2",
            "relative_change": [],
        }

    def _to_net(self, y: Tensor) -> Tensor:
        return (y.detach().double() - self.hu_offset) / self.hu_scale

    def step(self) -> list[Event]:
        """One SGD iteration; its output is a candidate."""
        diff = (self.y - self.problem.target) / self.hu_scale
        loss = (diff * diff).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        with torch.enable_grad():
            self.y = model_output(self.net, self.problem.x)
        cur = self._to_net(self.y)
        denom = float(torch.linalg.vector_norm(self.y_prev))
        rel = float(torch.linalg.vector_norm(cur - self.y_prev)) / max(denom, 1e-30)
        self.info["relative_change"].append(rel)
        self.y_prev = cur
        event = Event(self.steps, self.render(self.y))
        if not math.isfinite(rel):
            self.done, self.reason = True, "diverged"
        elif rel < self.tol:
            self.done, self.reason = True, "converged"
        elif self.steps >= self.max_steps:
            self.done, self.reason = True, "max_steps"
        elif time.perf_counter() >= self.deadline:
            self.done, self.reason = True, "time_budget"
        return [event]
