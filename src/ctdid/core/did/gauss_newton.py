"""Gauss-Newton (Levenberg-Marquardt) steps in a Lanczos basis, damping set by progress.

Each iteration linearises the network at the current weights, ``y(w + dw) ~ y + J dw``, and
builds a Lanczos basis of the Gauss-Newton matrix ``A = J^T W J`` (``W`` the loss weights)
started from the gradient ``b = J^T W (t - y)``; each basis vector costs one Jacobian-vector
and one vector-Jacobian product. In that basis the damped step ``dw(lam) = (A + lam I)^-1 b``
and the progress it predicts are known for any damping ``lam`` at no further cost, so ``lam``
is chosen for a predicted advance of ``step_progress`` and checked with one forward pass (the
loss must fall). Candidates inside one iteration are made from the same basis at the damping
that predicts their progress. A step with damping ``lam`` is an implicit-Euler step of length
``1 / lam`` of the gradient flow of the linearised loss: long steps stay stable where the
loss is stiff, which is why this rule reaches 0.8-0.9 of the way to ``t_low`` where Adam and
SGD directions stall at about half.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ctdid.core.did.adam_experimental import OVERSHOOT, AdamRule
from ctdid.core.did.network import state_copy
from ctdid.core.did.options import ADAM_ADAPTIVE_STEP, ADAM_SEARCH_STEP
from ctdid.core.did.progress_control import ProgressTrajectory
from ctdid.core.did.strategy import Event

__all__ = ["GaussNewtonRule", "Krylov"]

OPTIMIZER = "Gauss-Newton (Levenberg-Marquardt) in a Lanczos basis, damping set by progress"
#: Finite-difference Jacobian-vector products: the weight step relative to ``max(||w||, 1)``.
#: Small, because ReLU networks bend where a unit switches: on L506 (``unet-d25``, fast mode)
#: 1e-5 kept the curve within 0.05 HU (median) of the exact products, 1e-4 within 0.4 HU,
#: 3e-4 within 1.2 HU (and central differences at 3e-3 within 1.8 HU).
JVP_STEP = 1e-5


class Krylov:
    """The damped Gauss-Newton step in a Lanczos basis, for any damping.

    ``alphas``/``betas`` are the Lanczos tridiagonal of ``A = J^T W J`` started from
    ``b / beta0``; ``g[i]`` is the progress predicted per unit of basis vector ``i``. The
    step ``(A + lam I)^-1 b`` has basis coefficients :meth:`coeffs` and predicted progress
    :meth:`predicted`; :meth:`damping_for` inverts the latter (bisection in log ``lam``).
    """

    def __init__(
        self,
        alphas: list[float],
        betas: list[float],
        g: list[float],
        beta0: float,
        *,
        floor: float = 0.0,
    ):
        k = len(alphas)
        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        for i in range(k - 1):
            tri[i, i + 1] = tri[i + 1, i] = betas[i]
        self.theta, self.u = torch.linalg.eigh(tri)
        self.ue1 = self.u[0] * beta0
        self.g = torch.tensor(g[:k], dtype=torch.float64)
        self.top = float(self.theta[-1])
        # Rounding can leave tiny negative eigenvalues: keep the damped matrix positive.
        self.lam_min = 2.0 * max(0.0, -float(self.theta[0])) + 1e-7 * abs(self.top) + 1e-30
        # An optional floor relative to the top eigenvalue (DIDOptions.damping_floor).
        self.lam_min = max(self.lam_min, floor * abs(self.top))

    def coeffs(self, lam: float) -> Tensor:
        """Basis coefficients of the step with damping ``lam``."""
        return self.u @ (self.ue1 / (self.theta + lam))

    def predicted(self, lam: float) -> float:
        """Progress the linearised network predicts for the step with damping ``lam``."""
        return float(self.coeffs(lam) @ self.g)

    def damping_for(self, dp: float) -> float:
        """The damping whose step is predicted to gain ``dp`` (the least, if none reaches it)."""
        lo, hi = math.log(self.lam_min), math.log(max(self.top, self.lam_min)) + 12.0
        if self.predicted(math.exp(lo)) <= dp:
            return math.exp(lo)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.predicted(math.exp(mid)) > dp:
                lo = mid
            else:
                hi = mid
        return math.exp(hi)


@dataclasses.dataclass
class _Basis:
    """One iteration's linearisation: output, loss, Lanczos vectors and their tridiagonal."""

    w0: tuple[Tensor, ...]
    y: Tensor
    loss: float
    q: Tensor  # (k, n_parameters) float32 orthonormal vectors
    krylov: Krylov


