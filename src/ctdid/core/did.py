"""The Deep Interactive Denoiser engine (Bai et al., arXiv 2011.14873).

From one pretrained denoiser ``phi_w0`` (HU in, HU out) and one noisy image ``x``, the engine
makes an ordered set of candidate images along the noise-resolution tradeoff curve:

* the default ``y0 = phi_w0(x)``;
* toward the *high-resolution* bound ``t_high = x``: fine-tune a copy of the weights on the
  one-sample loss ``||phi_w(x) - t_high||^2``; the outputs become sharper and noisier;
* toward the *low-noise* bound ``t_low = phi_w0^k(x)`` (the model applied ``k`` times): the
  same with ``t_low``; the outputs become smoother.

Each candidate's *progress* toward its bound is the projection, inside the body mask, of
``y - y0`` on ``t - y0`` divided by ``||t - y0||^2`` (0 = default, 1 = bound).

Modes
-----
``"faithful"``
    The paper: SGD (momentum 0.9, learning rate 1e-2) on all weights, mean-squared error in
    network units, every iteration's output is a candidate, stop when the relative change
    between consecutive outputs (whole image, network units) is below ``tol`` (1 %).
``"robust"`` (default)
    Gauss-Newton (Levenberg-Marquardt) steps on the same one-sample loss, with the damping
    set, each iteration, so that progress advances by a fixed amount (0.2 of the way). Each
    iteration linearises the network and builds a small Lanczos basis (at most 40 vectors,
    each one Jacobian-vector and one vector-Jacobian product) of the Gauss-Newton matrix; in
    that basis the damped step and the progress it predicts are known for every damping, so
    the damping that advances 0.2 is found without further passes and checked with one
    forward pass (the loss must fall). A damped step is an implicit-Euler step of the
    gradient flow of the linearised loss, the continuous limit of the paper's SGD, so long
    steps stay stable where the loss is stiff (ctdid's measurements: Adam and SGD directions
    stall at about half of the way to ``t_low`` on norm-free networks; these steps reach
    0.8-0.9). The trajectory is parameterised by progress, not by a learning rate: it does
    not depend on the scale of the images, on the loss normalisation or on the size of the
    model. Candidates are evenly spaced in progress; those that fall inside one iteration
    are made from the same basis at the damping that predicts their progress. A direction
    runs until its last candidate reaches ``coverage`` or two iterations in a row gain less
    than a quarter of the candidate spacing. Networks whose layers have no forward-mode
    derivative fall back to the Adam directions below (recorded in ``info``).
``"fast"`` (the best CPU option)
    The same Gauss-Newton steps with a smaller basis (at most 12 vectors), longer steps
    (0.25) and an earlier stop (iterations gaining less than half the spacing): a quarter to
    a half of the robust mode's Jacobian products for nearly the same curve, reaching less
    far toward ``t_low``.

Both modes fine-tune on crops inside the body (four 128 x 128 crops per training slice) and
apply the weights to the whole image for each candidate, which makes an iteration about four
times cheaper on a 512 x 512 slice. Crops are used only when the network has no layer that
pools statistics over the image (instance, group or layer norm): with such layers a crop
sees other statistics than the whole image and the curve would stray (``n_crops=0`` forces
the whole image).

``step_control="search"`` and ``"adaptive"`` select the earlier Adam directions with a step
length searched per iteration (several forward passes) or adapted from the last one (one
forward pass), each iteration advancing progress by 0.04 resp. 0.08: cheaper per iteration,
but on norm-free networks they stall far from ``t_low``.

Both directions run interleaved by default (one network copy each, advanced in turn), so the
first candidates of both ends appear after a few iterations; ``interleave=False`` runs them
one after the other with one copy (less memory, same candidates).

The engine never modifies the caller's model: it fine-tunes a deep copy.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from ctdid.core.body import body_mask
from ctdid.core.candidates import Candidate, CandidateStack

__all__ = ["InteractiveDenoiser", "Mode", "progress"]

Mode = Literal["robust", "faithful", "fast"]
StepControl = Literal["gauss-newton", "search", "adaptive"]

_MODES = ("robust", "faithful", "fast")
_DIRECTIONS = ("high", "low")
_DEFAULT_HU_SCALE = 1000.0
_DEFAULT_HU_OFFSET = -1000.0
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_FAITHFUL_LR = 1e-2
_FAITHFUL_MOMENTUM = 0.9
_ROBUST_STEP = 0.04  # progress per iteration, Adam directions with a line search
_GN_STEP = {"robust": 0.2, "fast": 0.25}  # progress per Gauss-Newton iteration
_KRYLOV_DIM = {"robust": 40, "fast": 12}  # most Lanczos vectors per Gauss-Newton iteration
_FAST_STEP = 0.08  # progress per iteration, Adam directions with an adaptive step
_ADAPTIVE_TRIALS = 4  # forward passes an adaptive step may try before following the loss
_OVERSHOOT = 2.5  # an adaptive step may advance progress by up to this many times delta
_SHRINK = 0.5  # step length factor after an adaptive step that raised the loss

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def progress(
    y: ArrayLike | Tensor,
    default: ArrayLike | Tensor,
    bound: ArrayLike | Tensor,
    mask: ArrayLike | Tensor | None = None,
) -> float:
    """Progress of an image from the default toward a bound, inside a mask.

    Parameters
    ----------
    y, default, bound : array_like or Tensor
        Images in HU, all the same shape.
    mask : array_like or Tensor of bool, optional
        Where to measure (the body); default everywhere.

    Returns
    -------
    float
        ``<y - default, bound - default>_mask / ||bound - default||^2_mask``, not clipped:
        0 at the default, 1 at the bound (or its projection), negative when moving away.
        0 when the bound equals the default inside the mask.
    """
    yt, y0, t = (
        torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a).double()
        for a in (y, default, bound)
    )
    w = torch.ones_like(y0) if mask is None else torch.as_tensor(np.asarray(mask)).to(y0)
    dt = (t - y0) * w
    denom = float((dt * dt).sum())
    if denom <= 0.0:
        return 0.0
    return float(((yt - y0) * dt).sum()) / denom


# --------------------------------------------------------------------------------------------
# Helpers


def _as_tensor(x: ArrayLike | Tensor, name: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be a numeric HU array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a real numeric HU array, got dtype {t.dtype}")
    t = t.to(dtype=torch.float32)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty, shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} holds {n_bad} NaN or Inf value(s); give finite HU values")
    return t


def _model_output(net: nn.Module, x: Tensor) -> Tensor:
    y = net(x)
    if not isinstance(y, Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(
            f"the model must map HU images (B, 1, H, W) to the same shape; "
            f"input {tuple(x.shape)} gave {got}"
        )
    return y


def _apply(net: nn.Module, x: Tensor, batch_size: int | None) -> Tensor:
    """Apply ``net`` without gradients, in chunks of ``batch_size`` along axis 0."""
    with torch.no_grad():
        if batch_size is None or x.shape[0] <= batch_size:
            return _model_output(net, x).detach()
        return torch.cat(
            [
                _model_output(net, x[i : i + batch_size]).detach()
                for i in range(0, x.shape[0], batch_size)
            ]
        )


def _forward_measured(net: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """Forward pass with gradients; also the bytes autograd saves for the backward pass."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            seen[key] = key[1]
        except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
            pass
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = _model_output(net, x)
    return y, int(sum(seen.values()))


