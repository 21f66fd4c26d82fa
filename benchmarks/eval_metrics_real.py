"""Evaluate ctdid's image-quality metrics on the real data sets, for the input, the shipped models
and candidates along the DID curve (issue 6, "Evaluation on real data").

Three sections, each skipped with a message when its folder under ``../shared/data`` is absent:

``lcd_ct_cct189`` (FDA LCD-CT, MITA-LCD phantom CCT189, 256 x 256, 10 signal-present and 10
signal-absent images per dose)
    Detectability of the four low-contrast discs (14, 7, 5 and 3 HU; located on
    ``fbp/ground_truth.mhd``) at 10 %, 55 % and 100 % dose for FBP, the FDA's DL-denoised
    images, the default of every model applied to the FBP images and DID candidates of one model
    (``--did-model``) at strengths ``s`` = -1, -0.5, +0.5, +1 (``CandidateStack.interpolate``;
    DID is run separately on every image, fast mode, 4 candidates per direction).

    * CHO: Laguerre-Gauss channels (:func:`ctdid.metrics.laguerre_gauss_channels`, 5 channels,
      width = disc diameter) centred on the disc. Signal-present outputs: the 10 images at the
      disc. Signal-absent outputs: the 10 signal-absent images at 8 positions on the disc's
      circle (the disc's and 7 others 45 degrees apart; the background and the channels are
      rotationally symmetric). Pooled covariance, d'^2 corrected for the small-sample bias
      of Hotelling's statistic (the uncorrected value is reported too); AUC = Phi(d'/sqrt 2);
      95 % interval from a delete-one-image jackknife.
    * NPW: :func:`ctdid.metrics.npw_detectability` from the NPS of the signal-absent ensemble
      (each image minus the ensemble mean, 32-pixel patches inside 0.8 of the phantom radius)
      and the TTF of the phantom's water/air edge on the ensemble-mean image
      (:func:`ctdid.metrics.ttf_from_insert`). That is a 1000 HU edge: for non-linear
      denoisers it overstates the transfer of 3-14 HU discs, hence the NPW d' as well.

    The files carry no pixel size. The default (``--lcd-pixel edge``) assumes the phantom is
    200 mm across and divides by its diameter in pixels on the ground truth (about 0.86 mm).
    The discs then measure about 4/3 of their nominal 3/5/7/10 mm (``--lcd-pixel discs`` uses
    the nominal disc sizes instead, about 0.65 mm, i.e. a 150 mm phantom). CHO and NPW d' do not
    depend on this choice (disc sizes are measured in pixels); frequencies in cycles/mm do.

``catphan504_cbct`` (CatPhan 504, cone-beam CT, 0.488 mm pixels)
    Modules found by content: the CTP404 slices are those with both air (< -500 HU) and Teflon
    (> 500 HU) inside the phantom; the uniform CTP486 slices are the contiguous run with the
    least structure (mean gradient of a 2 mm-smoothed image, inner 60 % of the radius; the
    run around the least structured slice free of air and dense material, of slices whose
    score is nearer the least structured than the median such slice). TTF
    (MTF50/MTF10) from the largest air insert of CTP404 (mean over the chosen slices) and NPS
    (64-pixel patches, plane removed, inner 55 % of the radius) for the input, each model's
    default and DID candidates of ``--did-model`` (DID run on every chosen slice).

``mayo_pair_L506`` (quarter dose and full dose, 0.7 mm pixels assumed)
    Along the DID curve of ``--did-model`` (every candidate of ``run``, fast mode) and for each
    model's default: RMSE vs full dose inside the body, STD in flat regions found on the full
    dose (plane removed, median), NPS mean frequency (flat regions of about 22 mm) and the
    MTF50 of the skin edge (:func:`ctdid.metrics.resolution_label`).

Usage, from the checkout::

    .venv/bin/python benchmarks/eval_metrics_real.py [--quick] [--models unet-d25 ...]
        [--did-model unet-d25] [--json out.json] [--markdown out.md] [--figures DIR]
        [--threads 2]

``--quick`` runs DID on the LCD images of the 10 % dose only and on one slice per CatPhan
module. The script is importable; its functions are tested in
``tests/test_eval_metrics_real.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage, stats

from ctdid.metrics import (
    MTF,
    NoisePowerSpectrum,
    find_body_mask,
    find_flat_regions,
    laguerre_gauss_channels,
    noise_label,
    nps_2d,
    nps_mean_frequency,
    npw_detectability,
    radial_average,
    resolution_label,
    rmse,
    tile_patches,
    ttf_from_insert,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
LCD_NAME = "lcd_ct_cct189"
CATPHAN_NAME = "catphan504_cbct"
L506_NAME = "mayo_pair_L506"

#: LCD dose folders and their dose fractions.
LCD_DOSES: tuple[tuple[str, float], ...] = (
    ("dose_010", 0.10),
    ("dose_055", 0.55),
    ("dose_100", 1.0),
)
#: How to read each LCD folder: ``read_volume`` keywords (README "The real data").
LCD_SOURCES: dict[str, dict[str, Any]] = {
    "fbp": {"hu_offset": -1000.0},
    "DL_denoised": {"dtype": ">u2", "hu_offset": -33768.0},
}
#: Display names of the LCD image sources.
LCD_SOURCE_NAMES = {"fbp": "FBP", "DL_denoised": "FDA DL"}
#: MITA-LCD phantom CCT189: diameter and nominal disc diameter (mm) by contrast (HU).
CCT189_DIAMETER_MM = 200.0
CCT189_DISC_MM: dict[int, float] = {14: 3.0, 7: 5.0, 5: 7.0, 3: 10.0}
#: Laguerre-Gauss channels of the CHO.
CHO_CHANNELS = 5
#: Signal-absent positions per image on the disc's circle.
CHO_POSITIONS = 8
#: DID strengths evaluated (0 is the model default, reported as the model's row).
DID_STRENGTHS: tuple[float, ...] = (-1.0, -0.5, 0.5, 1.0)
DID_CANDIDATES = 4
L506_FILES = ("L506_QD_3mm_D45_slice32.raw", "L506_FD_3mm_D45_slice32.raw")
L506_SPACING_MM = 0.7
DEFAULT_DID_MODEL = "unet-d25"

Log = Callable[[str], None]
Images = NDArray[np.float32]


# ---------------------------------------------------------------------------------------------
# models


def load_models(
    names: Sequence[str] | None = None, *, weights_dir: str | Path | None = None
) -> dict[str, torch.nn.Module]:
    """Shipped models by name (default: every model in ``weights_dir``), in eval mode.

    Parameters
    ----------
    names : sequence of str, optional
        Model names; default all of :func:`ctdid.models.available_models`.
    weights_dir : str or Path, optional
        Folder of ``<name>.safetensors`` + ``<name>.card.yaml``; default the shipped folder.

    Returns
    -------
    dict of str to nn.Module
        HU-to-HU adapters.
    """
    from ctdid.models import available_models, load_model

    if names is None:
        names = available_models(weights_dir=weights_dir)
    return {n: load_model(n, weights_dir=weights_dir).eval() for n in names}


def denoise(model: torch.nn.Module, images: ArrayLike) -> Images:
    """Apply an HU-to-HU model to every slice of a stack, without gradients.

    Parameters
    ----------
    model : nn.Module
        Maps (B, 1, H, W) HU to HU.
    images : array_like, shape (n, H, W) or (H, W)
        Slices in HU.

    Returns
    -------
    ndarray of float32
        Denoised slices in HU, same shape.
    """
    arr = np.asarray(images, dtype=np.float32)
    flat = arr.ndim == 2
    stack = arr[None] if flat else arr
    out = np.empty_like(stack)
    with torch.no_grad():
        for i, sl in enumerate(stack):
            y = model(torch.from_numpy(np.array(sl))[None, None])
            out[i] = y[0, 0].detach().cpu().numpy()
    return out[0] if flat else out


def did_images(
    model: torch.nn.Module,
    images: ArrayLike,
    strengths: Sequence[float] = DID_STRENGTHS,
    *,
    n_candidates: int = DID_CANDIDATES,
    seed: int = 0,
) -> tuple[dict[float, Images], float]:
    """Run DID (fast mode) on every slice and take the image at each strength.

    Parameters
    ----------
    model : nn.Module
        HU-to-HU denoiser.
    images : array_like, shape (n, H, W)
        Slices in HU; DID is run on each separately.
    strengths : sequence of float
        Strengths in [-1, 1] passed to ``CandidateStack.interpolate``.
    n_candidates : int, optional
        Candidates per direction.
    seed : int, optional
        Engine seed.

    Returns
    -------
    images : dict of float to ndarray, shape (n, H, W)
        Float32 HU images per strength.
    seconds : float
        Mean DID run time per slice in s.
    """
    from ctdid.core import InteractiveDenoiser

    arr = np.asarray(images, dtype=np.float32)
    out = {float(s): np.empty_like(arr) for s in strengths}
    t0 = time.perf_counter()
    for i, sl in enumerate(arr):
        engine = InteractiveDenoiser(model, mode="fast", n_candidates=n_candidates, seed=seed)
        stack = engine.run(np.array(sl))
        for s in out:
            out[s][i] = stack.interpolate(s)
    return out, (time.perf_counter() - t0) / max(len(arr), 1)


def did_label(model: str, s: float) -> str:
    """Name of a DID candidate row, e.g. ``"unet-d25 DID s=+0.5"``."""
    return f"{model} DID s={s:+.1f}"


# ---------------------------------------------------------------------------------------------
# LCD phantom: geometry


@dataclasses.dataclass(frozen=True)
class Disc:
    """A low-contrast disc of the MITA-LCD phantom, measured on the ground truth.

    Attributes
    ----------
    contrast_hu : float
        Contrast against the water background in HU.
    center : (float, float)
        Centre (row, col) in pixel indices.
    diameter_px : float
        Equivalent diameter (from the integrated contrast) in pixels.
    nominal_mm : float or None
        Nominal CCT189 diameter in mm for this contrast.
    """

    contrast_hu: float
    center: tuple[float, float]
    diameter_px: float
    nominal_mm: float | None


@dataclasses.dataclass(frozen=True)
class LCDGeometry:
    """Where the phantom and its discs are, and the pixel size estimates.

    Attributes
    ----------
    center : (float, float)
        Phantom centre (row, col) in pixel indices.
    diameter_px : float
        Phantom equivalent diameter in pixels.
    discs : tuple of Disc
        The discs, highest contrast first.
    pixel_from_edge_mm : float
        ``CCT189_DIAMETER_MM / diameter_px``: pixel size if the phantom is 200 mm across.
    pixel_from_discs_mm : float
        Median of ``nominal_mm / diameter_px`` over the discs: pixel size if the discs have
        their nominal sizes (NaN if no disc has a nominal size).
    """

    center: tuple[float, float]
    diameter_px: float
    discs: tuple[Disc, ...]
    pixel_from_edge_mm: float
    pixel_from_discs_mm: float

    def positions(self, disc: Disc, n: int = CHO_POSITIONS) -> list[tuple[float, float]]:
        """``n`` points on the disc's circle around the phantom centre, the disc's first.

        Returns
        -------
        list of (float, float)
            Centres (row, col) in pixel indices, ``360 / n`` degrees apart.
        """
        dy, dx = disc.center[0] - self.center[0], disc.center[1] - self.center[1]
        radius, angle = math.hypot(dy, dx), math.atan2(dy, dx)
        return [
            (
                self.center[0] + radius * math.sin(angle + 2 * math.pi * k / n),
                self.center[1] + radius * math.cos(angle + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]


def lcd_geometry(
    truth: ArrayLike,
    *,
    phantom_mm: float = CCT189_DIAMETER_MM,
    nominal_mm: Mapping[int, float] = CCT189_DISC_MM,
) -> LCDGeometry:
    """Find the phantom and the discs on a ground-truth image.

    Parameters
    ----------
    truth : array_like, shape (y, x)
        Noise-free image in HU: water 0, air -1000, discs of a few HU.
    phantom_mm : float, optional
        Phantom diameter in mm, for :attr:`LCDGeometry.pixel_from_edge_mm`.
    nominal_mm : mapping of int to float, optional
        Nominal disc diameter in mm by contrast in HU.

    Returns
    -------
    LCDGeometry

    Raises
    ------
    ValueError
        If no phantom or no disc is found.
    """
    t = np.asarray(truth, dtype=np.float64)
    phantom = ndimage.binary_fill_holes(t > -500)
    if phantom.sum() < 100:
        raise ValueError("no phantom in the ground truth")
    rows, cols = np.nonzero(phantom)
    center = (float(rows.mean()), float(cols.mean()))
    diameter = 2.0 * math.sqrt(float(phantom.sum()) / math.pi)
    interior = ndimage.binary_erosion(phantom, iterations=3)
    lab, n = ndimage.label(interior & (t > 0.5))
    yy, xx = np.mgrid[: t.shape[0], : t.shape[1]]
    discs = []
    for i in range(1, n + 1):
        comp = lab == i
        contrast = float(np.round(t[comp].max()))
        if contrast <= 0 or comp.sum() < 2:
            continue
        w = np.where(comp, t, 0.0)
        cy, cx = float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum())
        reach = math.sqrt(comp.sum() / math.pi) + 3.0
        near = (np.hypot(yy - cy, xx - cx) <= reach) & interior
        area = float(np.clip(t[near], 0.0, None).sum()) / contrast
        discs.append(
            Disc(
                contrast_hu=contrast,
                center=(cy, cx),
                diameter_px=2.0 * math.sqrt(area / math.pi),
                nominal_mm=nominal_mm.get(round(contrast)),
            )
        )
    if not discs:
        raise ValueError("no disc found in the ground truth")
    discs.sort(key=lambda d: -d.contrast_hu)
    ratios = [d.nominal_mm / d.diameter_px for d in discs if d.nominal_mm is not None]
    return LCDGeometry(
        center=center,
        diameter_px=diameter,
        discs=tuple(discs),
        pixel_from_edge_mm=phantom_mm / diameter,
        pixel_from_discs_mm=float(np.median(ratios)) if ratios else math.nan,
    )


def lcd_pixel_mm(geometry: LCDGeometry, choice: str) -> float:
    """Pixel size in mm: ``"edge"``, ``"discs"`` (see :class:`LCDGeometry`) or a number.

    Raises
    ------
    ValueError
        If ``choice`` is none of these or gives a non-positive size.
    """
    if choice == "edge":
        value = geometry.pixel_from_edge_mm
    elif choice == "discs":
        value = geometry.pixel_from_discs_mm
    else:
        try:
            value = float(choice)
        except ValueError:
            raise ValueError(
                f"--lcd-pixel must be edge, discs or a size in mm, got {choice!r}"
            ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"pixel size {value!r} mm is not usable")
    return value


# ---------------------------------------------------------------------------------------------
# LCD phantom: observers


def channel_outputs(
    images: ArrayLike,
    centers: Sequence[tuple[float, float]],
    *,
    width_px: float,
    n_channels: int = CHO_CHANNELS,
) -> NDArray[np.float64]:
    """Laguerre-Gauss channel outputs of every image at every centre.

    The channels (:func:`ctdid.metrics.laguerre_gauss_channels`, pixel units) are evaluated on
    a square of half-side ``ceil(2.5 width_px)`` pixels around each centre, at its sub-pixel
    position.

    Parameters
    ----------
    images : array_like, shape (n, y, x)
        Images in HU.
    centers : sequence of (float, float)
        Channel centres (row, col) in pixel indices.
    width_px : float
        Channel width ``a`` in pixels.
    n_channels : int, optional
        Number of channels.

    Returns
    -------
    ndarray, shape (n, len(centers), n_channels)
        Outputs in HU (channels have unit norm).

    Raises
    ------
    ValueError
        If a square does not fit in the image.
    """
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"images must be (n, y, x), got shape {arr.shape}")
    half = math.ceil(2.5 * width_px)
    out = np.empty((arr.shape[0], len(centers), n_channels))
    for k, (cy, cx) in enumerate(centers):
        r0, c0 = round(cy) - half, round(cx) - half
        r1, c1 = r0 + 2 * half + 1, c0 + 2 * half + 1
        if r0 < 0 or c0 < 0 or r1 > arr.shape[1] or c1 > arr.shape[2]:
            raise ValueError(f"the channel square around {(cy, cx)} leaves the image")
        chans = laguerre_gauss_channels(
            (2 * half + 1, 2 * half + 1),
            n_channels=n_channels,
            width=width_px,
            center=(cy - r0, cx - c0),
        ).reshape(n_channels, -1)
        out[:, k] = arr[:, r0:r1, c0:c1].reshape(arr.shape[0], -1) @ chans.T
    return out


def hotelling_d2(v1: ArrayLike, v0: ArrayLike, *, unbiased: bool = True) -> float:
    """Hotelling detectability squared of two sets of channel outputs, pooled covariance.

    ``T = dv^T S^-1 dv`` with ``dv`` the difference of the class means and ``S`` the pooled
    covariance. For Gaussian outputs ``E[T] = (N - 2) / (N - p - 3) (d^2 + p (1/n1 + 1/n0))``
    (``N = n1 + n0``, ``p`` channels), so the unbiased estimate of ``d^2`` is
    ``(N - p - 3) / (N - 2) T - p (1/n1 + 1/n0)``; it may be negative.

    Parameters
    ----------
    v1, v0 : array_like, shape (n1, p) and (n0, p)
        Channel outputs of signal-present and signal-absent images.
    unbiased : bool, optional
        Apply the small-sample correction (default); otherwise return ``T``.

    Returns
    -------
    float
        d'^2 (dimensionless).

    Raises
    ------
    ValueError
        With fewer than ``p + 4`` samples in all or fewer than 2 in a class.
    """
    a = np.asarray(v1, dtype=np.float64)
    b = np.asarray(v0, dtype=np.float64)
    n1, n0, p = len(a), len(b), a.shape[1]
    big_n = n1 + n0
    if n1 < 2 or n0 < 2 or big_n < p + 4:
        raise ValueError(f"need at least {p + 4} samples in all and 2 per class")
    dv = a.mean(axis=0) - b.mean(axis=0)
    s = ((n1 - 1) * np.cov(a, rowvar=False) + (n0 - 1) * np.cov(b, rowvar=False)) / (big_n - 2)
    t = float(dv @ np.linalg.solve(np.atleast_2d(s), dv))
    if not unbiased:
        return t
    return (big_n - p - 3) / (big_n - 2) * t - p * (1.0 / n1 + 1.0 / n0)


def hotelling_dprime(v1: ArrayLike, v0: ArrayLike, *, unbiased: bool = True) -> float:
    """d' = ``sqrt(max(d'^2, 0))`` of :func:`hotelling_d2` (same parameters)."""
    return math.sqrt(max(hotelling_d2(v1, v0, unbiased=unbiased), 0.0))


def cho_study(v1: ArrayLike, v0: ArrayLike) -> dict[str, float]:
    """CHO d', AUC and a jackknife interval over images.

    The interval is ``d'^2 +- 1.96 SE`` (unbiased ``d'^2``; SE from the two-sample
    delete-one-image jackknife, the ``k`` positions of a signal-absent image deleted together),
    each end mapped to d' by ``sqrt(max(., 0))``. (A bootstrap would duplicate images, which
    raises Hotelling's statistic, and so bias the interval upward.)

    Parameters
    ----------
    v1 : array_like, shape (n1, p)
        Signal-present outputs, one per image.
    v0 : array_like, shape (n0, k, p) or (n0, p)
        Signal-absent outputs, ``k`` positions per image.

    Returns
    -------
    dict
        ``d_prime`` (bias-corrected), ``d_prime_raw`` (uncorrected), ``d2`` and ``d2_se``
        (unbiased d'^2, unclipped, and its jackknife standard error), ``auc``
        (``Phi(d'/sqrt 2)``), ``ci_low`` and ``ci_high`` (95 % interval of d'),
        ``n_present``, ``n_absent`` (outputs).
    """
    a = np.asarray(v1, dtype=np.float64)
    b = np.asarray(v0, dtype=np.float64)
    if b.ndim == 2:
        b = b[:, None, :]
    p = a.shape[1]
    flat0 = b.reshape(-1, p)
    d2 = hotelling_d2(a, flat0)
    var = 0.0
    for n, leave_out in (
        (len(a), lambda i: hotelling_d2(np.delete(a, i, axis=0), flat0)),
        (len(b), lambda i: hotelling_d2(a, np.delete(b, i, axis=0).reshape(-1, p))),
    ):
        thetas = np.array([leave_out(i) for i in range(n)])
        var += (n - 1) / n * float(((thetas - thetas.mean()) ** 2).sum())
    se = math.sqrt(var)
    d = math.sqrt(max(d2, 0.0))
    return {
        "d_prime": d,
        "d_prime_raw": hotelling_dprime(a, flat0, unbiased=False),
        "d2": d2,
        "d2_se": se,
        "auc": float(stats.norm.cdf(d / math.sqrt(2.0))),
        "ci_low": math.sqrt(max(d2 - 1.96 * se, 0.0)),
        "ci_high": math.sqrt(max(d2 + 1.96 * se, 0.0)),
        "n_present": len(a),
        "n_absent": len(flat0),
    }


def noise_only(images: ArrayLike) -> NDArray[np.float64]:
    """Noise realisations of an ensemble of one object: each image minus the ensemble mean,
    scaled by ``sqrt(n / (n - 1))`` so that the variance is that of one image (HU)."""
    arr = np.asarray(images, dtype=np.float64)
    n = arr.shape[0]
    if n < 2:
        raise ValueError("need at least two images of the same object")
    return np.asarray((arr - arr.mean(axis=0)) * math.sqrt(n / (n - 1)))


def disc_mask(
    shape: tuple[int, int], center: tuple[float, float], radius_px: float
) -> NDArray[np.bool_]:
    """Pixels whose centres lie within ``radius_px`` of ``center`` (row, col)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.asarray(np.hypot(yy - center[0], xx - center[1]) <= radius_px)


def lcd_noise(
    absent: ArrayLike, geometry: LCDGeometry, *, spacing: float, size: int = 32
) -> tuple[NoisePowerSpectrum, float]:
    """NPS and noise STD of a signal-absent ensemble inside 0.8 of the phantom radius.

    Patches of ``size`` pixels (halved, down to 8, until one fits) tile the noise-only images
    (:func:`noise_only`).

    Returns
    -------
    nps : NoisePowerSpectrum
        In HU^2 mm^2 over cycles/mm.
    std : float
        Noise standard deviation in HU.
    """
    noise = noise_only(absent)
    inner = disc_mask(noise.shape[1:], geometry.center, 0.4 * geometry.diameter_px)
    patches = tile_patches(noise, size=size, mask=inner)
    while len(patches) == 0 and size > 8:
        size //= 2
        patches = tile_patches(noise, size=size, mask=inner)
    if len(patches) == 0:
        raise ValueError("no noise patch fits in the phantom")
    nps = nps_2d(patches, spacing=spacing, detrend="mean")
    return nps, float(noise[:, inner].std())


def phantom_ttf(mean_image: ArrayLike, geometry: LCDGeometry, *, spacing: float) -> MTF:
    """TTF of the phantom's water/air edge, the whole phantom taken as a circular insert."""
    return ttf_from_insert(
        mean_image,
        spacing=spacing,
        center=geometry.center,
        radius_mm=0.5 * geometry.diameter_px * spacing,
    )


def lcd_method_rows(
    present: ArrayLike,
    absent: ArrayLike,
    geometry: LCDGeometry,
    *,
    spacing: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """CHO and NPW detectability of every disc for one method at one dose.

    Parameters
    ----------
    present, absent : array_like, shape (n, y, x)
        Signal-present and signal-absent images in HU.
    geometry : LCDGeometry
        Phantom and discs.
    spacing : float
        Pixel size in mm.

    Returns
    -------
    rows : list of dict
        One per disc: ``contrast_hu``, ``diameter_mm``, the :func:`cho_study` keys prefixed
        ``cho_`` and ``npw_d_prime``.
    noise : dict
        ``noise_hu``, ``nps_mean_frequency`` (cycles/mm), ``ttf50`` (cycles/mm) and the radial
        ``nps`` and ``ttf`` curves.
    """
    sp = np.asarray(present, dtype=np.float64)
    sa = np.asarray(absent, dtype=np.float64)
    nps, std = lcd_noise(sa, geometry, spacing=spacing)
    try:
        ttf: MTF | None = phantom_ttf(sa.mean(axis=0), geometry, spacing=spacing)
    except ValueError:
        ttf = None
    rows = []
    for disc in geometry.discs:
        width = disc.diameter_px
        v1 = channel_outputs(sp, [disc.center], width_px=width)[:, 0]
        v0 = channel_outputs(sa, geometry.positions(disc), width_px=width)
        cho = cho_study(v1, v0)
        npw = npw_detectability(
            nps, diameter_mm=disc.diameter_px * spacing, contrast_hu=disc.contrast_hu, ttf=ttf
        )
        rows.append(
            {
                "contrast_hu": disc.contrast_hu,
                "diameter_mm": disc.diameter_px * spacing,
                **{f"cho_{key}": value for key, value in cho.items()},
                "npw_d_prime": npw,
            }
        )
    f, p = radial_average(nps)
    noise = {
        "noise_hu": std,
        "nps_mean_frequency": nps_mean_frequency(nps),
        "ttf50": math.nan if ttf is None else ttf.mtf50,
        "nps": {"f": f.tolist(), "nps": p.tolist()},
        "ttf": None if ttf is None else {"f": ttf.frequencies.tolist(), "ttf": ttf.mtf.tolist()},
    }
    return rows, noise


def load_lcd(folder: Path, *, log: Log = print) -> dict[str, Any] | None:
    """The LCD images, or None (with a message) when the folder is absent.

    Returns
    -------
    dict
        ``truth`` (y, x) and ``images[source][dose_folder]`` = (present, absent), each
        (n, y, x) float32 HU, for the sources of :data:`LCD_SOURCES` found.
    """
    from ctdid.io import read_volume

    truth_path = folder / "fbp" / "ground_truth.mhd"
    if not truth_path.is_file():
        log(f"skipping the LCD phantom: {truth_path} not found")
        return None
    truth = read_volume(truth_path, hu_offset=-1000).hu[0]
    images: dict[str, dict[str, tuple[Images, Images]]] = {}
    for source, kw in LCD_SOURCES.items():
        for dose, _ in LCD_DOSES:
            paths = [
                folder / source / dose / c / f"{c}.mhd" for c in ("signal_present", "signal_absent")
            ]
            if not all(p.is_file() for p in paths):
                log(f"LCD: {source}/{dose} not found, left out")
                continue
            sp, sa = (np.asarray(read_volume(p, **kw).hu, dtype=np.float32) for p in paths)
            images.setdefault(source, {})[dose] = (sp, sa)
    return {"truth": truth, "images": images}


def evaluate_lcd(
    data: Mapping[str, Any],
    models: Mapping[str, torch.nn.Module],
    *,
    did_model: str | None,
    did_doses: Sequence[str],
    pixel: str = "edge",
    strengths: Sequence[float] = DID_STRENGTHS,
    log: Log = print,
) -> dict[str, Any]:
    """Detectability of the four discs for every method and dose.

    Parameters
    ----------
    data : mapping
        From :func:`load_lcd`.
    models : mapping of str to nn.Module
        Models whose defaults are applied to the FBP images.
    did_model : str or None
        Model of the DID candidates (None: no DID).
    did_doses : sequence of str
        Dose folders on which DID is run.
    pixel : str, optional
        Pixel size choice, see :func:`lcd_pixel_mm`.
    strengths : sequence of float, optional
        DID strengths.
    log : callable, optional
        Progress messages.

    Returns
    -------
    dict
        ``geometry`` (phantom, discs, pixel sizes), ``rows`` (one per method, dose and disc),
        ``noise`` (one per method and dose), ``did_seconds_per_image``.
    """
    geom = lcd_geometry(data["truth"])
    spacing = lcd_pixel_mm(geom, pixel)
    log(
        f"LCD: phantom {geom.diameter_px:.1f} px across -> {geom.pixel_from_edge_mm:.3f} mm/px "
        f"if 200 mm; discs -> {geom.pixel_from_discs_mm:.3f} mm/px; using {spacing:.3f} mm"
    )
    rows: list[dict[str, Any]] = []
    noise_rows: list[dict[str, Any]] = []
    did_seconds: list[float] = []
    dose_of = dict(LCD_DOSES)

    def measure(method: str, dose: str, sp: ArrayLike, sa: ArrayLike) -> None:
        per_disc, noise = lcd_method_rows(sp, sa, geom, spacing=spacing)
        base = {"method": method, "dose": dose_of[dose]}
        rows.extend({**base, **r} for r in per_disc)
        noise_rows.append({**base, **noise})
        ds = ", ".join(f"{r['cho_d_prime']:.2f}" for r in per_disc)
        log(
            f"  {method:>24} dose {dose_of[dose]:.2f}: noise {noise['noise_hu']:.1f} HU, "
            f"CHO d' {ds}"
        )

    for source, by_dose in data["images"].items():
        for dose, (sp, sa) in by_dose.items():
            measure(LCD_SOURCE_NAMES.get(source, source), dose, sp, sa)
    fbp = data["images"].get("fbp", {})
    for name, model in models.items():
        for dose, (sp, sa) in fbp.items():
            measure(name, dose, denoise(model, sp), denoise(model, sa))
            if name == did_model and dose in did_doses:
                cand_p, tp = did_images(model, sp, strengths)
                cand_a, ta = did_images(model, sa, strengths)
                did_seconds.append(0.5 * (tp + ta))
                log(f"  DID on {2 * len(sp)} images at {dose}: {0.5 * (tp + ta):.1f} s per image")
                for s in strengths:
                    measure(did_label(name, s), dose, cand_p[s], cand_a[s])
    return {
        "geometry": {
            "center": list(geom.center),
            "diameter_px": geom.diameter_px,
            "pixel_from_edge_mm": geom.pixel_from_edge_mm,
            "pixel_from_discs_mm": geom.pixel_from_discs_mm,
            "pixel_used_mm": spacing,
            "pixel_choice": pixel,
            "discs": [dataclasses.asdict(d) for d in geom.discs],
        },
        "rows": rows,
        "noise": noise_rows,
        "did_seconds_per_image": float(np.mean(did_seconds)) if did_seconds else None,
    }


# ---------------------------------------------------------------------------------------------
# CatPhan 504


def _inner_mask(
    img: NDArray[Any], fraction: float
) -> tuple[NDArray[np.bool_], tuple[float, float], float]:
    body = find_body_mask(img)
    if body.sum() < 100:
        raise ValueError("no phantom in the slice")
    rows, cols = np.nonzero(body)
    center = (float(rows.mean()), float(cols.mean()))
    radius = math.sqrt(float(body.sum()) / math.pi)
    return disc_mask(img.shape, center, fraction * radius), center, radius


def catphan_modules(
    hu: ArrayLike, *, spacing: tuple[float, float], n_slices: int = 3
) -> dict[str, Any]:
    """Find the CTP404 and uniform (CTP486) slices of a CatPhan volume by their content.

    Parameters
    ----------
    hu : array_like, shape (z, y, x)
        Volume in HU.
    spacing : (float, float)
        Pixel size (dy, dx) in mm.
    n_slices : int, optional
        Slices to keep per module (the central ones of each run).

    Returns
    -------
    dict
        ``ctp404`` and ``uniform``: lists of slice indices (empty if not found);
        ``structure``: per-slice structure score (mean gradient in HU/mm of the 2 mm-smoothed
        slice, inner 60 % of the radius); ``air_px`` and ``dense_px``: per-slice pixel
        counts below -500 HU and above 500 HU in that region.
    """
    vol = np.asarray(hu, dtype=np.float64)
    dy, dx = spacing
    score, air, dense = [], [], []
    for sl in vol:
        try:
            inner, _, _ = _inner_mask(sl, 0.6)
        except ValueError:
            score.append(math.inf)
            air.append(0)
            dense.append(0)
            continue
        sm = ndimage.gaussian_filter(sl, (2.0 / dy, 2.0 / dx))
        gy, gx = np.gradient(sm, dy, dx)
        score.append(float(np.hypot(gy, gx)[inner].mean()))
        air.append(int((sl[inner] < -500).sum()))
        dense.append(int((sl[inner] > 500).sum()))
    a, d, s = np.asarray(air), np.asarray(dense), np.asarray(score)
    insert_px = math.pi * (6.0 / dy) * (6.0 / dx) * 0.5  # half a 12 mm insert
    both = (a >= insert_px) & (d >= insert_px)
    ctp404 = _central(_longest_run(both), n_slices)
    clean = (a == 0) & (d == 0) & np.isfinite(s)
    uniform: list[int] = []
    if clean.any():
        # uniform: the run around the least structured clean slice, of the clean slices nearer
        # to it than to the median clean slice (at least those within 15 % of it)
        best, median = float(s[clean].min()), float(np.median(s[clean]))
        limit = max(1.15 * best, 0.5 * (best + median))
        k = int(np.argmin(np.where(clean, s, np.inf)))
        uniform = _central(_run_around(clean & (s <= limit), k), n_slices)
    return {
        "ctp404": ctp404,
        "uniform": uniform,
        "structure": s.tolist(),
        "air_px": a.tolist(),
        "dense_px": d.tolist(),
    }


def _longest_run(flags: NDArray[np.bool_]) -> list[int]:
    best: list[int] = []
    cur: list[int] = []
    for i, f in enumerate(flags):
        cur = [*cur, i] if f else []
        if len(cur) > len(best):
            best = cur
    return best


def _run_around(flags: NDArray[np.bool_], k: int) -> list[int]:
    if not flags[k]:
        return [k]
    lo = hi = k
    while lo > 0 and flags[lo - 1]:
        lo -= 1
    while hi < len(flags) - 1 and flags[hi + 1]:
        hi += 1
    return list(range(lo, hi + 1))


def _central(run: list[int], n: int) -> list[int]:
    if len(run) <= n:
        return run
    start = (len(run) - n) // 2
    return run[start : start + n]


def catphan_air_insert(
    img: ArrayLike, *, spacing: tuple[float, float]
) -> tuple[tuple[float, float], float]:
    """Centre (row, col) in pixels and radius in mm of the largest air insert of CTP404.

    Raises
    ------
    ValueError
        If no air region lies inside the phantom.
    """
    arr = np.asarray(img, dtype=np.float64)
    inner, _, _ = _inner_mask(arr, 0.8)
    lab, n = ndimage.label(inner & (arr < -500))
    if n == 0:
        raise ValueError("no air insert found")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    comp = lab == int(np.argmax(sizes))
    rows, cols = np.nonzero(comp)
    radius_mm = math.sqrt(float(comp.sum()) * spacing[0] * spacing[1] / math.pi)
    return (float(rows.mean()), float(cols.mean())), radius_mm


def catphan_nps(
    slices: ArrayLike, *, spacing: tuple[float, float], size: int = 64
) -> tuple[NoisePowerSpectrum, float]:
    """NPS and STD of uniform slices: ``size``-pixel patches (half overlapping, plane removed)
    inside 55 % of the phantom radius (``size`` halved, down to 16, until one fits).

    Returns
    -------
    nps : NoisePowerSpectrum
    std : float
        ``sqrt`` of the NPS integral, in HU.
    """
    vol = np.asarray(slices, dtype=np.float64)
    masks = [_inner_mask(sl, 0.55)[0] for sl in vol]
    while True:
        allp = np.concatenate(
            [
                tile_patches(sl, size=size, mask=m, step=size // 2)
                for sl, m in zip(vol, masks, strict=True)
            ]
        )
        if len(allp) or size <= 16:
            break
        size //= 2
    if len(allp) == 0:
        raise ValueError("no noise patch fits in the uniform module")
    nps = nps_2d(allp, spacing=spacing, detrend="plane")
    return nps, math.sqrt(nps.variance)


def load_catphan(
    folder: Path, *, log: Log = print
) -> tuple[NDArray[np.float32], tuple[float, float]] | None:
    """The CatPhan volume in HU and its pixel size (dy, dx) in mm, or None when absent."""
    from ctdid.io import read_volume

    if not folder.is_dir() or not any(folder.glob("*.dcm")):
        log(f"skipping CatPhan: no DICOM files in {folder}")
        return None
    vol = read_volume(folder)
    return np.asarray(vol.hu, dtype=np.float32), (float(vol.spacing[1]), float(vol.spacing[2]))


def evaluate_catphan(
    hu: ArrayLike,
    spacing: tuple[float, float],
    models: Mapping[str, torch.nn.Module],
    *,
    did_model: str | None,
    n_slices: int = 3,
    strengths: Sequence[float] = DID_STRENGTHS,
    log: Log = print,
) -> dict[str, Any]:
    """TTF of the CTP404 air insert and NPS of the uniform module for every method.

    Parameters
    ----------
    hu : array_like, shape (z, y, x)
        CatPhan volume in HU.
    spacing : (float, float)
        Pixel size (dy, dx) in mm.
    models : mapping of str to nn.Module
        Models whose defaults are evaluated.
    did_model : str or None
        Model of the DID candidates.
    n_slices : int, optional
        Slices per module.
    strengths : sequence of float, optional
        DID strengths.
    log : callable, optional
        Progress messages.

    Returns
    -------
    dict
        ``modules`` (slice indices and scores), ``insert`` (centre, radius), ``rows`` (one per
        method: ``mtf50``, ``mtf10`` in cycles/mm, ``noise_hu``, ``nps_mean_frequency``) and
        ``curves`` (radial NPS and TTF per method), ``did_seconds_per_slice``.
    """
    vol = np.asarray(hu, dtype=np.float32)
    mods = catphan_modules(vol, spacing=spacing, n_slices=n_slices)
    log(f"CatPhan: CTP404 slices {mods['ctp404']}, uniform slices {mods['uniform']}")
    if not mods["ctp404"] or not mods["uniform"]:
        log("skipping CatPhan: modules not found")
        return {"modules": mods, "rows": [], "curves": {}}
    edge_in = vol[mods["ctp404"]]
    flat_in = vol[mods["uniform"]]
    center, radius_mm = catphan_air_insert(edge_in.mean(axis=0), spacing=spacing)
    variants: dict[str, tuple[NDArray[Any], NDArray[Any]]] = {"input": (edge_in, flat_in)}
    did_seconds = None
    for name, model in models.items():
        variants[name] = (denoise(model, edge_in), denoise(model, flat_in))
        if name == did_model:
            ce, te = did_images(model, edge_in, strengths)
            cf, tf = did_images(model, flat_in, strengths)
            did_seconds = 0.5 * (te + tf)
            log(f"  DID on {len(edge_in) + len(flat_in)} slices: {did_seconds:.1f} s per slice")
            for s in strengths:
                variants[did_label(name, s)] = (ce[s], cf[s])
    rows, curves = [], {}
    for method, (e, fl) in variants.items():
        try:
            ttf: MTF | None = ttf_from_insert(
                e.mean(axis=0), spacing=spacing, center=center, radius_mm=radius_mm
            )
        except ValueError as exc:
            log(f"  {method}: no TTF ({exc})")
            ttf = None
        nps, std = catphan_nps(fl, spacing=spacing)
        f, p = radial_average(nps)
        row = {
            "method": method,
            "mtf50": math.nan if ttf is None else ttf.mtf50,
            "mtf10": math.nan if ttf is None else ttf.mtf10,
            "noise_hu": std,
            "nps_mean_frequency": nps_mean_frequency(nps),
        }
        rows.append(row)
        curves[method] = {
            "nps": {"f": f.tolist(), "nps": p.tolist()},
            "ttf": None
            if ttf is None
            else {"f": ttf.frequencies.tolist(), "ttf": ttf.mtf.tolist()},
        }
        log(
            f"  {method:>24}: TTF50 {row['mtf50']:.3f} /mm, noise {std:.1f} HU, "
            f"NPS mean f {row['nps_mean_frequency']:.3f} /mm"
        )
    return {
        "modules": mods,
        "insert": {"center": list(center), "radius_mm": radius_mm},
        "rows": rows,
        "curves": curves,
        "did_seconds_per_slice": did_seconds,
    }


# ---------------------------------------------------------------------------------------------
# Mayo L506


def load_l506(folder: Path, *, log: Log = print) -> tuple[Images, Images] | None:
    """Quarter-dose and full-dose L506 slices in HU, or None (with a message) when absent."""
    from ctdid.io import read_volume

    paths = [folder / name for name in L506_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        log(f"skipping L506: {', '.join(missing)} not found")
        return None
    low, full = (
        np.asarray(
            read_volume(p, shape=(512, 512), dtype="uint16", hu_offset=-1024).hu[0],
            dtype=np.float32,
        )
        for p in paths
    )
    return low, full


def l506_regions(
    normal: ArrayLike, *, spacing: float, nps_roi_mm: float = 22.4
) -> tuple[NDArray[np.bool_], list[Any], list[Any]]:
    """Body mask, 10 mm flat regions for the STD and larger flat regions for the NPS.

    The NPS regions are searched at ``nps_roi_mm`` (32 pixels at 0.7 mm) and, if fewer than
    four are found, at 3/4 and 1/2 of it.
    """
    body = find_body_mask(normal)
    regions = find_flat_regions(normal, spacing=spacing, body_mask=body, n=20)
    nps_regions: list[Any] = []
    for roi in (nps_roi_mm, 0.75 * nps_roi_mm, 0.5 * nps_roi_mm):
        nps_regions = find_flat_regions(normal, spacing=spacing, body_mask=body, roi_mm=roi, n=12)
        if len(nps_regions) >= 4:
            break
    return body, regions, nps_regions


def l506_metrics(
    img: ArrayLike,
    normal: ArrayLike,
    *,
    body: ArrayLike,
    regions: Sequence[Any],
    nps_regions: Sequence[Any],
    spacing: float,
) -> dict[str, Any]:
    """RMSE vs full dose (body), STD (flat regions), NPS and skin-edge MTF50 of one image.

    Returns
    -------
    dict
        ``rmse_hu``, ``std_hu``, ``nps_mean_frequency`` (cycles/mm), ``mtf50`` (cycles/mm, NaN
        if the skin edge cannot be measured) and the radial ``nps`` curve.
    """
    arr = np.asarray(img, dtype=np.float64)
    patches = np.stack([arr[r] for r in nps_regions]) if nps_regions else np.zeros((0, 4, 4))
    out: dict[str, Any] = {
        "rmse_hu": rmse(arr, normal, mask=body),
        "std_hu": noise_label(arr, spacing=spacing, regions=list(regions)),
    }
    if len(patches):
        nps = nps_2d(patches, spacing=spacing, detrend="plane")
        f, p = radial_average(nps)
        out["nps_mean_frequency"] = nps_mean_frequency(nps)
        out["nps"] = {"f": f.tolist(), "nps": p.tolist()}
    else:
        out["nps_mean_frequency"] = math.nan
        out["nps"] = None
    try:
        out["mtf50"] = resolution_label(arr, spacing=spacing)
    except ValueError:
        out["mtf50"] = math.nan
    return out


def evaluate_l506(
    low: ArrayLike,
    normal: ArrayLike,
    models: Mapping[str, torch.nn.Module],
    *,
    did_model: str | None,
    spacing: float = L506_SPACING_MM,
    n_candidates: int = DID_CANDIDATES,
    log: Log = print,
) -> dict[str, Any]:
    """Metrics of the input, the full dose, every model's default and the DID candidates.

    Returns
    -------
    dict
        ``rows``: one per image with ``method``, ``strength`` (DID candidates; None
        otherwise) and the :func:`l506_metrics` keys; ``did_seconds``.
    """
    body, regions, nps_regions = l506_regions(normal, spacing=spacing)
    log(f"L506: {len(regions)} flat regions for the STD, {len(nps_regions)} for the NPS")
    rows: list[dict[str, Any]] = []

    def add(method: str, img: ArrayLike, strength: float | None = None) -> None:
        m = l506_metrics(
            img, normal, body=body, regions=regions, nps_regions=nps_regions, spacing=spacing
        )
        rows.append({"method": method, "strength": strength, **m})
        log(
            f"  {method:>24}: RMSE {m['rmse_hu']:.1f} HU, STD {m['std_hu']:.1f} HU, "
            f"NPS mean f {m['nps_mean_frequency']:.3f} /mm, MTF50 {m['mtf50']:.3f} /mm"
        )

    add("full dose", normal)
    add("input", low)
    did_seconds = None
    for name, model in models.items():
        if name == did_model:
            from ctdid.core import InteractiveDenoiser

            t0 = time.perf_counter()
            engine = InteractiveDenoiser(model, mode="fast", n_candidates=n_candidates, seed=0)
            stack = engine.run(np.array(low, dtype=np.float32))
            did_seconds = time.perf_counter() - t0
            log(f"  DID: {len(stack)} candidates in {did_seconds:.1f} s")
            for cand in stack:
                label = name if cand.direction == "default" else f"{name} DID"
                add(label, cand.image, float(cand.strength))
        else:
            add(name, denoise(model, low))
    return {"rows": rows, "did_seconds": did_seconds}


# ---------------------------------------------------------------------------------------------
# reporting


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def lcd_tables(result: Mapping[str, Any]) -> str:
    """Markdown tables of the LCD section: CHO d' [95 % interval] and AUC, NPW d', noise."""
    geom = result["geometry"]
    discs = geom["discs"]
    sp = geom["pixel_used_mm"]
    heads = [f"{d['contrast_hu']:g} HU, {d['diameter_px'] * sp:.1f} mm" for d in discs]
    by_key = {(r["dose"], r["method"], r["contrast_hu"]): r for r in result["rows"]}
    keys = sorted(
        dict.fromkeys((r["dose"], r["method"]) for r in result["rows"]), key=lambda k: k[0]
    )

    def cho_cell(r: Mapping[str, Any] | None) -> str:
        if r is None:
            return "-"
        ci = f"[{_fmt(r['cho_ci_low'])}, {_fmt(r['cho_ci_high'])}]"
        return f"{_fmt(r['cho_d_prime'])} {ci}, {_fmt(r['cho_auc'])}"

    lines = [
        f"Pixel size {sp:.3f} mm ({geom['pixel_choice']}; phantom edge: "
        f"{geom['pixel_from_edge_mm']:.3f} mm if 200 mm across, nominal disc sizes: "
        f"{geom['pixel_from_discs_mm']:.3f} mm). d' does not depend on it.",
        "",
        "CHO d' (bias-corrected) [95 % jackknife interval], AUC:",
        "",
        "| dose | method | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for dose, method in keys:
        cells = [cho_cell(by_key.get((dose, method, d["contrast_hu"]))) for d in discs]
        lines.append(f"| {dose:.2f} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "NPW d' (NPS of the signal-absent ensemble, TTF of the phantom's 1000 HU edge), noise STD,"
        " NPS mean frequency and TTF50:",
        "",
        "| dose | method | " + " | ".join(heads) + " | noise HU | NPS mean f /mm | TTF50 /mm |",
        "|---|---|" + "---|" * (len(heads) + 3),
    ]
    noise = {(n["dose"], n["method"]): n for n in result["noise"]}
    for dose, method in keys:
        cells = []
        for d in discs:
            r = by_key.get((dose, method, d["contrast_hu"]))
            cells.append("-" if r is None else _fmt(r["npw_d_prime"]))
        n = noise.get((dose, method), {})
        lines.append(
            f"| {dose:.2f} | {method} | "
            + " | ".join(cells)
            + f" | {_fmt(n.get('noise_hu'), 1)} | {_fmt(n.get('nps_mean_frequency'), 3)}"
            f" | {_fmt(n.get('ttf50'), 3)} |"
        )
    if result.get("did_seconds_per_image") is not None:
        lines += ["", f"DID (fast mode): {result['did_seconds_per_image']:.1f} s per image."]
    return "\n".join(lines) + "\n"


def catphan_table(result: Mapping[str, Any]) -> str:
    """Markdown table of the CatPhan section."""
    mods = result["modules"]
    lines = [
        f"CTP404 slices {mods['ctp404']}, uniform (CTP486) slices {mods['uniform']}; TTF of the "
        f"air insert (radius {result.get('insert', {}).get('radius_mm', math.nan):.1f} mm).",
        "",
        "| method | TTF50 /mm | TTF10 /mm | noise HU | NPS mean f /mm |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {_fmt(r['mtf50'], 3)} | {_fmt(r['mtf10'], 3)} "
            f"| {_fmt(r['noise_hu'], 1)} | {_fmt(r['nps_mean_frequency'], 3)} |"
        )
    if result.get("did_seconds_per_slice") is not None:
        lines += ["", f"DID (fast mode): {result['did_seconds_per_slice']:.1f} s per slice."]
    return "\n".join(lines) + "\n"


def l506_table(result: Mapping[str, Any]) -> str:
    """Markdown table of the L506 section."""
    lines = [
        "| method | strength | RMSE vs full dose HU | STD HU | NPS mean f /mm | skin MTF50 /mm |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        s = "-" if r["strength"] is None else f"{r['strength']:+.2f}"
        lines.append(
            f"| {r['method']} | {s} | {_fmt(r['rmse_hu'], 1)} | {_fmt(r['std_hu'], 1)} "
            f"| {_fmt(r['nps_mean_frequency'], 3)} | {_fmt(r['mtf50'], 3)} |"
        )
    if result.get("did_seconds") is not None:
        lines += ["", f"DID (fast mode): {result['did_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _arr(values: Sequence[Any] | None) -> NDArray[np.float64]:
    """A JSON list (None for missing values) as a float array with NaN."""
    return np.array([math.nan if v is None else v for v in values or []], dtype=np.float64)


def write_figures(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """Plots: LCD CHO d' vs dose per disc, CatPhan TTF and NPS, L506 curve and NPS.

    Returns
    -------
    list of Path
        The PNG files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    lcd = report.get("lcd")
    if lcd and lcd["rows"]:
        discs = lcd["geometry"]["discs"]
        fig, axes = plt.subplots(1, len(discs), figsize=(4 * len(discs), 3.6), squeeze=False)
        methods = list(dict.fromkeys(r["method"] for r in lcd["rows"]))
        for ax, d in zip(axes[0], discs, strict=True):
            for m in methods:
                rs = sorted(
                    (
                        r
                        for r in lcd["rows"]
                        if r["method"] == m and r["contrast_hu"] == d["contrast_hu"]
                    ),
                    key=lambda r: r["dose"],
                )
                x = [r["dose"] for r in rs]
                y = np.array([r["cho_d_prime"] for r in rs])
                lo = np.array(
                    [r["cho_ci_low"] if r["cho_ci_low"] is not None else np.nan for r in rs]
                )
                hi = np.array(
                    [r["cho_ci_high"] if r["cho_ci_high"] is not None else np.nan for r in rs]
                )
                yerr = np.nan_to_num(np.stack([y - lo, hi - y]).clip(min=0))
                ax.errorbar(x, y, yerr=yerr, marker="o", capsize=2, label=m)
            ax.set_title(f"{d['contrast_hu']:g} HU disc")
            ax.set_xlabel("dose fraction")
            ax.set_ylabel("CHO d'")
        axes[0][-1].legend(fontsize=6)
        fig.tight_layout()
        path = folder / "lcd_cho_dprime.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    cat = report.get("catphan")
    if cat and cat.get("curves"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for m, c in cat["curves"].items():
            if c["ttf"] is not None:
                a1.plot(_arr(c["ttf"]["f"]), _arr(c["ttf"]["ttf"]), label=m)
            a2.semilogy(_arr(c["nps"]["f"])[1:], _arr(c["nps"]["nps"])[1:], label=m)
        a1.set_xlabel("cycles/mm")
        a1.set_ylabel("TTF (CTP404 air insert)")
        a1.set_xlim(0, 1.0)
        a2.set_xlabel("cycles/mm")
        a2.set_ylabel("NPS (HU^2 mm^2), CTP486")
        a1.legend(fontsize=6)
        fig.tight_layout()
        path = folder / "catphan_ttf_nps.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    l506 = report.get("l506")
    if l506 and l506["rows"]:
        curve = sorted(
            (r for r in l506["rows"] if r["strength"] is not None), key=lambda r: r["strength"]
        )
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
        if curve:
            s = [r["strength"] for r in curve]
            a1.plot(s, [r["rmse_hu"] for r in curve], "o-", label="RMSE vs full dose")
            a1.plot(s, [r["std_hu"] for r in curve], "s-", label="STD (flat regions)")
            a2.plot(s, [r["mtf50"] for r in curve], "o-", label="skin-edge MTF50")
            a2.plot(s, [r["nps_mean_frequency"] for r in curve], "s-", label="NPS mean f")
        for r in l506["rows"]:
            if r["strength"] is None and r["method"] in ("input", "full dose"):
                a1.axhline(r["std_hu"], ls=":", color="gray")
                a1.text(-1, r["std_hu"], f"{r['method']} STD", fontsize=7)
            if r.get("nps"):
                a3.semilogy(
                    _arr(r["nps"]["f"])[1:],
                    _arr(r["nps"]["nps"])[1:],
                    label=f"{r['method']} {_fmt(r['strength'])}",
                )
        a1.set_xlabel("DID strength s")
        a1.set_ylabel("HU")
        a2.set_xlabel("DID strength s")
        a2.set_ylabel("cycles/mm")
        if curve:
            a1.legend(fontsize=7)
            a2.legend(fontsize=7)
        a3.set_xlabel("cycles/mm")
        a3.set_ylabel("NPS (HU^2 mm^2)")
        a3.legend(fontsize=5)
        fig.tight_layout()
        path = folder / "l506_curve.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="DID on fewer LCD doses and slices")
    p.add_argument("--models", nargs="+", default=None, help="model names (default: all shipped)")
    p.add_argument(
        "--did-model",
        default=DEFAULT_DID_MODEL,
        help="model of the DID candidates ('none' for no DID; default unet-d25, else the first)",
    )
    p.add_argument("--weights-dir", type=Path, default=None, help="folder of the models")
    p.add_argument("--data", type=Path, default=DATA_DIR, help="the shared data folder")
    p.add_argument(
        "--lcd-pixel", default="edge", help="LCD pixel size: edge (default), discs or mm"
    )
    p.add_argument(
        "--did-doses",
        nargs="+",
        default=None,
        choices=[d for d, _ in LCD_DOSES],
        help="LCD doses DID is run on (default all; --quick: dose_010)",
    )
    p.add_argument(
        "--sections",
        nargs="+",
        default=["lcd", "catphan", "l506"],
        choices=["lcd", "catphan", "l506"],
        help="sections to run",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown")
    p.add_argument("--figures", type=Path, default=None, help="folder for the PNG plots")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = None if args.models is None else [n for m in args.models for n in m.split(",") if n]
    models = load_models(names, weights_dir=args.weights_dir)
    did_model: str | None = args.did_model
    if did_model == "none":
        did_model = None
    elif did_model not in models:
        did_model = next(iter(models), None)
    if not models:
        print("no models found: only the inputs (and the FDA DL images) are measured")
    report: dict[str, Any] = {
        "ctdid_version": __import__("ctdid").__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "models": list(models),
        "did_model": did_model,
        "quick": bool(args.quick),
        "seconds": {},
    }
    text = ["# Image-quality metrics on real data", ""]
    skipped: list[str] = []

    def note(message: str) -> None:
        print(message)
        if message.startswith("skipping"):
            skipped.append(message)

    t_all = time.perf_counter()
    if "lcd" in args.sections:
        t0 = time.perf_counter()
        data = load_lcd(args.data / LCD_NAME, log=note)
        if data is not None:
            did_doses = args.did_doses or (
                ["dose_010"] if args.quick else [d for d, _ in LCD_DOSES]
            )
            res = evaluate_lcd(
                data,
                models,
                did_model=did_model,
                did_doses=did_doses,
                pixel=args.lcd_pixel,
            )
            report["lcd"] = res
            text += ["## MITA-LCD phantom (lcd_ct_cct189)", "", lcd_tables(res)]
        report["seconds"]["lcd"] = time.perf_counter() - t0
    if "catphan" in args.sections:
        t0 = time.perf_counter()
        cat = load_catphan(args.data / CATPHAN_NAME, log=note)
        if cat is not None:
            res = evaluate_catphan(
                cat[0], cat[1], models, did_model=did_model, n_slices=1 if args.quick else 3
            )
            report["catphan"] = res
            text += ["## CatPhan 504 CBCT", "", catphan_table(res)]
        report["seconds"]["catphan"] = time.perf_counter() - t0
    if "l506" in args.sections:
        t0 = time.perf_counter()
        pair = load_l506(args.data / L506_NAME, log=note)
        if pair is not None:
            res = evaluate_l506(pair[0], pair[1], models, did_model=did_model)
            report["l506"] = res
            text += ["## Mayo L506 (quarter dose -> full dose)", "", l506_table(res)]
        report["seconds"]["l506"] = time.perf_counter() - t0
    report["seconds"]["total"] = time.perf_counter() - t_all
    report["skipped"] = skipped
    if skipped:
        text += ["## Skipped", "", *(f"- {m}" for m in skipped), ""]
    body = "\n".join(text)
    print()
    print(body)
    print(f"({report['seconds']['total']:.0f} s)")
    if args.markdown is not None:
        args.markdown.write_text(body, encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps(_jsonable(report), indent=1) + "\n", encoding="utf-8")
    if args.figures is not None:
        for path in write_figures(_jsonable(report), args.figures):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
