"""Evaluation slices for comparing denoising methods at equal noise.

Every slice is an :class:`EvalSlice`: a noisy input, its reference, and what is measured on
the reference once (body, flat regions, edge pixels, a TTF insert), so that every method is
measured on the same pixels. :func:`flat_noise` is the one noise measure; :func:`rmse_body` and
:func:`edge_rmse` compare an output with the reference.

Slice sets (the real ones are skipped with a message when ``../shared/data`` is absent):

``simulated_slices`` (group ``"sim"``)
    Six procedural phantoms not used in training (abdomen seeds 9001-9004, chest 9101-9102,
    as :data:`eval_denoisers.SIM_SLICES`), each at one dose / kernel combination so that doses
    1/2, 1/4, 1/8 and both kernels (sharp: the simulator's ``"ramp"`` FBP window, smooth:
    ``"hann"``) are all covered (:data:`SIM_SLICES`). A round +200 HU insert of 8 mm radius is
    painted into a uniform organ first (:func:`place_insert`), for a TTF. The phantom is
    projected once; the reference is the FBP of the noise-free sinogram (same geometry and
    kernel, no noise), the input the FBP of Poisson + electronic noise at the dose
    (:func:`ctdid.sim.simulate.low_dose_from_sinogram`, mode ``"full"``). Cached as ``.npz``.
``l506_slice`` (group ``"real"``)
    The real Mayo L506 quarter-dose / full-dose pair (sharp D45 kernel, dose 1/4), read by
    :func:`eval_denoisers.load_l506`; the reference is the real full dose.
``l067_slices`` (group ``"real"``)
    The ten real full-dose L067 slices (five sharp ``_sh_``, five smooth ``_sm_``) with 1/4
    and 1/8 dose inserted in the projection domain (:data:`ctdid.reproduce.experiments.REAL_I0`
    photons per bin and view at full dose; see :func:`l067_slices` for the kernels); the
    reference is the full-dose slice. Cached as ``.npz``. These slices (with quarter-dose
    noise inserted) were in the shipped models' training data: not a held-out test.
``lcd_sets``
    The FDA MITA-LCD phantom (``lcd_ct_cct189``): FBP signal-present and signal-absent
    realisations at 10 %, 55 % and 100 % dose, the ground truth, its discs and flat regions;
    :func:`lcd_dprime` is the CHO d' of one disc and :func:`lcd_flat_noise` the noise.

Usage, from the checkout::

    .venv/bin/python benchmarks/eval_sets.py [--quick] [--cache /tmp/ctdid-eval-sets]
        [--shared ../shared/data]

The module is importable; it is tested in ``tests/test_eval_sets.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_denoisers as ev
import eval_metrics_real as em

from ctdid.core import body_mask
from ctdid.metrics import find_flat_regions, noise_label, rmse

ROOT = Path(__file__).resolve().parents[1]
#: The shared data folder next to the checkout.
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ctdid-eval-sets"

#: FBP window of each kernel class (simulation and dose insertion).
FBP_WINDOW: dict[str, str] = {"sharp": "ramp", "smooth": "hann"}
#: Simulated slices: (phantom kind, anatomy seed, FBP window, dose). Every (kernel, dose) pair of
#: {ramp, hann} x {1/2, 1/4, 1/8} occurs once.
SIM_SLICES: tuple[tuple[str, int, str, float], ...] = (
    ("abdomen", 9001, "ramp", 0.5),
    ("abdomen", 9002, "hann", 0.25),
    ("abdomen", 9003, "ramp", 0.125),
    ("abdomen", 9004, "hann", 0.5),
    ("chest", 9101, "ramp", 0.25),
    ("chest", 9102, "hann", 0.125),
)
#: ``quick``: one smooth and one sharp slice (a subset of :data:`SIM_SLICES`, same cache).
SIM_SLICES_QUICK: tuple[tuple[str, int, str, float], ...] = (SIM_SLICES[1], SIM_SLICES[4])
#: Uniform organs (phantom mask names) the insert is placed in, in order of preference.
INSERT_ORGANS: dict[str, tuple[str, ...]] = {
    "abdomen": ("liver", "spleen"),
    "chest": ("heart",),
}
INSERT_CONTRAST_HU = 200.0
INSERT_RADIUS_MM = 8.0
#: Uniform tissue wanted around the insert beyond its radius (the TTF uses 0.8 R = 6.4 mm).
INSERT_MARGIN_MM = 8.0
#: Fraction of the body's pixels taken as edge pixels.
EDGE_FRACTION = 0.10
#: Gaussian (pixels) applied to a real full-dose reference before its gradient.
REAL_EDGE_SIGMA_PX = 1.0
#: Flat regions searched on the reference: number and side in mm.
N_FLAT_REGIONS = 20
FLAT_ROI_MM = 10.0
#: Real Mayo slices: pixel size (dy, dx) in mm, not stored in the files (as eval_denoisers,
#: ctdid.reproduce and the training config assume).
MAYO_SPACING_MM: tuple[float, float] = (ev.L506_SPACING_MM[1], ev.L506_SPACING_MM[2])
L067_NAME = "mayo_fd_L067"
L067_DOSES: tuple[float, ...] = (0.25, 0.125)
#: LCD: the dose folder and the number of realisations per class of ``quick``.
LCD_QUICK_DOSE = "dose_010"
LCD_QUICK_REALISATIONS = 5

Log = Callable[[str], None]
Region = tuple[slice, slice]


# ---------------------------------------------------------------------------------------------
# the slice and its measures


@dataclasses.dataclass(frozen=True, eq=False)
class EvalSlice:
    """One evaluation slice: a noisy input, its reference and what is measured on it.

    Attributes
    ----------
    name : str
        E.g. ``"sim-abdomen-9001-ramp-d0.5"``, ``"L506"``, ``"L067-sh-149-d0.125"``.
    group : str
        ``"sim"`` or ``"real"``.
    dose : float
        Dose fraction of :attr:`low`.
    kernel : str
        ``"sharp"`` or ``"smooth"``.
    low : ndarray of float32, shape (y, x)
        The noisy input in HU.
    reference : ndarray of float32, shape (y, x)
        Noise-free truth (sim: same geometry and FBP kernel, no noise) or real full dose, HU.
    spacing : (float, float)
        Pixel size (dy, dx) in mm.
    body : ndarray of bool, shape (y, x)
        :func:`ctdid.core.body_mask` of the reference.
    flat_regions : list of (slice, slice)
        Up to :data:`N_FLAT_REGIONS` flat squares of :data:`FLAT_ROI_MM` mm found on the
        reference (:func:`ctdid.metrics.find_flat_regions`), for :func:`flat_noise`.
    edges : ndarray of bool, shape (y, x)
        The top :data:`EDGE_FRACTION` of the body's pixels by the reference's gradient
        magnitude (:func:`edge_mask`): of the reference itself for the noise-free truth, of the
        reference after a Gaussian of :data:`REAL_EDGE_SIGMA_PX` pixels for a real full dose
        (so that its own noise does not pick the pixels). Skin and bone edges dominate.
    insert : (float, float, float) or None
        (row, col, radius_mm) of the round high-contrast insert (sim), for
        :func:`ctdid.metrics.ttf_from_insert`; None for real slices.
    """

    name: str
    group: str
    dose: float
    kernel: str
    low: NDArray[np.float32]
    reference: NDArray[np.float32]
    spacing: tuple[float, float]
    body: NDArray[np.bool_]
    flat_regions: list[tuple[slice, slice]]
    edges: NDArray[np.bool_]
    insert: tuple[float, float, float] | None = None


def edge_mask(
    reference: ArrayLike,
    body: ArrayLike,
    *,
    spacing: tuple[float, float],
    sigma_px: float = 0.0,
    fraction: float = EDGE_FRACTION,
) -> NDArray[np.bool_]:
    """The pixels of the body with the largest gradient magnitude of the reference.

    Parameters
    ----------
    reference : array_like, shape (y, x)
        Reference image in HU.
    body : array_like of bool, shape (y, x)
        Where to look.
    spacing : (float, float)
        Pixel size (dy, dx) in mm (the gradient is in HU/mm).
    sigma_px : float, optional
        Gaussian applied to the reference first, in pixels (0: none).
    fraction : float, optional
        Fraction of the body's pixels returned (pixels of zero gradient are never taken, so
        fewer are returned from an image that is flat almost everywhere).

    Returns
    -------
    ndarray of bool, shape (y, x)
    """
    ref = np.asarray(reference, dtype=np.float64)
    inside = np.asarray(body, dtype=bool)
    if sigma_px > 0:
        ref = ndimage.gaussian_filter(ref, sigma_px, mode="nearest")
    gy, gx = np.gradient(ref, float(spacing[0]), float(spacing[1]))
    grad = np.hypot(gy, gx)
    idx = np.flatnonzero(inside)
    k = round(fraction * idx.size)
    out = np.zeros(ref.shape, dtype=bool)
    if k < 1:
        return out
    vals = grad.ravel()[idx]
    top = idx[np.argpartition(-vals, k - 1)[:k]]
    out.ravel()[top] = True
    return out & (grad > 0)


def make_slice(
    name: str,
    group: str,
    *,
    dose: float,
    kernel: str,
    low: ArrayLike,
    reference: ArrayLike,
    spacing: tuple[float, float],
    edge_sigma_px: float,
    insert: tuple[float, float, float] | None = None,
) -> EvalSlice:
    """Build an :class:`EvalSlice`, finding body, flat regions and edges on ``reference``.

    Parameters
    ----------
    name, group, dose, kernel, spacing, insert
        See :class:`EvalSlice`.
    low, reference : array_like, shape (y, x)
        Images in HU.
    edge_sigma_px : float
        Gaussian of :func:`edge_mask` (0 for a noise-free reference).

    Raises
    ------
    ValueError
        If the shapes differ, or no body or no flat region is found.
    """
    lo = np.asarray(low, dtype=np.float32)
    ref = np.asarray(reference, dtype=np.float32)
    if lo.shape != ref.shape or lo.ndim != 2:
        raise ValueError(f"{name}: low {lo.shape} and reference {ref.shape} must be one 2-D shape")
    sp = (float(spacing[0]), float(spacing[1]))
    body = body_mask(ref)
    if not body.any():
        raise ValueError(f"{name}: no body found in the reference")
    regions = find_flat_regions(
        ref, spacing=sp, body_mask=body, roi_mm=FLAT_ROI_MM, n=N_FLAT_REGIONS
    )
    if not regions:
        raise ValueError(f"{name}: no flat region found in the reference")
    edges = edge_mask(ref, body, spacing=sp, sigma_px=edge_sigma_px)
    return EvalSlice(
        name=name,
        group=group,
        dose=float(dose),
        kernel=kernel,
        low=lo,
        reference=ref,
        spacing=sp,
        body=body,
        flat_regions=[cast(Region, tuple(r)) for r in regions],
        edges=edges,
        insert=insert,
    )


def flat_noise(img: ArrayLike, s: EvalSlice) -> float:
    """Noise STD in HU: the median over ``s.flat_regions`` of the residual STD after a
    least-squares plane is removed from each (:func:`ctdid.metrics.noise_label`, 3 degrees of
    freedom removed). The one noise measure of every method."""
    return noise_label(img, spacing=s.spacing, regions=list(s.flat_regions))


def rmse_body(img: ArrayLike, s: EvalSlice) -> float:
    """RMSE in HU against ``s.reference`` inside ``s.body``."""
    return rmse(img, s.reference, mask=s.body)


def edge_rmse(img: ArrayLike, s: EvalSlice) -> float:
    """RMSE in HU against ``s.reference`` on the edge pixels ``s.edges``."""
    return rmse(img, s.reference, mask=s.edges)


# ---------------------------------------------------------------------------------------------
# caching


def _recipe_key(*parts: Any) -> str:
    """Short hash of the simulator's sources and of a recipe: either changed, a new file."""
    digest = hashlib.sha256(ev._simulator_hash().encode())
    digest.update(repr(parts).encode())
    return digest.hexdigest()[:12]