def _pools_over_image(model: nn.Module) -> bool:
    """Whether a layer of ``model`` normalises with statistics taken over the image.

    Instance, group and layer norms (and modules named like them, such as ctdid's
    ``SafeInstanceNorm2d``) make the output on a crop differ from the crop of the output.
    Batch norm in eval mode uses fixed statistics and does not count.
    """
    pooled = (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, pooled) or "InstanceNorm" in name or "GroupNorm" in name:
            return True
    return False


def _state_copy(net: nn.Module) -> dict[str, Tensor]:
    """CPU copy of a network's state dict (a candidate's weights)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


@contextlib.contextmanager
def _deterministic(device: torch.device, enabled: bool) -> Iterator[None]:
    """Deterministic cuDNN within the block only (restored after); no-op off CUDA."""
    if not enabled or device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=False, deterministic=True, allow_tf32=False):
        yield


@dataclasses.dataclass
class _Problem:
    """Fine-tuning data for one direction: input, bound, default output and body weights."""

    x: Tensor
    target: Tensor
    y0: Tensor
    mask: Tensor
    loss_weight: Tensor | None = None

    def __post_init__(self) -> None:
        diff = (self.target - self.y0).double() * self.mask
        self._dt = diff
        self.denom = float((diff * diff).sum())

    def loss(self, y: Tensor) -> Tensor:
        """Mean squared error to the bound in HU^2, weighted by ``loss_weight`` if given."""
        sq = (y - self.target) ** 2
        if self.loss_weight is None:
            return sq.mean()
        return (sq * self.loss_weight).sum() / self.loss_weight.sum()

    @property
    def degenerate(self) -> bool:
        return not self.denom > 0.0

    def progress(self, y: Tensor) -> float:
        if self.degenerate:
            return 0.0
        return float(((y.detach().double() - self.y0) * self._dt).sum()) / self.denom


@dataclasses.dataclass
class _Event:
    step: int
    image: Tensor  # full-size output, detached
    weights: dict[str, Tensor] | None = None  # the weights that made it, when not the runner's


class _Runner:
    """One direction's fine-tuning, advanced one iteration at a time by :meth:`step`."""

    net: nn.Module
    done: bool
    reason: str
    steps: int
    info: dict[str, Any]

    def step(self) -> list[_Event]:  # pragma: no cover - interface
        raise NotImplementedError


class _FaithfulRunner(_Runner):
    def __init__(
        self,
        net: nn.Module,
        params: list[nn.Parameter],
        problem: _Problem,
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
                params, lr=_FAITHFUL_LR if lr is None else lr, momentum=_FAITHFUL_MOMENTUM
            )
        else:
            self.optimizer = optimizer(params)
            if lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
        self.hu_scale, self.hu_offset = hu_scale, hu_offset
        self.tol, self.max_steps, self.deadline, self.render = tol, max_steps, deadline, render
        self.y, self.activation_bytes = _forward_measured(net, problem.x)
        self.y_prev = self._to_net(self.y)
        self.done, self.reason, self.steps = False, "", 0
        group = self.optimizer.param_groups[0]
        self.info = {
            "optimizer": type(self.optimizer).__name__,
            "lr": float(group["lr"]),
            "momentum": float(group.get("momentum", 0.0)),
            "loss": "mean squared error in network units, (HU difference / hu_scale)^2",
            "relative_change": [],
        }

    def _to_net(self, y: Tensor) -> Tensor:
        return (y.detach().double() - self.hu_offset) / self.hu_scale

    def step(self) -> list[_Event]:
        diff = (self.y - self.problem.target) / self.hu_scale
        loss = (diff * diff).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        with torch.enable_grad():
            self.y = _model_output(self.net, self.problem.x)
        cur = self._to_net(self.y)
        denom = float(torch.linalg.vector_norm(self.y_prev))
        rel = float(torch.linalg.vector_norm(cur - self.y_prev)) / max(denom, 1e-30)
        self.info["relative_change"].append(rel)
        self.y_prev = cur
        event = _Event(self.steps, self.render(self.y))
        if not math.isfinite(rel):
            self.done, self.reason = True, "diverged"
        elif rel < self.tol:
            self.done, self.reason = True, "converged"
        elif self.steps >= self.max_steps:
            self.done, self.reason = True, "max_steps"
        elif time.perf_counter() >= self.deadline:
            self.done, self.reason = True, "time_budget"
        return [event]