class GaussNewtonRule:
    """The robust and fast modes' step rule (a :class:`~ctdid.core.did.strategy.StepRule`).

    Parameters
    ----------
    run : ProgressTrajectory
        The trajectory; its patience is capped at 2 (an iteration is many passes).
    names : list of str
        Names of ``run.params`` in the network (for ``torch.func.functional_call``).
    krylov_dim : int
        Most Lanczos vectors per iteration.
    keep_weights : bool
        Copy the weights of candidates made inside an iteration.
    fast : bool
        Fast mode: an iteration gaining less than half (robust: a quarter) of the candidate
        spacing counts toward the stall; the Adam fallback adapts rather than searches.
    damping_floor : float
        Least damping as a fraction of each iteration's top eigenvalue (0: none).
    jvp : {"autodiff", "difference"}
        How ``J q`` is made: forward-mode automatic differentiation (exact; about 3 forward
        passes each on the CPU) or a one-sided finite difference ``(f(w + h q) - f(w)) / h``
        with ``h = JVP_STEP * max(||w||, 1)`` (one forward pass without autograd).
    """

    def __init__(
        self,
        run: ProgressTrajectory,
        *,
        names: list[str],
        krylov_dim: int,
        keep_weights: bool,
        fast: bool,
        damping_floor: float = 0.0,
        jvp: str = "autodiff",
    ) -> None:
        self.floor = damping_floor
        self.jvp_method = jvp
        self.gn_delta = run.step_progress  # not capped by the spacing
        self.names, self.krylov_dim, self.keep_weights = names, krylov_dim, keep_weights
        run.patience = min(run.patience, 2)  # one iteration is many passes
        self.stall_fraction = 0.5 if fast else 0.25
        self.fallback_delta = min(ADAM_ADAPTIVE_STEP if fast else ADAM_SEARCH_STEP, run.spacing)
        self.fallback_search = not fast
        run.info.update(
            {
                "optimizer": OPTIMIZER,
                "krylov_dim": krylov_dim,
                "step_progress": self.gn_delta,
                "damping": [],
                "predicted": [],
                "gained": [],
                "jvp": 0,
                "vjp": 0,
            }
        )
        if damping_floor > 0.0:
            run.info["damping_floor"] = damping_floor
        if jvp != "autodiff":
            run.info["jvp_method"] = f"one-sided difference, step {JVP_STEP:g} x ||w||"
        prob = run.problem
        mask_weight = (
            torch.ones_like(prob.x)
            if prob.loss_weight is None
            else (prob.loss_weight.to(prob.x.dtype))
        )
        self.w = (mask_weight / mask_weight.sum()).detach()
        self.filtered = prob.loss_filter is not None

    def _weigh(self, run: ProgressTrajectory, v: Tensor) -> Tensor:
        """The loss's Gauss-Newton weight applied to an image: ``F^T W F v`` (``F`` the
        optional loss filter, symmetric), ``W`` the normalised pixel weights."""
        if not self.filtered:
            return self.w * v
        f = run.problem.filtered
        return f(self.w * f(v))

    # flat <-> per-parameter
    @staticmethod
    def _flat(ts: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in ts])

    @staticmethod
    def _split(run: ProgressTrajectory, v: Tensor) -> tuple[Tensor, ...]:
        out, i = [], 0
        for p in run.params:
            out.append(v[i : i + p.numel()].view_as(p))
            i += p.numel()
        return tuple(out)

    def step(self, run: ProgressTrajectory) -> list[Event]:
        """One Gauss-Newton iteration; on a first failure (no forward-mode AD) switch to Adam."""
        try:
            return self._gn_step(run)
        except (RuntimeError, NotImplementedError) as exc:  # no forward-mode AD for a layer
            if run.info["damping"]:
                raise  # it worked before: a real error (the weights may be half-updated)
            run.info["fallback"] = f"Adam directions (Gauss-Newton failed: {exc})"[:300]
            run.delta = self.fallback_delta
            run.rule = AdamRule(run, search=self.fallback_search)
            run.y = run.forward()
            return run.rule.step(run)

    def _gn_step(self, run: ProgressTrajectory) -> list[Event]:
        basis = self._basis(run)
        if basis is None:
            run.done, run.reason = True, "stalled"
            return run.final_events()
        run.steps += 1  # after the Jacobian products (a failure there falls back to Adam)
        set_weights = self._setter(run, basis)
        accepted = self._choose(run, basis, set_weights)
        if accepted is None:
            with torch.no_grad():
                for p, w in zip(run.params, basis.w0, strict=True):
                    p.copy_(w)
            run.stall += 1
            run.info["damping"].append(math.inf)
            run.info["predicted"].append(0.0)
            run.info["gained"].append(0.0)
            run.y = basis.y
            return run.check_stop([])
        return self._take(run, basis, set_weights, *accepted)

    def _basis(self, run: ProgressTrajectory) -> _Basis | None:
        """Linearise at the current weights and build the Lanczos basis (``None``: no gradient)."""
        prob = run.problem
        w0 = tuple(p.detach().clone() for p in run.params)

        def func(*ws: Tensor) -> Tensor:
            return torch.func.functional_call(
                run.net, dict(zip(self.names, ws, strict=True)), (prob.x,)
            )

        linearised = torch.func.vjp(func, *w0)
        y, vjp_fn = linearised[0], linearised[1]
        y = y.detach()
        run.info["forward_passes"] += 1
        r = prob.target - y
        loss_now = float(prob.loss(y))

        def jtv(u: Tensor) -> Tensor:
            run.info["vjp"] += 1
            return self._flat(vjp_fn(u))

        def jv_exact(q: Tensor) -> Tensor:
            out = torch.func.jvp(func, w0, self._split(run, q))[1]
            run.info["jvp"] += 1
            return out

        jv = self._difference_jvp(run, w0) if self.jvp_method == "difference" else jv_exact

        b = jtv(self._weigh(run, r)).double()
        beta0 = float(torch.linalg.vector_norm(b))
        if not (math.isfinite(beta0) and beta0 > 0.0):
            return None
        qm, krylov = self._lanczos(run, b, beta0, prob.dt.to(y.dtype), jv, jtv)
        return _Basis(w0, y, loss_now, qm, krylov)

    def _difference_jvp(
        self, run: ProgressTrajectory, w0: tuple[Tensor, ...]
    ) -> Callable[[Tensor], Tensor]:
        """``J q`` by a one-sided finite difference at ``w0`` (one forward pass each).

        The base output is made by the same no-grad forward pass as the perturbed ones (so
        that only the perturbation differs); the weights are put back to ``w0`` exactly.
        """
        x = run.problem.x
        with torch.no_grad():
            y_base = run.net(x)
        run.info["forward_passes"] += 1
        norm = math.sqrt(sum(float((w.double() ** 2).sum()) for w in w0))
        h = JVP_STEP * max(norm, 1.0)

        def jv(q: Tensor) -> Tensor:
            with torch.no_grad():
                for p, w, s in zip(run.params, w0, self._split(run, q), strict=True):
                    p.copy_(w + h * s)
                out = (run.net(x) - y_base) / h
                for p, w in zip(run.params, w0, strict=True):
                    p.copy_(w)
            run.info["jvp"] += 1
            run.info["forward_passes"] += 1
            return out

        return jv

    def _lanczos(
        self,
        run: ProgressTrajectory,
        b: Tensor,
        beta0: float,
        dt: Tensor,
        jv: Callable[[Tensor], Tensor],
        jtv: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, Krylov]:
        """Lanczos vectors of ``J^T W J`` from ``b`` (fully reorthogonalised) and their Krylov.

        ``dt`` is the bound minus the default inside the body; ``jv``/``jtv`` the Jacobian
        products. Stops early once the step for ``step_progress`` has settled.
        """
        denom = run.problem.denom
        qm = torch.empty((self.krylov_dim, b.numel()), dtype=torch.float32, device=b.device)
        qm[0] = (b / beta0).float()
        alphas: list[float] = []
        betas: list[float] = []
        g: list[float] = []  # predicted progress per unit coefficient of each basis vector
        lam_prev = 0.0
        k = 0
        for j in range(self.krylov_dim):
            k = j + 1
            q = qm[j]
            jq = jv(q)
            g.append(float((jq.double() * dt).sum()) / denom)
            aq = jtv(self._weigh(run, jq))
            alphas.append(float(aq.double() @ q.double()))
            v = aq - alphas[-1] * q
            if j > 0:
                v = v - betas[-1] * qm[j - 1]
            done = qm[: j + 1]
            for _ in range(2):  # full reorthogonalisation
                v = v - done.T @ (done @ v)
            beta = float(torch.linalg.vector_norm(v.double()))
            if not (math.isfinite(beta) and beta > 1e-7 * max(abs(a) for a in alphas)):
                break
            if k >= 4:
                # Stop adding vectors once the step that advances delta has settled: strongly
                # damped steps (the first ones) need only a few.
                trial = Krylov(alphas, betas, g, beta0, floor=self.floor)
                if trial.predicted(trial.lam_min) > self.gn_delta:
                    lam_k = trial.damping_for(self.gn_delta)
                    if lam_prev > 0 and abs(math.log(lam_k / lam_prev)) < 0.05:
                        break
                    lam_prev = lam_k
            if k == self.krylov_dim:
                break
            betas.append(beta)
            qm[j + 1] = v / beta
        run.basis_bytes = max(run.basis_bytes, k * qm.shape[1] * 4)
        run.info.setdefault("basis_sizes", []).append(k)
        return qm[:k], Krylov(alphas, betas, g, beta0, floor=self.floor)

    def _setter(self, run: ProgressTrajectory, basis: _Basis) -> Callable[[float], None]:
        """``set_weights(lam)``: the weights of the step with damping ``lam``."""

        def set_weights(lam: float) -> None:
            step = self._split(run, basis.krylov.coeffs(lam).float() @ basis.q)
            with torch.no_grad():
                for p, w, s in zip(run.params, basis.w0, step, strict=True):
                    p.copy_(w + s)

        return set_weights

    def _choose(
        self, run: ProgressTrajectory, basis: _Basis, set_weights: Callable[[float], None]
    ) -> tuple[float, Tensor, float] | None:
        """The damping, output and gain of the step taken, or ``None`` if none lowers the loss.

        Aims at ``step_progress`` (or what the basis can reach) and halves the aim while the
        loss rises; a step that lowers the loss without progress is followed as a stall.
        """
        krylov = basis.krylov
        aim = min(self.gn_delta, krylov.predicted(krylov.lam_min))
        fallback: tuple[float, float] | None = None  # (loss, damping) of a descent step
        for _ in range(8 if aim > 0 else 1):  # no progress predicted: one try, least damped
            lam = krylov.damping_for(aim)
            set_weights(lam)
            y_new, dp, new_loss = run.trial()
            if new_loss <= basis.loss and 0.0 < dp <= OVERSHOOT * self.gn_delta:
                return lam, y_new, dp
            if new_loss <= basis.loss and (fallback is None or new_loss < fallback[0]):
                fallback = (new_loss, lam)
            aim *= 0.5
        if fallback is None:
            return None
        # The loss falls but progress does not: follow the loss (counts as a stall).
        set_weights(fallback[1])
        y_new, dp, _ = run.trial()
        return fallback[1], y_new, dp

    def _take(
        self,
        run: ProgressTrajectory,
        basis: _Basis,
        set_weights: Callable[[float], None],
        lam: float,
        y_new: Tensor,
        dp: float,
    ) -> list[Event]:
        """Record the step, make the candidates inside it from the basis, update the stall."""
        krylov = basis.krylov
        pred = krylov.predicted(lam)
        run.info["damping"].append(lam)
        run.info["predicted"].append(pred)
        run.info["gained"].append(dp)
        run.info["alphas"].append(1.0 / lam)
        p_old = run.p
        events: list[Event] = []
        scale = pred / dp if dp > 0 else 1.0
        while (
            run.next_target < len(run.targets)
            and run.targets[run.next_target] < p_old + dp - 0.25 * run.spacing
        ):
            want = (run.targets[run.next_target] - p_old) * scale
            set_weights(krylov.damping_for(want))
            run.next_target += 1
            run.last_recorded = run.targets[run.next_target - 1]
            weights = state_copy(run.net) if self.keep_weights else None
            events.append(Event(run.steps, run.render(None), weights))
        set_weights(lam)
        run.y = y_new
        run.p = p_old + dp
        # An iteration costs many passes: one that gains less than a fraction of the candidate
        # spacing (or tol) counts toward the stall.
        if run.p >= run.p_best + max(run.tol, self.stall_fraction * run.spacing):
            run.p_best, run.stall = run.p, 0
        else:
            run.stall += 1
        if run.cross_targets():
            events.append(run.event())
        return run.check_stop(events)