def _save(path: Path, **arrays: Any) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    out: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez_compressed(tmp, **out)
    tmp.replace(path)


def _noise_seed(name: str) -> int:
    """A deterministic noise seed per slice name."""
    return zlib.crc32(name.encode("utf-8"))


def _data_dir(shared: str | Path) -> Path:
    """``shared`` itself, or its ``data`` folder when given the folder above it."""
    p = Path(shared)
    known = (em.L506_NAME, L067_NAME, em.LCD_NAME)
    if (p / "data").is_dir() and not any((p / k).exists() for k in known):
        return p / "data"
    return p


# ---------------------------------------------------------------------------------------------
# simulated slices


def place_insert(
    phantom: Any,
    organs: Sequence[str],
    *,
    radius_mm: float = INSERT_RADIUS_MM,
    margin_mm: float = INSERT_MARGIN_MM,
) -> tuple[float, float]:
    """The point deepest inside the uniform part of the first organ with room for an insert.

    The uniform part of an organ is its mask without vessels and fine details, at the organ's
    median HU (within 0.5 HU: lesions, vessels and partial-volume pixels drop out). The point
    is the maximum of its distance transform (mm).

    Parameters
    ----------
    phantom : ctdid.sim.Phantom
        The phantom, with ``masks``.
    organs : sequence of str
        Mask names to try in order.
    radius_mm, margin_mm : float, optional
        The insert needs ``radius_mm + margin_mm`` of uniform tissue around its centre.

    Returns
    -------
    (float, float)
        Centre (row, col) in pixel indices.

    Raises
    ------
    ValueError
        If no organ has room.
    """
    hu = np.asarray(phantom.hu)
    masks = phantom.masks
    best = 0.0
    for organ in organs:
        mask = masks.get(organ)
        if mask is None or not mask.any():
            continue
        uniform = mask & (np.abs(hu - np.median(hu[mask])) < 0.5)
        for other in ("vessel", "detail", "bone", "gas"):
            if other in masks:
                uniform &= ~masks[other]
        dist = ndimage.distance_transform_edt(uniform, sampling=phantom.spacing)
        k = int(np.argmax(dist))
        best = max(best, float(dist.flat[k]))
        if dist.flat[k] >= radius_mm + margin_mm:
            r, c = np.unravel_index(k, dist.shape)
            return float(r), float(c)
    raise ValueError(
        f"no room for a {radius_mm:g} mm insert in {', '.join(organs)} (deepest {best:.1f} mm)"
    )


