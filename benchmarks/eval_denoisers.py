"""Evaluate ctdid's shipped denoisers against the input and a classical baseline at matched noise.

For every shipped model (or the ``--models`` given) and every test input it measures, in HU:

* RMSE against the normal-dose image, inside the body (:func:`ctdid.core.body_mask` of the
  normal-dose image);
* noise STD in flat regions: ``Phantom.flat_roi`` for phantoms; for the real pair, the flat
  regions :func:`ctdid.metrics.find_flat_regions` finds on the normal-dose image, the same for
  every image, each with a plane removed as in :func:`ctdid.metrics.noise_label` (median over
  regions);
* the same for the low-dose input itself, for total-variation denoising
  (:func:`ctdid.metrics.baselines.tv_denoise`) tuned to the model's STD (matched noise), and
  (unless ``--no-bm3d``) for BM3D with a correlated-noise PSD
  (:func:`ctdid.baselines.classical.bm3d_denoise`, PSD from the case's flat regions of the
  input) whose noise factor is tuned the same way (BM3D takes several seconds per 512 x 512
  call, so its search is kept to a few bisection steps, ``--bm3d-iter``);
* on the real pair (any case with a normal-dose reference can be asked for), the field
  protocol (:func:`field_metrics`): RMSE, PSNR and SSIM after clipping both images to
  [-160, 240] HU, data range 400 HU, over the whole slice, for input, model, TV and BM3D.

Test inputs, none of them used in training:

* the real quarter-dose / full-dose pair ``../shared/data/mayo_pair_L506`` (skipped with a
  message when ``../shared`` is absent);
* simulated slices ``abdomen_phantom(seed=9001..9004)`` and ``chest_phantom(seed=9101..9102)``
  (``--quick``: 9001 and 9101), scanned once at normal and quarter dose
  (:func:`ctdid.train.pairs.phantom_pair`) and taken to the models' other training doses by
  :func:`ctdid.sim.rescale_noise`. The simulated pairs are cached in ``--cache``.

Every model sees the quarter-dose inputs (the common input of the dose-trend check) and, on the
phantoms, inputs at its own training dose. Checks: the models of one architecture trained at
lower dose smooth more (STD falls from the 1/2 to the 1/16 model on every quarter-dose input),
and the 1/4-dose model lowers the RMSE vs full dose by >= 30 % on L506; at equal noise, the
1/4-dose model's RMSE vs full dose is at most 95 % of TV's and of BM3D's (5 % lower), on L506
and on the mean over the simulated set (:func:`equal_noise_check`).

Usage, from the checkout::

    .venv/bin/python benchmarks/eval_denoisers.py [--quick] [--models unet-d25 plain-d25]
        [--cache /tmp/ctdid-eval-denoisers] [--json results.json] [--markdown table.md]
        [--update-cards] [--threads 2] [--no-bm3d] [--bm3d-iter 12]

The script is importable; its functions are tested in ``tests/test_eval_denoisers.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import itertools
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from ctdid.baselines.classical import bm3d_denoise, estimate_noise_psd
from ctdid.core import body_mask
from ctdid.core.adapter import HUAdapter
from ctdid.metrics import find_flat_regions, rmse
from ctdid.metrics.baselines import MatchedNoise, match_noise, roi_noise_std, tv_denoise

ROOT = Path(__file__).resolve().parents[1]
#: The real test pair (held out of training).
L506_DIR = ROOT.parent / "shared" / "data" / "mayo_pair_L506"
L506_LOW = "L506_QD_3mm_D45_slice32.raw"
L506_NORMAL = "L506_FD_3mm_D45_slice32.raw"
L506_SPACING_MM = (3.0, 0.7, 0.7)
L506_CASE = "L506"
#: Dose of the low-dose image of every test pair (quarter dose) and the common input dose.
PAIR_DOSE = 0.25
#: Simulated test slices: (phantom kind, anatomy seed). Not used in training.
SIM_SLICES: tuple[tuple[str, int], ...] = (
    ("abdomen", 9001),
    ("abdomen", 9002),
    ("abdomen", 9003),
    ("abdomen", 9004),
    ("chest", 9101),
    ("chest", 9102),
)
SIM_SLICES_QUICK: tuple[tuple[str, int], ...] = (("abdomen", 9001), ("chest", 9101))
#: Added to the anatomy seed to seed the simulated noise.
NOISE_SEED_OFFSET = 770_000
#: The target: this model lowers the RMSE vs full dose on L506 by at least this fraction.
TARGET_MODEL = "unet-d25"
TARGET_REDUCTION = 0.30
#: The equal-noise target: the model's RMSE is at most this fraction of TV's and of BM3D's.
TARGET_EQUAL_NOISE_RATIO = 0.95
#: Field protocol: both images clipped to this HU window; its width is the PSNR/SSIM range.
FIELD_WINDOW_HU = (-160.0, 240.0)
#: BM3D at matched noise: initial bracket and limits of the noise factor, relative tolerance
#: on the STD and most bisection steps (each step is one BM3D call).
BM3D_FACTOR_RANGE = (0.5, 2.0)
BM3D_FACTOR_LIMITS = (0.02, 16.0)
BM3D_RTOL = 0.01
BM3D_MAX_ITER = 12
#: A baseline counts as matched when its STD is within this fraction of the model's.
MATCH_TOLERANCE = 0.02
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ctdid-eval-denoisers"


# ---------------------------------------------------------------------------------------------
# test inputs


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One test input with its reference.

    Attributes
    ----------
    name : str
        ``"L506"`` or ``"<kind>-<seed>"``.
    kind : str
        ``"real"`` or ``"phantom"``.
    dose : float
        Dose fraction of :attr:`low` relative to :attr:`normal`.
    low, normal : ndarray of float32, shape (y, x)
        Low-dose input and normal-dose reference, in HU.
    spacing : tuple of float
        Pixel size (dy, dx) in mm.
    regions : list of tuple of slice
        Flat regions for the STD.
    detrend : bool
        Remove a plane per region before the STD (real data: slow shading is not noise).
    body : ndarray of bool
        Where the RMSE is taken (body of :attr:`normal`).
    truth : ndarray of float32, optional
        Noise-free image (phantoms), for an RMSE against the truth as well.
    """

    name: str
    kind: str
    dose: float
    low: NDArray[np.float32]
    normal: NDArray[np.float32]
    spacing: tuple[float, float]
    regions: list[tuple[Any, ...]]
    detrend: bool
    body: NDArray[np.bool_]
    truth: NDArray[np.float32] | None = None

    def at_dose(self, dose: float) -> Case:
        """The same case with the input taken to another dose by :func:`ctdid.sim.rescale_noise`.

        Raises
        ------
        ValueError
            For the real case, whose low/normal difference is not independent noise only.
        """
        if dose == self.dose:
            return self
        if self.kind == "real":
            raise ValueError("the real pair is evaluated at its own dose only")
        from ctdid.sim import rescale_noise

        low = rescale_noise(self.normal, self.low, pair_dose=self.dose, dose=dose)
        return dataclasses.replace(self, dose=float(dose), low=low)


