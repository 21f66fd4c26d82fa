"""EXPERIMENTAL: Adam directions with a step length controlled by progress.

``step_control="search"`` tries several step lengths per iteration (forward passes only)
and keeps the one whose progress is closest to the aim; ``"adaptive"`` searches only at the
first iteration, then reuses the step length scaled by aim / achieved progress. Both are
cheaper per iteration than Gauss-Newton but, on ctdid's benchmarks (``benchmarks/
RESULTS.md``), dominated by it on every input: on norm-free networks they stall at about
half of the way to ``t_low``. They stay for two reasons: they are the fallback of
:class:`~ctdid.core.did.gauss_newton.GaussNewtonRule` for networks without forward-mode
derivatives, and they are a reference for new step rules. Not tuned further.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ctdid.core.did.progress_control import ProgressTrajectory
from ctdid.core.did.strategy import Event

__all__ = ["AdamRule"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADAPTIVE_TRIALS = 4  # forward passes an adaptive step may try before following the loss
OVERSHOOT = 2.5  # a step may advance progress by up to this many times its aim
SHRINK = 0.5  # step length factor after an adaptive step that raised the loss
OPTIMIZER = "Adam directions, step length controlled by progress"


class AdamRule:
    """Adam directions (gradients normalised by their RMS); step length set by progress.

    Parameters
    ----------
    run : ProgressTrajectory
        The trajectory this rule steps (its ``lr`` is the first step length, default 1e-4).
    search : bool
        True: search the step length every iteration; false: adapt it after the first.
    """

    def __init__(self, run: ProgressTrajectory, *, search: bool) -> None:
        self.search = search
        self.alpha = 1e-4 if run.lr is None else run.lr
        self.alpha_first: float | None = None
        self.m = [torch.zeros_like(p) for p in run.params]
        self.v = [torch.zeros_like(p) for p in run.params]
        run.info["optimizer"] = OPTIMIZER

    @staticmethod
    def set_weights(
        run: ProgressTrajectory, saved: list[Tensor], d: list[Tensor], alpha: float
    ) -> None:
        """Weights ``saved - alpha * d``."""
        with torch.no_grad():
            for p, w, di in zip(run.params, saved, d, strict=True):
                p.copy_(w - alpha * di)

    def direction(self, run: ProgressTrajectory) -> list[Tensor] | None:
        """The Adam direction at the current weights, or ``None`` when the gradient vanishes."""
        loss = run.problem.loss(run.y)
        self.loss_now = float(loss.detach())
        grads = torch.autograd.grad(loss, run.params, allow_unused=True)
        g = [
            torch.zeros_like(p) if gi is None else gi
            for p, gi in zip(run.params, grads, strict=True)
        ]
        n_el = sum(gi.numel() for gi in g)
        rms = math.sqrt(float(sum((gi.double() ** 2).sum() for gi in g)) / max(n_el, 1))
        if not (math.isfinite(rms) and rms > 0.0):
            return None
        run.steps += 1
        b1, b2 = ADAM_BETAS
        d = []
        for gi, m, v in zip(g, self.m, self.v, strict=True):
            gn = gi / rms
            m.mul_(b1).add_(gn, alpha=1 - b1)
            v.mul_(b2).addcmul_(gn, gn, value=1 - b2)
            mh = m / (1 - b1**run.steps)
            vh = v / (1 - b2**run.steps)
            d.append(mh / (vh.sqrt() + ADAM_EPS))
        return d

    def step(self, run: ProgressTrajectory) -> list[Event]:
        """One iteration: an Adam direction, its length searched or adapted for ``delta``."""
        d = self.direction(run)
        if d is None:
            run.done, run.reason = True, "stalled"
            return run.final_events()
        saved = [p.detach().clone() for p in run.params]
        if self.alpha_first is not None and not self.search:
            return self._adaptive_step(run, saved, d)
        first = self.alpha_first is None
        found = self._search(run, saved, d, first)
        if found is None:
            return self._stay(run, saved, d, self.alpha * 0.5)
        y, alpha, dp = found
        if first:
            self.alpha_first = alpha
        return self._accept(run, y, alpha, dp)

    def _search(
        self, run: ProgressTrajectory, saved: list[Tensor], d: list[Tensor], first: bool
    ) -> tuple[Tensor, float, float] | None:
        """Try step lengths; the output, length and gain of the best, or ``None``."""
        delta, loss_now = run.delta, self.loss_now
        lo, hi = 0.5 * delta, 2.0 * delta
        max_trials = 16 if first else 6
        grow = 10.0 if first else 4.0
        upper = math.inf if self.alpha_first is None else 100.0 * self.alpha_first
        alpha = min(self.alpha, upper)
        # Among trials that lower the loss and raise progress, keep the one closest to delta.
        best: tuple[float, float, float] | None = None  # (score, alpha, dp)
        fallback: tuple[float, float] | None = None  # (loss, alpha): lowest loss seen
        last_alpha = math.nan
        y: Tensor | None = None
        for _ in range(max_trials):
            self.set_weights(run, saved, d, alpha)
            y = None
            y, dp, new_loss = run.trial()
            last_alpha = alpha
            descent = new_loss <= loss_now
            if descent and (fallback is None or new_loss < fallback[0]):
                fallback = (new_loss, alpha)
            if descent and dp > 0:
                score = abs(math.log(dp / delta))
                if best is None or score < best[0]:
                    best = (score, alpha, dp)
                if lo <= dp <= hi:
                    break
            if best is not None and not descent and dp < lo:
                break  # the loss limits the step: take the best step that lowers it
            if not descent or dp > hi or dp <= 0:
                upper = alpha
                factor = min(max(delta / dp, 0.1), 0.5) if descent and dp > 0 else 0.25
                alpha *= factor
            else:
                new_alpha = alpha * min(delta / dp, grow)
                alpha = new_alpha if new_alpha < upper else math.sqrt(alpha * upper)
        if best is None and fallback is not None:
            # The loss goes down but progress does not: follow the loss (counts as a stall).
            best = (math.inf, fallback[1], 0.0)
        if best is None:
            return None
        _, alpha, dp = best
        if alpha != last_alpha:
            self.set_weights(run, saved, d, alpha)
            y = None
            y, dp, _ = run.trial()
        assert y is not None
        return y, alpha, dp

    def _stay(
        self, run: ProgressTrajectory, saved: list[Tensor], d: list[Tensor], alpha: float
    ) -> list[Event]:
        """No step lowers the loss: keep the weights, count a stall, next length ``alpha``."""
        self.set_weights(run, saved, d, 0.0)
        run.stall += 1
        run.info["alphas"].append(0.0)
        run.y = run.forward()
        self.alpha = alpha
        return run.check_stop([])

    def _adaptive_step(
        self, run: ProgressTrajectory, saved: list[Tensor], d: list[Tensor]
    ) -> list[Event]:
        """Trust-region step: reuse the step length the last step ended with.

        One forward pass per iteration when the step is accepted (the loss goes down and
        progress grows by less than ``OVERSHOOT * delta``); otherwise shorten it and try
        again. The next step length is scaled by ``delta / dp`` (within [0.5, 2]).
        """
        alpha = min(self.alpha, 100.0 * (self.alpha_first or math.inf))
        fallback: tuple[float, float] | None = None  # (loss, alpha) of a descent step
        for _ in range(ADAPTIVE_TRIALS):
            self.set_weights(run, saved, d, alpha)
            y, dp, new_loss = run.trial()
            descent = new_loss <= self.loss_now
            if descent and dp <= OVERSHOOT * run.delta:
                # Progress may dip while the loss removes what earlier steps added across
                # the default-to-bound direction; shortening the step would not help.
                return self._accept(run, y, alpha, dp)
            if descent and (fallback is None or new_loss < fallback[0]):
                fallback = (new_loss, alpha)
            alpha *= min(max(run.delta / dp, 0.1), 0.5) if descent else SHRINK
        if fallback is not None:
            # The loss goes down but progress does not (or only in leaps): follow the loss.
            self.set_weights(run, saved, d, fallback[1])
            y, dp, _ = run.trial()
            return self._accept(run, y, fallback[1], dp)
        return self._stay(run, saved, d, alpha)

    def _accept(self, run: ProgressTrajectory, y: Tensor, alpha: float, dp: float) -> list[Event]:
        """Take the step: progress, stall count, next step length, candidates reached."""
        delta = run.delta
        run.y = y
        run.p += dp
        run.info["alphas"].append(alpha)
        self.alpha = alpha * min(max(delta / dp, 0.5), 2.0) if dp > 0 else alpha
        # Stall: an iteration that does not beat the best progress so far by tol (progress can
        # dip and recover while the loss keeps falling).
        if run.p >= run.p_best + run.tol:
            run.p_best, run.stall = run.p, 0
        else:
            run.stall += 1
        events: list[Event] = []
        if run.cross_targets():
            events.append(run.event())
        return run.check_stop(events)
