"""NIfTI-1/-2 (``.nii``, ``.nii.gz``) reading and writing with nibabel.

NIfTI affines map voxel index (i, j, k) to RAS+ millimetres; ctdid works in DICOM's LPS, so the
signs of the first two rows are flipped on the way in and out. nibabel's array is indexed
(i, j, k) = (x, y, z) and is transposed to ctdid's (z, y, x). ``scl_slope``/``scl_inter`` are
applied (HU = slope * value + inter).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from ctdid.errors import InputError
from ctdid.io.atomic import atomic_file
from ctdid.io.raw import check_input_file, make_volume
from ctdid.volume import CTVolume

__all__ = ["read_nifti", "write_nifti"]

_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}


def read_nifti(path: str | os.PathLike[str]) -> CTVolume:
    """Read a NIfTI image (``.nii`` or ``.nii.gz``) as HU.

    The geometry is nibabel's best affine (sform if its code is set, else qform, else the pixel
    sizes), converted from RAS to LPS; spatial units of metres or microns are converted to mm.
    Voxel values are scaled by ``scl_slope``/``scl_inter``. A 4-D image with one volume is
    accepted.

    Returns
    -------
    CTVolume
        ``meta = {"format": "nifti", "path": ..., "dtype": ...}``.

    Raises
    ------
    InputError
        For a missing or unreadable file, more than one volume, non-real voxel types, NaN/Inf
        voxels, or a degenerate affine.
    """
    import nibabel as nib

    p = check_input_file(path)
    try:
        img: Any = nib.load(p)
    except Exception as exc:  # nibabel raises several types for bad files
        raise InputError(f"is not a readable NIfTI file ({exc})", path=p) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"is a {type(img).__name__}, not NIfTI", path=p)
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise InputError(
            f"image has shape {tuple(img.shape)}; only one 2-D or 3-D volume is a CT image",
            path=p,
        )
    stored = img.get_data_dtype()
    if stored.kind not in "fiub":
        raise InputError(f"holds {stored} voxels; a CT image needs real numbers", path=p)
    try:
        data = np.asarray(img.dataobj)  # applies scl_slope / scl_inter
    except Exception as exc:
        raise InputError(f"voxel data cannot be read ({exc})", path=p) from None
    data = data.reshape(shape)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    hu = data.transpose(2, 1, 0)  # (i, j, k) = (x, y, z) -> (z, y, x)

    affine = np.asarray(img.affine, dtype=np.float64)
    unit = img.header.get_xyzt_units()[0]
    scale = _UNIT_TO_MM.get(unit, 1.0)
    lps = _RAS_LPS @ affine
    cols = lps[:3, :3] * scale
    steps = np.linalg.norm(cols, axis=0)  # mm per index step along i, j, k
    if not np.all(np.isfinite(lps)) or np.any(steps <= 0):
        raise InputError(f"affine is degenerate (voxel steps {steps.tolist()} mm)", path=p)
    direction = (cols / steps).T  # row r: unit vector of increasing index r
    origin = lps[:3, 3] * scale
    meta = {"format": "nifti", "path": str(p), "dtype": stored.str}
    return make_volume(
        p,
        hu,
        spacing=(steps[2], steps[1], steps[0]),
        origin=origin.tolist(),
        direction=direction,
        meta=meta,
    )


def write_nifti(volume: CTVolume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``volume`` as float32 HU NIfTI-1 (``.nii``, or gzipped for ``.nii.gz``).

    The sform (code 1, scanner) holds the exact affine; the qform (code 1) holds it too when
    the voxel axes are orthogonal, and is left unset (code 0) otherwise, since a quaternion
    cannot represent a shear (e.g. gantry tilt). NIfTI-1 stores the affine as float32, so
    geometry round-trips to about 1e-7 relative.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        If ``path`` does not end in ``.nii`` or ``.nii.gz``.
    """
    import nibabel as nib

    out = Path(path)
    name = out.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"{out}: a NIfTI file name ends in .nii or .nii.gz")
    data = np.ascontiguousarray(volume.hu, dtype=np.float32).transpose(2, 1, 0)
    affine = _RAS_LPS @ volume.affine
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(np.float32)
    hdr.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    d = volume.direction
    gram = d @ d.T
    if np.allclose(gram, np.eye(3), atol=1e-6):
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    hdr["descrip"] = b"ctdid HU"
    gz = name.endswith(".gz")
    # nibabel picks compression from the file name, and the temporary name ends in .tmp.
    opener: Any = gzip.open if gz else open
    with atomic_file(out, overwrite=overwrite) as tmp, opener(tmp, "wb") as f:
        file_map = nib.Nifti1Image.make_file_map()
        file_map["image"].fileobj = f
        img.to_file_map(file_map)
    return out.absolute()