def paint_insert(
    hu: ArrayLike,
    center: tuple[float, float],
    radius_px: float,
    contrast_hu: float,
    *,
    supersample: int = 4,
) -> NDArray[np.float32]:
    """Add ``contrast_hu`` times the area coverage of a disc (anti-aliased), a copy.

    Parameters
    ----------
    hu : array_like, shape (y, x)
        Image in HU.
    center : (float, float)
        Disc centre (row, col) in pixel indices.
    radius_px : float
        Disc radius in pixels.
    contrast_hu : float
        Added inside the disc.
    supersample : int, optional
        Sub-pixel samples per axis.
    """
    out = np.array(hu, dtype=np.float32, copy=True)
    cy, cx = center
    r0, r1 = (
        max(0, math.floor(cy - radius_px) - 1),
        min(out.shape[0], math.ceil(cy + radius_px) + 2),
    )
    c0, c1 = (
        max(0, math.floor(cx - radius_px) - 1),
        min(out.shape[1], math.ceil(cx + radius_px) + 2),
    )
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    yy = (np.arange(r0, r1)[:, None] + sub[None, :]).reshape(-1)
    xx = (np.arange(c0, c1)[:, None] + sub[None, :]).reshape(-1)
    inside = np.hypot(yy[:, None] - cy, xx[None, :] - cx) <= radius_px
    cover = inside.reshape(r1 - r0, supersample, c1 - c0, supersample).mean(axis=(1, 3))
    out[r0:r1, c0:c1] += np.float32(contrast_hu) * cover.astype(np.float32)
    return out


