"""One run of the engine: bounds, default, training set, directions, candidates, stack.

:func:`generate` is the generator behind :meth:`InteractiveDenoiser.iter_candidates
<ctdid.core.did.InteractiveDenoiser.iter_candidates>`: it yields the default, then each
candidate as a direction makes it, and returns the :class:`~ctdid.core.candidates.
CandidateStack` ordered high resolution -> default -> low noise.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ctdid.core.candidates import Candidate, CandidateStack
from ctdid.core.did.adam_experimental import AdamRule
from ctdid.core.did.gauss_newton import GaussNewtonRule
from ctdid.core.did.network import (
    apply_net,
    channels_last,
    deterministic,
    state_copy,
    trainable_copy,
    tuned_parameters,
)
from ctdid.core.did.options import DIDOptions
from ctdid.core.did.order_guard import OrderGuard
from ctdid.core.did.preview import blend_previews
from ctdid.core.did.problem import (
    Problem,
    TrainingSet,
    crop_count,
    edge_emphasis,
    training_set,
    whitening_filter,
)
from ctdid.core.did.progress_control import ProgressTrajectory
from ctdid.core.did.sgd import PaperSGD
from ctdid.core.did.strategy import Direction, Event, StepRule

__all__ = ["STEP_RULES", "Setup", "generate"]


def _gauss_newton(run: ProgressTrajectory, opts: DIDOptions) -> StepRule:
    names = [n for n, _ in tuned_parameters(run.net, opts.tune)]
    return GaussNewtonRule(
        run,
        names=names,
        krylov_dim=int(opts.krylov_dim or 2),
        keep_weights=opts.keep_weights,
        fast=opts.mode == "fast",
        damping_floor=opts.damping_floor,
        jvp=str(opts.jvp),
    )


STEP_RULES: dict[str, Callable[[ProgressTrajectory, DIDOptions], StepRule]] = {
    "gauss-newton": _gauss_newton,
    "search": lambda run, opts: AdamRule(run, search=True),
    "adaptive": lambda run, opts: AdamRule(run, search=False),
}
"""Step rules of the robust and fast modes by ``step_control``: ``rule(trajectory, options)``."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run needs besides the images: resolved options, the model and its units."""

    options: DIDOptions
    model: nn.Module
    device: torch.device
    hu_scale: float
    hu_offset: float
    pools_over_image: bool


