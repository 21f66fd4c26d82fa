"""Reference-free quality labels of a CT image: noise and resolution measured on the patient.

* :func:`find_flat_regions` finds uniform square ROIs inside the body automatically;
* :func:`noise_label` is the noise standard deviation in HU over those ROIs;
* :func:`resolution_label` is the MTF50 in cycles/mm measured on the body's own air/skin edge:
  the outline is traced along rays from the body centre, pixels near it are projected onto the
  local outline normal, and the oversampled edge spread function goes through the MTF chain of
  :mod:`ctdid.metrics.resolution`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage, spatial

from ctdid.metrics._common import as_image, pair_spacing
from ctdid.metrics.resolution import MTF, mtf_from_esf

__all__ = [
    "find_body_mask",
    "find_flat_regions",
    "noise_label",
    "resolution_label",
    "skin_edge_mtf",
]

Region = tuple[slice, slice] | tuple[int, slice, slice]


def find_body_mask(img: ArrayLike, *, threshold: float = -500.0) -> NDArray[np.bool_]:
    """Mask of the patient body: the largest connected region above ``threshold`` HU, filled.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU. Volumes are processed slice by slice.
    threshold : float, optional
        HU level between air and soft tissue.

    Returns
    -------
    ndarray of bool, same shape as ``img``
    """
    arr = as_image(img)
    if arr.ndim == 3:
        return np.stack([find_body_mask(s, threshold=threshold) for s in arr])
    lab, n = ndimage.label(arr > threshold)
    if n == 0:
        return np.zeros(arr.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(lab == int(np.argmax(sizes))))


def _as_stack(img: ArrayLike, mask: ArrayLike | None) -> tuple[NDArray, NDArray, bool]:
    arr = as_image(img)
    flat = arr.ndim == 2
    arr3 = arr[None] if flat else arr
    if mask is None:
        m3 = find_body_mask(arr3)
    else:
        m3 = np.broadcast_to(np.asarray(mask, dtype=bool), arr.shape)
        m3 = m3[None] if flat else m3
    return arr3, m3, flat


def find_flat_regions(
    img: ArrayLike,
    *,
    spacing: float | ArrayLike,
    body_mask: ArrayLike | None = None,
    roi_mm: float = 10.0,
    n: int = 20,
    smoothing_mm: float = 3.0,
    margin_mm: float = 5.0,
    hu_range: tuple[float, float] = (-300.0, 400.0),
) -> list[Region]:
    """Find uniform square regions inside the body, for measuring noise without a reference.

    The image is smoothed (Gaussian, ``smoothing_mm``) so that noise matters little, and the
    mean gradient magnitude of the smoothed image over every candidate square is its flatness
    score. Squares lie wholly ``margin_mm`` inside the body and have a smoothed mean within
    ``hu_range``. The ``n`` lowest-scoring non-overlapping squares are returned, best first.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    body_mask : array_like of bool, optional
        Where the body is; default :func:`find_body_mask`.
    roi_mm : float, optional
        Side of the squares in mm.
    n : int, optional
        Number of regions wanted (fewer are returned if fewer fit).
    smoothing_mm : float, optional
        Standard deviation in mm of the smoothing used for the score.
    margin_mm : float, optional
        Minimum distance in mm between a square and the body outline.
    hu_range : (float, float), optional
        Allowed mean HU of a region (soft tissue by default; excludes lung and bone).

    Returns
    -------
    list of tuple
        Index tuples ``(rows, cols)`` (2-D) or ``(z, rows, cols)`` (3-D), so ``img[region]`` is
        a square ROI.
    """
    dy, dx = pair_spacing(spacing)
    arr3, m3, flat = _as_stack(img, body_mask)
    h = max(4, round(roi_mm / dy))
    w = max(4, round(roi_mm / dx))
    scores = np.full(arr3.shape, np.inf)
    for z, (sl, msk) in enumerate(zip(arr3, m3, strict=True)):
        if not msk.any():
            continue
        sm = ndimage.gaussian_filter(sl, (smoothing_mm / dy, smoothing_mm / dx), mode="nearest")
        gy, gx = np.gradient(sm, dy, dx)
        grad = ndimage.uniform_filter(np.hypot(gy, gx), size=(h, w), mode="nearest")
        mean = ndimage.uniform_filter(sm, size=(h, w), mode="nearest")
        inside = ndimage.distance_transform_edt(msk, sampling=(dy, dx))
        ok = (inside >= 0.5 * np.hypot(h * dy, w * dx) + margin_mm) & (
            (mean >= hu_range[0]) & (mean <= hu_range[1])
        )
        # The square must lie inside the image (a body cut by the field of view is "inside"
        # up to the border, but pixels beyond it do not exist).
        ok[: h // 2] = ok[sl.shape[0] - h + h // 2 + 1 :] = False
        ok[:, : w // 2] = ok[:, sl.shape[1] - w + w // 2 + 1 :] = False
        scores[z][ok] = grad[ok]
    regions: list[Region] = []
    for _ in range(int(n)):
        k = int(np.argmin(scores))
        if not np.isfinite(scores.flat[k]):
            break
        zi, ri, ci = (int(i) for i in np.unravel_index(k, scores.shape))
        r0, c0 = ri - h // 2, ci - w // 2
        rows, cols = slice(r0, r0 + h), slice(c0, c0 + w)
        regions.append((rows, cols) if flat else (zi, rows, cols))
        scores[zi, max(0, r0 - h + 1) : r0 + 2 * h, max(0, c0 - w + 1) : c0 + 2 * w] = np.inf
    return regions


def noise_label(
    img: ArrayLike,
    *,
    spacing: float | ArrayLike,
    body_mask: ArrayLike | None = None,
    roi_mm: float = 10.0,
    n: int = 20,
    regions: list[Region] | None = None,
) -> float:
    """Noise standard deviation in HU measured on the image alone.

    Each flat region (:func:`find_flat_regions`, unless ``regions`` is given) has a
    least-squares plane removed; its residual standard deviation (3 degrees of freedom
    removed) is computed, and the median over regions returned.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    body_mask : array_like of bool, optional
        Where the body is; default found by thresholding.
    roi_mm, n : optional
        Region size in mm and number of regions, see :func:`find_flat_regions`.
    regions : list of tuple, optional
        Regions to use instead of searching, e.g. the same ones for every candidate image so
        that candidates are compared on identical pixels.

    Returns
    -------
    float
        Noise standard deviation in HU.
    """
    arr = as_image(img)
    if regions is None:
        regions = find_flat_regions(arr, spacing=spacing, body_mask=body_mask, roi_mm=roi_mm, n=n)
    if not regions:
        raise ValueError("no flat region found inside the body")
    stds = []
    for reg in regions:
        patch = arr[reg]
        ny, nx = patch.shape
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        basis = np.stack([np.ones(ny * nx), yy.ravel(), xx.ravel()], axis=1)
        coef, *_ = np.linalg.lstsq(basis, patch.ravel(), rcond=None)
        res = patch.ravel() - basis @ coef
        stds.append(np.sqrt(np.sum(res * res) / (res.size - 3)))
    return float(np.median(stds))


def skin_edge_mtf(
    img: ArrayLike,
    *,
    spacing: float | ArrayLike,
    body_mask: ArrayLike | None = None,
    threshold: float = -500.0,
    n_angles: int = 720,
    band_mm: float = 8.0,
    oversampling: int = 4,
) -> MTF:
    """MTF measured on the air/skin edge of the body in one slice.

    The outline is traced along ``n_angles`` rays from the body's centroid (the first exit
    from the filled body mask, refined to where the image crosses ``threshold``), smoothed over
    about 1 degree and densified. Rays whose profile is not a clean step (air outside within
    ``band_mm``, tissue inside: e.g. where the body touches the table or an arm) are dropped.
    Each pixel within ``band_mm`` of the outline is projected onto the normal of the nearest
    outline point; the signed distances and pixel values form the oversampled ESF.

    Parameters
    ----------
    img : array_like, shape (y, x)
        One slice in HU with the whole body outline in the field of view.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    body_mask : array_like of bool, optional
        Body mask; default :func:`find_body_mask` at ``threshold``.
    threshold : float, optional
        HU level of the edge, between air and soft tissue.
    n_angles : int, optional
        Number of rays.
    band_mm : float, optional
        Half-width of the band around the outline used for the ESF, in mm.
    oversampling : int, optional
        ESF bins per pixel.

    Returns
    -------
    MTF
        Frequencies in cycles/mm.

    Raises
    ------
    ValueError
        If no body or too few clean edge segments are found.
    """
    arr = as_image(img, ndim=(2,))
    dy, dx = pair_spacing(spacing)
    mask = _skin_body_mask(arr, body_mask, threshold)
    rows, cols = np.nonzero(mask)
    centre = (rows.mean() * dy, cols.mean() * dx)  # centroid in mm
    theta, edge, good = _trace_outline(arr, mask, centre, (dy, dx), n_angles, band_mm, threshold)
    if good.sum() < max(8, theta.size // 20):
        raise ValueError("too few clean air/skin edge segments in the image")
    pts, normal, seg_len, good_f = _outline_normals(theta, edge, good, centre)
    near = ndimage.distance_transform_edt(mask, sampling=(dy, dx)) + ndimage.distance_transform_edt(
        ~mask, sampling=(dy, dx)
    )
    pr, pc = np.nonzero(near <= band_mm + 2 * max(dy, dx))
    pix = np.stack([pr * dy, pc * dx], axis=1)
    _, j = spatial.cKDTree(pts).query(pix)
    rel = pix - pts[j]
    dist = np.sum(rel * normal[j], axis=1)
    along = rel[:, 0] * normal[j, 1] - rel[:, 1] * normal[j, 0]
    keep = good_f[j] & (np.abs(dist) <= band_mm) & (np.abs(along) <= seg_len[j])
    pixel = max(dy, dx)
    return mtf_from_esf(
        dist[keep],
        arr[pr[keep], pc[keep]],
        bin_width=pixel / oversampling,
        half_width=band_mm,
        f_max=1.0 / pixel,
    )


def _skin_body_mask(arr: NDArray, body_mask: ArrayLike | None, threshold: float) -> NDArray:
    """The body mask of :func:`skin_edge_mtf`: given (checked against the image) or found."""
    if body_mask is None:
        mask = find_body_mask(arr, threshold=threshold)
    else:
        mask = np.asarray(body_mask, dtype=bool)
        if mask.shape != arr.shape:
            raise ValueError(f"body_mask of shape {mask.shape} does not fit the image {arr.shape}")
    if mask.sum() < 100:
        raise ValueError("no body found in the image")
    return mask


def _trace_outline(
    arr: NDArray,
    mask: NDArray,
    centre: tuple[float, float],
    spacing: tuple[float, float],
    n_angles: int,
    band_mm: float,
    threshold: float,
) -> tuple[NDArray, NDArray, NDArray]:
    """Ray angles, outline radius in mm (NaN: not found) and clean-step flag of every ray."""
    (cy, cx), (dy, dx) = centre, spacing
    step = 0.25 * min(dy, dx)
    r_max = float(np.hypot(arr.shape[0] * dy, arr.shape[1] * dx))
    s = np.arange(0.0, r_max, step)
    theta = np.linspace(0.0, 2 * np.pi, int(n_angles), endpoint=False)
    py = (cy + s[None, :] * np.sin(theta)[:, None]) / dy
    px = (cx + s[None, :] * np.cos(theta)[:, None]) / dx
    inside_img = (py >= 0) & (py <= arr.shape[0] - 1) & (px >= 0) & (px <= arr.shape[1] - 1)
    prof = ndimage.map_coordinates(arr, [py, px], order=1, mode="nearest")
    mprof = ndimage.map_coordinates(mask.astype(float), [py, px], order=0, mode="constant")
    band_n = int(np.ceil(band_mm / step))
    edge = np.full(theta.size, np.nan)
    good = np.zeros(theta.size, dtype=bool)
    for k in range(theta.size):
        out = np.nonzero(mprof[k] < 0.5)[0]
        if out.size == 0:
            continue
        e = int(out[0])
        lo, hi = max(0, e - 4 * int(1 / step * max(dy, dx))), e + 4 * int(1 / step * max(dy, dx))
        seg = prof[k, lo:hi]
        cross = np.nonzero((seg[:-1] > threshold) & (seg[1:] <= threshold))[0]
        if cross.size == 0:
            continue
        i = lo + int(cross[0])
        t = (prof[k, i] - threshold) / (prof[k, i] - prof[k, i + 1])
        edge[k] = s[i] + t * step
        j = i + 1
        if j + band_n >= s.size or i - band_n < 0 or not inside_img[k, j + band_n]:
            continue
        outside = prof[k, j + band_n // 3 : j + band_n]
        inner = prof[k, i - band_n : i - band_n // 3]
        good[k] = bool(outside.max() < threshold and inner.min() > threshold)
    return theta, edge, good


def _outline_normals(
    theta: NDArray, edge: NDArray, good: NDArray, centre: tuple[float, float]
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Smoothed, densified outline: points, outward normals, half segment lengths, clean flags."""
    cy, cx = centre
    valid = np.isfinite(edge)
    # periodic interpolation of the outline radius over the gaps, then ~1 degree smoothing
    th_ext = np.concatenate([theta[valid] - 2 * np.pi, theta[valid], theta[valid] + 2 * np.pi])
    r_ext = np.tile(edge[valid], 3)
    radius = np.interp(theta, th_ext, r_ext)
    radius = ndimage.gaussian_filter1d(radius, np.deg2rad(1.0) / (theta[1] - theta[0]), mode="wrap")
    fine = 4
    th_f = np.linspace(0.0, 2 * np.pi, fine * theta.size, endpoint=False)
    r_f = np.interp(
        th_f, np.concatenate([theta, [2 * np.pi]]), np.concatenate([radius, radius[:1]])
    )
    good_f = np.repeat(good, fine)
    pts = np.stack([cy + r_f * np.sin(th_f), cx + r_f * np.cos(th_f)], axis=1)
    tang = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
    normal = np.stack([tang[:, 1], -tang[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1)[:, None]
    outward = np.sign(np.sum(normal * (pts - [cy, cx]), axis=1))
    normal *= outward[:, None]
    seg_len = np.linalg.norm(tang, axis=1) / 2
    return pts, normal, seg_len, good_f


def resolution_label(
    img: ArrayLike,
    *,
    spacing: float | ArrayLike,
    body_mask: ArrayLike | None = None,
    threshold: float = -500.0,
    band_mm: float = 8.0,
) -> float:
    """MTF50 in cycles/mm measured on the body's own air/skin edge (no reference needed).

    See :func:`skin_edge_mtf`. For a volume the MTF50 of every slice where the edge is found
    is computed and the median returned.

    Parameters
    ----------
    img : array_like, shape (y, x) or (z, y, x)
        Image in HU with the body outline in the field of view.
    spacing : float or (float, float)
        Pixel spacing (dy, dx) in mm.
    body_mask : array_like of bool, optional
        Body mask; default found by thresholding.
    threshold : float, optional
        HU level between air and tissue.
    band_mm : float, optional
        Half-width in mm of the band around the outline used for the ESF.

    Returns
    -------
    float
        MTF50 in cycles/mm.

    Raises
    ------
    ValueError
        If the skin edge cannot be measured on any slice.
    """
    arr3, m3, _ = _as_stack(img, body_mask)
    values = []
    errors = []
    for sl, msk in zip(arr3, m3, strict=True):
        try:
            mtf = skin_edge_mtf(
                sl, spacing=spacing, body_mask=msk, threshold=threshold, band_mm=band_mm
            )
        except ValueError as exc:
            errors.append(str(exc))
            continue
        values.append(mtf.mtf50)
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise ValueError(errors[0] if errors else "the MTF stays above 50 % on every slice")
    return float(np.median(vals))