def sim_name(kind: str, seed: int, window: str, dose: float) -> str:
    """``"sim-<kind>-<seed>-<window>-d<dose>"``."""
    return f"sim-{kind}-{seed}-{window}-d{dose:g}"


def simulate_slice(
    kind: str,
    seed: int,
    *,
    window: str,
    dose: float,
    shape: int = 512,
    geometry: Any = None,
    noise_seed: int = 0,
) -> dict[str, Any]:
    """Draw a phantom, paint the insert, project once, reconstruct noise-free and noisy.

    Parameters
    ----------
    kind : {"abdomen", "chest"}
        Phantom (:func:`ctdid.sim.abdomen_phantom`, :func:`ctdid.sim.chest_phantom`, 380 mm
        field of view).
    seed : int
        Anatomy seed.
    window : str
        FBP window (``"ramp"`` sharp, ``"hann"`` smooth), for both reconstructions.
    dose : float
        Dose fraction of the noisy scan (Poisson + electronic noise at ``dose`` times
        :data:`ctdid.sim.DEFAULT_I0`).
    shape : int, optional
        Pixels per side.
    geometry : optional
        Scan geometry; default :class:`ctdid.sim.FanBeamGeometry` ().
    noise_seed : int, optional
        Seed of the torch generator of the noise.

    Returns
    -------
    dict
        ``low`` and ``reference`` (float32 HU), ``spacing`` (dy, dx mm), ``insert`` (row, col,
        radius_mm).
    """
    from ctdid.sim import (
        FanBeamGeometry,
        abdomen_phantom,
        chest_phantom,
        fbp,
        forward_project,
        hu_to_mu,
        mu_to_hu,
    )
    from ctdid.sim.simulate import low_dose_from_sinogram

    if kind not in INSERT_ORGANS:
        raise ValueError(f"unknown phantom kind {kind!r} (abdomen or chest)")
    make = abdomen_phantom if kind == "abdomen" else chest_phantom
    ph = make(seed=seed, shape=shape)
    sp = (float(ph.spacing[0]), float(ph.spacing[1]))
    row, col = place_insert(ph, INSERT_ORGANS[kind])
    hu = paint_insert(ph.hu, (row, col), INSERT_RADIUS_MM / sp[0], INSERT_CONTRAST_HU)
    geom = FanBeamGeometry() if geometry is None else geometry
    gen = torch.Generator()
    gen.manual_seed(int(noise_seed))
    with torch.inference_mode():
        x = torch.from_numpy(hu)[None]
        sino = forward_project(hu_to_mu(x), geom, spacing=sp)
        ref = mu_to_hu(fbp(sino, geom, shape=hu.shape, spacing=sp, kernel=window))
        low = low_dose_from_sinogram(
            x, sino, dose=dose, mode="full", geometry=geom, spacing=sp, kernel=window,
            generator=gen,
        )  # fmt: skip
    return {
        "low": low[0].numpy().astype(np.float32),
        "reference": ref[0].numpy().astype(np.float32),
        "spacing": np.asarray(sp),
        "insert": np.asarray([row, col, INSERT_RADIUS_MM]),
    }