class _Generation:
    """The state of one run; :func:`generate` calls its steps in order."""

    def __init__(self, setup: Setup, xb: Tensor, mask: Tensor, shape: tuple[int, ...]) -> None:
        self.setup, self.opts = setup, setup.options
        self.xb, self.mask, self.shape = xb, mask, shape
        self.start = time.perf_counter()
        self.candidates: dict[str, list[Candidate]] = {d: [] for d in self.opts.directions}
        self.best = {d: 0.0 for d in self.opts.directions}
        self.spent = {d: 0.0 for d in self.opts.directions}
        self.runners: dict[str, Direction] = {}
        self.activation_bytes = 0

    def det(self) -> Any:
        """The engine's deterministic-cuDNN block."""
        return deterministic(self.setup.device, bool(self.opts.deterministic))

    def to_np(self, t: Tensor) -> NDArray[np.float32]:
        """A tensor as a float32 array of the caller's shape."""
        return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()).reshape(self.shape)

    def bounds(self, batch_size: int | None) -> Candidate:
        """Copy the model, compute the default and ``t_low``; the default candidate."""
        if self.setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.setup.device)
        self.net, self.params = trainable_copy(
            self.setup.model, self.setup.device, tune=self.opts.tune
        )
        self.w0 = [p.detach().clone() for p in self.params]
        with self.det():
            self.y0 = apply_net(self.net, self.xb, batch_size)
            t_low = self.y0
            for _ in range(self.opts.k - 1):
                t_low = apply_net(self.net, t_low, batch_size)
        self.t_low, self.t_high = t_low, self.xb
        self.layout: dict[str, Any] = {"channels_last": False}
        if self.opts.channels_last:  # after the bounds: the default is the model's own output
            with self.det():
                why = channels_last(self.net, self.xb[:1], self.y0[:1])
            self.layout = (
                {"channels_last": True} if why is None else {"channels_last": False, "why": why}
            )
        self.timings: dict[str, float] = {"bounds": time.perf_counter() - self.start}
        weights = state_copy(self.net) if self.opts.keep_weights else None
        elapsed = time.perf_counter() - self.start
        self.default = Candidate(self.to_np(self.y0), "default", 0, 0.0, 0.0, 0.0, elapsed,
                                 weights=weights)  # fmt: skip
        self.guard = OrderGuard(self.y0, self.mask) if self.opts.order_guard else None
        return self.default

    def previews(self) -> list[Candidate]:
        """Pixel-blend previews of the engine's directions at ``+-i / n_candidates``."""
        return blend_previews(
            self.to_np(self.xb), self.default.image, self.to_np(self.t_low),
            n_candidates=self.opts.n_candidates, directions=self.opts.directions,
            started=self.start,
        )  # fmt: skip

    def training(self, batch_size: int | None, train_index: NDArray[np.int_] | None) -> None:
        """Choose the training slices and crops; the fine-tuning problems' data."""
        o = self.opts
        n_train = self.xb.shape[0] if train_index is None else len(train_index)
        shape = (n_train, *self.xb.shape[1:])
        crops = crop_count(
            shape,
            faithful=o.mode == "faithful",
            crop_size=o.crop_size,
            n_crops=o.n_crops,
            pools=self.setup.pools_over_image,
        )
        bounds = {"high": self.t_high, "low": self.t_low}
        ts, _ = training_set(
            self.xb, self.y0, self.mask, bounds,
            train_index=train_index, crops=crops, crop_size=o.crop_size, seed=o.seed,
        )  # fmt: skip
        if ts.n_crops > 0:
            with self.det():
                ts.y0 = apply_net(self.net, ts.x, batch_size)
        self.train: TrainingSet = ts
        self.weight = None
        if o.mode != "faithful" and o.outside_weight != 1.0:
            self.weight = (ts.mask + o.outside_weight * (1 - ts.mask)).to(ts.x.dtype)
        if o.mode != "faithful" and o.edge_weight > 0.0:
            base = torch.ones_like(ts.x) if self.weight is None else self.weight
            self.weight = base * edge_emphasis(ts.y0, ts.mask, gain=o.edge_weight)
        self.loss_filter = None
        if o.mode != "faithful" and o.loss_domain == "whitened":
            self.loss_filter = whitening_filter(ts.x - ts.y0, ts.mask)
        self.fulls = {
            d: Problem(self.xb, self.t_high if d == "high" else self.t_low, self.y0, self.mask)
            for d in o.directions
        }

    def info(self) -> dict[str, Any]:
        """The stack's ``info`` before the directions add theirs."""
        ts, s = self.train, self.setup
        return {
            "hu_scale": s.hu_scale,
            "hu_offset": s.hu_offset,
            "k": self.opts.k,
            "n_parameters": int(sum(p.numel() for p in self.params)),
            "train_shape": list(ts.x.shape),
            "interleave": self.opts.interleave,
            "crops": {"n": ts.n_crops, "size": ts.crop_size, "why": ts.why},
            "memory_format": self.layout,
        }

    def make_direction(
        self, direction: str, net_d: nn.Module, deadline: float, batch_size: int | None
    ) -> Direction:
        """The fine-tuning of one direction on ``net_d`` (faithful SGD or a trajectory)."""
        o, ts = self.opts, self.train
        params_d = [p for _, p in tuned_parameters(net_d, o.tune)]

        def render(y_train: Tensor | None) -> Tensor:
            # The training output is the full image when no slices or crops were taken;
            # None: apply the current weights.
            if ts.full and y_train is not None:
                return y_train.detach()
            return apply_net(net_d, self.xb, batch_size)

        prob = Problem(ts.x, ts.bounds[direction], ts.y0, ts.mask, self.weight,
                       loss_filter=self.loss_filter)  # fmt: skip
        with self.det():
            if o.mode == "faithful":
                return PaperSGD(
                    net_d, params_d, prob,
                    optimizer=o.optimizer, lr=o.lr,
                    hu_scale=self.setup.hu_scale, hu_offset=self.setup.hu_offset,
                    tol=o.tol, max_steps=int(o.max_steps or 1), deadline=deadline, render=render,
                )  # fmt: skip
            rule = STEP_RULES[str(o.step_control)]
            return ProgressTrajectory(
                net_d, params_d, prob,
                n_candidates=o.n_candidates, coverage=o.coverage,
                step_progress=float(o.step_progress or 0.0), lr=o.lr, tol=o.tol,
                patience=o.patience, max_steps=int(o.max_steps or 1), deadline=deadline,
                render=render, rule=lambda run: rule(run, o),
            )  # fmt: skip

    def advance(self, direction: str) -> list[Candidate]:
        """One iteration of a direction; its events as labelled candidates."""
        t_step = time.perf_counter()
        runner = self.runners[direction]
        with self.det(), torch.enable_grad():
            events = runner.step()
        out = [self._candidate(direction, runner, ev) for ev in events
               if self.guard is None or self.guard.admit(direction, ev.image)]  # fmt: skip
        self.spent[direction] += time.perf_counter() - t_step
        return out

    def _candidate(self, direction: str, runner: Direction, ev: Event) -> Candidate:
        raw = self.fulls[direction].progress(ev.image)
        best = self.best[direction] = max(self.best[direction], min(max(raw, 0.0), 1.0))
        keep = self.opts.keep_weights
        cand = Candidate(
            image=self.to_np(ev.image),
            direction=direction,  # type: ignore[arg-type]
            step=ev.step,
            progress=best,
            progress_raw=raw,
            strength=-best if direction == "high" else best,
            elapsed=time.perf_counter() - self.start,
            weights=(ev.weights or state_copy(runner.net)) if keep else None,
        )
        self.candidates[direction].append(cand)
        return cand

    def run_interleaved(
        self, budget_end: float, batch_size: int | None
    ) -> Generator[Candidate, None, None]:
        """One network copy per direction, advanced in turn: both ends show at once."""
        directions = self.opts.directions
        for i, direction in enumerate(directions):
            t_dir = time.perf_counter()
            net_d = self.net if i == len(directions) - 1 else copy.deepcopy(self.net)
            self.runners[direction] = self.make_direction(direction, net_d, budget_end, batch_size)
            self.spent[direction] += time.perf_counter() - t_dir
            self.activation_bytes += getattr(self.runners[direction], "activation_bytes", 0)
        while not all(r.done for r in self.runners.values()):
            for direction, runner in self.runners.items():
                if not runner.done:
                    yield from self.advance(direction)

    def run_sequential(
        self, budget_end: float, batch_size: int | None
    ) -> Generator[Candidate, None, None]:
        """One network copy, the directions one after the other (the time budget shared)."""
        directions = self.opts.directions
        for i, direction in enumerate(directions):
            t_dir = time.perf_counter()
            with torch.no_grad():
                for p, w in zip(self.params, self.w0, strict=True):
                    p.copy_(w)
            deadline = t_dir + (budget_end - t_dir) / (len(directions) - i)
            self.runners[direction] = self.make_direction(direction, self.net, deadline, batch_size)
            self.spent[direction] += time.perf_counter() - t_dir
            self.activation_bytes = max(
                self.activation_bytes, getattr(self.runners[direction], "activation_bytes", 0)
            )
            while not self.runners[direction].done:
                yield from self.advance(direction)

    def stack(self, info: dict[str, Any]) -> CandidateStack:
        """The finished stack, with steps, stop reasons, timings and the memory figure."""
        steps: dict[str, int] = {}
        reasons: dict[str, str] = {}
        faithful = self.opts.mode == "faithful"
        for direction, runner in self.runners.items():
            if faithful and runner.steps == 0:
                runner.reason = runner.reason or "max_steps"
            steps[direction] = runner.steps
            reasons[direction] = runner.reason
            info[direction] = runner.info
            self.timings[direction] = self.spent[direction]
        basis_bytes = sum(getattr(r, "basis_bytes", 0) for r in self.runners.values())
        info["krylov_basis_bytes"] = basis_bytes
        if self.guard is not None:
            info["order_guard"] = self.guard.info()
        self.timings["total"] = time.perf_counter() - self.start
        high, low = self.candidates.get("high", []), self.candidates.get("low", [])
        ordered = [*reversed(high), self.default, *low]
        peak, method = self._peak_memory(len(ordered), basis_bytes)
        info["activation_bytes"] = self.activation_bytes
        return CandidateStack(
            candidates=tuple(ordered),
            default_index=len(high),
            t_high=self.to_np(self.t_high),
            t_low=self.to_np(self.t_low),
            body=self.to_np(self.mask).astype(bool),
            mode=self.opts.mode,
            steps=steps,
            stop_reasons=reasons,
            timings=self.timings,
            peak_memory_bytes=peak,
            memory_method=method,
            info=info,
        )

    def _peak_memory(self, n_images: int, basis_bytes: int) -> tuple[int, str]:
        """Peak memory in bytes: measured on CUDA, estimated elsewhere; and how."""
        device = self.setup.device
        if device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(device)), "cuda.max_memory_allocated"
        n_nets = len(self.opts.directions) if self.opts.interleave else 1
        # faithful: parameters, gradients, momentum; robust/fast: also m, v, saved weights and
        # the step direction (gradients are freed after each step but counted); Gauss-Newton:
        # the Lanczos basis (float32) on top.
        state_copies = n_nets * (3 if self.opts.mode == "faithful" else 6)
        param_bytes = sum(p.numel() * p.element_size() for p in self.params)
        image_bytes = 4 * self.xb.numel() * (5 + n_images)
        estimate = param_bytes * state_copies + 2 * self.activation_bytes + image_bytes
        return estimate + basis_bytes, "estimate"


