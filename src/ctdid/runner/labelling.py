"""Per-candidate quality labels of a DID run, measured on identical pixels for every candidate.

The flat regions (for the noise) and the body mask (for the skin-edge MTF50, the spectral
transfer from the input and the RMSE) are found once, on the default image, and reused for every
candidate, so that two candidates' labels differ only because their pixels differ.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.metrics import (
    cnr,
    find_body_mask,
    find_flat_regions,
    noise_label,
    resolution_label,
    rmse,
    transfer_label,
)

__all__ = ["LABEL_NAMES", "CandidateLabeller"]

#: Label keys, in the order of the ``metrics.csv`` columns, with their units.
LABEL_NAMES: dict[str, str] = {
    "noise_hu": "noise standard deviation over automatic flat regions, HU",
    "mtf50_per_mm": "MTF50 on the body's air/skin edge, cycles/mm",
    "transfer50_per_mm": (
        "f50 of the spectral transfer from the noisy input inside the body (the frequency up to"
        " which the candidate keeps the input's content; Nyquist if it never falls to 50 %),"
        " cycles/mm"
    ),
    "rmse_hu": "RMSE to the reference (normal dose) inside the body, HU",
    "cnr": "contrast-to-noise ratio of the given lesion/background ROI pair",
}


def _even_indices(n: int, k: int) -> NDArray[np.int_]:
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


@dataclasses.dataclass
class CandidateLabeller:
    """Measure noise, MTF50, transfer f50 and (optionally) RMSE and CNR of candidate images.

    Build it with :meth:`from_default` on the default image; then :meth:`labels` gives the
    labels of any image of the same shape.

    Attributes
    ----------
    spacing : (float, float)
        In-plane pixel size (dy, dx) in mm.
    slices : ndarray of int
        Slices (z indices) the labels are measured on (a few evenly spaced ones for volumes).
    body : ndarray of bool, shape (n_slices, y, x)
        Body mask of the default image on those slices.
    regions : list
        Flat regions (``(z, rows, cols)`` into the measured slices) for the noise.
    reference : ndarray, optional
        The reference image on those slices, HU.
    input : ndarray, optional
        The noisy input on those slices, HU: the reference of the spectral transfer.
    roi : (ndarray, ndarray), optional
        Lesion and background masks on those slices.
    notes : list of str
        Why a label is missing (no flat region found, no clean skin edge, ...).
    """

    spacing: tuple[float, float]
    slices: NDArray[np.int_]
    body: NDArray[np.bool_]
    regions: list[Any]
    reference: NDArray[np.float32] | None = None
    input: NDArray[np.float32] | None = None
    roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_default(
        cls,
        default_hu: NDArray[np.floating[Any]],
        *,
        spacing: Sequence[float],
        reference_hu: NDArray[np.floating[Any]] | None = None,
        input_hu: NDArray[np.floating[Any]] | None = None,
        roi: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None = None,
        max_slices: int = 8,
        roi_mm: float = 10.0,
        n_regions: int = 20,
    ) -> CandidateLabeller:
        """Find the body and the flat regions on the default image.

        Parameters
        ----------
        default_hu : ndarray, shape (z, y, x) or (y, x)
            The default candidate (the pretrained model's output), HU.
        spacing : (dz, dy, dx) or (dy, dx)
            Voxel size in mm.
        reference_hu : ndarray, optional
            Normal-dose reference of the same shape, HU: enables ``rmse_hu``.
        input_hu : ndarray, optional
            The noisy input the candidates were made from, same shape, HU: enables
            ``transfer50_per_mm`` (:func:`ctdid.metrics.transfer_label` with the input as
            reference, inside the default's body mask).
        roi : (lesion, background), optional
            Boolean masks of the image's shape (or 2-D, applied to every slice): enables
            ``cnr``.
        max_slices : int, optional
            Volumes: labels are measured on at most this many evenly spaced slices.
        roi_mm, n_regions : optional
            Size in mm and number of the flat regions, see
            :func:`ctdid.metrics.find_flat_regions`.
        """
        arr = np.asarray(default_hu, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        sp = tuple(float(s) for s in spacing)
        dy, dx = sp[-2], sp[-1]
        idx = _even_indices(arr.shape[0], max_slices)
        sub = arr[idx]
        body = find_body_mask(sub)
        notes: list[str] = []
        regions = find_flat_regions(
            sub, spacing=(dy, dx), body_mask=body, roi_mm=roi_mm, n=n_regions
        )
        if not regions:
            notes.append("noise_hu: no flat region found inside the body")
        ref = None
        if reference_hu is not None:
            r = np.asarray(reference_hu, dtype=np.float32)
            r = r[np.newaxis] if r.ndim == 2 else r
            if r.shape != arr.shape:
                raise ValueError(f"reference shape {r.shape} differs from the input {arr.shape}")
            ref = r[idx]
        inp = None
        if input_hu is not None:
            x = np.asarray(input_hu, dtype=np.float32)
            x = x[np.newaxis] if x.ndim == 2 else x
            if x.shape != arr.shape:
                raise ValueError(f"input shape {x.shape} differs from the default {arr.shape}")
            inp = np.ascontiguousarray(x[idx])
        roi_sub = None
        if roi is not None:
            masks = []
            for m in roi:
                mm = np.asarray(m, dtype=bool)
                if mm.ndim == 2:
                    mm = np.broadcast_to(mm, arr.shape)
                if mm.shape != arr.shape:
                    raise ValueError(f"ROI mask shape {mm.shape} does not fit {arr.shape}")
                masks.append(np.ascontiguousarray(mm[idx]))
            if not (masks[0].any() and masks[1].any()):
                raise ValueError("an ROI mask is empty on the measured slices")
            roi_sub = (masks[0], masks[1])
        return cls(
            spacing=(dy, dx),
            slices=idx,
            body=body,
            regions=list(regions),
            reference=ref,
            input=inp,
            roi=roi_sub,
            notes=notes,
        )

    def labels(self, image_hu: NDArray[np.floating[Any]]) -> dict[str, float]:
        """Labels of one image (shape of the default); those that cannot be measured (no flat
        region, no clean skin edge, ...) are left out, and :attr:`notes` says why.

        ``transfer50_per_mm`` is the input's Nyquist frequency for the input itself (it keeps
        all of its own content) and falls towards the low-noise end."""
        arr = np.asarray(image_hu, dtype=np.float32)
        arr = arr[np.newaxis] if arr.ndim == 2 else arr
        sub = arr[self.slices]
        out: dict[str, float] = {"noise_hu": math.nan, "mtf50_per_mm": math.nan}
        if self.regions:
            out["noise_hu"] = noise_label(sub, spacing=self.spacing, regions=self.regions)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out["mtf50_per_mm"] = resolution_label(
                    sub, spacing=self.spacing, body_mask=self.body
                )
        except ValueError as exc:
            note = f"mtf50_per_mm: {exc}"
            if note not in self.notes:
                self.notes.append(note)
        if self.input is not None:
            try:
                out["transfer50_per_mm"] = transfer_label(
                    sub, self.input, spacing=self.spacing, mask=self.body
                )
            except ValueError as exc:
                note = f"transfer50_per_mm: {exc}"
                if note not in self.notes:
                    self.notes.append(note)
        if self.reference is not None:
            out["rmse_hu"] = rmse(sub, self.reference, mask=self.body)
        if self.roi is not None:
            out["cnr"] = cnr(sub, self.roi[0], self.roi[1])
        # JSON (and the viewer) has no NaN: a label that cannot be measured is left out.
        return {k: float(v) for k, v in out.items() if math.isfinite(v)}