def simulated_slices(
    cache: str | Path,
    *,
    quick: bool = False,
    log: Log = print,
    slices: Sequence[tuple[str, int, str, float]] | None = None,
    shape: int = 512,
) -> list[EvalSlice]:
    """The simulated evaluation slices, simulated once and cached as ``.npz``.

    Parameters
    ----------
    cache : str or Path
        Cache folder (outside the checkout; :func:`eval_denoisers.check_cache_dir`). Files are
        keyed by a hash of the simulator's sources and of the recipe.
    quick : bool, optional
        :data:`SIM_SLICES_QUICK` (one smooth and one sharp slice at 1/4 dose) instead of
        :data:`SIM_SLICES`.
    log : callable, optional
        Progress messages, with the time per slice.
    slices : sequence of (kind, seed, window, dose), optional
        Overrides ``quick``.
    shape : int, optional
        Pixels per side (380 mm field of view; 512: 0.742 mm pixels).

    Returns
    -------
    list of EvalSlice
        Group ``"sim"``, kernel ``"sharp"`` (window ramp) or ``"smooth"`` (hann), the insert
        set; names from :func:`sim_name`.
    """
    folder = ev.check_cache_dir(cache)
    todo = slices if slices is not None else (SIM_SLICES_QUICK if quick else SIM_SLICES)
    kernel_of = {w: k for k, w in FBP_WINDOW.items()}
    out = []
    for kind, seed, window, dose in todo:
        name = sim_name(kind, seed, window, dose)
        key = _recipe_key(
            "sim", name, shape, INSERT_CONTRAST_HU, INSERT_RADIUS_MM, INSERT_MARGIN_MM
        )
        path = folder / f"{name}-n{shape}-{key}.npz"
        t0 = time.perf_counter()
        if path.is_file():
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
            how = "cached"
        else:
            data = simulate_slice(
                kind, seed, window=window, dose=dose, shape=shape, noise_seed=_noise_seed(name)
            )
            _save(path, **data)
            how = "simulated"
        sp = tuple(float(v) for v in data["spacing"])
        row, col, rad = (float(v) for v in data["insert"])
        out.append(
            make_slice(
                name,
                "sim",
                dose=dose,
                kernel=kernel_of[window],
                low=data["low"],
                reference=data["reference"],
                spacing=(sp[0], sp[1]),
                edge_sigma_px=0.0,
                insert=(row, col, rad),
            )
        )
        log(f"{name}: {how} in {time.perf_counter() - t0:.1f} s ({path.name})")
    return out


# ---------------------------------------------------------------------------------------------
# real slices


def l506_slice(shared: str | Path = SHARED, *, log: Log = print) -> EvalSlice | None:
    """The real Mayo L506 quarter-dose / full-dose pair, or None (with a message) if absent.

    Parameters
    ----------
    shared : str or Path, optional
        The shared data folder (``../shared/data``; ``../shared`` is accepted too), holding
        ``mayo_pair_L506``.
    log : callable, optional
        Where the skip message goes.

    Returns
    -------
    EvalSlice or None
        ``"L506"``, group ``"real"``, dose 0.25, kernel ``"sharp"`` (D45), 0.7 mm pixels
        assumed; reference: the real full dose.
    """
    case = ev.load_l506(_data_dir(shared) / em.L506_NAME, log=log)
    if case is None:
        return None
    return make_slice(
        ev.L506_CASE,
        "real",
        dose=ev.PAIR_DOSE,
        kernel="sharp",
        low=case.low,
        reference=case.normal,
        spacing=case.spacing,
        edge_sigma_px=REAL_EDGE_SIGMA_PX,
    )


def l067_files(folder: str | Path) -> list[tuple[Path, str, int]]:
    """The L067 full-dose files as (path, ``"sharp"`` or ``"smooth"``, slice number), sharp
    first, by slice number."""
    found = []
    for p in Path(folder).glob("L067_*.raw"):
        m = re.search(r"_(sh|sm)_slice(\d+)", p.name)
        if m:
            found.append((p, "sharp" if m.group(1) == "sh" else "smooth", int(m.group(2))))
    return sorted(found, key=lambda t: (t[1] != "sharp", t[2]))


