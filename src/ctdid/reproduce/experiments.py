"""The paper's experiments (Bai et al., arXiv 2011.14873, Figs. 2-8) on data ctdid makes itself.

Every experiment runs the chain from scratch: simulate (or read) the input, load a *shipped*
denoiser (never trained here), run the DID engine, measure each candidate and check the
paper's claims (:mod:`ctdid.reproduce.claims`). Each returns a :class:`Section` of the report
with its tables, figures and checks. Every DID stack is also compared, at equal noise, with the
pixel blend of its own input, default and t_low (:func:`ctdid.baselines.blend_stack`, claim
``"beats-blend"``), one case per stack in the section that made it.

Simulated inputs: a procedural abdomen slice (:func:`ctdid.sim.abdomen_phantom`, known liver
lesions and flat ROI) and a resolution phantom (:func:`ctdid.sim.mtf_phantom`), both over a
380 mm field of view as the shipped models' training phantoms, scanned on the fan-beam
simulator exactly as the training pairs (:func:`ctdid.train.pairs.phantom_pair`; quarter dose
by noise insertion into the normal-dose sinogram). Their reference for RMSE is the
*noise-free* scan (same projector and FBP kernel, no noise), so that an input at full dose
still has an error to lower. Other doses come from the quarter-dose pair by the paper's
image-domain shortcut (:func:`ctdid.sim.rescale_noise`).

Real inputs (only when ``../shared/data`` is present): the Mayo L506 quarter/full-dose pair and
the full-dose L067 slices with noise inserted in the projection domain
(:func:`ctdid.sim.simulate_low_dose`, ``mode="insert"``, ramp kernel); the reference is the
real full-dose image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from ctdid.reproduce import figures
from ctdid.reproduce.claims import (
    CaseCheck,
    check_beats_blend,
    check_cnr_rises,
    check_resolution_falls,
    check_smoothing,
    check_std_falls,
)

__all__ = [
    "BLEND_CANDIDATES",
    "DOSE_MODELS",
    "FOV_MM",
    "MAIN_MODEL",
    "PLAIN_MODEL",
    "REAL_DOSES",
    "REAL_I0",
    "Curve",
    "Experiments",
    "ReproConfig",
    "Scene",
    "Section",
    "Table",
    "dose_label",
    "make_config",
    "measure",
    "shared_data_dir",
]

#: The quarter-dose U-Net used by most experiments.
MAIN_MODEL = "unet-d25"
#: The plain network of Fig. 6.
PLAIN_MODEL = "plain-d25"
#: Shipped U-Nets by training dose (fraction of the normal dose), Figs. 7-8.
DOSE_MODELS: dict[str, float] = {
    "unet-d50": 0.5,
    "unet-d25": 0.25,
    "unet-d12": 0.125,
    "unet-d06": 0.0625,
}
#: Field of view of the simulated slices in mm (as the shipped models' training phantoms).
FOV_MM = 380.0
#: Input doses of Fig. 5 (fractions of the normal dose).
FIG5_DOSES = (1.0, 0.5, 0.25, 0.125)
#: Doses inserted into the real full-dose L067 slices.
REAL_DOSES = (0.5, 0.25, 0.125)
#: Full-dose photons per detector bin per view assumed when inserting dose into the L067 slices:
#: the value the shipped models' training data used (configs/train-compact-unet.yaml), chosen
#: there so that inserted quarter-dose noise on the L506 full dose has the std of Mayo's own
#: L506 quarter dose. (The simulator's default I0 would give about 1.8x that noise.)
REAL_I0 = 2.8e5
#: Blend candidates per side of the pixel-blend baseline that every DID stack is compared with
#: (claim ``"beats-blend"``): strengths in steps of 1/16, so that its curve is fine.
BLEND_CANDIDATES = 16
#: Display window in HU.
WINDOW = (-160.0, 240.0)
_BASE_DOSE = 0.25
#: Case label prefix per section (claim "beats-blend").
_CASE_PREFIX = {
    "fig2": "Fig. 2",
    "fig3": "Fig. 3",
    "fig4": "Fig. 4",
    "fig5": "Fig. 5",
    "fig6": "Fig. 6",
    "fig78": "Figs. 7-8",
    "real-l506": "real L506",
    "real-l067": "real L067",
}
_MAYO_PIXEL_MM = 0.7
_MAYO_SHAPE = (512, 512)

Log = Callable[[str], None]


def dose_label(dose: float) -> str:
    """``1``, ``1/2``, ``1/4``, ... for a dose fraction (``0.3`` for others)."""
    if dose >= 1:
        return "1"
    inv = 1.0 / dose
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-6 else f"{dose:g}"


# ---------------------------------------------------------------------------------------------
# configuration


@dataclasses.dataclass(frozen=True)
class ReproConfig:
    """Settings of a reproduction run.

    Attributes
    ----------
    size : int
        Pixels per side. Simulated slices cover 380 mm (pixel ``380 / size`` mm, 0.74 mm at
        512 as the training data); real 512 x 512 slices are area-resampled to ``size``.
    quick : bool
        Quick run (recorded in the report).
    mode : {"robust", "fast", "faithful"}
        DID engine mode.
    n_candidates : int
        Candidates per direction.
    max_steps : int or None
        Cap on fine-tuning iterations per direction (None: the engine's default).
    time_budget_s : float or None
        Cap in seconds on the fine-tuning of one stack (both directions).
    seeds : tuple of int
        Seeds of the simulated abdomen slices (phantom anatomy and noise); the figures show the
        first, the claims use all.
    real_slices : int
        Number of full-dose L067 slices (sharp kernel) used.
    geometry : object or None
        Scan geometry of the simulator (None: the default clinical fan beam).
    order_guard : bool
        Robust/fast: the engine drops a candidate that breaks its side's order in noise
        (:class:`ctdid.core.did.DIDOptions`, ``order_guard``). Default false.
    """

    size: int = 512
    quick: bool = False
    mode: Literal["robust", "fast", "faithful"] = "robust"
    n_candidates: int = 8
    max_steps: int | None = None
    time_budget_s: float | None = 300.0
    seeds: tuple[int, ...] = (0, 1, 2)
    real_slices: int = 3
    geometry: Any = None
    order_guard: bool = False

    @property
    def pixel_mm(self) -> float:
        """Pixel size of the simulated slices in mm."""
        return FOV_MM / self.size


def make_config(*, quick: bool, size: int = 512, **changes: Any) -> ReproConfig:
    """The settings of ``ctdid reproduce`` (``--quick`` or full), with optional changes.

    Quick: fast engine mode, 4 candidates per direction, at most 24 iterations and 25 s of
    fine-tuning per stack, one simulated slice and one real L067 slice. Full: robust mode,
    8 candidates per direction, three simulated slices and three L067 slices.
    """
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if quick:
        base = ReproConfig(
            size=size,
            quick=True,
            mode="fast",
            n_candidates=4,
            max_steps=24,
            time_budget_s=25.0,
            seeds=(0,),
            real_slices=1,
        )
    else:
        base = ReproConfig(size=size)
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------------------------
# measurements


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of the report: column names and rows of formatted cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass
class Section:
    """One experiment's part of the report.

    Attributes
    ----------
    key, title : str
        Anchor and heading.
    paragraphs : list of str
        Markdown text: what was done and what it shows.
    tables : list of Table
    figures : list of (str, str)
        PNG file name (in the output folder) and caption.
    checks : list of CaseCheck
        The claims checked here.
    requires_shared : bool
        Whether the section needs ``../shared/data``.
    skipped : str or None
        Why the section did not run (missing data or models).
    seconds : float
        Wall time of the experiment.
    """

    key: str
    title: str
    paragraphs: list[str] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    checks: list[CaseCheck] = dataclasses.field(default_factory=list)
    requires_shared: bool = False
    skipped: str | None = None
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """A noisy input with what is needed to measure its candidates.

    Attributes
    ----------
    name : str
        Label, e.g. ``"simulated abdomen, seed 0, dose 1/4"``.
    image : ndarray, shape (y, x)
        The noisy input in HU.
    spacing : tuple of float
        Pixel size (dy, dx) in mm.
    reference : ndarray
        Reference for RMSE in HU (noise-free scan, or real full dose).
    reference_name : str
        What the reference is.
    body : ndarray of bool
        Where RMSE is measured.
    flat : list of tuple of slice
        Flat regions for STD (median of the plane-detrended STDs).
    lesion : ndarray of bool or None
        Lesion ROI for CNR.
    background : ndarray of bool or None
        Background ROI for CNR.
    """

    name: str
    image: NDArray[np.float32]
    spacing: tuple[float, float]
    reference: NDArray[np.float32]
    reference_name: str
    body: NDArray[np.bool_]
    flat: list[Any]
    lesion: NDArray[np.bool_] | None = None
    background: NDArray[np.bool_] | None = None


@dataclasses.dataclass(eq=False)
class Curve:
    """Measurements of one candidate stack, high-resolution end first.

    Attributes
    ----------
    label : str
        Model and input.
    strengths : ndarray
        Strength of each candidate in [-1, 1].
    default_index : int
        Index of the default.
    std_hu : ndarray
        STD in HU over the scene's flat regions.
    rmse_hu : ndarray
        RMSE in HU vs the scene's reference inside the body.
    cnr : ndarray or None
        CNR of the scene's lesion.
    inputs : dict of str to float
        The same measures on the input (``std_hu``, ``rmse_hu``, ``cnr``).
    seconds : float
        Engine time.
    steps : dict of str to int
        Fine-tuning iterations per direction.
    images : ndarray or None
        The candidate images (kept for figures).
    """

    label: str
    strengths: NDArray[np.float64]
    default_index: int
    std_hu: NDArray[np.float64]
    rmse_hu: NDArray[np.float64]
    cnr: NDArray[np.float64] | None
    inputs: dict[str, float]
    seconds: float
    steps: dict[str, int]
    images: NDArray[np.float32] | None = None

    def best(self, side: Literal["all", "high", "low"] = "all") -> int:
        """Index of the lowest-RMSE candidate (on one side of the default, or anywhere)."""
        s = self.strengths
        ok = np.ones(s.size, bool) if side == "all" else (s < 0 if side == "high" else s > 0)
        if not ok.any():
            return self.default_index
        idx = np.nonzero(ok)[0]
        return int(idx[np.argmin(self.rmse_hu[idx])])


def _std(img: NDArray[np.float32], scene: Scene) -> float:
    from ctdid.metrics import noise_label

    return noise_label(img, spacing=scene.spacing, regions=scene.flat)


def _measure_one(img: NDArray[np.float32], scene: Scene) -> tuple[float, float, float]:
    from ctdid.metrics import cnr, rmse

    c = float("nan")
    if scene.lesion is not None and scene.background is not None:
        c = cnr(img, scene.lesion, scene.background)
    return _std(img, scene), rmse(img, scene.reference, mask=scene.body), c


def measure(stack: Any, scene: Scene, *, label: str, keep_images: bool = False) -> Curve:
    """Measure every candidate of a stack on a scene.

    Parameters
    ----------
    stack : CandidateStack
        Candidates of ``scene.image``.
    scene : Scene
        Input, reference and ROIs.
    label : str
        Curve label.
    keep_images : bool, optional
        Keep the candidate images in the curve (for figures).

    Returns
    -------
    Curve
    """
    rows = [_measure_one(c.image, scene) for c in stack]
    arr = np.asarray(rows, dtype=float)
    in_std, in_rmse, in_cnr = _measure_one(scene.image, scene)
    has_cnr = scene.lesion is not None
    return Curve(
        label=label,
        strengths=stack.strengths,
        default_index=int(stack.default_index),
        std_hu=arr[:, 0],
        rmse_hu=arr[:, 1],
        cnr=arr[:, 2] if has_cnr else None,
        inputs={"std_hu": in_std, "rmse_hu": in_rmse, "cnr": in_cnr},
        seconds=float(stack.timings.get("total", float("nan"))),
        steps={str(k): int(v) for k, v in stack.steps.items()},
        images=stack.images if keep_images else None,
    )


# ---------------------------------------------------------------------------------------------
# inputs


@dataclasses.dataclass(frozen=True, eq=False)
class _SimCase:
    phantom: Any
    low: NDArray[np.float32]
    normal: NDArray[np.float32]
    clean: NDArray[np.float32]
    seed: int


def _noise_free_scan(hu: NDArray[np.float32], spacing: tuple[float, float], geometry: Any) -> Any:
    from ctdid.sim import FanBeamGeometry, fbp, forward_project, hu_to_mu, mu_to_hu

    geom = FanBeamGeometry() if geometry is None else geometry
    with torch.no_grad():
        mu = hu_to_mu(torch.as_tensor(np.asarray(hu, np.float32)))
        sino = forward_project(mu, geom, spacing=spacing)
        img = mu_to_hu(fbp(sino, geom, shape=hu.shape, spacing=spacing, kernel="hann"))
    return img.numpy().astype(np.float32)


def _simulate(phantom: Any, seed: int, cfg: ReproConfig) -> _SimCase:
    from ctdid.train import pairs

    sp = (float(phantom.spacing[0]), float(phantom.spacing[1]))
    low, normal = pairs.phantom_pair(
        phantom.hu, spacing=sp, dose=_BASE_DOSE, seed=seed, geometry=cfg.geometry
    )
    clean = _noise_free_scan(phantom.hu, sp, cfg.geometry)
    return _SimCase(phantom, low, normal, clean, seed)


def _lesion_rois(phantom: Any) -> tuple[Any, NDArray[np.bool_], NDArray[np.bool_]]:
    """The most conspicuous liver lesion, its inner ROI and a liver background ring."""
    shape = phantom.hu.shape
    lesions = list(phantom.lesions)
    les = max(lesions, key=lambda le: abs(le.contrast) * le.radius)
    from ctdid.metrics import circle_roi

    r = float(les.radius)
    inner = circle_roi(shape, center=les.center, radius=max(0.7 * r, 1.5))
    outer = circle_roi(shape, center=les.center, radius=r + max(6.0, 2.0 * r))
    near = circle_roi(shape, center=les.center, radius=r + max(2.0, 0.5 * r))
    ring = outer & ~near
    liver = phantom.masks.get("liver")
    if liver is not None:
        ring &= liver
    for other in lesions:
        ring &= ~other.mask(shape, scale=1.5)
    if ring.sum() < 10:  # too small to trust: use the flat liver square
        ring = np.zeros(shape, bool)
        ring[phantom.flat_roi] = True
    return les, inner, ring


def _phantom_scene(case: _SimCase, image: NDArray[np.float32], name: str) -> Scene:
    from ctdid.metrics import find_body_mask

    ph = case.phantom
    _, lesion, background = _lesion_rois(ph) if ph.lesions else (None, None, None)
    body = ph.masks.get("body")
    if body is None or not body.any():
        body = find_body_mask(case.clean)
    return Scene(
        name=name,
        image=np.asarray(image, np.float32),
        spacing=(float(ph.spacing[0]), float(ph.spacing[1])),
        reference=case.clean,
        reference_name="noise-free scan",
        body=np.asarray(body, bool),
        flat=[ph.flat_roi],
        lesion=lesion,
        background=background,
    )


def _resample(img: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    if img.shape == (size, size):
        return img.astype(np.float32)
    t = torch.from_numpy(np.array(img, np.float32, copy=True))[None, None]
    mode = "area" if size < img.shape[0] else "bilinear"
    out = torch.nn.functional.interpolate(t, size=(size, size), mode=mode)
    return out[0, 0].numpy().astype(np.float32)


def _read_mayo(path: Path, size: int) -> NDArray[np.float32]:
    from ctdid.io import read_volume

    vol = read_volume(
        path,
        shape=_MAYO_SHAPE,
        dtype="uint16",
        hu_offset=-1024,
        spacing=(3.0, _MAYO_PIXEL_MM, _MAYO_PIXEL_MM),
    )
    return _resample(np.asarray(vol.hu[0], np.float32), size)


def _real_scene(image: NDArray[np.float32], reference: NDArray[np.float32], name: str,
                spacing: tuple[float, float]) -> Scene:  # fmt: skip
    from ctdid.metrics import find_body_mask, find_flat_regions

    body = find_body_mask(reference)
    flat = find_flat_regions(reference, spacing=spacing, body_mask=body, n=10)
    if not flat:  # tiny images: the central square
        h, w = reference.shape
        flat = [(slice(h // 2 - 2, h // 2 + 2), slice(w // 2 - 2, w // 2 + 2))]
    return Scene(
        name=name,
        image=np.asarray(image, np.float32),
        spacing=spacing,
        reference=np.asarray(reference, np.float32),
        reference_name="real full dose",
        body=body,
        flat=list(flat),
    )


# ---------------------------------------------------------------------------------------------
# the experiments


def _fmt(v: float, spec: str = ".1f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:{spec}}"


def _cand_name(curve: Curve, i: int) -> str:
    s = curve.strengths[i]
    if i == curve.default_index:
        return "default"
    return f"{'high-res' if s < 0 else 'low-noise'} s={s:+.2f}"


def _curve_table(curve: Curve, *, with_cnr: bool = True) -> Table:
    header = ["candidate", "strength", "STD (HU)", "RMSE (HU)"]
    if with_cnr and curve.cnr is not None:
        header.append("CNR")
    rows: list[tuple[str, ...]] = []
    inp = ["input (t_high)", "-1 (bound)", _fmt(curve.inputs["std_hu"]),
           _fmt(curve.inputs["rmse_hu"], ".2f")]  # fmt: skip
    if len(header) == 5:
        inp.append(_fmt(curve.inputs["cnr"], ".2f"))
    rows.append(tuple(inp))
    for i in range(curve.strengths.size):
        name = "**default**" if i == curve.default_index else f"#{i}"
        row = [name, f"{curve.strengths[i]:+.2f}", _fmt(curve.std_hu[i]),
               _fmt(curve.rmse_hu[i], ".2f")]  # fmt: skip
        if len(header) == 5 and curve.cnr is not None:
            row.append(_fmt(curve.cnr[i], ".2f"))
        rows.append(tuple(row))
    return Table(tuple(header), tuple(rows))


def _expectation(model_dose: float, input_dose: float) -> Literal["over", "under"] | None:
    if math.isclose(model_dose, input_dose, rel_tol=1e-6):
        return None
    return "over" if model_dose < input_dose else "under"


def _fig3_picks(
    cur: Curve, scene: Scene, case: _SimCase
) -> list[tuple[str, NDArray[np.float32], int | None]]:
    """Fig. 3's panels: two low-noise candidates, default, high-res, input and normal dose."""
    assert cur.images is not None
    n = cur.strengths.size
    d = cur.default_index
    low_side = list(range(d + 1, n))
    high_side = list(range(d))
    picks: list[tuple[str, NDArray[np.float32], int | None]] = []
    if low_side:
        picks.append(("low-noise (t_low end)", cur.images[low_side[-1]], low_side[-1]))
        if len(low_side) > 1:
            mid = low_side[len(low_side) // 2 - 1]
            picks.append(("low-noise (mid)", cur.images[mid], mid))
    picks.append(("default", cur.images[d], d))
    if high_side:
        h = high_side[len(high_side) // 2]
        picks.append(("high-resolution", cur.images[h], h))
    picks.append(("input (1/4 dose)", scene.image, None))
    picks.append(("normal dose", case.normal, None))
    return picks


def _insert_ttf50(img: NDArray[np.float32], insert: Any, px: float) -> float:
    """TTF50 (1/mm) of the resolution phantom's insert edge; NaN when not measurable."""
    from ctdid.metrics import ttf_from_insert

    try:
        with warnings.catch_warnings():  # an unmeasurable edge gives NaN, said as n/a
            warnings.simplefilter("ignore", RuntimeWarning)
            return ttf_from_insert(img, spacing=px, center=insert.center,
                                   radius_mm=insert.radius * px).mtf50  # fmt: skip
    except ValueError:
        return float("nan")


def _resolution_table(
    cur: Curve,
    scene: Scene,
    case: _SimCase,
    ttf: NDArray[np.float64],
    wire_disc: NDArray[np.bool_],
    ttf50: Callable[[NDArray[np.float32]], float],
) -> Table:
    """Fig. 4's table: TTF50 of the insert, wire peak and STD of input, candidates, clean scan."""
    assert cur.images is not None
    peak = np.array([float(im[wire_disc].max()) for im in cur.images])
    rows = [("input", "-", _fmt(ttf50(scene.image), ".3f"),
             _fmt(float(scene.image[wire_disc].max()), ".0f"),
             _fmt(cur.inputs["std_hu"]))]  # fmt: skip
    rows += [(_cand_name(cur, i), f"{cur.strengths[i]:+.2f}", _fmt(ttf[i], ".3f"),
              _fmt(peak[i], ".0f"), _fmt(cur.std_hu[i])) for i in range(ttf.size)]  # fmt: skip
    rows.append(("noise-free scan", "-", _fmt(ttf50(case.clean), ".3f"),
                 _fmt(float(case.clean[wire_disc].max()), ".0f"), "0.0"))  # fmt: skip
    return Table(("image", "strength", "TTF50 of insert (1/mm)", "wire peak (HU)", "STD (HU)"),
                 tuple(rows))  # fmt: skip


class Experiments:
    """Runs the experiments and collects their report sections.

    Parameters
    ----------
    cfg : ReproConfig
        Settings.
    out : Path
        Output folder (figures are written there).
    models : mapping of str to HUAdapter
        Loaded shipped models by name (missing ones absent).
    shared_dir : Path or None
        ``../shared/data`` when present.
    log : callable, optional
        Progress messages.
    """

    def __init__(
        self,
        cfg: ReproConfig,
        out: Path,
        models: Mapping[str, Any],
        *,
        shared_dir: Path | None,
        log: Log | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = out
        self.models = dict(models)
        self.shared_dir = shared_dir
        self.log: Log = log if log is not None else (lambda msg: None)
        self._sim: dict[int, _SimCase] = {}
        self._curves: dict[tuple[str, str], Curve] = {}
        # the pixel blend of each DID stack (same x, default, t_low), measured as its curve,
        # with the noise of t_high and t_low; and the stacks not yet checked against it
        self._blends: dict[tuple[str, str], tuple[Curve, float, float]] = {}
        self._unchecked: list[tuple[str, str]] = []
        self.n_stacks = 0
        self.guard_dropped = 0  # candidates the engine's order guard dropped, all stacks
        self.engine_seconds = 0.0

    # helpers ---------------------------------------------------------------------------------

    def _stack(self, model: str, image: NDArray[np.float32], seed: int) -> Any:
        from ctdid.core import InteractiveDenoiser

        cfg = self.cfg
        engine = InteractiveDenoiser(
            self.models[model],
            mode=cfg.mode,
            n_candidates=cfg.n_candidates,
            max_steps=cfg.max_steps,
            time_budget=cfg.time_budget_s,
            seed=seed,
            order_guard=cfg.order_guard,
        )
        t0 = time.perf_counter()
        stack = engine.run(image)
        self.engine_seconds += time.perf_counter() - t0
        self.n_stacks += 1
        guard = (stack.info or {}).get("order_guard") or {}
        self.guard_dropped += int(sum((guard.get("dropped") or {}).values()))
        return stack

    def curve(self, model: str, scene: Scene, key: str, *, seed: int = 0) -> Curve:
        """DID with ``model`` on ``scene`` (cached by ``(model, key)``), measured."""
        if (model, key) not in self._curves:
            self.log(f"DID: {model} on {scene.name}")
            stack = self._stack(model, scene.image, seed)
            self._curves[(model, key)] = measure(
                stack, scene, label=f"{model} on {scene.name}", keep_images=True
            )
            self._blends[(model, key)] = self._blend(stack, scene)
            self._unchecked.append((model, key))
        return self._curves[(model, key)]

    def _blend(self, stack: Any, scene: Scene) -> tuple[Curve, float, float]:
        """The pixel blend of a DID stack's x, default and t_low, measured as the DID curve,
        with the noise of t_high and of t_low."""
        from ctdid.baselines import blend_stack

        blend = blend_stack(stack.t_high, stack.default.image, stack.t_low,
                            n_candidates=BLEND_CANDIDATES, body=stack.body)  # fmt: skip
        cur = measure(blend, scene, label=f"pixel blend on {scene.name}")
        return cur, _std(stack.t_high, scene), _std(stack.t_low, scene)

    def blend_checks(self, prefix: str) -> list[CaseCheck]:
        """Claim ``"beats-blend"`` on every DID stack made since the last call, one case each.

        Each stack's candidates are compared at equal noise with the pixel blend of its own
        input, default and t_low (:data:`BLEND_CANDIDATES` per side), both measured with the
        same noise (STD over the scene's flat regions) and RMSE (vs the scene's reference)."""
        out = []
        for mk in self._unchecked:
            cur = self._curves[mk]
            blend, in_noise, low_noise = self._blends[mk]
            out.append(check_beats_blend(
                cur.std_hu, cur.rmse_hu, blend.std_hu, blend.rmse_hu,
                default_index_did=cur.default_index, default_index_blend=blend.default_index,
                input_noise=in_noise, low_noise=low_noise, case=f"{prefix}: {cur.label}",
            ))  # fmt: skip
        self._unchecked.clear()
        return out

    def sim(self, seed: int) -> _SimCase:
        """The simulated abdomen slice of a seed (made once)."""
        if seed not in self._sim:
            from ctdid.sim import abdomen_phantom

            self.log(f"simulating the abdomen slice, seed {seed} ({self.cfg.size} px)")
            ph = abdomen_phantom(seed=seed, shape=self.cfg.size, fov_mm=FOV_MM)
            self._sim[seed] = _simulate(ph, seed, self.cfg)
        return self._sim[seed]

    def abdomen_scene(self, seed: int, dose: float) -> Scene:
        """The abdomen slice of ``seed`` at ``dose`` (rescaled from the quarter-dose pair)."""
        from ctdid.sim import rescale_noise

        case = self.sim(seed)
        if math.isclose(dose, _BASE_DOSE):
            img = case.low
        elif dose >= 1:
            img = case.normal
        else:
            img = rescale_noise(case.normal, case.low, pair_dose=_BASE_DOSE, dose=dose)
        return _phantom_scene(case, img, f"simulated abdomen {seed}, dose {dose_label(dose)}")

    def _path(self, name: str) -> Path:
        return self.out / name

    def _missing(self, section: Section, names: Sequence[str]) -> bool:
        gone = [n for n in names if n not in self.models]
        if gone:
            section.skipped = f"shipped model(s) not installed: {', '.join(gone)}"
            return True
        return False

    # Figs. 2 and 3 ---------------------------------------------------------------------------

    def fig2(self) -> Section:
        """Fig. 2: the gradual transition from t_high through the default to t_low."""
        sec = Section("fig2", "Fig. 2 — gradual transition of the candidates")
        if self._missing(sec, [MAIN_MODEL]):
            return sec
        seed = self.cfg.seeds[0]
        scene = self.abdomen_scene(seed, _BASE_DOSE)
        cur = self.curve(MAIN_MODEL, scene, f"abd{seed}-{_BASE_DOSE}")
        assert cur.images is not None
        idx = list(range(cur.strengths.size))
        imgs = [scene.image, *[cur.images[i] for i in idx]]
        labels = ["t_high (input)"] + [
            f"{'default' if i == cur.default_index else f's={cur.strengths[i]:+.2f}'}\n"
            f"STD {cur.std_hu[i]:.1f} HU"
            for i in idx
        ]
        figures.plot_transition(
            imgs, labels, cur.images[cur.default_index], self._path("fig2_transition.png")
        )
        sec.figures.append(
            (
                "fig2_transition.png",
                f"{MAIN_MODEL} on the simulated quarter-dose abdomen: the input (t_high) and every "
                "candidate from the high-resolution end to the low-noise end (top, window "
                "[-160, 240] HU), and each minus the default (bottom, [-60, 60] HU).",
            )
        )
        steps = np.diff(cur.images.reshape(len(idx), -1), axis=0)
        step_rms = np.sqrt((steps.astype(np.float64) ** 2).mean(axis=1))
        sec.paragraphs.append(
            f"{len(idx)} candidates ({self.cfg.mode} mode); strengths "
            + ", ".join(f"{s:+.2f}" for s in cur.strengths)
            + ". RMS change between neighbouring candidates: "
            + ", ".join(f"{v:.1f}" for v in step_rms)
            + " HU (no jump: the largest step is "
            + f"{step_rms.max() / max(step_rms.mean(), 1e-9):.1f}x the mean)."
        )
        sec.checks.append(check_std_falls(
            cur.std_hu, case="Fig. 2/3: unet-d25, simulated abdomen "
            f"{seed}, dose 1/4", default_index=cur.default_index,
        ))  # fmt: skip
        return sec

    def fig3(self) -> Section:
        """Fig. 3: low-contrast lesion task, STD / CNR / RMSE."""
        sec = Section("fig3", "Fig. 3 — low-contrast lesion task")
        if self._missing(sec, [MAIN_MODEL]):
            return sec
        first = True
        for seed in self.cfg.seeds:
            scene = self.abdomen_scene(seed, _BASE_DOSE)
            cur = self.curve(MAIN_MODEL, scene, f"abd{seed}-{_BASE_DOSE}", seed=seed)
            case = self.sim(seed)
            les, _, _ = _lesion_rois(case.phantom)
            label = f"Fig. 3: {MAIN_MODEL}, simulated abdomen {seed}, dose 1/4"
            if cur.cnr is not None:
                sec.checks.append(check_cnr_rises(cur.cnr, case=label,
                                                  default_index=cur.default_index))  # fmt: skip
            if seed != self.cfg.seeds[0]:
                sec.checks.append(check_std_falls(cur.std_hu, case=label,
                                                  default_index=cur.default_index))  # fmt: skip
            if not first:
                continue
            first = False
            self._fig3_lesion(sec, seed, scene, cur, case, les)
        return sec

    def _fig3_lesion(
        self, sec: Section, seed: int, scene: Scene, cur: Curve, case: _SimCase, les: Any
    ) -> None:
        """Fig. 3's lesion zoom, curves and tables for the first seed."""
        from ctdid.metrics import rmse

        assert cur.images is not None
        d = cur.default_index
        picks = _fig3_picks(cur, scene, case)
        titles = []
        rows = []
        for name, img, i in picks:
            std, err, c = _measure_one(img, scene)
            err_nd = rmse(img, case.normal, mask=scene.body)
            s = "" if i is None else f"{cur.strengths[i]:+.2f}"
            titles.append(f"{name} {s}\nSTD {std:.1f} HU, CNR {c:.2f}\nRMSE {err:.1f} HU")
            rows.append((name, s or "-", _fmt(std), _fmt(c, ".2f"), _fmt(err, ".2f"),
                         _fmt(err_nd, ".2f")))  # fmt: skip
        r, c0 = les.center
        zoom = max(8.0, 4 * les.radius)
        figures.plot_panels(
            [p[1] for p in picks], titles, self._path("fig3_lesion.png"),
            zoom=(r, c0, zoom), circles=[(r, c0, les.radius)],
        )  # fmt: skip
        figures.plot_curves(
            [("STD (HU)", cur.strengths, cur.std_hu, d)]
            + ([("CNR x 10", cur.strengths, 10 * cur.cnr, d)] if cur.cnr is not None else [])
            + [("RMSE (HU)", cur.strengths, cur.rmse_hu, d)],
            self._path("fig3_curves.png"),
            xlabel="strength s (-1 = t_high, 0 = default, +1 = t_low)",
            ylabel="HU / CNR x 10",
            title=f"{MAIN_MODEL}, simulated abdomen, quarter dose",
        )
        sec.tables.append(Table(
            ("image", "strength", "STD flat ROI (HU)", "CNR", "RMSE vs noise-free (HU)",
             "RMSE vs normal dose (HU)"), tuple(rows),
        ))  # fmt: skip
        sec.tables.append(_curve_table(cur))
        sec.figures.append((
            "fig3_lesion.png",
            f"Zoom on a liver lesion ({les.contrast:+.0f} HU, radius "
            f"{les.radius * scene.spacing[0]:.1f} mm, circled): two low-noise candidates, "
            "the default, a high-resolution candidate, the input and the normal dose.",
        ))  # fmt: skip
        sec.figures.append(("fig3_curves.png",
            "STD of the flat liver ROI, CNR of the lesion and RMSE vs the noise-free scan "
            "(body) along the candidates."))  # fmt: skip
        sec.paragraphs.append(
            f"Simulated abdomen (seed {seed}), {self.cfg.size} px, quarter dose. CNR = "
            "2|S - S_b| / (sigma + sigma_b) with S in the inner 70 % of the lesion and S_b in "
            "a liver ring around it; STD of the flat 16 mm liver ROI (plane removed); RMSE "
            "inside the body vs the noise-free scan (same scanner and kernel, no noise) and "
            "vs the simulated normal dose."
        )

    # Fig. 4 ----------------------------------------------------------------------------------

    def fig4(self) -> Section:
        """Fig. 4: high-contrast structures, zoomed, with TTF50 of an insert."""
        from ctdid.sim import mtf_phantom

        sec = Section("fig4", "Fig. 4 — high-contrast structures")
        if self._missing(sec, [MAIN_MODEL]):
            return sec
        cfg = self.cfg
        px = cfg.pixel_mm
        self.log("simulating the resolution phantom")
        ph = mtf_phantom(shape=cfg.size, fov_mm=FOV_MM)
        case = _simulate(ph, 100, cfg)
        scene = Scene(
            name="resolution phantom, dose 1/4", image=case.low, spacing=(px, px),
            reference=case.clean, reference_name="noise-free scan",
            body=np.asarray(ph.masks["cylinder"], bool), flat=[ph.flat_roi],
        )  # fmt: skip
        cur = self.curve(MAIN_MODEL, scene, "mtf")
        assert cur.images is not None
        wire, insert = ph.lesions[0], ph.lesions[1]
        wire_disc = np.hypot(
            *np.mgrid[: cfg.size, : cfg.size] - np.reshape(wire.center, (2, 1, 1))
        ) <= max(1.5, 2.0 / px)
        ttf50 = functools.partial(_insert_ttf50, insert=insert, px=px)
        ttf = np.array([ttf50(im) for im in cur.images])
        sec.tables.append(_resolution_table(cur, scene, case, ttf, wire_disc, ttf50))
        if ttf.size >= 2:  # NaN (not measurable) counts as not held
            sec.checks.append(check_resolution_falls(
                ttf, case=f"Fig. 4: {MAIN_MODEL}, resolution phantom, dose 1/4",
                default_index=cur.default_index))  # fmt: skip
        sel = self._fig_indices(cur)
        boxes = [
            (wire.center[0], wire.center[1], max(6.0, 8.0 / px), "wire"),
            (insert.center[0], insert.center[1] - insert.radius, max(6.0, 10.0 / px),
             "insert edge"),
        ]  # fmt: skip
        imgs = [scene.image, *[cur.images[i] for i in sel]]
        titles = ["input"] + [_cand_name(cur, i) for i in sel]
        abd, abd_box = self._abdomen_detail()
        figures.plot_zoom(imgs, titles, boxes, self._path("fig4_zoom.png"),
                          extra=(abd, abd_box) if abd and abd_box else None)  # fmt: skip
        figures.plot_curves(
            [("TTF50 of the 300 HU insert", cur.strengths, ttf, cur.default_index)],
            self._path("fig4_ttf.png"), xlabel="strength s", ylabel="TTF50 (1/mm)",
            title=f"{MAIN_MODEL}, resolution phantom, quarter dose",
        )  # fmt: skip
        sec.figures.append(("fig4_zoom.png",
            "Zoomed ROIs: the 0.2 mm wire and the edge of the 300 HU insert of the resolution "
            "phantom, and the aortic wall calcifications / spine of the abdomen slice, for the "
            "input and candidates from high resolution to low noise."))  # fmt: skip
        sec.figures.append(("fig4_ttf.png", "TTF50 of the insert along the candidates."))
        sec.paragraphs.append(
            "Resolution phantom (200 mm water cylinder, 0.2 mm wire of 3000 HU, 30 mm insert of "
            f"300 HU) over a {FOV_MM:.0f} mm field, quarter dose. TTF50 from the insert's radial "
            "edge spread; the wire's peak value falls as the point spread widens (its integral "
            "is fixed)."
        )
        return sec

    def _abdomen_detail(
        self,
    ) -> tuple[list[NDArray[np.float32]], tuple[float, float, float, str] | None]:
        """Fig. 4's extra row: a high-contrast region of the abdomen (aortic wall, spine)."""
        abd: list[NDArray[np.float32]] = []
        abd_box = None
        if self.cfg.seeds:
            seed = self.cfg.seeds[0]
            sc = self.abdomen_scene(seed, _BASE_DOSE)
            ac = self.curve(MAIN_MODEL, sc, f"abd{seed}-{_BASE_DOSE}", seed=seed)
            det = self.sim(seed).phantom.masks.get("detail")
            if ac.images is not None and det is not None and det.any():
                rr, cc = np.nonzero(det)
                asel = self._fig_indices(ac)
                abd = [sc.image, *[ac.images[i] for i in asel]]
                px = self.cfg.pixel_mm
                abd_box = (float(rr.mean()), float(cc.mean()), max(8.0, 22.0 / px), "abdomen")
        return abd, abd_box

    def _fig_indices(self, cur: Curve, n: int = 5) -> list[int]:
        m = cur.strengths.size
        if m <= n:
            return list(range(m))
        pos = np.linspace(0, m - 1, n).round().astype(int).tolist()
        if cur.default_index not in pos:
            pos[int(np.argmin([abs(p - cur.default_index) for p in pos]))] = cur.default_index
        return sorted(set(pos))

    # Fig. 5 ----------------------------------------------------------------------------------

    def _dose_section(self, sec: Section, curves: list[tuple[str, float, float, Curve, Scene]],
                      prefix: str, fig_name: str, what: str) -> None:  # fmt: skip
        """Table, checks and figures for curves of (label, model dose, input dose, curve)."""
        rows = []
        series = []
        panels: list[NDArray[np.float32]] = []
        titles: list[str] = []
        for label, mdose, idose, cur, scene in curves:
            d = cur.default_index
            b = cur.best()
            rows.append((label, _fmt(cur.inputs["std_hu"]), _fmt(cur.std_hu[d]),
                         _fmt(cur.inputs["rmse_hu"], ".2f"), _fmt(cur.rmse_hu[d], ".2f"),
                         f"{cur.strengths[b]:+.2f}", _fmt(cur.rmse_hu[b], ".2f")))  # fmt: skip
            series.append((label, cur.strengths, cur.rmse_hu, d))
            exp = _expectation(mdose, idose)
            if exp is not None:
                sec.checks.append(check_smoothing(
                    cur.strengths, cur.rmse_hu, d, expect=exp,
                    case=f"{prefix}: {label} (model {dose_label(mdose)}, input "
                    f"{dose_label(idose)})"))  # fmt: skip
            assert cur.images is not None
            panels += [scene.image, cur.images[d], cur.images[b]]
            titles += [
                f"{label}: input\nRMSE {cur.inputs['rmse_hu']:.1f} HU",
                f"default\nRMSE {cur.rmse_hu[d]:.1f} HU",
                f"best s={cur.strengths[b]:+.2f}\nRMSE {cur.rmse_hu[b]:.1f} HU",
            ]
        sec.tables.append(
            Table(
                (
                    "case",
                    "input STD (HU)",
                    "default STD (HU)",
                    "input RMSE (HU)",
                    "default RMSE (HU)",
                    "best candidate s",
                    "best RMSE (HU)",
                ),
                tuple(rows),
            )
        )
        figures.plot_panels(panels, titles, self._path(f"{fig_name}_images.png"), columns=3)
        figures.plot_curves(
            series,
            self._path(f"{fig_name}_rmse.png"),
            xlabel="strength s (-1 = t_high, 0 = default, +1 = t_low)",
            ylabel=f"RMSE vs {curves[0][4].reference_name} (HU)",
            title=what,
        )
        sec.figures.append(
            (
                f"{fig_name}_images.png",
                "Each row: input, default, and the candidate with the lowest RMSE.",
            )
        )
        sec.figures.append((f"{fig_name}_rmse.png",
                            "RMSE along the candidates (dot: the default)."))  # fmt: skip

    def fig5(self) -> Section:
        """Fig. 5: four noise levels, one quarter-dose model."""
        sec = Section("fig5", "Fig. 5 — one quarter-dose model on four noise levels")
        if self._missing(sec, [MAIN_MODEL]):
            return sec
        for seed in self.cfg.seeds:
            curves = []
            for dose in FIG5_DOSES:
                scene = self.abdomen_scene(seed, dose)
                cur = self.curve(MAIN_MODEL, scene, f"abd{seed}-{dose}", seed=seed)
                curves.append((f"dose {dose_label(dose)}", _BASE_DOSE, dose, cur, scene))
            if seed == self.cfg.seeds[0]:
                self._dose_section(sec, curves, "Fig. 5", "fig5",
                                   f"{MAIN_MODEL}, simulated abdomen {seed}")  # fmt: skip
            else:
                for label, mdose, idose, cur, _ in curves:
                    exp = _expectation(mdose, idose)
                    if exp is not None:
                        sec.checks.append(check_smoothing(
                            cur.strengths, cur.rmse_hu, cur.default_index, expect=exp,
                            case=f"Fig. 5 (seed {seed}): {label} (model 1/4)"))  # fmt: skip
        sec.paragraphs.append(
            "Inputs at doses 1, 1/2, 1/4 and 1/8 of the simulated abdomen, made from its "
            "quarter/normal-dose pair by the image-domain shortcut (dose 1 is the normal-dose "
            "scan), all denoised by the quarter-dose model. RMSE inside the body vs the noise-free "
            "scan. Inputs at a higher dose than 1/4 are where the paper expects over-smoothing "
            "(a high-resolution candidate wins), 1/8 under-smoothing (a low-noise candidate wins)."
        )
        return sec

    # Fig. 6 ----------------------------------------------------------------------------------

    def fig6(self) -> Section:
        """Fig. 6: the plain network instead of the U-Net."""
        sec = Section("fig6", "Fig. 6 — the plain network")
        if self._missing(sec, [PLAIN_MODEL]):
            return sec
        seed = self.cfg.seeds[0]
        scene = self.abdomen_scene(seed, _BASE_DOSE)
        cur = self.curve(PLAIN_MODEL, scene, f"abd{seed}-{_BASE_DOSE}", seed=seed)
        assert cur.images is not None
        label = f"Fig. 6: {PLAIN_MODEL}, simulated abdomen {seed}, dose 1/4"
        sec.checks.append(check_std_falls(cur.std_hu, case=label,
                                          default_index=cur.default_index))  # fmt: skip
        if cur.cnr is not None:
            sec.checks.append(check_cnr_rises(cur.cnr, case=label,
                                              default_index=cur.default_index))  # fmt: skip
        sel = self._fig_indices(cur)
        figures.plot_panels(
            [scene.image, *[cur.images[i] for i in sel]],
            ["input"] + [f"{_cand_name(cur, i)}\nSTD {cur.std_hu[i]:.1f} HU" for i in sel],
            self._path("fig6_plain.png"),
        )
        sec.tables.append(_curve_table(cur))
        sec.figures.append(("fig6_plain.png",
            f"{PLAIN_MODEL} (8 convolution layers, no down-sampling) on the quarter-dose "
            "abdomen: input and candidates from high resolution to low noise."))  # fmt: skip
        main = self._curves.get((MAIN_MODEL, f"abd{seed}-{_BASE_DOSE}"))
        if main is not None:
            sec.paragraphs.append(
                f"Range of STD along the curve: plain {cur.std_hu[0]:.1f} -> "
                f"{cur.std_hu[-1]:.1f} HU, U-Net {main.std_hu[0]:.1f} -> {main.std_hu[-1]:.1f} "
                "HU; DID works with either network (it needs only a trainable denoiser)."
            )
        return sec

    # Figs. 7-8 -------------------------------------------------------------------------------

    def fig78(self) -> Section:
        """Figs. 7-8: models trained at 1/2 .. 1/16 dose on one quarter-dose image."""
        sec = Section("fig78", "Figs. 7-8 — models trained at other doses on a quarter-dose image")
        have = [m for m in DOSE_MODELS if m in self.models]
        missing = [m for m in DOSE_MODELS if m not in self.models]
        if not have:
            self._missing(sec, list(DOSE_MODELS))
            return sec
        if missing:
            sec.paragraphs.append(f"Not installed, left out: {', '.join(missing)}.")
        for seed in self.cfg.seeds:
            scene = self.abdomen_scene(seed, _BASE_DOSE)
            curves = [(f"{m} (trained at {dose_label(DOSE_MODELS[m])})", DOSE_MODELS[m],
                       _BASE_DOSE, self.curve(m, scene, f"abd{seed}-{_BASE_DOSE}", seed=seed),
                       scene) for m in have]  # fmt: skip
            if seed == self.cfg.seeds[0]:
                self._dose_section(
                    sec,
                    curves,
                    "Figs. 7-8",
                    "fig78",
                    f"quarter-dose abdomen {seed}, models of four doses",
                )
            else:
                for label, mdose, idose, cur, _ in curves:
                    exp = _expectation(mdose, idose)
                    if exp is not None:
                        sec.checks.append(check_smoothing(
                            cur.strengths, cur.rmse_hu, cur.default_index, expect=exp,
                            case=f"Figs. 7-8 (seed {seed}): {label}"))  # fmt: skip
        sec.paragraphs.append(
            "Each shipped U-Net (trained at 1/2, 1/4, 1/8 and 1/16 of the normal dose) denoises "
            "the same simulated quarter-dose abdomen; RMSE inside the body vs the noise-free scan. "
            "The paper expects the 1/8 and 1/16 models to over-smooth (a high-resolution "
            "candidate wins) and the 1/2 model to under-smooth (a low-noise candidate wins)."
        )
        return sec

    # real data -------------------------------------------------------------------------------

    def real_l506(self) -> Section:
        """The Mayo L506 quarter/full-dose pair."""
        sec = Section("real-l506", "Real data: Mayo L506 quarter/full-dose pair",
                      requires_shared=True)  # fmt: skip
        folder = None if self.shared_dir is None else self.shared_dir / "mayo_pair_L506"
        qd = sorted(folder.glob("*_QD_*.raw")) if folder is not None and folder.is_dir() else []
        fd = sorted(folder.glob("*_FD_*.raw")) if folder is not None and folder.is_dir() else []
        if not qd or not fd:
            sec.skipped = "requires ../shared/data/mayo_pair_L506 (not found)"
            return sec
        if self._missing(sec, [MAIN_MODEL]):
            return sec
        size = self.cfg.size
        px = _MAYO_PIXEL_MM * _MAYO_SHAPE[0] / size
        scene = _real_scene(_read_mayo(qd[0], size), _read_mayo(fd[0], size),
                            "Mayo L506 quarter dose", (px, px))  # fmt: skip
        cur = self.curve(MAIN_MODEL, scene, "l506")
        assert cur.images is not None
        sec.checks.append(check_std_falls(cur.std_hu, case=f"real: {MAIN_MODEL}, Mayo L506 QD",
                                          default_index=cur.default_index))  # fmt: skip
        sec.tables.append(_curve_table(cur, with_cnr=False))
        b = cur.best()
        sel = self._fig_indices(cur)
        figures.plot_panels(
            [scene.image, *[cur.images[i] for i in sel], scene.reference],
            ["quarter dose (input)"]
            + [f"{_cand_name(cur, i)}\nSTD {cur.std_hu[i]:.1f}, RMSE {cur.rmse_hu[i]:.1f}"
               for i in sel] + ["full dose (reference)"],
            self._path("real_l506.png"),
        )  # fmt: skip
        sec.figures.append(
            (
                "real_l506.png",
                "Mayo L506 (held out from training): quarter dose, candidates, full dose.",
            )
        )
        sec.paragraphs.append(
            f"{qd[0].name} denoised by {MAIN_MODEL}; STD = median of the plane-detrended STDs "
            "of 10 flat regions found on the full-dose image; RMSE inside the body vs the full "
            f"dose. The lowest RMSE is at s = {cur.strengths[b]:+.2f} ({cur.rmse_hu[b]:.1f} HU, "
            f"default {cur.rmse_hu[cur.default_index]:.1f} HU). Caveat: Mayo's quarter dose adds "
            "noise to the full-dose data, so the input shares the reference's noise and RMSE vs "
            "full dose favours the high-resolution end."
        )
        return sec

    def real_l067(self) -> Section:
        """The Mayo L067 full-dose slices with dose inserted at several levels."""
        sec = Section("real-l067", "Real data: Mayo L067 full dose with inserted low dose",
                      requires_shared=True)  # fmt: skip
        folder = None if self.shared_dir is None else self.shared_dir / "mayo_fd_L067"
        files = sorted(folder.glob("*_sh_*.raw")) if folder is not None and folder.is_dir() else []
        if not files:
            sec.skipped = "requires ../shared/data/mayo_fd_L067 (not found)"
            return sec
        if self._missing(sec, [MAIN_MODEL]):
            return sec
        size = self.cfg.size
        px = _MAYO_PIXEL_MM * _MAYO_SHAPE[0] / size
        others = [m for m in DOSE_MODELS if m in self.models and m != MAIN_MODEL]
        for k, path in enumerate(files[: self.cfg.real_slices]):
            dose_curves, model_curves = self._l067_curves(sec, k, path, px, others)
            if k == 0:
                self._dose_section(
                    sec,
                    dose_curves,
                    "real L067, Fig. 5 analog",
                    "real_l067_doses",
                    f"{MAIN_MODEL} on {path.stem} at three inserted doses",
                )
                if model_curves:
                    self._dose_section(
                        sec,
                        model_curves,
                        "real L067, Figs. 7-8 analog",
                        "real_l067_models",
                        f"models of other doses on {path.stem}, dose 1/4",
                    )
            else:
                for label, mdose, idose, cur, _ in dose_curves + model_curves:
                    exp = _expectation(mdose, idose)
                    if exp is not None:
                        sec.checks.append(
                            check_smoothing(
                                cur.strengths,
                                cur.rmse_hu,
                                cur.default_index,
                                expect=exp,
                                case=f"real L067 {path.stem}: {label}, input {dose_label(idose)}",
                            )
                        )
        sec.paragraphs.append(
            f"Full-dose sharp-kernel slices of patient L067 ({self.cfg.real_slices} used) with "
            "projection-domain noise inserted at doses 1/2, 1/4 and 1/8 (ramp kernel, "
            f"I0 = {REAL_I0:.2g} photons per bin per view at full dose, as in the training "
            f"data), denoised by {MAIN_MODEL} (Fig. 5 analog) and, at 1/4, by the models of "
            "other doses (Figs. 7-8 analog). Reference: the real full dose. Caveats: (1) these "
            "ten L067 slices, with "
            "quarter-dose noise inserted, were part of the shipped models' training data, so this "
            "is not a held-out test; (2) the inserted noise is added to the full-dose image, so "
            "the input contains the reference's own noise and RMSE vs full dose favours the "
            "high-resolution end (it pushes toward 'over-smoothing' verdicts)."
        )
        return sec

    def _l067_curves(
        self, sec: Section, k: int, path: Path, px: float, others: list[str]
    ) -> tuple[
        list[tuple[str, float, float, Curve, Scene]], list[tuple[str, float, float, Curve, Scene]]
    ]:
        """Curves of one L067 slice: the main model at every inserted dose, others at 1/4."""
        from ctdid.sim import simulate_low_dose

        fd = _read_mayo(path, self.cfg.size)
        dose_curves = []
        model_curves = []
        for j, dose in enumerate(REAL_DOSES):
            self.log(f"inserting dose {dose_label(dose)} into {path.name}")
            low = simulate_low_dose(
                fd,
                dose=dose,
                spacing=(px, px),
                geometry=self.cfg.geometry,
                mode="insert",
                kernel="ramp",
                i0=REAL_I0,
                seed=1000 + 10 * k + j,
            )
            scene = _real_scene(low, fd, f"{path.stem} dose {dose_label(dose)}", (px, px))
            cur = self.curve(MAIN_MODEL, scene, f"{path.stem}-{dose}")
            dose_curves.append((f"dose {dose_label(dose)}", _BASE_DOSE, dose, cur, scene))
            sec.checks.append(check_std_falls(
                cur.std_hu, case=f"real: {MAIN_MODEL}, {path.stem} dose {dose_label(dose)}",
                default_index=cur.default_index))  # fmt: skip
            if math.isclose(dose, _BASE_DOSE):
                for m in others:
                    mc = self.curve(m, scene, f"{path.stem}-{dose}")
                    model_curves.append((f"{m} (trained at {dose_label(DOSE_MODELS[m])})",
                                         DOSE_MODELS[m], dose, mc, scene))  # fmt: skip
        return dose_curves, model_curves

    def all_sections(self) -> list[Section]:
        """Run every experiment, in report order."""
        out = []
        for fn in (self.fig2, self.fig3, self.fig4, self.fig5, self.fig6, self.fig78,
                   self.real_l506, self.real_l067):  # fmt: skip
            t0 = time.perf_counter()
            sec = fn()
            # every stack made in this section (all have a reference) against its pixel blend
            sec.checks += self.blend_checks(_CASE_PREFIX.get(sec.key, sec.key))
            sec.seconds = time.perf_counter() - t0
            if sec.skipped:
                self.log(f"skipped {sec.title}: {sec.skipped}")
            out.append(sec)
        return out


def shared_data_dir(root: str | os.PathLike[str] | None = None) -> Path | None:
    """``../shared/data`` beside the project (or ``root``), if it exists."""
    if root is not None:
        p = Path(root)
        return p if p.is_dir() else None
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").is_file() and cand.is_dir():
            return cand
    cand = Path.cwd().parent / "shared" / "data"
    return cand if cand.is_dir() else None