def make_case(
    name: str,
    kind: str,
    *,
    low: NDArray[Any],
    normal: NDArray[Any],
    spacing: tuple[float, float],
    dose: float,
    regions: Sequence[tuple[Any, ...]] | None = None,
    truth: NDArray[Any] | None = None,
    n_regions: int = 20,
) -> Case:
    """Build a :class:`Case`, finding the body and (if not given) flat regions on ``normal``.

    Parameters
    ----------
    name, kind, dose
        See :class:`Case`.
    low, normal : ndarray, shape (y, x)
        Images in HU.
    spacing : (float, float)
        Pixel size (dy, dx) in mm.
    regions : list of tuple of slice, optional
        Flat regions (no plane removed). Default: up to ``n_regions`` 10 mm squares found by
        :func:`ctdid.metrics.find_flat_regions` on ``normal`` (a plane removed from each).
    truth : ndarray, optional
        Noise-free image in HU.
    n_regions : int, optional
        Number of regions to search for.

    Raises
    ------
    ValueError
        If the shapes differ, the body is empty or no flat region is found.
    """
    lo = np.asarray(low, dtype=np.float32)
    no = np.asarray(normal, dtype=np.float32)
    if lo.shape != no.shape or lo.ndim != 2:
        raise ValueError(f"low {lo.shape} and normal {no.shape} must be the same 2-D shape")
    body = body_mask(no)
    if not body.any():
        raise ValueError(f"{name}: no body found in the normal-dose image")
    detrend = regions is None
    if regions is None:
        regions = find_flat_regions(no, spacing=spacing, body_mask=body, n=n_regions)
    if not regions:
        raise ValueError(f"{name}: no flat region found in the normal-dose image")
    return Case(
        name=name,
        kind=kind,
        dose=float(dose),
        low=lo,
        normal=no,
        spacing=(float(spacing[0]), float(spacing[1])),
        regions=[tuple(r) for r in regions],
        detrend=detrend,
        body=body,
        truth=None if truth is None else np.asarray(truth, dtype=np.float32),
    )


def load_l506(folder: str | Path = L506_DIR, *, log: Callable[[str], None] = print) -> Case | None:
    """The real quarter-dose / full-dose pair, or None (with a message) when it is absent.

    Parameters
    ----------
    folder : str or Path, optional
        Folder holding :data:`L506_LOW` and :data:`L506_NORMAL` (512 x 512 uint16
        little-endian, HU = value - 1024; 0.7 mm pixels assumed).
    log : callable, optional
        Where the skip message goes.
    """
    from ctdid.io import read_volume

    folder = Path(folder)
    paths = [folder / L506_LOW, folder / L506_NORMAL]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        log(f"skipping the real pair: {', '.join(str(p) for p in missing)} not found")
        return None
    low, normal = (
        read_volume(
            p, shape=(512, 512), dtype="uint16", hu_offset=-1024, spacing=L506_SPACING_MM
        ).hu[0]
        for p in paths
    )
    return make_case(
        L506_CASE,
        "real",
        low=low,
        normal=normal,
        spacing=(L506_SPACING_MM[1], L506_SPACING_MM[2]),
        dose=PAIR_DOSE,
    )


def _simulator_hash() -> str:
    """Short hash of the simulator's sources: a changed simulator invalidates the cache."""
    import ctdid.sim
    import ctdid.train.pairs

    digest = hashlib.sha256()
    sim_dir = Path(ctdid.sim.__file__).parent
    for p in [*sorted(sim_dir.glob("*.py")), Path(ctdid.train.pairs.__file__)]:
        digest.update(p.read_bytes())
    return digest.hexdigest()[:12]


def simulate_phantom_pair(kind: str, seed: int) -> dict[str, Any]:
    """Draw a test phantom and scan it at normal and quarter dose (about 25 s per slice).

    Returns
    -------
    dict
        ``truth``, ``low``, ``normal`` (float32 HU), ``spacing`` (dy, dx in mm) and
        ``flat_roi`` (row start, row stop, column start, column stop).
    """
    from ctdid.sim import abdomen_phantom, chest_phantom
    from ctdid.train.pairs import phantom_pair

    if kind not in ("abdomen", "chest"):
        raise ValueError(f"unknown phantom kind {kind!r} (abdomen or chest)")
    ph = abdomen_phantom(seed=seed) if kind == "abdomen" else chest_phantom(seed=seed)
    low, normal = phantom_pair(
        ph.hu, spacing=ph.spacing, dose=PAIR_DOSE, seed=seed + NOISE_SEED_OFFSET
    )
    rows, cols = ph.flat_roi
    return {
        "truth": ph.hu,
        "low": low,
        "normal": normal,
        "spacing": ph.spacing,
        "flat_roi": (rows.start, rows.stop, cols.start, cols.stop),
    }