def _read_mayo(path: Path) -> NDArray[np.float32]:
    from ctdid.io import read_volume

    vol = read_volume(
        path, shape=(512, 512), dtype="uint16", hu_offset=-1024, spacing=ev.L506_SPACING_MM
    )
    return np.asarray(vol.hu[0], dtype=np.float32)


def _insert_doses(
    fd: NDArray[np.float32],
    *,
    doses: Sequence[float],
    window: str,
    seeds: Sequence[int],
    i0: float,
) -> list[NDArray[np.float32]]:
    """Projection-domain dose insertion into one full-dose slice, one projection for all doses
    (what :func:`ctdid.sim.simulate_low_dose` ``mode="insert"`` does per dose)."""
    from ctdid.sim import FanBeamGeometry, forward_project, hu_to_mu
    from ctdid.sim.simulate import low_dose_from_sinogram

    geom = FanBeamGeometry()
    out = []
    with torch.inference_mode():
        x = torch.from_numpy(np.array(fd, dtype=np.float32))[None]
        sino = forward_project(hu_to_mu(x), geom, spacing=MAYO_SPACING_MM)
        for dose, seed in zip(doses, seeds, strict=True):
            gen = torch.Generator()
            gen.manual_seed(int(seed))
            low = low_dose_from_sinogram(
                x, sino, dose=dose, mode="insert", geometry=geom, spacing=MAYO_SPACING_MM,
                kernel=window, i0=i0, generator=gen,
            )  # fmt: skip
            out.append(low[0].numpy().astype(np.float32))
    return out


def l067_slices(
    shared: str | Path = SHARED,
    *,
    doses: Sequence[float] = L067_DOSES,
    quick: bool = False,
    log: Log = print,
    cache: str | Path = DEFAULT_CACHE,
) -> list[EvalSlice]:
    """The real L067 full-dose slices with lower doses inserted in the projection domain.

    Insertion as :func:`ctdid.sim.simulate_low_dose` ``mode="insert"`` (one projection per
    slice serves every dose): the default fan beam, full-dose
    :data:`ctdid.reproduce.experiments.REAL_I0` = 2.8e5 photons per bin per view, the noise
    reconstructed with the ``"ramp"`` window for the sharp (``_sh_``) slices and ``"hann"``
    for the smooth (``_sm_``) ones. ``ctdid.reproduce`` (``Experiments.real_l067``) uses only
    the sharp slices, with ``"ramp"`` and ``REAL_I0``; the shipped models' training data used
    ``"ramp"`` and ``REAL_I0`` for all ten slices (configs/train-compact-unet.yaml), so the
    smooth slices here get a smoother (and lower) inserted noise than in training. Noise seeds
    are a CRC of the slice name.

    Parameters
    ----------
    shared : str or Path, optional
        The shared data folder, holding ``mayo_fd_L067``.
    doses : sequence of float, optional
        Inserted dose fractions.
    quick : bool, optional
        The first sharp and the first smooth slice at ``doses[0]`` only.
    log : callable, optional
        Progress and skip messages.
    cache : str or Path, optional
        Cache folder for the inserted images (outside the checkout).

    Returns
    -------
    list of EvalSlice
        ``"L067-sh-149-d0.125"`` etc., group ``"real"``, 0.7 mm pixels assumed (as
        eval_denoisers, ctdid.reproduce and the training config); reference: the full dose.
        Empty (with a message) when the folder is absent.
    """
    from ctdid.reproduce.experiments import REAL_I0

    folder = _data_dir(shared) / L067_NAME
    files = l067_files(folder) if folder.is_dir() else []
    if not files:
        log(f"skipping L067: no L067_*_sh_/_sm_ slices in {folder}")
        return []
    if quick:
        files = [next(f for f in files if f[1] == k) for k in ("sharp", "smooth")]
        doses = list(doses)[:1]
    cache_dir = ev.check_cache_dir(cache)
    out = []
    for path, kernel, number in files:
        t0 = time.perf_counter()
        window = FBP_WINDOW[kernel]
        fd = _read_mayo(path)
        names = [f"L067-{'sh' if kernel == 'sharp' else 'sm'}-{number}-d{d:g}" for d in doses]
        keys = [_recipe_key("l067", n, path.name, window, REAL_I0) for n in names]
        paths = [cache_dir / f"{n}-{k}.npz" for n, k in zip(names, keys, strict=True)]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            made = _insert_doses(
                fd,
                doses=[doses[i] for i in missing],
                window=window,
                seeds=[_noise_seed(names[i]) for i in missing],
                i0=REAL_I0,
            )
            for i, low in zip(missing, made, strict=True):
                _save(paths[i], low=low)
        for name, dose, p in zip(names, doses, paths, strict=True):
            with np.load(p) as z:
                low = z["low"]
            out.append(
                make_slice(
                    name,
                    "real",
                    dose=dose,
                    kernel=kernel,
                    low=low,
                    reference=fd,
                    spacing=MAYO_SPACING_MM,
                    edge_sigma_px=REAL_EDGE_SIGMA_PX,
                )
            )
        how = f"inserted {len(missing)} dose(s)" if missing else "cached"
        log(f"{path.name}: {how} in {time.perf_counter() - t0:.1f} s")
    return out