class _RobustRunner(_Runner):
    """Adam directions, step length chosen so that progress advances ``delta`` per step."""

    def __init__(
        self,
        net: nn.Module,
        params: list[nn.Parameter],
        problem: _Problem,
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
        search: bool = True,
    ) -> None:
        self.net, self.params, self.problem = net, params, problem
        self.search = search
        self.targets = [coverage * (i + 1) / n_candidates for i in range(n_candidates)]
        self.spacing = coverage / n_candidates
        self.delta = min(step_progress, self.spacing)
        self.tol, self.patience, self.max_steps = tol, patience, max_steps
        self.deadline, self.render = deadline, render
        self.alpha = 1e-4 if lr is None else lr
        self.alpha_first: float | None = None
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.y, self.activation_bytes = _forward_measured(net, problem.x)
        self.p = problem.progress(self.y)
        self.next_target = 0
        self.last_recorded = self.p
        self.stall = 0
        self.p_best = self.p
        self.steps = 0
        self.done, self.reason = False, ""
        self.info = {
            "optimizer": "Adam directions, step length controlled by progress",
            "delta": self.delta,
            "alphas": [],
            "forward_passes": 1,
        }
        if problem.degenerate:
            self.done, self.reason = True, "degenerate"

    def _set(self, saved: list[Tensor], d: list[Tensor], alpha: float) -> None:
        with torch.no_grad():
            for p, w, di in zip(self.params, saved, d, strict=True):
                p.copy_(w - alpha * di)

    def _trial(self) -> tuple[Tensor, float, float]:
        self.info["forward_passes"] += 1
        with torch.enable_grad():
            y = _model_output(self.net, self.problem.x)
        dp = self.problem.progress(y) - self.p
        loss = float(self.problem.loss(y.detach()))
        if not (math.isfinite(dp) and math.isfinite(loss)):
            return y, -math.inf, math.inf
        return y, dp, loss

    def step(self) -> list[_Event]:
        prob = self.problem
        loss = prob.loss(self.y)
        loss_now = float(loss.detach())
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        g = [
            torch.zeros_like(p) if gi is None else gi
            for p, gi in zip(self.params, grads, strict=True)
        ]
        n_el = sum(gi.numel() for gi in g)
        rms = math.sqrt(float(sum((gi.double() ** 2).sum() for gi in g)) / max(n_el, 1))
        if not (math.isfinite(rms) and rms > 0.0):
            self.done, self.reason = True, "stalled"
            return self._final_events()
        self.steps += 1
        b1, b2 = _ADAM_BETAS
        d = []
        for gi, m, v in zip(g, self.m, self.v, strict=True):
            gn = gi / rms
            m.mul_(b1).add_(gn, alpha=1 - b1)
            v.mul_(b2).addcmul_(gn, gn, value=1 - b2)
            mh = m / (1 - b1**self.steps)
            vh = v / (1 - b2**self.steps)
            d.append(mh / (vh.sqrt() + _ADAM_EPS))
        saved = [p.detach().clone() for p in self.params]
        if self.alpha_first is not None and not self.search:
            return self._adaptive_step(saved, d, loss_now)
        first = self.alpha_first is None
        delta = self.delta
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
            self._set(saved, d, alpha)
            y = None
            y, dp, new_loss = self._trial()
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
            # No step lowers the loss: stay, count a stall.
            self._set(saved, d, 0.0)
            self.stall += 1
            self.info["alphas"].append(0.0)
            with torch.enable_grad():
                self.y = _model_output(self.net, prob.x)
            self.alpha = self.alpha * 0.5
            return self._check_stop([])
        _, alpha, dp = best
        if alpha != last_alpha:
            self._set(saved, d, alpha)
            y = None
            y, dp, _ = self._trial()
        assert y is not None
        if first:
            self.alpha_first = alpha
        return self._accept(y, alpha, dp)

    def _adaptive_step(self, saved: list[Tensor], d: list[Tensor], loss_now: float) -> list[_Event]:
        """Trust-region step: reuse the step length the last step ended with.

        One forward pass per iteration when the step is accepted (the loss goes down and
        progress grows by less than ``_OVERSHOOT * delta``); otherwise shorten it and try
        again. The next step length is scaled by ``delta / dp`` (within [0.5, 2]).
        """
        alpha = min(self.alpha, 100.0 * (self.alpha_first or math.inf))
        fallback: tuple[float, float] | None = None  # (loss, alpha) of a descent step
        for _ in range(_ADAPTIVE_TRIALS):
            self._set(saved, d, alpha)
            y, dp, new_loss = self._trial()
            descent = new_loss <= loss_now
            if descent and dp <= _OVERSHOOT * self.delta:
                # Progress may dip while the loss removes what earlier steps added across
                # the default-to-bound direction; shortening the step would not help.
                return self._accept(y, alpha, dp)
            if descent and (fallback is None or new_loss < fallback[0]):
                fallback = (new_loss, alpha)
            alpha *= min(max(self.delta / dp, 0.1), 0.5) if descent else _SHRINK
        if fallback is not None:
            # The loss goes down but progress does not (or only in leaps): follow the loss.
            self._set(saved, d, fallback[1])
            y, dp, _ = self._trial()
            return self._accept(y, fallback[1], dp)
        self._set(saved, d, 0.0)
        self.stall += 1
        self.info["alphas"].append(0.0)
        with torch.enable_grad():
            self.y = _model_output(self.net, self.problem.x)
        self.alpha = alpha
        return self._check_stop([])

    def _accept(self, y: Tensor, alpha: float, dp: float) -> list[_Event]:
        delta = self.delta
        self.y = y
        self.p += dp
        self.info["alphas"].append(alpha)
        self.alpha = alpha * min(max(delta / dp, 0.5), 2.0) if dp > 0 else alpha
        # Stall: an iteration that does not beat the best progress so far by tol (progress can
        # dip and recover while the loss keeps falling).
        if self.p >= self.p_best + self.tol:
            self.p_best, self.stall = self.p, 0
        else:
            self.stall += 1
        events: list[_Event] = []
        crossed = False
        while self.next_target < len(self.targets) and self.p >= self.targets[self.next_target]:
            self.next_target += 1
            crossed = True
        if crossed:
            events.append(self._event())
        return self._check_stop(events)

    def _check_stop(self, events: list[_Event]) -> list[_Event]:
        if self.next_target >= len(self.targets):
            self.done, self.reason = True, "coverage"
        elif self.stall >= self.patience:
            self.done, self.reason = True, "stalled"
        elif self.steps >= self.max_steps:
            self.done, self.reason = True, "max_steps"
        elif time.perf_counter() >= self.deadline:
            self.done, self.reason = True, "time_budget"
        if self.done and self.reason != "coverage":
            events.extend(self._final_events())
        return events

    def _event(self) -> _Event:
        self.last_recorded = self.p
        return _Event(self.steps, self.render(self.y))

    def _final_events(self) -> list[_Event]:
        if self.steps > 0 and self.p >= self.last_recorded + max(self.delta, self.spacing / 4):
            return [self._event()]
        return []


class _Krylov:
    """The damped Gauss-Newton step in a Lanczos basis, for any damping.

    ``alphas``/``betas`` are the Lanczos tridiagonal of ``A = J^T W J`` started from
    ``b / beta0``; ``g[i]`` is the progress predicted per unit of basis vector ``i``. The
    step ``(A + lam I)^-1 b`` has basis coefficients :meth:`coeffs` and predicted progress
    :meth:`predicted`; :meth:`damping_for` inverts the latter (bisection in log ``lam``).
    """

    def __init__(self, alphas: list[float], betas: list[float], g: list[float], beta0: float):
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

    def coeffs(self, lam: float) -> Tensor:
        return self.u @ (self.ue1 / (self.theta + lam))

    def predicted(self, lam: float) -> float:
        return float(self.coeffs(lam) @ self.g)

    def damping_for(self, dp: float) -> float:
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


