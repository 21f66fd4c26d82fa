"""The engine's options: one frozen, validated object, serialisable into ``run.json``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ctdid.core.did.network import TUNE

__all__ = ["DIDOptions", "JVPMethod", "LossDomain", "Mode", "OptimizerFactory", "StepControl"]

Mode = Literal["robust", "faithful", "fast"]
StepControl = Literal["gauss-newton", "search", "adaptive"]
LossDomain = Literal["image", "whitened"]
JVPMethod = Literal["autodiff", "difference"]
OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

MODES: tuple[str, ...] = ("robust", "faithful", "fast")
DIRECTIONS: tuple[str, ...] = ("high", "low")
STEP_CONTROLS: tuple[str, ...] = ("gauss-newton", "search", "adaptive")
LOSS_DOMAINS: tuple[str, ...] = ("image", "whitened")
JVP_METHODS: tuple[str, ...] = ("autodiff", "difference")

FAITHFUL_LR = 1e-2  # the paper's SGD
FAITHFUL_MOMENTUM = 0.9
ADAM_SEARCH_STEP = 0.04  # progress per iteration, Adam directions with a line search
ADAM_ADAPTIVE_STEP = 0.08  # progress per iteration, Adam directions with an adaptive step
GN_STEP = {"robust": 0.2, "fast": 0.25}  # progress per Gauss-Newton iteration
KRYLOV_DIM = {"robust": 40, "fast": 12}  # most Lanczos vectors per Gauss-Newton iteration


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def _check_in(name: str, value: float, lo: float, hi: float, *, open_lo: bool) -> None:
    inside = (lo < value if open_lo else lo <= value) and value <= hi
    if not (math.isfinite(value) and inside):
        bracket = "(" if open_lo else "["
        raise ValueError(f"{name} must be in {bracket}{lo:g}, {hi:g}], got {value}")


@dataclasses.dataclass(frozen=True)
class DIDOptions:
    """How :class:`~ctdid.core.did.InteractiveDenoiser` fine-tunes; checked when made.

    ``None`` for ``max_steps``, ``step_progress``, ``step_control`` and ``krylov_dim`` means
    the mode's default; :meth:`resolved` fills them in (the engine keeps the resolved copy).
    The index order of the candidates is always high resolution -> default -> low noise.

    Parameters
    ----------
    mode : {"robust", "faithful", "fast"}
        How to fine-tune; see :mod:`ctdid.core.did`. Default ``"robust"``.
    k : int
        Times the model is applied to make the low-noise bound ``t_low``; >= 1. Default 3.
    optimizer : callable, optional
        Faithful mode only: ``optimizer(params) -> torch.optim.Optimizer`` replacing the
        paper's SGD (momentum 0.9, lr 1e-2).
    lr : float, optional
        Faithful mode: learning rate (default 1e-2). Adam step controls (``"search"``,
        ``"adaptive"``): first guess of the step length (default 1e-4), then calibrated so
        that each iteration advances progress by ``min(step_progress, coverage /
        n_candidates)``. Not used by the Gauss-Newton steps.
    tol : float
        Faithful: stop when ``||y_t - y_{t-1}|| / ||y_{t-1}||`` (whole image, network units)
        is below ``tol``. Robust/fast: a direction has stalled when ``patience`` iterations
        in a row fail to raise its best progress by ``tol``. Default 0.01.
    max_steps : int, optional
        Hard cap on iterations per direction. Default 50 (faithful) or 200 (robust, fast).
    n_candidates : int
        Robust/fast: candidates per direction, at progress ``coverage * i / n_candidates``,
        i = 1..n. Default 8. (Faithful: every iteration is a candidate.)
    coverage : float
        Robust/fast: progress of the last candidate, in (0, 1]; higher reaches closer to the
        bounds (sharper and noisier at the high end, smoother at the low end). Default 0.95.
    step_progress : float, optional
        Robust/fast: progress each iteration aims for, in (0, 1]. Default 0.2 (robust), 0.25
        (fast), 0.04 (``"search"``) or 0.08 (``"adaptive"``).
    patience : int
        Robust/fast: a direction stops after this many iterations in a row that do not beat
        its best progress by ``tol`` (Gauss-Newton: by the larger of ``tol`` and a quarter
        (robust) or half (fast) of the candidate spacing, and at most 2). Default 5.
    outside_weight : float
        Robust/fast: loss weight of pixels outside the body mask relative to those inside,
        in [0, 1]. Default 0.1. The faithful mode weighs all pixels equally, as the paper.
    directions : sequence of {"high", "low"}
        Which bounds to fine-tune toward. Default both.
    time_budget : float, optional
        Wall-clock seconds for the fine-tuning of all directions together. Default unlimited.
    body_threshold : float
        HU threshold of the automatic body mask. Default -500 HU.
    crop_size, n_crops : int
        Robust/fast: side in pixels (0 or >= 8) and number of the square training crops;
        0 fine-tunes on the whole image. Default 128 and ``None`` (four crops per training
        slice when the network has no image-wide normalisation and the crops cover less
        than half of the training pixels; otherwise the whole image).
    seed : int
        Seed of the engine's own random generator (crop positions). Default 0.
    device : str or torch.device, optional
        Where to compute; default the device of the model's first parameter.
    deterministic : bool
        On CUDA, deterministic cuDNN (no autotuning, no TF32) inside the engine. Default true.
    interleave : bool
        Fine-tune the two directions in turn, each on its own copy of the network, so that
        both ends show early; false runs them one after the other with one copy (half the
        memory, same candidates). Default true.
    step_control : {"gauss-newton", "search", "adaptive"}, optional
        Robust/fast: how each iteration's step is made (:mod:`ctdid.core.did.gauss_newton`;
        the experimental Adam controls in :mod:`ctdid.core.did.adam_experimental`). Default
        ``"gauss-newton"``.
    krylov_dim : int, optional
        Gauss-Newton: most Lanczos vectors per iteration (>= 2). Default 40 (robust) or 12
        (fast).
    keep_weights : bool
        Give every candidate a CPU copy of the state dict that made it. Default false.
    tune : {"all", "biases", "last"}
        Robust/fast: which weights move (:func:`~ctdid.core.did.network.tuned_parameters`):
        all of them (default, as the paper), the one-dimensional per-channel ones only, or the
        last third of the parameter tensors. The faithful mode always tunes all.
    order_guard : bool
        Robust/fast: drop a candidate that would break its side's order in noise (noisier
        than the previous one on the low side, less noisy on the high side, by the
        reference-free estimate of :func:`~ctdid.core.did.order_guard.noise_proxy`); the
        stack's ``info["order_guard"]`` counts them. Default false: the guard orders the
        curve but can shorten its reach toward ``t_low`` (see ``benchmarks/RESULTS.md``).
        The faithful mode keeps every iterate (the paper).
    damping_floor : float
        Gauss-Newton steps only: the least damping of a step as a fraction of the largest
        eigenvalue of that iteration's Gauss-Newton matrix, in [0, 1). A floor keeps each
        step in the large-eigenvalue (smooth, structured) part of ``t - y``, so that
        small-eigenvalue components (noise) are fitted last, at the price of more iterations
        and less reach. Default 0 (no floor). Measured against the blend in
        ``benchmarks/RESULTS.md`` (issue 14).
    edge_weight : float
        Robust/fast: extra loss weight at edges, >= 0: the per-pixel weight is multiplied by
        ``1 + edge_weight * g / mean(g)``, ``g`` the gradient magnitude of the default output
        (HU/pixel, the mean over the body). Fits the bound's edges before its flat regions.
        Default 0 (off). Measured in ``benchmarks/RESULTS.md`` (issue 14).
    loss_domain : {"image", "whitened"}
        Robust/fast: where the squared error is taken. ``"image"`` (default): HU pixels.
        ``"whitened"``: the error filtered by the inverse square root of the power spectrum
        of the noise the model removed (input minus default, in the body;
        :func:`~ctdid.core.did.problem.whitening_filter`), so that each frequency counts
        relative to its noise and the fine-tuning fits structure before noise. Measured in
        ``benchmarks/RESULTS.md`` (issue 14).
    jvp : {"autodiff", "difference"}, optional
        Gauss-Newton steps: how the Jacobian-vector products of the Lanczos basis are made.
        ``"autodiff"``: forward-mode automatic differentiation, exact (about 3 forward passes
        each on the CPU). ``"difference"``: a one-sided finite difference of the weights
        (step :data:`~ctdid.core.did.gauss_newton.JVP_STEP` times their norm; one forward
        pass without autograd each, moving the curve by a fraction of a HU, see
        ``benchmarks/RESULTS.md``). Default ``None``: ``"difference"`` in the fast mode,
        ``"autodiff"`` in the robust mode.
    channels_last : bool, optional
        Fine-tune and render in the channels-last memory format (inputs and 4-D weights),
        which oneDNN's CPU convolutions run faster: a fast-mode curve 1.1-1.35x on 2 cores
        (``benchmarks/bench_engine.py``; not measured on a GPU). Only the order of
        floating-point sums changes (curves within 0.01 HU median). The default and ``t_low``
        are computed first, in the model's own format; a model that fails or gives another
        output in channels-last is left as it is (the stack's ``info["memory_format"]`` says
        which and why). Candidate weights are handed out in the standard format. Default
        ``None``: on in the robust and fast modes, off in the faithful mode (the paper's
        arithmetic, unchanged).

    Raises
    ------
    ValueError
        If an option is out of range or unknown (the message names it).
    """

    mode: Mode = "robust"
    k: int = 3
    optimizer: OptimizerFactory | None = None
    lr: float | None = None
    tol: float = 0.01
    max_steps: int | None = None
    n_candidates: int = 8
    coverage: float = 0.95
    step_progress: float | None = None
    patience: int = 5
    outside_weight: float = 0.1
    directions: tuple[str, ...] = DIRECTIONS
    time_budget: float | None = None
    body_threshold: float = -500.0
    crop_size: int = 128
    n_crops: int | None = None
    seed: int = 0
    device: str | torch.device | None = None
    deterministic: bool = True
    interleave: bool = True
    step_control: StepControl | None = None
    krylov_dim: int | None = None
    keep_weights: bool = False
    tune: str = "all"
    order_guard: bool = False
    channels_last: bool | None = None
    damping_floor: float = 0.0
    edge_weight: float = 0.0
    loss_domain: LossDomain = "image"
    jvp: JVPMethod | None = None

    def __post_init__(self) -> None:
        directions = self.directions
        if isinstance(directions, str):
            directions = (directions,)
        object.__setattr__(self, "directions", tuple(directions))
        self._check_choices()
        self._check_counts()
        self._check_numbers()

    def _check_choices(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.tune not in TUNE:
            raise ValueError(f"tune must be one of {', '.join(TUNE)}, got {self.tune!r}")
        if self.loss_domain not in LOSS_DOMAINS:
            raise ValueError(
                f"loss_domain must be one of {', '.join(LOSS_DOMAINS)}, got {self.loss_domain!r}"
            )
        if self.jvp is not None and self.jvp not in JVP_METHODS:
            raise ValueError(f"jvp must be one of {', '.join(JVP_METHODS)}, got {self.jvp!r}")
        if self.mode == "faithful" and self.loss_domain != "image":
            raise ValueError("the faithful mode takes the paper's loss in the image domain")
        if self.mode == "faithful" and self.tune != "all":
            raise ValueError("the faithful mode tunes all weights (the paper); tune must be 'all'")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad:
            raise ValueError(f"unknown direction(s) {bad}; choose from 'high' and 'low'")
        if not self.directions or len(set(self.directions)) != len(self.directions):
            raise ValueError(
                f"directions must be 'high' and/or 'low' once each, got {self.directions}"
            )

    def _check_counts(self) -> None:
        for name, value, minimum in (
            ("k", self.k, 1),
            ("n_candidates", self.n_candidates, 1),
            ("patience", self.patience, 1),
            ("crop_size", self.crop_size, 0),
            ("n_crops", 0 if self.n_crops is None else self.n_crops, 0),
        ):
            _check_int(name, value, minimum)
        if 0 < self.crop_size < 8:
            raise ValueError(f"crop_size must be 0 (no crops) or >= 8, got {self.crop_size}")
        steps = self.max_steps
        if steps is not None and (isinstance(steps, bool) or int(steps) < 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {steps!r}")

    def _check_numbers(self) -> None:
        if not (math.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {self.tol}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        control = self.step_control or "gauss-newton"
        _check_in("step_progress", self._step_progress(control), 0, 1, open_lo=True)
        _check_in("coverage", self.coverage, 0, 1, open_lo=True)
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {self.time_budget}")
        _check_in("outside_weight", self.outside_weight, 0, 1, open_lo=False)
        floor = self.damping_floor
        if not (math.isfinite(floor) and 0.0 <= floor < 1.0):
            raise ValueError(f"damping_floor must be in [0, 1), got {floor}")
        if not (math.isfinite(self.edge_weight) and self.edge_weight >= 0.0):
            raise ValueError(f"edge_weight must be a finite number >= 0, got {self.edge_weight}")
        if self.mode == "faithful" and (floor > 0.0 or self.edge_weight > 0.0):
            raise ValueError(
                "damping_floor and edge_weight are robust/fast options; the faithful mode "
                "is the paper's SGD on the plain squared error"
            )
        if not math.isfinite(self.body_threshold):
            raise ValueError(f"body_threshold must be a finite HU value, got {self.body_threshold}")
        if control not in STEP_CONTROLS:
            raise ValueError(
                f"step_control must be 'gauss-newton', 'search' or 'adaptive', got {control!r}"
            )
        _check_int("krylov_dim", self._krylov_dim(), 2)
        if self.optimizer is not None and self.mode != "faithful":
            raise ValueError("optimizer can only be given in the faithful mode")

    def _step_progress(self, control: str) -> float:
        if self.step_progress is not None:
            return self.step_progress
        if control == "gauss-newton":
            return GN_STEP["fast" if self.mode == "fast" else "robust"]
        return ADAM_ADAPTIVE_STEP if control == "adaptive" else ADAM_SEARCH_STEP

    def _jvp(self) -> JVPMethod:
        if self.jvp is not None:
            return self.jvp
        return "difference" if self.mode == "fast" else "autodiff"

    def _krylov_dim(self) -> int:
        if self.krylov_dim is not None:
            return self.krylov_dim
        return KRYLOV_DIM["fast" if self.mode == "fast" else "robust"]

    def resolved(self) -> DIDOptions:
        """A copy with the mode's defaults filled in for the options left at ``None``.

        Returns
        -------
        DIDOptions
            ``max_steps``, ``step_progress``, ``step_control`` and ``krylov_dim`` set; the
            numbers as Python ``int``/``float``.
        """
        control = self.step_control or "gauss-newton"
        steps = self.max_steps if self.max_steps is not None else (
            50 if self.mode == "faithful" else 200
        )  # fmt: skip
        return dataclasses.replace(
            self,
            k=int(self.k),
            tol=float(self.tol),
            max_steps=int(steps),
            n_candidates=int(self.n_candidates),
            coverage=float(self.coverage),
            step_progress=float(self._step_progress(control)),
            patience=int(self.patience),
            body_threshold=float(self.body_threshold),
            crop_size=int(self.crop_size),
            n_crops=None if self.n_crops is None else int(self.n_crops),
            seed=int(self.seed),
            deterministic=bool(self.deterministic),
            interleave=bool(self.interleave) and len(self.directions) > 1,
            step_control=control,
            krylov_dim=int(self._krylov_dim()),
            keep_weights=bool(self.keep_weights),
            outside_weight=float(self.outside_weight),
            damping_floor=float(self.damping_floor),
            edge_weight=float(self.edge_weight),
            order_guard=bool(self.order_guard) and self.mode != "faithful",
            channels_last=(
                self.mode != "faithful" if self.channels_last is None else bool(self.channels_last)
            ),
            jvp=self._jvp(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (the optimizer by its name, the device as text)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "optimizer" and value is not None:
                value = getattr(value, "__qualname__", type(value).__name__)
            elif field.name == "device" and value is not None:
                value = str(value)
            elif field.name == "directions":
                value = list(value)
            out[field.name] = value
        return out