# ---------------------------------------------------------------------------------------------
# MITA-LCD phantom


def lcd_sets(
    shared: str | Path = SHARED,
    *,
    quick: bool = False,
    log: Log = print,
    pixel: str = "edge",
) -> dict[str, Any] | None:
    """The MITA-LCD (CCT189) FBP images per dose, with discs and flat regions, or None.

    Read by :func:`eval_metrics_real.load_lcd`; discs located on the ground truth by
    :func:`eval_metrics_real.lcd_geometry`. Flat regions: :data:`FLAT_ROI_MM` squares found by
    :func:`ctdid.metrics.find_flat_regions` on the ground truth inside the phantom, at least
    5 mm (its ``margin_mm``) from the phantom's edge and from every disc.

    Parameters
    ----------
    shared : str or Path, optional
        The shared data folder, holding ``lcd_ct_cct189``.
    quick : bool, optional
        Dose :data:`LCD_QUICK_DOSE` only, the first :data:`LCD_QUICK_REALISATIONS`
        realisations of each class.
    log : callable, optional
        Skip and progress messages.
    pixel : str, optional
        Pixel size (the files carry none): see :func:`eval_metrics_real.lcd_pixel_mm`; the
        default ``"edge"`` assumes the 200 mm phantom (about 0.86 mm).

    Returns
    -------
    dict or None
        ``doses``: per dose folder (``"dose_010"``, ``"dose_055"``, ``"dose_100"``) a dict with
        ``dose`` (fraction), ``present`` and ``absent`` ((n, y, x) float32 HU), and the shared
        entries, also at the top level: ``truth`` ((y, x) HU), ``spacing`` ((dy, dx) mm),
        ``discs`` (list of dicts: ``contrast_hu``, ``center`` (row, col), ``radius_px``,
        ``radius_mm``, ``width_px`` (the CHO channel width, the disc diameter),
        ``absent_centers`` (the signal-absent channel positions)), ``flat_regions``,
        ``phantom_center`` and ``phantom_diameter_px``.
    """
    data = em.load_lcd(_data_dir(shared) / em.LCD_NAME, log=log)
    if data is None or "fbp" not in data["images"]:
        if data is not None:
            log("skipping the LCD phantom: no fbp images")
        return None
    truth = np.asarray(data["truth"], dtype=np.float32)
    geom = em.lcd_geometry(truth)
    px = em.lcd_pixel_mm(geom, pixel)
    spacing = (px, px)
    discs: list[dict[str, Any]] = [
        {
            "contrast_hu": float(d.contrast_hu),
            "center": (float(d.center[0]), float(d.center[1])),
            "radius_px": 0.5 * d.diameter_px,
            "radius_mm": 0.5 * d.diameter_px * px,
            "width_px": float(d.diameter_px),
            "absent_centers": geom.positions(d),
        }
        for d in geom.discs
    ]
    inside = np.asarray(ndimage.binary_fill_holes(truth > -500))
    for d in discs:
        inside &= ~em.disc_mask(truth.shape, d["center"], d["radius_px"])
    regions = find_flat_regions(
        truth, spacing=spacing, body_mask=inside, roi_mm=FLAT_ROI_MM, n=N_FLAT_REGIONS
    )
    common: dict[str, Any] = {
        "truth": truth,
        "spacing": spacing,
        "discs": discs,
        "flat_regions": [cast(Region, tuple(r)) for r in regions],
        "phantom_center": geom.center,
        "phantom_diameter_px": geom.diameter_px,
    }
    dose_of = dict(em.LCD_DOSES)
    doses = {}
    for folder, (present, absent) in data["images"]["fbp"].items():
        if quick and folder != LCD_QUICK_DOSE:
            continue
        n = LCD_QUICK_REALISATIONS if quick else len(present)
        doses[folder] = {
            "dose": dose_of[folder],
            "present": np.asarray(present[:n], dtype=np.float32),
            "absent": np.asarray(absent[: min(n, len(absent))], dtype=np.float32),
            **common,
        }
    if not doses:
        log("skipping the LCD phantom: no FBP dose folder")
        return None
    log(
        f"LCD: {len(discs)} discs, {len(regions)} flat regions, pixel {px:.3f} mm ({pixel}), "
        f"doses {', '.join(doses)}"
    )
    return {"doses": doses, **common}