def check_cache_dir(cache: str | Path) -> Path:
    """The cache folder, created; refuses a folder inside the checkout.

    Raises
    ------
    ValueError
        If ``cache`` lies inside the repository.
    """
    path = Path(cache).expanduser().resolve()
    if path == ROOT or ROOT in path.parents:
        raise ValueError(f"the cache {path} must not be inside the checkout {ROOT}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def simulated_cases(
    cache: str | Path,
    *,
    slices: Sequence[tuple[str, int]] = SIM_SLICES,
    simulate: Callable[[str, int], Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> list[Case]:
    """The simulated quarter-dose test cases, simulated once and cached as ``.npz``.

    Parameters
    ----------
    cache : str or Path
        Cache folder (outside the checkout).
    slices : sequence of (str, int), optional
        Phantom kinds and anatomy seeds.
    simulate : callable, optional
        ``simulate(kind, seed)`` returning a mapping like :func:`simulate_phantom_pair` (the
        default).
    log : callable, optional
        Progress messages.
    """
    folder = check_cache_dir(cache)
    simulate = simulate_phantom_pair if simulate is None else simulate
    key = _simulator_hash()
    cases = []
    for kind, seed in slices:
        path = folder / f"{kind}-{seed}-d{PAIR_DOSE:g}-{key}.npz"
        if not path.is_file():
            log(f"simulating {kind} phantom seed {seed} (cached in {path}) ...")
            t0 = time.perf_counter()
            data = dict(simulate(kind, seed))
            tmp = path.with_suffix(".tmp.npz")
            arrays: dict[str, Any] = {k: np.asarray(v) for k, v in data.items()}
            np.savez_compressed(tmp, **arrays)
            tmp.replace(path)
            log(f"  done in {time.perf_counter() - t0:.0f} s")
        with np.load(path) as z:
            r0, r1, c0, c1 = (int(v) for v in z["flat_roi"])
            sp = tuple(float(v) for v in z["spacing"])
            cases.append(
                make_case(
                    f"{kind}-{seed}",
                    "phantom",
                    low=z["low"],
                    normal=z["normal"],
                    truth=z["truth"],
                    spacing=(sp[0], sp[1]),
                    dose=PAIR_DOSE,
                    regions=[(slice(r0, r1), slice(c0, c1))],
                )
            )
    return cases


# ---------------------------------------------------------------------------------------------
# models and measurements


def load_models(
    names: Sequence[str] | None = None, *, weights_dir: str | Path | None = None
) -> dict[str, HUAdapter]:
    """Load shipped models by name (default: all found in ``weights_dir``), in eval mode."""
    from ctdid.models import available_models, load_model

    if names is None:
        names = available_models(weights_dir=weights_dir)
    return {n: load_model(n, weights_dir=weights_dir).eval() for n in names}


def training_dose(model: HUAdapter) -> float | None:
    """The dose fraction a model was trained at, from its card (None if unknown)."""
    dose = model.meta.get("training_dose")
    return None if dose is None else float(dose)


def denoise(model: torch.nn.Module, hu: NDArray[Any]) -> NDArray[np.float32]:
    """Run an HU-to-HU model on one slice (no gradients), float32 HU out."""
    x = torch.from_numpy(np.array(hu, dtype=np.float32))[None, None]
    with torch.no_grad():
        out = model(x)
    return np.asarray(out[0, 0].detach().cpu().numpy(), dtype=np.float32)


def _std(case: Case, img: NDArray[Any]) -> float:
    return roi_noise_std(img, case.regions, detrend=case.detrend)


class FieldMetrics(NamedTuple):
    """RMSE (HU), PSNR (dB) and SSIM of the field protocol (:func:`field_metrics`)."""

    rmse_hu: float
    psnr_db: float
    ssim: float


def field_metrics(
    img: NDArray[Any], ref: NDArray[Any], *, window: tuple[float, float] = FIELD_WINDOW_HU
) -> FieldMetrics:
    """RMSE, PSNR and SSIM of an image against a reference after clipping both to a HU window.

    The field's protocol for low-dose CT: both images are clipped to ``window`` (default
    [-160, 240] HU) and compared over the whole slice, PSNR and SSIM with the window's width
    (400 HU) as data range (:func:`skimage.metrics.peak_signal_noise_ratio`,
    :func:`skimage.metrics.structural_similarity` with its default 7 x 7 window).

    Parameters
    ----------
    img, ref : ndarray, shape (y, x)
        Image and reference (normal dose) in HU, at least 7 x 7.
    window : (float, float), optional
        Lower and upper HU of the clipping window.

    Returns
    -------
    FieldMetrics
        ``(rmse_hu, psnr_db, ssim)``; ``psnr_db`` is infinite when the clipped images are
        equal.

    Raises
    ------
    ValueError
        If the shapes differ, the images are not 2-D or the window is empty.

    Examples
    --------
    >>> ref = np.zeros((16, 16))
    >>> field_metrics(ref + 10.0, ref).rmse_hu
    10.0
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"the window {window} is empty")
    a = np.clip(np.asarray(img, dtype=np.float64), lo, hi)
    b = np.clip(np.asarray(ref, dtype=np.float64), lo, hi)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"img {a.shape} and ref {b.shape} must be the same 2-D shape")
    data_range = hi - lo
    err = float(np.sqrt(np.mean((a - b) ** 2)))
    psnr = math.inf if err == 0 else float(peak_signal_noise_ratio(b, a, data_range=data_range))
    ssim = float(structural_similarity(b, a, data_range=data_range))
    return FieldMetrics(rmse_hu=err, psnr_db=psnr, ssim=ssim)


def _field_fields(img: NDArray[Any] | None, ref: NDArray[Any], suffix: str) -> dict[str, Any]:
    """``field_rmse_hu<suffix>``, ``field_psnr_db<suffix>``, ``field_ssim<suffix>`` (None
    when ``img`` is None)."""
    fm = None if img is None else field_metrics(img, ref)
    return {
        f"field_rmse_hu{suffix}": None if fm is None else fm.rmse_hu,
        f"field_psnr_db{suffix}": None if fm is None else fm.psnr_db,
        f"field_ssim{suffix}": None if fm is None else fm.ssim,
    }


def wants_field(case: Case) -> bool:
    """Whether the field protocol is measured on ``case`` by default (the real pair)."""
    return case.kind == "real"


def input_metrics(case: Case, *, field: bool | None = None) -> dict[str, float | None]:
    """RMSE (body, vs normal dose and vs truth) and flat-region STD of the input, in HU, and
    (``field``, default :func:`wants_field`) the input's field-protocol metrics
    (``field_*_input``)."""
    out: dict[str, float | None] = {
        "rmse_input_hu": rmse(case.low, case.normal, mask=case.body),
        "rmse_truth_input_hu": (
            None if case.truth is None else rmse(case.low, case.truth, mask=case.body)
        ),
        "std_input_hu": _std(case, case.low),
        "std_normal_hu": _std(case, case.normal),
    }
    if wants_field(case) if field is None else field:
        out.update(_field_fields(case.low, case.normal, "_input"))
    return out


def bm3d_matched(
    case: Case, target_std: float, *, max_iter: int = BM3D_MAX_ITER, profile: str = "np"
) -> MatchedNoise:
    """BM3D of ``case.low`` whose flat-region STD matches ``target_std`` (HU).

    The noise PSD is estimated from the case's flat regions of the input
    (:func:`ctdid.baselines.classical.estimate_noise_psd`); the searched strength is
    :func:`~ctdid.baselines.classical.bm3d_denoise`'s noise factor (the PSD is scaled by its
    square; 1 is the estimated noise, larger is smoother), found by
    :func:`ctdid.metrics.baselines.match_noise` from the bracket :data:`BM3D_FACTOR_RANGE`
    with tolerance :data:`BM3D_RTOL` and at most ``max_iter`` bisection steps. The PSD is
    rebuilt for the size of each image denoised (match_noise searches on a crop around the
    regions) and kept for this call only.

    Returns
    -------
    MatchedNoise
        Its ``weight`` is the noise factor.
    """
    psds: dict[tuple[int, ...], NDArray[np.float64]] = {}

    def fn(hu: NDArray[Any], *, weight: float) -> NDArray[np.float32]:
        shape = tuple(hu.shape)
        if shape not in psds:
            psds[shape] = estimate_noise_psd(case.low, case.regions, shape=(shape[0], shape[1]))
        return bm3d_denoise(hu, psd=psds[shape], factor=weight, profile=profile)

    return match_noise(
        fn,
        case.low,
        target_std=max(float(target_std), 1e-3),
        roi=case.regions,
        detrend=case.detrend,
        weight_range=BM3D_FACTOR_RANGE,
        weight_limits=BM3D_FACTOR_LIMITS,
        rtol=BM3D_RTOL,
        max_iter=max_iter,
    )


def evaluate_case(
    name: str,
    model: torch.nn.Module,
    case: Case,
    *,
    tv_iter: int = 200,
    inputs: Mapping[str, float | None] | None = None,
    bm3d: bool = True,
    bm3d_iter: int = BM3D_MAX_ITER,
    field: bool | None = None,
) -> dict[str, Any]:
    """Measure one model on one case, beside the input, TV and BM3D at the model's STD.

    Parameters
    ----------
    name : str
        Model name, copied into the row.
    model : nn.Module
        HU-to-HU denoiser taking (B, 1, H, W).
    case : Case
        Test input.
    tv_iter : int, optional
        Iterations of :func:`ctdid.metrics.baselines.tv_denoise`.
    inputs : mapping, optional
        :func:`input_metrics` of ``case``, if already computed (with the same ``field``).
    bm3d : bool, optional
        Also run BM3D at the model's STD (:func:`bm3d_matched`); its fields are None
        otherwise. Default true.
    bm3d_iter : int, optional
        Most bisection steps of the BM3D search.
    field : bool, optional
        Measure the field protocol (:func:`field_metrics`); default :func:`wants_field`.

    Returns
    -------
    dict
        One result row: ``model``, ``case``, ``kind``, ``dose``, ``training_dose``, RMSEs and
        STDs (``*_hu``) of input, model, TV and BM3D, ``tv_weight_hu``, ``bm3d_factor``,
        ``tv_matched`` and ``bm3d_matched`` (STD within 2 %), ``rmse_reduction``,
        ``rmse_reduction_tv`` and ``rmse_reduction_bm3d`` (``1 - RMSE / RMSE of input``),
        ``seconds`` (model run time), ``seconds_bm3d`` (the whole BM3D search) and the field
        protocol's ``field_rmse_hu``, ``field_psnr_db``, ``field_ssim`` with ``_input``,
        ``_tv`` and ``_bm3d`` variants (None where not measured).
    """
    use_field = wants_field(case) if field is None else bool(field)
    inp = dict(inputs) if inputs is not None else input_metrics(case, field=use_field)
    t0 = time.perf_counter()
    out = denoise(model, case.low)
    seconds = time.perf_counter() - t0
    std_model = _std(case, out)
    tv = match_noise(
        tv_denoise,
        case.low,
        target_std=std_model,
        roi=case.regions,
        detrend=case.detrend,
        n_iter=tv_iter,
    )
    bm: MatchedNoise | None = None
    seconds_bm3d = None
    if bm3d:
        t1 = time.perf_counter()
        bm = bm3d_matched(case, std_model, max_iter=bm3d_iter)
        seconds_bm3d = time.perf_counter() - t1
    rmse_model = rmse(out, case.normal, mask=case.body)
    rmse_tv = rmse(tv.image, case.normal, mask=case.body)
    rmse_bm3d = None if bm is None else rmse(bm.image, case.normal, mask=case.body)
    rmse_in = float(inp["rmse_input_hu"] or math.nan)
    truth = case.truth
    meta = getattr(model, "meta", {}) or {}
    row: dict[str, Any] = {
        "model": name,
        "case": case.name,
        "kind": case.kind,
        "dose": case.dose,
        "training_dose": meta.get("training_dose"),
        **inp,
        "rmse_hu": rmse_model,
        "rmse_tv_hu": rmse_tv,
        "rmse_truth_hu": None if case.truth is None else rmse(out, case.truth, mask=case.body),
        "rmse_truth_tv_hu": (
            None if case.truth is None else rmse(tv.image, case.truth, mask=case.body)
        ),
        "rmse_bm3d_hu": rmse_bm3d,
        "rmse_truth_bm3d_hu": (
            None if truth is None or bm is None else rmse(bm.image, truth, mask=case.body)
        ),
        "std_hu": std_model,
        "std_tv_hu": tv.std,
        "std_bm3d_hu": None if bm is None else bm.std,
        "tv_weight_hu": tv.weight,
        "bm3d_factor": None if bm is None else bm.weight,
        "tv_matched": _matched(tv.std, std_model),
        "bm3d_matched": None if bm is None else _matched(bm.std, std_model),
        "rmse_reduction": 1.0 - rmse_model / rmse_in,
        "rmse_reduction_tv": 1.0 - rmse_tv / rmse_in,
        "rmse_reduction_bm3d": None if rmse_bm3d is None else 1.0 - rmse_bm3d / rmse_in,
        "seconds": seconds,
        "seconds_bm3d": seconds_bm3d,
    }
    if use_field:
        row.update(_field_fields(out, case.normal, ""))
        row.update(_field_fields(tv.image, case.normal, "_tv"))
        row.update(_field_fields(None if bm is None else bm.image, case.normal, "_bm3d"))
    return row


def _matched(std: float, target: float) -> bool:
    """Whether a baseline's STD is within :data:`MATCH_TOLERANCE` of the model's."""
    return bool(abs(std - target) <= MATCH_TOLERANCE * target)


def evaluate(
    models: Mapping[str, torch.nn.Module],
    cases: Sequence[Case],
    *,
    common_dose: float = PAIR_DOSE,
    tv_iter: int = 200,
    bm3d: bool = True,
    bm3d_iter: int = BM3D_MAX_ITER,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Measure every model on every case at ``common_dose`` and, for simulated cases, at the
    model's own training dose.

    Parameters
    ----------
    models : mapping of str to nn.Module
        Name -> HU-to-HU denoiser (an :class:`HUAdapter`; its ``meta["training_dose"]`` picks
        the extra dose).
    cases : sequence of Case
        Test inputs at ``common_dose`` (other doses are derived from the phantom pairs).
    common_dose : float, optional
        Dose every model is evaluated at.
    tv_iter : int, optional
        TV iterations.
    bm3d : bool, optional
        Also BM3D at matched noise (several seconds per 512 x 512 call). Default true.
    bm3d_iter : int, optional
        Most bisection steps of each BM3D search.
    log : callable, optional
        Progress messages.

    Returns
    -------
    list of dict
        Rows of :func:`evaluate_case` (the field protocol on the cases of :func:`wants_field`).
    """
    rows = []
    derived: dict[tuple[str, float], tuple[Case, dict[str, float | None]]] = {}
    for name, model in models.items():
        own = getattr(model, "meta", {}).get("training_dose")
        for base in cases:
            doses = [common_dose]
            if base.kind != "real" and own is not None and float(own) != common_dose:
                doses.append(float(own))
            for dose in doses:
                key = (base.name, dose)
                if key not in derived:
                    case = base.at_dose(dose)
                    derived[key] = (case, input_metrics(case))
                case, inp = derived[key]
                row = evaluate_case(
                    name, model, case, tv_iter=tv_iter, inputs=inp, bm3d=bm3d, bm3d_iter=bm3d_iter
                )
                bm_text = "" if not bm3d else f", BM3D {_fmt(row['rmse_bm3d_hu'])}"
                log(
                    f"{name:>12} on {case.name} at dose {dose:g}: RMSE {row['rmse_input_hu']:.1f}"
                    f" -> {row['rmse_hu']:.1f} HU (TV {row['rmse_tv_hu']:.1f}{bm_text}), STD "
                    f"{row['std_input_hu']:.1f} -> {row['std_hu']:.1f} HU"
                )
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# checks and summaries


def trend_order(models: Mapping[str, torch.nn.Module]) -> list[str]:
    """Models of the dose-trend check: the largest group sharing an architecture and its
    configuration (a wide U-Net is not in the compact family) and with a training dose, sorted
    from the highest to the lowest training dose."""
    groups: dict[str, list[tuple[float, str]]] = {}
    for name, model in models.items():
        meta = getattr(model, "meta", {}) or {}
        if meta.get("training_dose") is None:
            continue
        config = json.dumps(meta.get("architecture_config") or {}, sort_keys=True)
        groups.setdefault(f"{meta.get('architecture')} {config}", []).append(
            (float(meta["training_dose"]), name)
        )
    if not groups:
        return []
    best = max(groups.values(), key=len)
    return [n for _, n in sorted(best, key=lambda t: (-t[0], t[1]))]


def dose_trend(
    rows: Sequence[Mapping[str, Any]], order: Sequence[str], *, dose: float = PAIR_DOSE
) -> dict[str, Any]:
    """Check that the STD falls along ``order`` on every input at ``dose``.

    Returns
    -------
    dict
        ``models`` (the order), ``per_case`` (case -> STDs in HU along the order, and whether
        they fall strictly) and ``passed`` (True/False; None with fewer than two models or no
        case measured with all of them).
    """
    per_case: dict[str, dict[str, Any]] = {}
    cases = sorted({r["case"] for r in rows if r["dose"] == dose})
    for case in cases:
        by_model = {
            r["model"]: r["std_hu"] for r in rows if r["case"] == case and r["dose"] == dose
        }
        if not all(m in by_model for m in order):
            continue
        stds = [float(by_model[m]) for m in order]
        per_case[case] = {
            "std_hu": stds,
            "falls": all(b < a for a, b in itertools.pairwise(stds)),
        }
    passed = None if len(order) < 2 or not per_case else all(v["falls"] for v in per_case.values())
    return {"models": list(order), "dose": dose, "per_case": per_case, "passed": passed}


def target_check(
    rows: Sequence[Mapping[str, Any]],
    *,
    model: str = TARGET_MODEL,
    case: str = L506_CASE,
    threshold: float = TARGET_REDUCTION,
) -> dict[str, Any]:
    """Does ``model`` lower the RMSE vs normal dose on ``case`` by >= ``threshold``?

    Returns
    -------
    dict
        ``model``, ``case``, ``threshold``, ``rmse_reduction`` (None if not measured) and
        ``passed`` (None if not measured).
    """
    found = [
        r for r in rows if r["model"] == model and r["case"] == case and r["dose"] == PAIR_DOSE
    ]
    red = float(found[0]["rmse_reduction"]) if found else None
    return {
        "model": model,
        "case": case,
        "threshold": threshold,
        "rmse_reduction": red,
        "passed": None if red is None else bool(red >= threshold),
    }


def _group_ratio(group: Sequence[Mapping[str, Any]], key: str, ratio: float) -> dict[str, Any]:
    """Mean model RMSE vs the mean RMSE under ``key`` of a group of rows, and the verdict."""
    pairs = [(float(r["rmse_hu"]), float(r[key])) for r in group if r.get(key) is not None]
    if not pairs or len(pairs) < len(group):
        return {"rmse_hu": None, "ratio": None, "passed": None, "matched": None}
    base = float(np.mean([b for _, b in pairs]))
    mean_model = float(np.mean([m for m, _ in pairs]))
    flag = "tv_matched" if key == "rmse_tv_hu" else "bm3d_matched"
    value = mean_model / base if base > 0 else math.inf
    return {
        "rmse_hu": base,
        "ratio": value,
        "passed": bool(mean_model <= ratio * base),
        "matched": all(bool(r.get(flag)) for r in group),
    }


def equal_noise_check(
    rows: Sequence[Mapping[str, Any]],
    *,
    model: str = TARGET_MODEL,
    real_case: str = L506_CASE,
    ratio: float = TARGET_EQUAL_NOISE_RATIO,
    dose: float = PAIR_DOSE,
) -> dict[str, Any]:
    """Does ``model`` lower the RMSE vs normal dose at equal noise 5 % more than TV and BM3D?

    Per group of inputs at ``dose`` (the real case; the mean over the simulated set), the
    check passes against a baseline when ``RMSE model <= ratio * RMSE baseline`` (the means
    over the group for the simulated set), the baseline tuned to the model's flat-region STD.

    Returns
    -------
    dict
        ``model``, ``ratio``, ``dose``, ``groups`` (``real_case`` and ``"simulated"``, each
        None when not measured, else ``cases``, ``rmse_hu`` (the model's, mean) and ``tv`` and
        ``bm3d``: ``rmse_hu``, ``ratio`` (model / baseline), ``passed`` and ``matched`` (all
        STDs within 2 %); None where not measured) and ``passed``: False if any measured
        comparison fails, None if one is not measured, else True.
    """
    mine = [r for r in rows if r["model"] == model and float(r["dose"]) == dose]
    groups: dict[str, dict[str, Any] | None] = {}
    for label, group in (
        (real_case, [r for r in mine if r["case"] == real_case]),
        ("simulated", [r for r in mine if r["kind"] == "phantom"]),
    ):
        if not group:
            groups[label] = None
            continue
        groups[label] = {
            "cases": [str(r["case"]) for r in group],
            "rmse_hu": float(np.mean([float(r["rmse_hu"]) for r in group])),
            "tv": _group_ratio(group, "rmse_tv_hu", ratio),
            "bm3d": _group_ratio(group, "rmse_bm3d_hu", ratio),
        }
    verdicts = [
        None if g is None else g[k]["passed"] for g in groups.values() for k in ("tv", "bm3d")
    ]
    passed = False if any(v is False for v in verdicts) else None if None in verdicts else True
    return {"model": model, "ratio": ratio, "dose": dose, "groups": groups, "passed": passed}


def equal_noise_models(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The models :func:`equal_noise_check` is run for by default: :data:`TARGET_MODEL` first,
    then every other model of ``rows`` trained at :data:`PAIR_DOSE`."""
    names = [str(r["model"]) for r in rows if r.get("training_dose") == PAIR_DOSE]
    ordered = dict.fromkeys([TARGET_MODEL, *names] if TARGET_MODEL in names else names)
    return list(ordered)


_CARD_KEYS = (
    "rmse_input_hu",
    "rmse_hu",
    "rmse_tv_hu",
    "rmse_bm3d_hu",
    "std_input_hu",
    "std_hu",
    "std_tv_hu",
    "std_bm3d_hu",
    "rmse_reduction",
    "rmse_reduction_tv",
    "rmse_reduction_bm3d",
    "rmse_truth_input_hu",
    "rmse_truth_hu",
    "rmse_truth_tv_hu",
    "rmse_truth_bm3d_hu",
    *(
        f"field_{m}{s}"
        for m in ("rmse_hu", "psnr_db", "ssim")
        for s in ("_input", "", "_tv", "_bm3d")
    ),
)


def _mean_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _CARD_KEYS:
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        if vals:
            out[key] = round(float(np.mean(vals)), 4)
    out["cases"] = ", ".join(sorted({str(r["case"]) for r in rows}))
    return out


def card_metrics(rows: Sequence[Mapping[str, Any]], model: str) -> dict[str, Any]:
    """The ``metrics`` field of a model's card: means over the real and simulated test sets.

    Keys: ``real_L506_dose0.25`` and ``simulated_dose<d>`` (one per dose evaluated), each a
    mapping of the measurements (units in the names; ``rmse_reduction`` is a fraction), plus
    ``evaluation`` (how and when).
    """
    mine = [r for r in rows if r["model"] == model]
    baselines = (
        "TV and BM3D"
        if any(r.get("rmse_bm3d_hu") is not None for r in mine)
        else "TV (BM3D not run)"
    )
    out: dict[str, Any] = {
        "evaluation": (
            "benchmarks/eval_denoisers.py: RMSE vs normal dose inside the body, STD in flat "
            f"regions, {baselines} at matched STD; field protocol (field_*) on the real pair: "
            "both clipped to [-160, 240] HU, PSNR/SSIM with data range 400; "
            f"{datetime.date.today().isoformat()}"
        )
    }
    for kind, label in (("real", "real_"), ("phantom", "simulated_")):
        for dose in sorted({float(r["dose"]) for r in mine if r["kind"] == kind}, reverse=True):
            group = [r for r in mine if r["kind"] == kind and float(r["dose"]) == dose]
            prefix = f"{label}{group[0]['case']}_" if kind == "real" else label
            out[f"{prefix}dose{dose:g}"] = _mean_metrics(group)
    return out


#: Metrics that ``ctdid train`` writes into a card (kept under ``training`` by update_cards).
TRAINING_KEYS = (
    "iteration", "val_rmse_hu", "val_input_rmse_hu", "test_rmse_hu", "test_input_rmse_hu",
    "final_train_mse_net", "val_slices",
)  # fmt: skip
#: Metrics written by other scripts that update_cards keeps (benchmarks/hu_shift.py).
KEPT_KEYS = ("training", "soft_tissue_bias_hu")


def carried_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`update_cards` keeps of a card's metrics: the training metrics (moved under
    ``training`` when ``ctdid train`` left them at the top) and :data:`KEPT_KEYS`."""
    out = {k: metrics[k] for k in KEPT_KEYS if k in metrics}
    top = {k: metrics[k] for k in TRAINING_KEYS if k in metrics}
    if top:
        out["training"] = {
            **top,
            "note": "val: 2 held-out L067 slices at the training dose; test: L506 pair with "
            "the quarter-dose noise rescaled to the training dose",
        }
    return out


def update_cards(
    rows: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    weights_dir: str | Path | None = None,
) -> list[Path]:
    """Write :func:`card_metrics` into each model's card (the weights are not touched).

    The training metrics and the metrics of other scripts are kept
    (:func:`carried_metrics`).

    The card's ``weights_sha256`` is checked against the weights first, so a card is never
    rewritten beside weights it does not describe.

    Returns
    -------
    list of Path
        The cards written.
    """
    from ctdid.models import SHIPPED_WEIGHTS_DIR, ModelCard

    folder = Path(SHIPPED_WEIGHTS_DIR if weights_dir is None else weights_dir)
    written = []
    for name in names:
        path = folder / f"{name}.card.yaml"
        card = ModelCard.load(path)
        card.verify_weights(folder / f"{name}.safetensors")
        metrics = {**card_metrics(rows, name), **carried_metrics(card.metrics)}
        new = dataclasses.replace(card, metrics=metrics)
        written.append(new.save(path, overwrite=True))
    return written


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _dose(value: Any) -> str:
    return "-" if value is None else f"{float(value):g}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f} %"


def _joined(m: Mapping[str, Any], keys: Sequence[str], digits: int = 1) -> str:
    """The values of ``keys`` in ``m`` joined by " / " ("-" where missing)."""
    return " / ".join(_fmt(None if m.get(k) is None else float(m[k]), digits) for k in keys)


def _field_keys(metric: str) -> tuple[str, ...]:
    return tuple(f"field_{metric}{s}" for s in ("_input", "", "_tv", "_bm3d"))


_RMSE4 = ("rmse_input_hu", "rmse_hu", "rmse_tv_hu", "rmse_bm3d_hu")
_STD4 = ("std_input_hu", "std_hu", "std_tv_hu", "std_bm3d_hu")


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per model and test set (real pair; simulated slices per input dose, averaged) as a
    Markdown table: RMSE vs normal dose and flat-region STD of input, model, TV and BM3D at
    matched STD, in HU, and the field protocol's PSNR (dB) and SSIM ("-" where not
    measured)."""
    head = (
        "| model | train dose | test set | dose | RMSE input / model / TV / BM3D | "
        "STD input / model / TV / BM3D | RMSE reduction model / TV / BM3D | "
        "field PSNR input / model / TV / BM3D | field SSIM input / model / TV / BM3D |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        for kind in ("real", "phantom"):
            for dose in sorted({float(r["dose"]) for r in mine if r["kind"] == kind}, reverse=True):
                group = [r for r in mine if r["kind"] == kind and float(r["dose"]) == dose]
                m = _mean_metrics(group)
                label = group[0]["case"] if kind == "real" else f"simulated ({len(group)})"
                reductions = ("rmse_reduction", "rmse_reduction_tv", "rmse_reduction_bm3d")
                lines.append(
                    f"| {model} | {_dose(group[0]['training_dose'])} | {label} | {dose:g} "
                    f"| {_joined(m, _RMSE4)} | {_joined(m, _STD4)} "
                    f"| {' / '.join(_pct(m.get(k)) for k in reductions)} "
                    f"| {_joined(m, _field_keys('psnr_db'), 2)} "
                    f"| {_joined(m, _field_keys('ssim'), 3)} |"
                )
    return head + "\n".join(lines) + "\n"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table (HU; reduction in %; field protocol: RMSE in HU, PSNR in
    dB, SSIM; "-" where not measured)."""
    head = (
        "| model | train dose | input | dose | RMSE input | RMSE model | RMSE TV | RMSE BM3D "
        "| STD input | STD model | STD TV | STD BM3D | RMSE reduction model / TV / BM3D "
        "| field RMSE input / model / TV / BM3D | field PSNR input / model / TV / BM3D "
        "| field SSIM input / model / TV / BM3D |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        tv_note = "" if r["tv_matched"] else " (not matched)"
        bm_note = " (not matched)" if r.get("bm3d_matched") is False else ""
        reductions = ("rmse_reduction", "rmse_reduction_tv", "rmse_reduction_bm3d")
        lines.append(
            f"| {r['model']} | {_dose(r['training_dose'])} | {r['case']} | {r['dose']:g} "
            f"| {_fmt(r['rmse_input_hu'])} | {_fmt(r['rmse_hu'])} | {_fmt(r['rmse_tv_hu'])} "
            f"| {_fmt(r.get('rmse_bm3d_hu'))} "
            f"| {_fmt(r['std_input_hu'])} | {_fmt(r['std_hu'])} | {_fmt(r['std_tv_hu'])}"
            f"{tv_note} | {_fmt(r.get('std_bm3d_hu'))}{bm_note} "
            f"| {' / '.join(_pct(r.get(k)) for k in reductions)} "
            f"| {_joined(r, _field_keys('rmse_hu'))} | {_joined(r, _field_keys('psnr_db'), 2)} "
            f"| {_joined(r, _field_keys('ssim'), 3)} |"
        )
    return head + "\n".join(lines) + "\n"


def checks_text(
    trend: Mapping[str, Any],
    target: Mapping[str, Any],
    equal_noise: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The checks in words (Markdown): dose trend, target and (if given) the equal-noise
    target(s) of :func:`equal_noise_check` (one result or a sequence, one per model)."""

    def verdict(passed: bool | None) -> str:
        return {True: "PASS", False: "FAIL", None: "not measured"}[passed]

    lines = [
        f"- Dose trend (STD falls along {' > '.join(trend['models']) or 'no models'} on every "
        f"input at dose {trend['dose']:g}): {verdict(trend['passed'])}"
    ]
    for case, v in trend["per_case"].items():
        stds = ", ".join(f"{s:.1f}" for s in v["std_hu"])
        lines.append(f"  - {case}: {stds} HU{'' if v['falls'] else ' (does not fall)'}")
    red = target["rmse_reduction"]
    red_text = "-" if red is None else f"{100 * red:.1f} %"
    lines.append(
        f"- Target ({target['model']} lowers RMSE vs full dose on {target['case']} by >= "
        f"{100 * target['threshold']:.0f} %): {red_text}, {verdict(target['passed'])}"
    )
    if equal_noise is None:
        checks: Sequence[Mapping[str, Any]] = []
    elif isinstance(equal_noise, Mapping):
        checks = [equal_noise]
    else:
        checks = equal_noise
    for check in checks:
        lines.append(
            f"- Target at equal noise ({check['model']} at dose {check['dose']:g}: "
            f"RMSE vs full dose <= {100 * check['ratio']:.0f} % of TV's and of BM3D's at "
            f"the model's STD): {verdict(check['passed'])}"
        )
        for label, g in check["groups"].items():
            if g is None:
                lines.append(f"  - {label}: not measured")
                continue
            parts = []
            for key, name in (("tv", "TV"), ("bm3d", "BM3D")):
                b = g[key]
                if b["passed"] is None:
                    parts.append(f"{name} not measured")
                    continue
                note = "" if b["matched"] else ", STD not matched"
                parts.append(
                    f"{name} {b['rmse_hu']:.2f} HU (model / {name} {100 * b['ratio']:.1f} %"
                    f"{note}) {verdict(b['passed'])}"
                )
            where = label if len(g["cases"]) == 1 else f"{label} (mean of {len(g['cases'])})"
            lines.append(f"  - {where}: model {g['rmse_hu']:.2f} HU; {'; '.join(parts)}")
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two simulated slices instead of six")
    p.add_argument(
        "--models", nargs="+", default=None, help="model names (default: every shipped model)"
    )
    p.add_argument("--weights-dir", type=Path, default=None, help="folder of the models")
    p.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="simulated pairs (not in the checkout)"
    )
    p.add_argument("--l506", type=Path, default=L506_DIR, help="folder of the real pair")
    p.add_argument("--json", type=Path, default=None, help="write rows and checks as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write the table and checks")
    p.add_argument(
        "--update-cards", action="store_true", help="write the metrics into each model card"
    )
    p.add_argument("--tv-iter", type=int, default=200, help="TV iterations (default 200)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--bm3d",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also BM3D at matched noise (several s per 512 x 512 call; default on)",
    )
    p.add_argument(
        "--equal-noise-models",
        nargs="+",
        default=None,
        help=f"models the equal-noise target is checked for (default {TARGET_MODEL} and every "
        "other evaluated model trained at dose 0.25)",
    )
    p.add_argument(
        "--bm3d-iter",
        type=int,
        default=BM3D_MAX_ITER,
        help=f"most bisection steps of each BM3D noise match (default {BM3D_MAX_ITER})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (0 also when a check fails)."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = None if args.models is None else [n for m in args.models for n in m.split(",") if n]
    models = load_models(names, weights_dir=args.weights_dir)
    if not models:
        print("no shipped models found (src/ctdid/weights/<name>.safetensors + .card.yaml)")
        return 1
    try:
        cache = check_cache_dir(args.cache)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    cases: list[Case] = []
    real = load_l506(args.l506)
    if real is not None:
        cases.append(real)
    cases += simulated_cases(cache, slices=SIM_SLICES_QUICK if args.quick else SIM_SLICES)
    rows = evaluate(models, cases, tv_iter=args.tv_iter, bm3d=args.bm3d, bm3d_iter=args.bm3d_iter)
    trend = dose_trend(rows, trend_order(models))
    target = target_check(rows)
    checked = args.equal_noise_models or equal_noise_models(rows)
    equal_noise = [equal_noise_check(rows, model=m) for m in checked]
    text = (
        "Summary (means over the simulated slices):\n\n"
        + summary_table(rows)
        + "\nEvery input:\n\n"
        + markdown_table(rows)
        + "\n"
        + checks_text(trend, target, equal_noise)
    )
    print()
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")
    if args.json is not None:
        doc = {
            "ctdid_version": __import__("ctdid").__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "models": list(models),
            "cases": [c.name for c in cases],
            "real_pair_measured": real is not None,
            "rows": rows,
            "dose_trend": trend,
            "target": target,
            "equal_noise_target": equal_noise[0] if equal_noise else None,
            "equal_noise_targets": equal_noise,
            "bm3d": bool(args.bm3d),
        }
        args.json.write_text(json.dumps(_jsonable(doc), indent=2) + "\n", encoding="utf-8")
    if args.update_cards:
        for path in update_cards(rows, list(models), weights_dir=args.weights_dir):
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