def generate(
    setup: Setup,
    xb: Tensor,
    mask: Tensor,
    shape: tuple[int, ...],
    *,
    batch_size: int | None,
    train_index: NDArray[np.int_] | None = None,
    previews: bool = False,
) -> Generator[Candidate, None, CandidateStack]:
    """Yield the default, then the candidates as made; return the :class:`CandidateStack`.

    Parameters
    ----------
    setup : Setup
        Resolved options, the model (never modified: a deep copy is fine-tuned) and units.
    xb, mask : Tensor, shape (B, 1, H, W)
        Noisy HU images on the device and the body weights (0/1, float64).
    shape : tuple of int
        The caller's shape of one image or volume (the candidates' shape).
    batch_size : int, optional
        Slices per forward pass when rendering; ``None``: all at once.
    train_index : ndarray of int, optional
        The slices of ``xb`` to fine-tune on (a volume); default all.
    previews : bool, optional
        If true, yield the pixel-blend previews (:func:`~ctdid.core.did.preview.
        blend_previews`, ``preview=True``) right after the default, before the fine-tuning
        starts. They use no random numbers and leave the stack unchanged. Default False.
    """
    gen = _Generation(setup, xb, mask, shape)
    yield gen.bounds(batch_size)
    if previews:
        yield from gen.previews()
    gen.training(batch_size, train_index)
    info = gen.info()
    budget = setup.options.time_budget
    budget_end = math.inf if budget is None else gen.start + budget
    if setup.options.interleave:
        yield from gen.run_interleaved(budget_end, batch_size)
    else:
        yield from gen.run_sequential(budget_end, batch_size)
    return gen.stack(info)