def lcd_flat_noise(img: ArrayLike, lcd: Mapping[str, Any]) -> float:
    """:func:`flat_noise` on the LCD phantom: median over ``lcd["flat_regions"]`` of the STD
    after a plane is removed, in HU; for a stack (n, y, x) the mean over its images.

    Parameters
    ----------
    img : array_like, shape (y, x) or (n, y, x)
        Image(s) in HU.
    lcd : mapping
        :func:`lcd_sets` or one of its ``doses`` entries.
    """
    arr = np.asarray(img, dtype=np.float32)
    regions = list(lcd["flat_regions"])
    if arr.ndim == 3:
        return float(
            np.mean([noise_label(a, spacing=lcd["spacing"], regions=regions) for a in arr])
        )
    return noise_label(arr, spacing=lcd["spacing"], regions=regions)


def lcd_dprime(
    present: ArrayLike,
    absent: ArrayLike,
    disc: Mapping[str, Any],
    lcd: Mapping[str, Any] | None = None,
    *,
    n_channels: int = em.CHO_CHANNELS,
) -> float:
    """CHO d' of one disc from a method's signal-present and signal-absent outputs.

    As :func:`eval_metrics_real.lcd_method_rows`: Laguerre-Gauss channels of width the disc
    diameter (:func:`eval_metrics_real.channel_outputs`), the present images at the disc, the
    absent images at the disc's 8 positions on its circle, pooled covariance, small-sample
    bias-corrected (:func:`eval_metrics_real.hotelling_dprime`; for a jackknife interval use
    :func:`eval_metrics_real.cho_study`).

    Parameters
    ----------
    present, absent : array_like, shape (n, y, x)
        Outputs in HU.
    disc : mapping
        One of :func:`lcd_sets`' ``discs``.
    lcd : mapping, optional
        :func:`lcd_sets` (or a dose entry): if given, the images must have its truth's shape.
    n_channels : int, optional
        Number of channels.

    Returns
    -------
    float
        d' (0 when the corrected d'^2 is negative).

    Raises
    ------
    ValueError
        Shapes that do not match, or too few images (:func:`eval_metrics_real.hotelling_d2`).
    """
    p = np.asarray(present, dtype=np.float64)
    a = np.asarray(absent, dtype=np.float64)
    if lcd is not None and (p.shape[1:] != lcd["truth"].shape or a.shape[1:] != p.shape[1:]):
        raise ValueError(
            f"images {p.shape} / {a.shape} do not match the phantom {lcd['truth'].shape}"
        )
    width = float(disc["width_px"])
    v1 = em.channel_outputs(p, [tuple(disc["center"])], width_px=width, n_channels=n_channels)
    v0 = em.channel_outputs(
        a, [tuple(c) for c in disc["absent_centers"]], width_px=width, n_channels=n_channels
    )
    return em.hotelling_dprime(v1[:, 0], v0.reshape(-1, n_channels))


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer slices and LCD realisations")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="not in the checkout")
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Build every set and print one line per slice; returns the exit status."""
    args = build_parser().parse_args(argv)
    t_all = time.perf_counter()
    try:
        cache = ev.check_cache_dir(args.cache)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    slices = simulated_slices(cache / "sim", quick=args.quick)
    print(f"simulated slices: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    l506 = l506_slice(args.shared)
    slices += [] if l506 is None else [l506]
    slices += l067_slices(args.shared, quick=args.quick, cache=cache / "l067")
    print(f"real slices: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    lcd = lcd_sets(args.shared, quick=args.quick)
    print(f"LCD: {time.perf_counter() - t0:.1f} s")
    print()
    print(
        f"{'slice':<30} {'dose':>6} {'kernel':>7} {'noise low':>10} {'noise ref':>10} "
        f"{'regions':>8} {'edge px':>8}"
    )
    for s in slices:
        print(
            f"{s.name:<30} {s.dose:>6g} {s.kernel:>7} {flat_noise(s.low, s):>10.2f} "
            f"{flat_noise(s.reference, s):>10.2f} {len(s.flat_regions):>8d} "
            f"{int(s.edges.sum()):>8d}"
        )
    if lcd is not None:
        for key, d in lcd["doses"].items():
            dp = ", ".join(
                f"{disc['contrast_hu']:g} HU {lcd_dprime(d['present'], d['absent'], disc, d):.2f}"
                for disc in d["discs"]
            )
            print(
                f"LCD {key:<26} {d['dose']:>6g} {'-':>7} {lcd_flat_noise(d['absent'], d):>10.2f} "
                f"{lcd_flat_noise(d['truth'], d):>10.2f} {len(d['flat_regions']):>8d} "
                f"{'-':>8}  {len(d['present'])}+{len(d['absent'])} images; FBP CHO d' {dp}"
            )
    print(f"total {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
