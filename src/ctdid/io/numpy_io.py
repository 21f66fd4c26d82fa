"""NumPy ``.npy``/``.npz`` arrays, with an optional JSON sidecar for geometry and HU mapping.

The array is (z, y, x) or (y, x) (one slice). The sidecar is the file of the same stem with the
suffix ``.json`` (``scan.npy`` -> ``scan.json``; ``scan.npy.json`` is also looked for)::

    {"spacing": [dz, dy, dx], "origin": [x, y, z], "direction": [[...], [...], [...]],
     "hu_offset": 0, "hu_slope": 1}

Every key is optional: spacing in mm (default 1), origin in mm LPS of voxel (0, 0, 0) (default 0),
direction rows the LPS directions of increasing x, y and z index (default identity), and
``HU = hu_slope * value + hu_offset``. Pickles are never loaded.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.errors import InputError, OutputExistsError
from ctdid.io.atomic import atomic_file
from ctdid.io.raw import apply_hu_mapping, check_input_file, make_volume
from ctdid.volume import CTVolume

__all__ = ["read_numpy", "sidecar_path", "write_numpy"]

_SIDECAR_KEYS = ("spacing", "origin", "direction", "hu_offset", "hu_slope")


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar that :func:`write_numpy` writes for ``path``: same stem, suffix ``.json``."""
    return Path(path).with_suffix(".json")