class _GaussNewtonRunner(_RobustRunner):
    """Levenberg-Marquardt steps solved in a Krylov subspace (Lanczos), step set by progress.

    Each iteration linearises the network at the current weights, ``y(w + dw) ~ y + J dw``,
    and builds a ``krylov_dim``-dimensional Lanczos basis of the Gauss-Newton matrix
    ``A = J^T W J`` (``W`` the loss weights) started from the gradient ``b = J^T W (t - y)``;
    each basis vector costs one Jacobian-vector and one vector-Jacobian product. In that basis
    the damped step ``dw(lam) = (A + lam I)^-1 b`` and the progress it predicts are available
    for any damping ``lam`` at no further cost, so ``lam`` is chosen for a predicted advance of
    ``delta``, then checked with one forward pass (the loss must fall). Candidates that lie
    inside one iteration are made from the same basis at the damping that predicts their
    progress. A step with damping ``lam`` is an implicit-Euler step of length ``1 / lam`` of the
    gradient flow of the linearised loss: large steps stay stable where the loss is stiff.
    """

    def __init__(
        self,
        net: nn.Module,
        params: list[nn.Parameter],
        problem: _Problem,
        *,
        names: list[str],
        krylov_dim: int,
        keep_weights: bool,
        fast: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, params, problem, **kwargs)
        self.gn_delta = float(kwargs["step_progress"])  # not capped by the spacing
        self.names, self.krylov_dim, self.keep_weights = names, krylov_dim, keep_weights
        self.patience = min(self.patience, 2)  # one iteration is many passes
        # An iteration that gains less than this share of the candidate spacing counts toward
        # the stall; the Adam fallback takes the Adam step controls' defaults.
        self.stall_fraction = 0.5 if fast else 0.25
        self.fallback_delta = min(_FAST_STEP if fast else _ROBUST_STEP, self.spacing)
        self.fallback_search = not fast
        self.fallback = False
        self.info.update(
            {
                "optimizer": "Gauss-Newton (Levenberg-Marquardt) in a Lanczos basis, "
                "damping set by progress",
                "krylov_dim": krylov_dim,
                "step_progress": self.gn_delta,
                "damping": [],
                "predicted": [],
                "gained": [],
                "jvp": 0,
                "vjp": 0,
            }
        )
        mask_weight = (
            torch.ones_like(problem.x)
            if problem.loss_weight is None
            else (problem.loss_weight.to(problem.x.dtype))
        )
        self.w = (mask_weight / mask_weight.sum()).detach()
        self.basis_bytes = 0

    # flat <-> per-parameter
    def _flat(self, ts: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in ts])

    def _split(self, v: Tensor) -> tuple[Tensor, ...]:
        out, i = [], 0
        for p in self.params:
            out.append(v[i : i + p.numel()].view_as(p))
            i += p.numel()
        return tuple(out)

    def _func(self, *ws: Tensor) -> Tensor:
        return torch.func.functional_call(
            self.net, dict(zip(self.names, ws, strict=True)), (self.problem.x,)
        )

    def step(self) -> list[_Event]:
        if self.fallback:
            return super().step()
        try:
            return self._gn_step()
        except (RuntimeError, NotImplementedError) as exc:  # no forward-mode AD for a layer
            if self.info["damping"]:
                raise  # it worked before: a real error (the weights may be half-updated)
            self.fallback = True
            self.info["fallback"] = f"Adam directions (Gauss-Newton failed: {exc})"[:300]
            self.info["optimizer"] = "Adam directions, step length controlled by progress"
            self.delta, self.search = self.fallback_delta, self.fallback_search
            with torch.enable_grad():
                self.y = _model_output(self.net, self.problem.x)
            return super().step()

    def _gn_step(self) -> list[_Event]:
        prob = self.problem
        w0 = tuple(p.detach().clone() for p in self.params)
        linearised = torch.func.vjp(self._func, *w0)
        y, vjp_fn = linearised[0], linearised[1]
        y = y.detach()
        self.info["forward_passes"] += 1
        r = prob.target - y
        loss_now = float(prob.loss(y))

        def jtv(u: Tensor) -> Tensor:
            self.info["vjp"] += 1
            return self._flat(vjp_fn(u))

        b = jtv(self.w * r).double()
        beta0 = float(torch.linalg.vector_norm(b))
        if not (math.isfinite(beta0) and beta0 > 0.0):
            self.done, self.reason = True, "stalled"
            return self._final_events()
        dt = prob._dt.to(y.dtype)
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
            jq = torch.func.jvp(self._func, w0, self._split(q))[1]
            self.info["jvp"] += 1
            g.append(float((jq.double() * dt).sum()) / prob.denom)
            aq = jtv(self.w * jq)
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
                trial = _Krylov(alphas, betas, g, beta0)
                if trial.predicted(trial.lam_min) > self.gn_delta:
                    lam_k = trial.damping_for(self.gn_delta)
                    if lam_prev > 0 and abs(math.log(lam_k / lam_prev)) < 0.05:
                        break
                    lam_prev = lam_k
            if k == self.krylov_dim:
                break
            betas.append(beta)
            qm[j + 1] = v / beta
        self.steps += 1  # after the Jacobian products (a failure there falls back to Adam)
        self.basis_bytes = max(self.basis_bytes, k * qm.shape[1] * 4)
        krylov = _Krylov(alphas, betas, g, beta0)
        coeffs, predicted, damping_for = krylov.coeffs, krylov.predicted, krylov.damping_for
        lam_min = krylov.lam_min
        self.info.setdefault("basis_sizes", []).append(k)

        qf = qm[:k]

        def set_weights(lam: float) -> None:
            step = self._split(coeffs(lam).float() @ qf)
            with torch.no_grad():
                for p, w, s in zip(self.params, w0, step, strict=True):
                    p.copy_(w + s)

        # Aim at delta (or at what the basis can reach), halve the aim while the loss rises.
        aim = min(self.gn_delta, predicted(lam_min))
        accepted: tuple[float, Tensor, float] | None = None
        fallback: tuple[float, float] | None = None  # (loss, damping) of a descent step
        for _ in range(8 if aim > 0 else 1):  # no progress predicted: one try, least damped
            lam = damping_for(aim)
            set_weights(lam)
            y_new, dp, new_loss = self._trial()
            if new_loss <= loss_now and 0.0 < dp <= _OVERSHOOT * self.gn_delta:
                accepted = (lam, y_new, dp)
                break
            if new_loss <= loss_now and (fallback is None or new_loss < fallback[0]):
                fallback = (new_loss, lam)
            aim *= 0.5
        if accepted is None and fallback is not None:
            # The loss falls but progress does not: follow the loss (counts as a stall).
            set_weights(fallback[1])
            y_new, dp, _ = self._trial()
            accepted = (fallback[1], y_new, dp)
        if accepted is None:
            with torch.no_grad():
                for p, w in zip(self.params, w0, strict=True):
                    p.copy_(w)
            self.stall += 1
            self.info["damping"].append(math.inf)
            self.info["predicted"].append(0.0)
            self.info["gained"].append(0.0)
            self.y = y
            return self._check_stop([])
        lam, y_new, dp = accepted
        pred = predicted(lam)
        self.info["damping"].append(lam)
        self.info["predicted"].append(pred)
        self.info["gained"].append(dp)
        self.info["alphas"].append(1.0 / lam)
        # Candidates whose progress falls inside this step: from the same basis.
        p_old = self.p
        events: list[_Event] = []
        scale = pred / dp if dp > 0 else 1.0
        while (
            self.next_target < len(self.targets)
            and self.targets[self.next_target] < p_old + dp - 0.25 * self.spacing
        ):
            want = (self.targets[self.next_target] - p_old) * scale
            set_weights(damping_for(want))
            self.next_target += 1
            self.last_recorded = self.targets[self.next_target - 1]
            events.append(
                _Event(
                    self.steps,
                    self.render(None),
                    _state_copy(self.net) if self.keep_weights else None,
                )
            )
        set_weights(lam)
        self.y = y_new
        self.p = p_old + dp
        # An iteration costs many passes: one that gains less than a fraction of the candidate
        # spacing (or tol) counts toward the stall.
        if self.p >= self.p_best + max(self.tol, self.stall_fraction * self.spacing):
            self.p_best, self.stall = self.p, 0
        else:
            self.stall += 1
        if self.next_target < len(self.targets) and self.p >= self.targets[self.next_target]:
            while self.next_target < len(self.targets) and self.p >= self.targets[self.next_target]:
                self.next_target += 1
            events.append(self._event())
        return self._check_stop(events)


# --------------------------------------------------------------------------------------------
# The engine


