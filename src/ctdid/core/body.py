"""Automatic body mask from a CT image in Hounsfield units.

The DID engine measures how far a candidate has moved toward its bound *inside the patient*:
air around the body holds much of the image but none of the diagnosis, and would otherwise
dominate every norm. The mask is a plain HU threshold, kept to the largest connected component
(the patient, not the table or a stray blanket) with its holes (lungs, bowel gas) filled.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = ["body_mask"]


def _largest_component(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)), dtype=bool)


def body_mask(
    hu: ArrayLike,
    *,
    threshold: float = -500.0,
    largest_only: bool = True,
    fill_holes: bool = True,
) -> NDArray[np.bool_]:
    """Boolean mask of the patient's body in a CT slice or volume.

    Parameters
    ----------
    hu : array_like, shape (H, W) or (Z, H, W)
        Image in Hounsfield units. A 3-D array is processed slice by slice (axis 0 is z).
    threshold : float, optional
        HU above which a pixel is tissue. Default -500 HU, halfway between air (-1000 HU) and
        fat (about -100 HU).
    largest_only : bool, optional
        Keep only the largest 2-D connected component of each slice (4-connectivity).
        Default true.
    fill_holes : bool, optional
        Fill holes enclosed by the body (lungs, bowel gas) in each slice. Default true.

    Returns
    -------
    mask : ndarray of bool, same shape as ``hu``
        True inside the body. A slice with no pixel above ``threshold`` gives an all-false
        slice; callers decide what to do with an empty mask.

    Raises
    ------
    ValueError
        If ``hu`` is not 2-D or 3-D or holds NaN.
    """
    arr = np.asarray(hu)
    if arr.ndim not in (2, 3):
        raise ValueError(f"body_mask expects a (H, W) or (Z, H, W) HU array, got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"body_mask expects a numeric HU array, got dtype {arr.dtype}")
    if np.isnan(arr).any():
        raise ValueError("body_mask: the HU array holds NaN")
    slices = arr[np.newaxis] if arr.ndim == 2 else arr
    out = np.zeros(slices.shape, dtype=bool)
    for z, sl in enumerate(slices):
        mask = np.asarray(sl > threshold)
        if not mask.any():
            continue
        if largest_only:
            mask = _largest_component(mask)
        if fill_holes:
            mask = np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)
        out[z] = mask
    return out[0] if arr.ndim == 2 else out