def _find_sidecar(p: Path) -> Path | None:
    for cand in (p.with_suffix(".json"), p.with_name(p.name + ".json")):
        if cand != p and cand.is_file():
            return cand
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(side: Path, key: str, value: Any, n: int) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(_is_number(v) for v in value):
        raise InputError(
            f"sidecar key {key!r} must be a list of {n} finite numbers, got {value!r}", path=side
        )
    return [float(v) for v in value]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _load_sidecar(side: Path) -> dict[str, Any]:
    """Parse and validate a sidecar; return geometry keyword arguments and the HU mapping."""
    try:
        text = side.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"sidecar cannot be read: {exc}", path=side) from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"sidecar is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            path=side,
        ) from None
    except ValueError as exc:
        raise InputError(f"sidecar is not valid JSON: {exc}", path=side) from None
    if not isinstance(doc, dict):
        raise InputError(
            f"sidecar must be a JSON object with keys {', '.join(_SIDECAR_KEYS)}", path=side
        )
    unknown = sorted(set(doc) - set(_SIDECAR_KEYS))
    if unknown:
        raise InputError(
            f"sidecar has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(_SIDECAR_KEYS)}",
            path=side,
        )
    out: dict[str, Any] = {}
    if "spacing" in doc:
        spacing = _numbers(side, "spacing", doc["spacing"], 3)
        if min(spacing) <= 0:
            raise InputError(f"sidecar spacing must be > 0 mm, got {spacing}", path=side)
        out["spacing"] = spacing
    if "origin" in doc:
        out["origin"] = _numbers(side, "origin", doc["origin"], 3)
    if "direction" in doc:
        d = doc["direction"]
        if not isinstance(d, list) or len(d) != 3:
            raise InputError(
                f"sidecar key 'direction' must be 3 rows of 3 numbers, got {d!r}", path=side
            )
        rows = [_numbers(side, "direction", row, 3) for row in d]
        norms = np.linalg.norm(np.asarray(rows), axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise InputError(
                f"sidecar direction rows must be unit vectors, norms {norms.round(6).tolist()}",
                path=side,
            )
        out["direction"] = rows
    for key, default in (("hu_offset", 0.0), ("hu_slope", 1.0)):
        v = doc.get(key, default)
        if not _is_number(v):
            raise InputError(f"sidecar key {key!r} must be a finite number, got {v!r}", path=side)
        out[key] = float(v)
    if out["hu_slope"] == 0:
        raise InputError("sidecar hu_slope must not be 0", path=side)
    return out


def _load_array(p: Path, key: str | None) -> tuple[NDArray[Any], str | None]:
    # Open the file here so that it is closed whatever np.load makes of it.
    with open(p, "rb") as fh:
        try:
            loaded = np.load(fh, allow_pickle=False)
        except ValueError as exc:
            msg = str(exc)
            if "pickle" in msg.lower() or "object arrays" in msg.lower():
                raise InputError(
                    "holds pickled data or an object array, which ctdid does not load "
                    "(allow_pickle=False); save a numeric array",
                    path=p,
                ) from None
            raise InputError(f"is not a NumPy .npy/.npz file ({msg})", path=p) from None
        except Exception as exc:  # corrupt zip, EOF, ...
            raise InputError(f"is not a readable NumPy .npy/.npz file ({exc})", path=p) from None
        if isinstance(loaded, np.ndarray):
            if key is not None:
                raise InputError(f"key={key!r} given, but a .npy file holds one array", path=p)
            return loaded, None
        with loaded:  # NpzFile
            return _pick_npz(p, loaded, key)


def _pick_npz(p: Path, npz: Any, key: str | None) -> tuple[NDArray[Any], str]:
    keys = list(npz.files)
    if not keys:
        raise InputError("the .npz archive holds no arrays", path=p)
    if key is None:
        if len(keys) > 1:
            raise InputError(
                f"the .npz archive holds {len(keys)} arrays; choose one with --key "
                f"(key= in Python; keys: {', '.join(keys)})",
                path=p,
            )
        key = keys[0]
    elif key not in keys:
        raise InputError(f"the .npz archive has no array {key!r} (keys: {', '.join(keys)})", path=p)
    try:
        arr = npz[key]
    except ValueError:
        raise InputError(
            f"array {key!r} is an object array, which ctdid does not load (allow_pickle=False)",
            path=p,
        ) from None
    except Exception as exc:
        raise InputError(f"array {key!r} cannot be read ({exc})", path=p) from None
    return arr, key


def read_numpy(path: str | os.PathLike[str], *, key: str | None = None) -> CTVolume:
    """Read a CT image from a ``.npy`` or ``.npz`` file (and its JSON sidecar, if any).

    Parameters
    ----------
    path : path-like
        The ``.npy`` or ``.npz`` file (recognised by content, not name).
    key : str, optional
        Which array of an ``.npz`` archive; needed when it holds several.

    Returns
    -------
    CTVolume
        ``meta = {"format": "numpy", "path": ..., "dtype": ..., "key": ..., "sidecar": ...}``.

    Raises
    ------
    InputError
        For a missing, empty or corrupt file, pickled/object data, an archive with several
        arrays and no (or an unknown) key, an array that is not 2-D or 3-D or not real numbers,
        NaN/Inf voxels, or an invalid sidecar (the message names the sidecar).
    """
    p = check_input_file(path)
    arr, used_key = _load_array(p, key)
    where = p if used_key is None else f"{p}[{used_key}]"
    if arr.ndim not in (2, 3):
        raise InputError(
            f"array has shape {arr.shape}; a CT image is 2-D (y, x) or 3-D (z, y, x)", path=where
        )
    if 0 in arr.shape:
        raise InputError(f"array is empty, shape {arr.shape}", path=where)
    side = _find_sidecar(p)
    geo = _load_sidecar(side) if side is not None else {"hu_offset": 0.0, "hu_slope": 1.0}
    hu = apply_hu_mapping(
        arr, hu_slope=geo.pop("hu_slope"), hu_offset=geo.pop("hu_offset"), path=where
    )
    meta: dict[str, Any] = {"format": "numpy", "path": str(p), "dtype": arr.dtype.str}
    if used_key is not None:
        meta["key"] = used_key
    if side is not None:
        meta["sidecar"] = str(side)
    return make_volume(where, hu, meta=meta, **geo)


def write_numpy(volume: CTVolume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``volume`` as a float32 (z, y, x) ``.npy`` file plus its JSON sidecar.

    Both files are written under temporary names and renamed when complete (the sidecar
    first); nothing that exists is replaced unless ``overwrite``.

    Returns
    -------
    Path
        The ``.npy`` file; the sidecar is :func:`sidecar_path` of it.

    Raises
    ------
    OutputExistsError
        If the ``.npy`` or the sidecar exists and ``overwrite`` is false; nothing is written.
    ValueError
        If ``path`` does not end in ``.npy``.
    """
    out = Path(path)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"{out}: write_numpy writes a .npy file; the name must end in .npy")
    side = sidecar_path(out)
    if not overwrite:
        for target in (out, side):
            if target.exists():
                raise OutputExistsError(
                    "exists; pass --overwrite to replace it", path=target.absolute()
                )
    doc = {
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": np.asarray(volume.direction, dtype=float).tolist(),
        "hu_offset": 0.0,
        "hu_slope": 1.0,
    }
    with atomic_file(out, overwrite=overwrite) as tmp_npy:
        with open(tmp_npy, "wb") as f:
            np.save(f, np.ascontiguousarray(volume.hu, dtype=np.float32), allow_pickle=False)
        with atomic_file(side, overwrite=overwrite) as tmp_json:
            tmp_json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out.absolute()