class InteractiveDenoiser:
    """Make candidate images along a denoiser's noise-resolution tradeoff curve.

    Parameters
    ----------
    model : nn.Module
        Denoiser mapping (B, 1, H, W) float32 HU images to HU images of the same shape. If it
        has an attribute ``hu_scale`` (HU per network unit, as :class:`ctdid.core.adapter.
        HUAdapter`), the faithful mode's loss and stopping rule use it (and ``hu_offset``);
        otherwise 1000 HU per unit and an offset of -1000 HU (air 0, water 1). The model is
        never modified: a deep copy is fine-tuned, in eval mode (batch-norm statistics and
        dropout frozen), all floating-point parameters trainable.
    mode : {"robust", "faithful", "fast"}, optional
        How to fine-tune; see the module docstring. Default ``"robust"``.
    k : int, optional
        Times the model is applied to make the low-noise bound ``t_low``; >= 1. Default 3.
    optimizer : callable, optional
        Faithful mode only: ``optimizer(params) -> torch.optim.Optimizer`` replacing the
        paper's SGD (momentum 0.9, lr 1e-2).
    lr : float, optional
        Faithful mode: learning rate (default 1e-2). Adam step controls (``"search"``,
        ``"adaptive"``): first guess of the step length (default 1e-4); it is then calibrated
        so that each iteration advances progress by ``min(step_progress, coverage /
        n_candidates)``. Not used by the Gauss-Newton steps.
    tol : float, optional
        Faithful: stop when ``||y_t - y_{t-1}|| / ||y_{t-1}||`` (whole image, network units) is
        below ``tol``. Robust/fast: a direction has stalled when ``patience`` iterations in a
        row fail to raise its best progress by ``tol`` (i.e. to move ``tol * ||t - y0||``
        further toward the bound, inside the body). Default 0.01.
    max_steps : int, optional
        Hard cap on iterations per direction. Default 50 (faithful) or 200 (robust, fast).
    n_candidates : int, optional
        Robust/fast: candidates per direction, at progress ``coverage * i / n_candidates``,
        i = 1..n. Default 8. (Faithful: every iteration is a candidate.)
    coverage : float, optional
        Robust/fast: progress of the last candidate, in (0, 1]. Higher reaches closer to the
        bounds (sharper and noisier at the high end, smoother at the low end). Default 0.95.
    step_progress : float, optional
        Robust/fast: progress each iteration aims for. Gauss-Newton: the damping is chosen
        for it (candidates inside one iteration come from the same basis). Adam: the step
        length is searched or adapted for it, at most ``coverage / n_candidates``; smaller
        gives a smoother trajectory at proportional cost. Default 0.2 (robust), 0.25 (fast),
        0.04 (``"search"``) or 0.08 (``"adaptive"``).
    patience : int, optional
        Robust/fast: a direction stops after this many iterations in a row that do not beat
        its best progress so far by ``tol`` (Gauss-Newton: by the larger of ``tol`` and a
        quarter (robust) or half (fast) of the candidate spacing, and at most 2 iterations,
        each being costly). Default 5.
    outside_weight : float, optional
        Robust/fast: weight in the loss of pixels outside the body mask, relative to those
        inside, in [0, 1]. Small values spend the fine-tuning on the patient (higher coverage
        toward the bounds); 0 leaves the air unconstrained (it may drift). Default 0.1.
        The faithful mode always weighs all pixels equally, as the paper.
    directions : sequence of {"high", "low"}, optional
        Which bounds to fine-tune toward. Default both.
    time_budget : float, optional
        Wall-clock seconds for the fine-tuning of all directions together (shared evenly, the
        unused time of one direction going to the next). Default unlimited.
    body_threshold : float, optional
        HU threshold of the automatic body mask (:func:`ctdid.core.body.body_mask`).
        Default -500 HU.
    crop_size, n_crops : int, optional
        Robust/fast: side in pixels (0 or >= 8) and number of the square training crops,
        centred on random body pixels; the weights are applied to the whole image for each
        candidate. Fewer, smaller crops are cheaper per iteration but follow the whole-image
        curve less closely. 0 fine-tunes on the whole image. Default 128 and ``None``: four
        crops per training slice when the network has no instance, group or layer norm
        (whose statistics depend on the field of view) and the crops cover less than half of
        the training slices' pixels; otherwise the whole image. The choice is recorded in
        the stack's ``info["crops"]``.
    seed : int, optional
        Seed of the engine's own random generator (crop positions); nothing else is random,
        and global random state is never touched. Default 0.
    device : str or torch.device, optional
        Where to compute; default the device of the model's first parameter (CPU if none).
    deterministic : bool, optional
        On CUDA, run cuDNN deterministically (no autotuning, no TF32) inside the engine's
        computations only. Default true.
    interleave : bool, optional
        Fine-tune the two directions in turn, one iteration each, each on its own copy of the
        network, so that both ends of the curve show early (candidates are made in the order
        they are reached). False runs the high direction to its end, then the low one, with
        one copy: half the parameter and activation memory, the first low-noise candidate
        later. Same candidates either way. Default true.
    step_control : {"gauss-newton", "search", "adaptive"}, optional
        Robust/fast: how each iteration's step is made. ``"gauss-newton"`` (default):
        Levenberg-Marquardt steps in a Lanczos basis, the damping set so that progress
        advances by ``step_progress`` (see the module docstring). ``"search"``: Adam
        directions, several step lengths tried per iteration (forward passes only), the one
        whose progress is closest to ``step_progress`` kept. ``"adaptive"``: Adam directions,
        the step length searched only at the first iteration, then reused and scaled by
        ``step_progress / achieved progress`` (one forward pass per iteration unless the loss
        rises).
    krylov_dim : int, optional
        Gauss-Newton: most Lanczos vectors per iteration (>= 2); each costs one
        Jacobian-vector and one vector-Jacobian product, and its memory is one copy of the
        parameters. Fewer vectors are used while the step they give has settled (strongly
        damped early steps need few). Larger reaches further per iteration. Default 40
        (robust) or 12 (fast).
    keep_weights : bool, optional
        Give every :class:`~ctdid.core.candidates.Candidate` a CPU copy of the network's
        state dict that made it (``Candidate.weights``; the pretrained weights for the
        default), so that a candidate can be applied to other slices or scans with
        :meth:`apply`. Costs one copy of the parameters per candidate. Default false.

    Raises
    ------
    ValueError
        If an option is out of range or unknown.
    TypeError
        If ``model`` is not a ``torch.nn.Module``.

    Examples
    --------
    >>> engine = InteractiveDenoiser(model)                  # doctest: +SKIP
    >>> stack = engine.run(noisy_hu)                          # doctest: +SKIP
    >>> sharper = stack.interpolate(-0.5)                     # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mode: Mode = "robust",
        k: int = 3,
        optimizer: OptimizerFactory | None = None,
        lr: float | None = None,
        tol: float = 0.01,
        max_steps: int | None = None,
        n_candidates: int = 8,
        coverage: float = 0.95,
        step_progress: float | None = None,
        patience: int = 5,
        outside_weight: float = 0.1,
        directions: Sequence[str] = _DIRECTIONS,
        time_budget: float | None = None,
        body_threshold: float = -500.0,
        crop_size: int = 128,
        n_crops: int | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        deterministic: bool = True,
        interleave: bool = True,
        step_control: StepControl | None = None,
        krylov_dim: int | None = None,
        keep_weights: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(_MODES)}")
        if isinstance(directions, str):
            directions = (directions,)
        directions = tuple(directions)
        bad = [d for d in directions if d not in _DIRECTIONS]
        if bad:
            raise ValueError(f"unknown direction(s) {bad}; choose from 'high' and 'low'")
        if not directions or len(set(directions)) != len(directions):
            raise ValueError(f"directions must be 'high' and/or 'low' once each, got {directions}")
        for name, value, minimum in (
            ("k", k, 1),
            ("n_candidates", n_candidates, 1),
            ("patience", patience, 1),
            ("crop_size", crop_size, 0),
            ("n_crops", 0 if n_crops is None else n_crops, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
        if 0 < crop_size < 8:
            raise ValueError(f"crop_size must be 0 (no crops) or >= 8, got {crop_size}")
        if max_steps is not None and (isinstance(max_steps, bool) or int(max_steps) < 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {tol}")
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if step_control is None:
            step_control = "gauss-newton"
        if step_progress is None:
            if step_control == "gauss-newton":
                step_progress = _GN_STEP["fast" if mode == "fast" else "robust"]
            else:
                step_progress = _FAST_STEP if step_control == "adaptive" else _ROBUST_STEP
        if krylov_dim is None:
            krylov_dim = _KRYLOV_DIM["fast" if mode == "fast" else "robust"]
        if not (math.isfinite(step_progress) and 0 < step_progress <= 1):
            raise ValueError(f"step_progress must be in (0, 1], got {step_progress}")
        if not (math.isfinite(coverage) and 0 < coverage <= 1):
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        if time_budget is not None and not time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {time_budget}")
        if not (math.isfinite(outside_weight) and 0 <= outside_weight <= 1):
            raise ValueError(f"outside_weight must be in [0, 1], got {outside_weight}")
        if not math.isfinite(body_threshold):
            raise ValueError(f"body_threshold must be a finite HU value, got {body_threshold}")
        if step_control not in ("gauss-newton", "search", "adaptive"):
            raise ValueError(
                f"step_control must be 'gauss-newton', 'search' or 'adaptive', got {step_control!r}"
            )
        if isinstance(krylov_dim, bool) or not isinstance(krylov_dim, int | np.integer):
            raise ValueError(f"krylov_dim must be an integer >= 2, got {krylov_dim!r}")
        if krylov_dim < 2:
            raise ValueError(f"krylov_dim must be an integer >= 2, got {krylov_dim}")
        if optimizer is not None and mode != "faithful":
            raise ValueError("optimizer can only be given in the faithful mode")
        self.model = model
        self.mode: Mode = mode
        self.k = int(k)
        self.optimizer = optimizer
        self.lr = lr
        self.tol = float(tol)
        if max_steps is None:
            max_steps = 50 if mode == "faithful" else 200
        self.max_steps = int(max_steps)
        self.n_candidates = int(n_candidates)
        self.coverage = float(coverage)
        self.step_progress = float(step_progress)
        self.patience = int(patience)
        self.directions: tuple[str, ...] = directions
        self.time_budget = time_budget
        self.body_threshold = float(body_threshold)
        self.crop_size = int(crop_size)
        self.n_crops = None if n_crops is None else int(n_crops)
        self._pools_over_image = _pools_over_image(model)
        self.seed = int(seed)
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.deterministic = bool(deterministic)
        self.interleave = bool(interleave) and len(directions) > 1
        self.step_control: StepControl = step_control
        self.krylov_dim = int(krylov_dim)
        self.keep_weights = bool(keep_weights)
        self._apply_cache: tuple[Any, nn.Module] | None = None
        self.outside_weight = float(outside_weight)
        self.hu_scale = float(getattr(model, "hu_scale", _DEFAULT_HU_SCALE))
        self.hu_offset = float(getattr(model, "hu_offset", _DEFAULT_HU_OFFSET))
        if not (math.isfinite(self.hu_scale) and self.hu_scale > 0):
            raise ValueError(f"model.hu_scale must be finite and > 0, got {self.hu_scale}")

    def _n_crops(self, x_train: Tensor) -> tuple[int, str]:
        """Crops the fast mode fine-tunes on for this training batch, and why."""
        if self.mode == "faithful" or self.crop_size == 0:
            return 0, "whole image (the faithful mode)" if self.crop_size else "crop_size 0"
        if self.n_crops is not None:
            return self.n_crops, "n_crops given"
        if self._pools_over_image:
            return 0, "whole image: the network normalises over the image (crops would change it)"
        b, _, h, w = x_train.shape
        n = 4 * b
        if n * min(self.crop_size, h) * min(self.crop_size, w) * 2 > b * h * w:
            return 0, "whole image: the crops would cover half of it or more"
        return n, "4 crops per training slice (the network has no image-wide normalisation)"

    # ---------------------------------------------------------------------------------- API

    def run(
        self,
        x: ArrayLike | Tensor,
        *,
        body: ArrayLike | Tensor | None = None,
        callback: Callable[[Candidate], object] | None = None,
    ) -> CandidateStack:
        """Make the candidate stack for one image (or one batch sharing a trajectory).

        Parameters
        ----------
        x : array_like or Tensor, shape (H, W) or (B, 1, H, W)
            Noisy image(s) in HU. A batch is fine-tuned as one sample (the loss summed over
            it), so that a strength means the same on every image.
        body : array_like or Tensor of bool, optional
            Where to measure progress, same shape as ``x``. Default: the automatic body
            mask (whole image if no pixel is above ``body_threshold``).
        callback : callable, optional
            Called with each :class:`Candidate` as soon as it is made (the default first;
            see :meth:`iter_candidates` for the order).

        Returns
        -------
        CandidateStack
            Candidates ordered high resolution -> low noise; images shaped like ``x``.
        """
        gen = self.iter_candidates(x, body=body)
        while True:
            try:
                cand = next(gen)
            except StopIteration as stop:
                result: CandidateStack = stop.value
                return result
            if callback is not None:
                callback(cand)

    def iter_candidates(
        self, x: ArrayLike | Tensor, *, body: ArrayLike | Tensor | None = None
    ) -> Generator[Candidate, None, CandidateStack]:
        """Yield candidates as they are made; the generator returns the :class:`CandidateStack`.

        Same arguments as :meth:`run`. Order of the yielded candidates: the default, then
        the candidates as they are made: each direction's from the default outward, the two
        directions interleaved (or one after the other when ``interleave=False``). Closing
        the generator early stops the fine-tuning.
        """
        xt, shape = self._as_batch(x)
        mask = self._mask(xt, body, shape)
        return self._generate(xt, mask, shape, batch_size=None)

    def run_volume(
        self,
        x: ArrayLike | Tensor,
        *,
        shared: bool = True,
        train_slices: int = 8,
        batch_size: int = 8,
        body: ArrayLike | Tensor | None = None,
        callback: Callable[[Candidate], object] | None = None,
    ) -> CandidateStack | list[CandidateStack]:
        """Candidates for a CT volume.

        Parameters
        ----------
        x : array_like or Tensor, shape (Z, H, W)
            Noisy volume in HU.
        shared : bool, optional
            If true (default), fine-tune one trajectory on up to ``train_slices`` evenly
            spaced slices together and apply each candidate's weights to every slice, so a
            given strength means the same on all slices. If false, run each slice on its own
            and return one stack per slice.
        train_slices : int, optional
            Shared mode: slices the weights are fine-tuned on. Default 8.
        batch_size : int, optional
            Slices per forward pass when applying the model to the volume. Default 8.
        body : array_like of bool, shape (Z, H, W), optional
            Where to measure progress; default the automatic body mask.
        callback : callable, optional
            Called with each candidate as it is made.

        Returns
        -------
        CandidateStack or list of CandidateStack
            Shared: one stack whose images are (Z, H, W) volumes (memory: number of
            candidates times the volume). Otherwise one (H, W) stack per slice.
        """
        xt = _as_tensor(x, "x")
        if xt.ndim != 3:
            raise ValueError(f"run_volume expects a (Z, H, W) HU volume, got {tuple(xt.shape)}")
        if train_slices < 1 or batch_size < 1:
            raise ValueError("train_slices and batch_size must be >= 1")
        if not shared:
            masks: list[Any] = [None] * xt.shape[0] if body is None else list(np.asarray(body))
            return [self.run(xt[z], body=masks[z], callback=callback) for z in range(len(xt))]
        shape = tuple(xt.shape)
        xb = xt.unsqueeze(1).to(self.device)
        mask = self._mask(xb, body, shape)
        z = xb.shape[0]
        idx = np.unique(np.linspace(0, z - 1, min(train_slices, z)).round().astype(int))
        gen = self._generate(xb, mask, shape, batch_size=batch_size, train_index=idx)
        while True:
            try:
                cand = next(gen)
            except StopIteration as stop:
                result: CandidateStack = stop.value
                return result
            if callback is not None:
                callback(cand)

    def apply(
        self,
        x: ArrayLike | Tensor,
        *,
        weights: Mapping[str, Tensor] | None = None,
        batch_size: int = 8,
    ) -> NDArray[np.float32]:
        """Apply the pretrained model, or a candidate's weights, to images (no fine-tuning).

        Parameters
        ----------
        x : array_like or Tensor, shape (H, W) or (Z, H, W)
            Images in HU.
        weights : mapping of str to Tensor, optional
            A state dict of the model, e.g. ``Candidate.weights`` from a run with
            ``keep_weights=True`` or a candidate's weights file written by ``ctdid run``.
            Default the model's own (pretrained) weights: the default candidate ``phi_w0``.
        batch_size : int, optional
            Slices per forward pass. Default 8.

        Returns
        -------
        ndarray of float32
            The output in HU, shaped like ``x``; computed as the engine renders its
            candidates (eval mode, no gradients, deterministic cuDNN if ``deterministic``).

        Raises
        ------
        ValueError
            If ``x`` is not (H, W) or (Z, H, W), or the weights do not fit the model.
        """
        xt = _as_tensor(x, "x")
        shape = tuple(xt.shape)
        if xt.ndim not in (2, 3):
            raise ValueError(f"x must be an (H, W) image or (Z, H, W) HU slices, got {shape}")
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        key = self.model if weights is None else weights
        if self._apply_cache is None or self._apply_cache[0] is not key:
            net = self._apply_cache[1] if self._apply_cache is not None else None
            if net is None:
                net = copy.deepcopy(self.model).to(self.device)
                net.eval()
            state = self.model.state_dict() if weights is None else weights
            try:
                net.load_state_dict(dict(state), strict=True)
            except RuntimeError as exc:
                self._apply_cache = None  # partly loaded: not reused
                raise ValueError(f"the weights do not fit the model: {exc}") from None
            self._apply_cache = (key, net)
        net = self._apply_cache[1]
        xb = xt.reshape(-1, 1, *shape[-2:]).to(self.device)
        with _deterministic(self.device, self.deterministic):
            y = _apply(net, xb, int(batch_size))
        return np.ascontiguousarray(y.to("cpu", torch.float32).numpy()).reshape(shape)

    # ------------------------------------------------------------------------------ internals

    def _as_batch(self, x: ArrayLike | Tensor) -> tuple[Tensor, tuple[int, ...]]:
        xt = _as_tensor(x, "x")
        shape = tuple(xt.shape)
        if xt.ndim == 2:
            xt = xt[None, None]
        elif not (xt.ndim == 4 and xt.shape[1] == 1):
            raise ValueError(
                f"x must be an (H, W) image or a (B, 1, H, W) batch in HU, got shape {shape}"
            )
        if min(xt.shape[-2:]) < 2:
            raise ValueError(f"x is too small, shape {shape}")
        return xt.to(self.device), shape

    def _mask(self, xb: Tensor, body: ArrayLike | Tensor | None, shape: tuple[int, ...]) -> Tensor:
        if body is None:
            m = body_mask(xb[:, 0].cpu().numpy(), threshold=self.body_threshold)
            if m.sum() < 16:
                m = np.ones_like(m)
            mt = torch.from_numpy(m)[:, None]
        else:
            arr = body.detach().cpu().numpy() if isinstance(body, Tensor) else np.asarray(body)
            if arr.shape != shape:
                raise ValueError(f"body mask shape {arr.shape} differs from the image's {shape}")
            if not arr.any():
                raise ValueError("body mask is empty")
            mt = torch.from_numpy(np.ascontiguousarray(arr.astype(bool))).reshape(xb.shape)
        return mt.to(device=self.device, dtype=torch.float64)

    def _crops(self, x: Tensor, mask: Tensor, n: int) -> list[tuple[int, int, int, int, int]]:
        """Fast mode: (slice, y0, y1, x0, x1) windows centred on random body pixels."""
        gen = torch.Generator().manual_seed(self.seed)
        _, _, h, w = x.shape
        ch, cw = min(self.crop_size, h), min(self.crop_size, w)
        inside = torch.nonzero(mask[:, 0].cpu() > 0)
        out = []
        for _ in range(n):
            i = int(torch.randint(len(inside), (1,), generator=gen))
            s, cy, cx = (int(v) for v in inside[i])
            y0 = min(max(cy - ch // 2, 0), h - ch)
            x0 = min(max(cx - cw // 2, 0), w - cw)
            out.append((s, y0, y0 + ch, x0, x0 + cw))
        return out

    def _generate(
        self,
        xb: Tensor,
        mask: Tensor,
        shape: tuple[int, ...],
        *,
        batch_size: int | None,
        train_index: NDArray[np.int_] | None = None,
    ) -> Generator[Candidate, None, CandidateStack]:
        start = time.perf_counter()
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        net = copy.deepcopy(self.model).to(self.device)
        net.eval()
        params = [p for p in net.parameters() if p.is_floating_point()]
        if not params:
            raise ValueError("the model has no floating-point parameters to fine-tune")
        for p in params:
            p.requires_grad_(True)
        w0 = [p.detach().clone() for p in params]
        det = self.deterministic

        with _deterministic(self.device, det):
            y0 = _apply(net, xb, batch_size)
            t_low = y0
            for _ in range(self.k - 1):
                t_low = _apply(net, t_low, batch_size)
        t_high = xb
        timings: dict[str, float] = {"bounds": time.perf_counter() - start}

        def to_np(t: Tensor) -> NDArray[np.float32]:
            return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()).reshape(shape)

        default = Candidate(
            to_np(y0), "default", 0, 0.0, 0.0, 0.0, time.perf_counter() - start,
            weights=_state_copy(net) if self.keep_weights else None,
        )  # fmt: skip
        yield default

        # Training data: the whole input, some slices of it, and/or crops (fast mode).
        n_crops, crops_reason = self._n_crops(xb if train_index is None else xb[: len(train_index)])
        crops = n_crops > 0
        all_slices = train_index is None or len(train_index) == xb.shape[0]
        full_is_train = all_slices and not crops
        x_tr, y0_tr, mask_tr = xb, y0, mask
        bounds_tr = {"high": t_high, "low": t_low}
        if not all_slices:
            ti = torch.as_tensor(train_index, device=self.device)
            x_tr, y0_tr, mask_tr = xb[ti], y0[ti], mask[ti]
            bounds_tr = {"high": t_high[ti], "low": t_low[ti]}
        if crops:
            wins = self._crops(x_tr, mask_tr, n_crops)

            def crop(t: Tensor) -> Tensor:
                return torch.cat([t[s : s + 1, :, a:b, c:d] for s, a, b, c, d in wins])

            x_tr, mask_tr = crop(x_tr), crop(mask_tr)
            bounds_tr = {key: crop(v) for key, v in bounds_tr.items()}
            with _deterministic(self.device, det):
                y0_tr = _apply(net, x_tr, batch_size)

        candidates: dict[str, list[Candidate]] = {d: [] for d in self.directions}
        steps: dict[str, int] = {}
        reasons: dict[str, str] = {}
        info: dict[str, Any] = {
            "hu_scale": self.hu_scale,
            "hu_offset": self.hu_offset,
            "k": self.k,
            "n_parameters": int(sum(p.numel() for p in params)),
            "train_shape": list(x_tr.shape),
            "interleave": self.interleave,
            "crops": {"n": n_crops, "size": self.crop_size if crops else 0, "why": crops_reason},
        }
        budget_end = math.inf if self.time_budget is None else start + self.time_budget
        weight = None
        if self.mode != "faithful" and self.outside_weight != 1.0:
            weight = (mask_tr + self.outside_weight * (1 - mask_tr)).to(x_tr.dtype)

        def make_runner(direction: str, net_d: nn.Module, deadline: float) -> _Runner:
            params_d = [p for p in net_d.parameters() if p.is_floating_point()]

            def render(y_train: Tensor | None) -> Tensor:
                # The training output is the full image when no slices or crops were taken;
                # None: apply the current weights.
                if full_is_train and y_train is not None:
                    return y_train.detach()
                return _apply(net_d, xb, batch_size)

            prob = _Problem(x_tr, bounds_tr[direction], y0_tr, mask_tr, weight)
            with _deterministic(self.device, det):
                if self.mode == "faithful":
                    return _FaithfulRunner(
                        net_d,
                        params_d,
                        prob,
                        optimizer=self.optimizer,
                        lr=self.lr,
                        hu_scale=self.hu_scale,
                        hu_offset=self.hu_offset,
                        tol=self.tol,
                        max_steps=self.max_steps,
                        deadline=deadline,
                        render=render,
                    )
                common: dict[str, Any] = dict(
                    n_candidates=self.n_candidates,
                    coverage=self.coverage,
                    step_progress=self.step_progress,
                    lr=self.lr,
                    tol=self.tol,
                    patience=self.patience,
                    max_steps=self.max_steps,
                    deadline=deadline,
                    render=render,
                    search=self.step_control == "search",
                )
                if self.step_control == "gauss-newton":
                    names = [n for n, p in net_d.named_parameters() if p.is_floating_point()]
                    return _GaussNewtonRunner(
                        net_d,
                        params_d,
                        prob,
                        names=names,
                        krylov_dim=self.krylov_dim,
                        keep_weights=self.keep_weights,
                        fast=self.mode == "fast",
                        **common,
                    )
                return _RobustRunner(net_d, params_d, prob, **common)

        fulls = {
            d: _Problem(xb, t_high if d == "high" else t_low, y0, mask) for d in self.directions
        }
        best = {d: 0.0 for d in self.directions}
        spent = {d: 0.0 for d in self.directions}
        runners: dict[str, _Runner] = {}

        def advance(direction: str) -> list[Candidate]:
            t_step = time.perf_counter()
            runner = runners[direction]
            with _deterministic(self.device, det), torch.enable_grad():
                events = runner.step()
            out = []
            for ev in events:
                raw = fulls[direction].progress(ev.image)
                best[direction] = max(best[direction], min(max(raw, 0.0), 1.0))
                cand = Candidate(
                    image=to_np(ev.image),
                    direction=direction,  # type: ignore[arg-type]
                    step=ev.step,
                    progress=best[direction],
                    progress_raw=raw,
                    strength=-best[direction] if direction == "high" else best[direction],
                    elapsed=time.perf_counter() - start,
                    weights=(ev.weights or _state_copy(runner.net)) if self.keep_weights else None,
                )
                candidates[direction].append(cand)
                out.append(cand)
            spent[direction] += time.perf_counter() - t_step
            return out

        activation_bytes = 0
        if self.interleave:
            # One copy of the network per direction, advanced in turn, so that both ends of
            # the curve start to show at once (twice the parameters and saved activations).
            for i, direction in enumerate(self.directions):
                t_dir = time.perf_counter()
                net_d = net if i == len(self.directions) - 1 else copy.deepcopy(net)
                runners[direction] = make_runner(direction, net_d, budget_end)
                spent[direction] += time.perf_counter() - t_dir
                activation_bytes += getattr(runners[direction], "activation_bytes", 0)
            while not all(r.done for r in runners.values()):
                for direction, runner in runners.items():
                    if not runner.done:
                        yield from advance(direction)
        else:
            for i, direction in enumerate(self.directions):
                t_dir = time.perf_counter()
                with torch.no_grad():
                    for p, w in zip(params, w0, strict=True):
                        p.copy_(w)
                deadline = t_dir + (budget_end - t_dir) / (len(self.directions) - i)
                runners[direction] = make_runner(direction, net, deadline)
                spent[direction] += time.perf_counter() - t_dir
                activation_bytes = max(
                    activation_bytes, getattr(runners[direction], "activation_bytes", 0)
                )
                while not runners[direction].done:
                    yield from advance(direction)
        for direction, runner in runners.items():
            if self.mode == "faithful" and runner.steps == 0:
                runner.reason = runner.reason or "max_steps"
            steps[direction] = runner.steps
            reasons[direction] = runner.reason
            info[direction] = runner.info
            timings[direction] = spent[direction]
        n_nets = len(self.directions) if self.interleave else 1
        state_copies = n_nets * (3 if self.mode == "faithful" else 6)
        # faithful: parameters, gradients, momentum; robust/fast: also m, v, saved weights and
        # the step direction (gradients are freed after each step but counted); Gauss-Newton:
        # the Lanczos basis (float32) on top.
        basis_bytes = sum(getattr(r, "basis_bytes", 0) for r in runners.values())
        info["krylov_basis_bytes"] = basis_bytes
        timings["total"] = time.perf_counter() - start

        ordered = [*reversed(candidates.get("high", [])), default, *candidates.get("low", [])]
        default_index = len(candidates.get("high", []))
        image_bytes = 4 * xb.numel() * (5 + len(ordered))
        if cuda:
            peak, method = (
                int(torch.cuda.max_memory_allocated(self.device)),
                ("cuda.max_memory_allocated"),
            )
        else:
            param_bytes = sum(p.numel() * p.element_size() for p in params)
            peak = param_bytes * state_copies + 2 * activation_bytes + image_bytes + basis_bytes
            method = "estimate"
        info["activation_bytes"] = activation_bytes
        return CandidateStack(
            candidates=tuple(ordered),
            default_index=default_index,
            t_high=to_np(t_high),
            t_low=to_np(t_low),
            body=to_np(mask).astype(bool),
            mode=self.mode,
            steps=steps,
            stop_reasons=reasons,
            timings=timings,
            peak_memory_bytes=peak,
            memory_method=method,
            info=info,
        )
