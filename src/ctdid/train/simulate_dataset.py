"""Multi-dose paired datasets (``ctdid simulate``): a normal-dose slice and, for each of several
dose levels, several independent noise realisations, simulated in the projection domain.

Sources
-------
* **procedural phantoms** (:func:`ctdid.sim.abdomen_phantom`, :func:`ctdid.sim.chest_phantom`;
  even indices abdomens, odd ones chests, anatomy seeds as :func:`ctdid.train.pairs.make_pairs`
  draws them): the noise-free slice is projected once. The *normal* image is a full-dose scan of
  it (FBP of Poisson + electronic noise at dose 1, as :func:`ctdid.train.pairs.phantom_pair`
  makes it), and every low-dose image is an independent full simulation at its dose (FBP of
  Poisson + electronic noise at that dose). The noise of ``low`` is therefore independent of
  the noise of ``normal``.
* **real normal-dose slices**: the *normal* image is the input, untouched, and every low-dose
  image is that input plus the FBP of projection-domain insertion noise (Yu et al. 2012,
  Zeng et al. 2015; :func:`ctdid.sim.insertion_noise`), whose variance takes the full-dose data
  to the dose.

Every stored image can be regenerated alone: ``normal`` of a phantom is
``simulate_low_dose(phantom, dose=1, mode="full", seed=normal_seed, ...)`` and each low-dose
image is ``simulate_low_dose(x, dose=d, mode=..., seed=seeds[d, r], ...)``
(:func:`ctdid.sim.simulate_low_dose` with the manifest's ``i0``, ``sigma_e``, kernel and
geometry; ``mode="full"`` on the noise-free phantom, ``"insert"`` on the real slice). The seeds
come from :func:`sample_seed`, a function of the master seed and the (slice, dose, realisation)
only, so the data do not depend on the number of workers, the order of the work, or the other
dose levels asked for.

The folder
----------
``manifest.json``
    ``format`` (:data:`ctdid.train.pairs.SIMULATE_FORMAT`), ``version``, ``options`` (what
    decides the data: doses, realisations, seed, i0, sigma_e, kernel, geometry, phantoms and the
    real sources with a sha256 of their HU; a resumed run must ask for the same), ``how`` (the
    method in words), ``seed_scheme``, ``held_out``, ``versions``, ``runs`` (timings) and
    ``slices``: one record per slice with its file, kind, source, seeds, spacing, shape and,
    once written, ``done``, ``seconds``, ``bytes`` and ``sha256``. It is written when the folder
    is created and rewritten atomically after every finished slice.
``slices/NNNN_<name>.npz``
    One per slice, written atomically: ``normal`` (y, x) and ``low`` (doses, realisations, y, x)
    float32 HU, ``doses`` (dose fractions of full dose), ``spacing`` (dy, dx) in mm, ``seeds``
    (doses, realisations) and ``normal_seed`` (uint64), and the strings ``source``, ``kind``
    (``phantom-abdomen``, ``phantom-chest`` or ``real-insert``) and ``kernel``.

:func:`ctdid.train.pairs.list_pairs`, :func:`ctdid.train.pairs.load_pair` and
:class:`ctdid.train.dataset.PairPatchDataset` read such a folder, so ``ctdid train`` trains on it
at any stored dose.

Examples
--------
>>> from ctdid.train.simulate_dataset import simulate_dataset
>>> simulate_dataset("sim", phantoms=12, doses=(0.25, 0.125), realisations=2)  # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from ctdid.errors import InputError, OutputExistsError
from ctdid.train.pairs import (
    HELD_OUT_PATTERNS,
    MANIFEST_NAME,
    SIMULATE_FORMAT,
    SLICES_DIR,
    RealSource,
    _versions,
    check_not_held_out,
)

__all__ = [
    "DEFAULT_DOSES",
    "MANIFEST_NAME",
    "SIMULATE_FORMAT",
    "SIMULATE_VERSION",
    "SLICES_DIR",
    "read_manifest",
    "sample_seed",
    "simulate_dataset",
]

#: ``manifest.json``'s ``version`` value.
SIMULATE_VERSION = 1
#: Dose fractions simulated by default: 1/2, 1/4, 1/8 and 1/16 of the normal dose.
DEFAULT_DOSES: tuple[float, ...] = (0.5, 0.25, 0.125, 0.0625)

#: progress(done, total, description) after each slice (``done`` counts earlier runs' too).
ProgressCallback = Callable[[int, int, str], None]

_PHANTOM_SALT = 0  # SeedSequence([seed, 0]) children: the anatomy seeds of make_pairs


# ---------------------------------------------------------------------------------------------
# seeds


def _dose_key(dose: float) -> int:
    return round(float(dose) * 1_000_000)


def sample_seed(
    seed: int, *, slice_index: int, dose: float | None = None, realisation: int = 0
) -> int:
    """The noise seed of one stored image, from the master seed alone.

    ``SeedSequence(seed, spawn_key=key)`` with ``key = (slice_index, 0)`` for the normal-dose
    image of a phantom and ``(slice_index, 1, round(dose * 1e6), realisation)`` for a low-dose
    image; its first 64-bit word shifted right by 11 (a 53-bit integer, exact in JSON) seeds a
    ``torch.Generator``.

    Parameters
    ----------
    seed : int
        Master seed of the dataset (>= 0).
    slice_index : int
        Position of the slice in the dataset (phantoms first, then the real slices in order).
    dose : float, optional
        Dose fraction of the low-dose image; None for the phantom's normal-dose image.
    realisation : int, optional
        Noise realisation number (0, 1, ...).

    Returns
    -------
    int
        A seed in [0, 2**53).
    """
    key = (
        (int(slice_index), 0)
        if dose is None
        else (int(slice_index), 1, _dose_key(dose), int(realisation))
    )
    word = np.random.SeedSequence(int(seed), spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(word[0]) >> 11


def _anatomy_seed(seed: int, index: int) -> int:
    # the same as make_pairs' anatomy seed of phantom ``index`` (so the anatomy matches)
    state = np.random.SeedSequence([int(seed), _PHANTOM_SALT], spawn_key=(index,))
    return int(state.generate_state(2, dtype=np.uint32)[0])


# ---------------------------------------------------------------------------------------------
# one slice (runs in a worker process)


@dataclasses.dataclass(frozen=True)
class _Task:
    """Everything a worker needs to simulate and write one slice (picklable)."""

    index: int
    path: str
    kind: str
    source: str
    kernel: str
    i0: float
    sigma_e: float
    doses: tuple[float, ...]
    seeds: tuple[tuple[int, ...], ...]
    normal_seed: int | None
    geometry: Any
    spacing: tuple[float, float]
    hu: NDArray[np.float32] | None = None  # real slice
    anatomy_seed: int | None = None  # phantom
    phantom_size: int = 512
    fov_mm: float = 380.0


def _phantom_hu(task: _Task) -> NDArray[np.float32]:
    from ctdid.sim import abdomen_phantom, chest_phantom

    make = abdomen_phantom if task.kind == "phantom-abdomen" else chest_phantom
    ph = make(seed=task.anatomy_seed, shape=task.phantom_size, fov_mm=task.fov_mm)
    return np.asarray(ph.hu, dtype=np.float32)


def _simulate(task: _Task) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``normal`` (y, x) and ``low`` (doses, realisations, y, x) of one slice, float32 HU.

    Computes what :func:`ctdid.sim.simulate_low_dose` computes for each image (its noise and
    reconstruction step, :func:`ctdid.sim.simulate.low_dose_from_sinogram`, with one generator
    per image), projecting the slice only once.
    """
    from ctdid.sim import forward_project, hu_to_mu
    from ctdid.sim.simulate import low_dose_from_sinogram

    phantom = task.hu is None
    img = _phantom_hu(task) if phantom else np.asarray(task.hu, dtype=np.float32)
    shape = (img.shape[0], img.shape[1])
    n_real = len(task.seeds[0])
    low = np.empty((len(task.doses), n_real, *shape), dtype=np.float32)

    mode: Literal["full", "insert"] = "full" if phantom else "insert"

    def image(sino: torch.Tensor, dose: float, seed: int) -> NDArray[np.float32]:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))
        out = low_dose_from_sinogram(
            x, sino, dose=dose, mode=mode, geometry=task.geometry, spacing=task.spacing,
            kernel=task.kernel, i0=task.i0, sigma_e=task.sigma_e, generator=gen,
        )  # fmt: skip
        return np.asarray(out[0].numpy(), dtype=np.float32)

    with torch.inference_mode():
        x = torch.tensor(img[None])
        sino = forward_project(hu_to_mu(x), task.geometry, spacing=task.spacing)
        if phantom:
            assert task.normal_seed is not None
            normal = image(sino, 1.0, task.normal_seed)
        else:
            normal = img
        for d, dose in enumerate(task.doses):
            for r, seed in enumerate(task.seeds[d]):
                low[d, r] = image(sino, dose, seed)
    return normal, low


def _simulate_slice(task: _Task) -> dict[str, Any]:
    """Simulate one slice, write its ``.npz`` atomically and describe what was written."""
    from ctdid.io.atomic import atomic_file

    t0 = time.perf_counter()
    normal, low = _simulate(task)
    buf = io.BytesIO()
    np.savez(
        buf,
        normal=normal,
        low=low,
        doses=np.asarray(task.doses, dtype=np.float64),
        spacing=np.asarray(task.spacing, dtype=np.float64),
        seeds=np.asarray(task.seeds, dtype=np.uint64),
        normal_seed=np.uint64(task.normal_seed or 0),
        source=np.str_(task.source),
        kind=np.str_(task.kind),
        kernel=np.str_(task.kernel),
    )
    data = buf.getbuffer()
    with atomic_file(task.path, overwrite=True) as tmp:
        tmp.write_bytes(data)
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _init_worker() -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent reports the interruption


@contextmanager
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# the plan and the manifest


def _geometry_dict(geometry: Any) -> dict[str, Any]:
    return {"type": type(geometry).__name__, **dataclasses.asdict(geometry)}


def _hu_sha256(hu: NDArray[np.floating[Any]]) -> str:
    return hashlib.sha256(np.ascontiguousarray(hu, dtype="<f4").tobytes()).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _check_options(
    *,
    phantoms: int,
    real: Sequence[RealSource],
    doses: Sequence[float],
    realisations: int,
    seed: int,
    i0: float,
    sigma_e: float,
    kernel: str,
    phantom_size: int,
    fov_mm: float,
    workers: int,
) -> tuple[float, ...]:
    from ctdid.sim import KERNELS

    def integer(value: Any, name: str, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")

    integer(phantoms, "phantoms", 0)
    integer(realisations, "realisations", 1)
    integer(seed, "seed", 0)
    integer(phantom_size, "phantom size", 32)
    integer(workers, "workers", 1)
    ds = tuple(float(d) for d in doses)
    if not ds:
        raise InputError("give at least one dose level")
    bad = [d for d in ds if not 0 < d <= 1]
    if bad:
        raise InputError(f"dose levels must be fractions of the normal dose in (0, 1], got {bad}")
    if len({_dose_key(d) for d in ds}) != len(ds):
        raise InputError(f"dose levels must differ (to 1e-6), got {list(ds)}")
    if not (math.isfinite(i0) and i0 > 0):
        raise InputError(f"i0 must be > 0 photons per bin per view, got {i0}")
    if not (math.isfinite(sigma_e) and sigma_e >= 0):
        raise InputError(f"sigma_e must be >= 0 counts, got {sigma_e}")
    for k in [kernel, *(src.kernel for src in real)]:
        if k not in KERNELS:
            raise InputError(f"unknown kernel {k!r}; choose one of {', '.join(KERNELS)}")
    for src in real:
        check_not_held_out(src.name, path=src.path or None)
        if src.path:
            check_not_held_out(src.path, path=src.path)
        if src.i0 is not None and not (math.isfinite(src.i0) and src.i0 > 0):
            raise InputError(f"i0 must be > 0 photons per bin per view, got {src.i0}")
    if phantoms == 0 and not real:
        raise InputError("no source: give phantoms and/or real normal-dose slices")
    if phantoms and not (math.isfinite(fov_mm) and fov_mm >= 360):
        raise InputError(f"the phantoms' field of view must be >= 360 mm, got {fov_mm}")
    return ds


def _plan(
    *,
    phantoms: int,
    real: Sequence[RealSource],
    doses: tuple[float, ...],
    realisations: int,
    seed: int,
    i0: float,
    sigma_e: float,
    kernel: str,
    geometry: Any,
    phantom_size: int,
    fov_mm: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The options that decide the data, and one record per slice (without the pixels)."""
    options: dict[str, Any] = {
        "doses": list(doses),
        "realisations": realisations,
        "seed": seed,
        "i0": i0,
        "sigma_e": sigma_e,
        "kernel": kernel,
        "geometry": _geometry_dict(geometry),
        "phantoms": phantoms,
        "phantom_size": phantom_size,
        "fov_mm": fov_mm,
        "real_sources": [_source_options(src, i0) for src in real],
    }

    def seeds(index: int) -> list[list[int]]:
        def one(d: float, r: int) -> int:
            return sample_seed(seed, slice_index=index, dose=d, realisation=r)

        return [[one(d, r) for r in range(realisations)] for d in doses]

    slices = [
        _phantom_slice_record(
            i, seed, seeds=seeds, kernel=kernel, i0=i0, size=phantom_size, fov_mm=fov_mm
        )
        for i in range(phantoms)
    ]
    for src, opts in zip(real, options["real_sources"], strict=True):
        for k in range(int(src.volume.shape[0])):
            slices.append(_real_slice_record(src, k, opts, index=len(slices), seeds=seeds))
    return _jsonable(options), slices


def _phantom_slice_record(
    i: int,
    seed: int,
    *,
    seeds: Callable[[int], list[list[int]]],
    kernel: str,
    i0: float,
    size: int,
    fov_mm: float,
) -> dict[str, Any]:
    """The record of phantom slice ``i`` (abdomen if even, chest if odd) of a ``size`` image."""
    region = "abdomen" if i % 2 == 0 else "chest"
    anatomy = _anatomy_seed(seed, i)
    pixel = fov_mm / size
    return {
        "index": i,
        "file": f"{SLICES_DIR}/{i:04d}_{region}.npz",
        "kind": f"phantom-{region}",
        "source": f"ctdid.sim.{region}_phantom(seed={anatomy})",
        "anatomy_seed": anatomy,
        "normal_seed": sample_seed(seed, slice_index=i),
        "seeds": seeds(i),
        "kernel": kernel,
        "i0": i0,
        "spacing_mm": [pixel, pixel],
        "shape": [size, size],
    }


def _source_options(src: RealSource, i0: float) -> dict[str, Any]:
    """What decides the data of a real source (``i0``: the dataset's, for a source without)."""
    return {
        "name": src.name,
        "slices": int(src.volume.shape[0]),
        "shape": [int(n) for n in src.volume.shape[1:]],
        "spacing_mm": [float(v) for v in src.volume.spacing[1:]],
        "kernel": src.kernel,
        "i0": i0 if src.i0 is None else float(src.i0),
        "hu_sha256": _hu_sha256(src.volume.hu),
    }


def _real_slice_record(
    src: RealSource,
    k: int,
    opts: dict[str, Any],
    *,
    index: int,
    seeds: Callable[[int], list[list[int]]],
) -> dict[str, Any]:
    """The record of slice ``k`` of a real source (``opts``: its :func:`_source_options`)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(src.name).stem)
    n = int(src.volume.shape[0])
    suffix = f"_z{k:03d}" if n > 1 else ""
    return {
        "index": index,
        "file": f"{SLICES_DIR}/{index:04d}_{stem}{suffix}.npz",
        "kind": "real-insert",
        "source": src.name + (f"[{k}]" if n > 1 else ""),
        "path": src.path,
        "z": k,
        "normal_seed": None,
        "seeds": seeds(index),
        "kernel": src.kernel,
        "i0": opts["i0"],
        "spacing_mm": opts["spacing_mm"],
        "shape": opts["shape"],
    }


def _manifest(options: dict[str, Any], slices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": SIMULATE_FORMAT,
        "version": SIMULATE_VERSION,
        "what": (
            "normal-dose HU slices with low-dose versions at each dose level (fraction of the "
            "normal dose), several independent noise realisations each"
        ),
        "how": {
            "phantoms": (
                "noise-free ctdid.sim phantom -> one forward projection -> normal: FBP of "
                "Poisson + electronic noise at full dose (seed normal_seed); low[d, r]: FBP of "
                "an independent Poisson + electronic noise draw at dose d (seed seeds[d][r]); "
                "each equals ctdid.sim.simulate_low_dose(phantom, mode='full', seed=...)"
            ),
            "real": (
                "real normal-dose slice = normal (untouched) -> low[d, r]: normal + FBP of "
                "projection-domain insertion noise taking full dose to d (Yu 2012 / Zeng 2015; "
                "= ctdid.sim.simulate_low_dose(normal, mode='insert', seed=seeds[d][r]))"
            ),
            "units": "HU; spacing in mm; doses as fractions of the normal dose; i0 in photons "
            "per detector bin per view at normal dose; sigma_e in photon counts",
        },
        "seed_scheme": (
            "numpy SeedSequence(seed, spawn_key=(slice, 0)) for a phantom's normal image and "
            "(slice, 1, round(dose * 1e6), realisation) for a low-dose image; first uint64 word "
            ">> 11 seeds a torch.Generator (ctdid.train.simulate_dataset.sample_seed); phantom "
            "anatomy seeds as ctdid.train.pairs.make_pairs"
        ),
        "held_out": {
            "patterns": list(HELD_OUT_PATTERNS),
            "note": "real sources whose name or path contains a pattern are refused: the Mayo "
            "L506 pair is kept out of training data for testing",
        },
        "options": options,
        "created": _now(),
        "updated": _now(),
        "status": "incomplete",
        "versions": _versions(),
        "runs": [],
        "slices": slices,
    }


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of a ``ctdid simulate`` folder.

    Raises
    ------
    InputError
        No manifest, unreadable, or not a ``ctdid simulate`` manifest.
    """
    f = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no manifest: not a 'ctdid simulate' folder", path=Path(folder)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", path=f) from None
    if not isinstance(data, dict) or data.get("format") != SIMULATE_FORMAT:
        raise InputError(f"not a {SIMULATE_FORMAT} manifest", path=f)
    if data.get("version") != SIMULATE_VERSION:
        raise InputError(
            f"manifest version {data.get('version')!r}; this ctdid reads {SIMULATE_VERSION}",
            path=f,
        )
    return data


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    from ctdid.io.atomic import atomic_file

    manifest["updated"] = _now()
    with atomic_file(folder / MANIFEST_NAME, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def _is_ctdid_dataset(p: Path) -> bool:
    """A folder this function may replace: empty, or a ctdid simulate / simulate-pairs folder."""
    if not p.is_dir():
        return False
    if not any(p.iterdir()):
        return True
    for name, fmt in ((MANIFEST_NAME, SIMULATE_FORMAT), ("dataset.json", "ctdid-pairs")):
        try:
            if json.loads((p / name).read_text(encoding="utf-8")).get("format") == fmt:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _differences(stored: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(stored) | set(asked)):
        if stored.get(key) != asked.get(key):
            a, b = json.dumps(stored.get(key)), json.dumps(asked.get(key))
            if len(a) + len(b) > 160:
                out.append(key)
            else:
                out.append(f"{key} (dataset {a}, asked {b})")
    return out


def _finished(folder: Path, rec: dict[str, Any]) -> bool:
    """The slice's record says done and its file is there with the recorded sha256."""
    if not rec.get("done"):
        return False
    f = folder / rec["file"]
    try:
        if f.stat().st_size != rec.get("bytes"):
            return False
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == rec.get("sha256")


def _open_folder(
    out: Path,
    manifest: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
) -> dict[str, Any]:
    """Create the folder (or reuse it when resuming); return the manifest in force."""
    from ctdid.io.atomic import atomic_dir

    if out.exists() or out.is_symlink():
        is_dataset = (out / MANIFEST_NAME).is_file()
        if overwrite:
            if not _is_ctdid_dataset(out):
                raise OutputExistsError(
                    "exists and is not a ctdid dataset folder; not replaced (choose another "
                    "folder or remove it yourself)",
                    path=out,
                )
        elif not out.is_dir() or (any(out.iterdir()) and not is_dataset):
            raise OutputExistsError(
                "exists and is not a 'ctdid simulate' folder; choose another folder", path=out
            )
        elif is_dataset:
            if not resume:
                raise OutputExistsError(
                    "exists; pass --overwrite to replace it (or resume it)", path=out
                )
            stored = read_manifest(out)
            diff = _differences(stored.get("options", {}), manifest["options"])
            if diff:
                raise InputError(
                    "options differ from the dataset's manifest: "
                    + "; ".join(diff)
                    + "; rerun with the same options to resume, or pass --overwrite to replace "
                    "it",
                    path=out,
                )
            for stale in (out / SLICES_DIR).glob(".*.tmp"):  # left by a killed run
                stale.unlink(missing_ok=True)
            (out / SLICES_DIR).mkdir(exist_ok=True)
            return stored
        else:  # an empty folder: use it
            (out / SLICES_DIR).mkdir()
            _write_manifest(out, manifest)
            return manifest
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / SLICES_DIR).mkdir()
        _write_manifest(tmp, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# the dataset


def simulate_dataset(
    out: str | os.PathLike[str],
    *,
    phantoms: int = 0,
    real: Sequence[RealSource] = (),
    doses: Sequence[float] = DEFAULT_DOSES,
    realisations: int = 1,
    seed: int = 0,
    i0: float | None = None,
    sigma_e: float | None = None,
    kernel: str = "hann",
    geometry: Any = None,
    phantom_size: int = 512,
    fov_mm: float = 380.0,
    workers: int = 2,
    resume: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write (or finish) a multi-dose paired dataset folder (see the module description).

    Parameters
    ----------
    out : path-like
        Folder to create; an existing ``ctdid simulate`` folder made with the same options is
        resumed (finished slices are skipped).
    phantoms : int, optional
        Number of procedural phantom slices; even indices are abdomens, odd ones chests.
    real : sequence of RealSource, optional
        Real normal-dose volumes (:func:`ctdid.train.pairs.read_real_sources`); every slice
        becomes one dataset slice, its noise inserted with the source's ``kernel`` and ``i0``
        (``i0`` None: this function's ``i0``). Held-out data (the Mayo L506 pair) are refused.
    doses : sequence of float, optional
        Dose levels as fractions of the normal dose, each in (0, 1]. Default 1/2, 1/4, 1/8,
        1/16.
    realisations : int, optional
        Independent noise realisations per dose level. Default 1.
    seed : int, optional
        Master seed (>= 0): anatomy and every noise seed derive from it (:func:`sample_seed`).
    i0 : float, optional
        Unattenuated photons per detector bin per view at normal dose (phantoms, and real
        sources without their own); default :data:`ctdid.sim.DEFAULT_I0`.
    sigma_e : float, optional
        Electronic noise standard deviation in photon counts per bin per view; default
        :data:`ctdid.sim.DEFAULT_SIGMA_E`.
    kernel : str, optional
        FBP window of the phantom scans (:data:`ctdid.sim.KERNELS`). Default ``"hann"``.
    geometry : ParallelBeamGeometry or FanBeamGeometry, optional
        Scan geometry; default :class:`ctdid.sim.FanBeamGeometry` () (1152 views, 736 bins).
    phantom_size : int, optional
        Phantom size in pixels (>= 32). Default 512.
    fov_mm : float, optional
        Phantom field of view in mm (pixel ``fov_mm / phantom_size``), >= 360. Default 380.
    workers : int, optional
        Processes simulating slices in parallel, each with one torch thread; 1 runs in this
        process (also with one thread). The data do not depend on it. Default 2.
    resume : bool, optional
        Continue an existing folder made with the same options (default); false refuses it.
    overwrite : bool, optional
        Replace an existing folder, but only an empty one or a ctdid dataset (``ctdid
        simulate`` or ``simulate-pairs``): other folders are never replaced.
    progress : callable, optional
        ``progress(done, total, description)`` after each slice; ``done`` counts slices
        finished by earlier runs too.

    Returns
    -------
    dict
        The final manifest. Its last ``runs`` entry gives this run's ``slices`` and ``images``
        (low-dose images made), ``seconds`` (wall time) and ``s_per_image``.

    Raises
    ------
    InputError
        Bad options, no source, held-out data, or an existing folder made with other options.
    OutputExistsError
        ``out`` exists and is not a ``ctdid simulate`` folder (or ``resume`` is false), or
        ``overwrite`` is asked for a folder that is not a ctdid dataset.

    Notes
    -----
    With ``workers > 1`` the slices are simulated in ``forkserver`` (or ``spawn``) processes,
    which import the calling script again: call this function under
    ``if __name__ == "__main__":`` in a script. The manifest is rewritten after every slice, so
    an interruption (Ctrl-C, a crash, a failing source) loses at most the slices in progress;
    rerunning the same call redoes only the slices not recorded as finished with an intact
    file. Two runs must not write the same folder at once.

    Cost: about one projection per slice plus one FBP per stored image (a 512 x 512 slice with
    the default geometry: about 2 s + 1.3 s per image on one busy CPU core).
    """
    from ctdid.sim import DEFAULT_I0, DEFAULT_SIGMA_E, FanBeamGeometry

    i0 = DEFAULT_I0 if i0 is None else float(i0)
    sigma_e = DEFAULT_SIGMA_E if sigma_e is None else float(sigma_e)
    common: dict[str, Any] = {
        "phantoms": phantoms,
        "real": real,
        "realisations": realisations,
        "seed": seed,
        "i0": i0,
        "sigma_e": sigma_e,
        "kernel": kernel,
        "phantom_size": phantom_size,
        "fov_mm": float(fov_mm),
    }
    ds = _check_options(**common, doses=doses, workers=workers)
    geom = FanBeamGeometry() if geometry is None else geometry
    options, slices = _plan(**common, doses=ds, geometry=geom)
    folder = Path(out).absolute()
    manifest = _open_folder(folder, _manifest(options, slices), resume=resume, overwrite=overwrite)
    tasks = _pending_tasks(
        folder,
        manifest["slices"],
        real,
        phantoms=phantoms,
        sigma_e=sigma_e,
        doses=ds,
        geometry=geom,
        phantom_size=phantom_size,
        fov_mm=float(fov_mm),
    )
    run = _Run(folder, manifest, progress, done=len(manifest["slices"]) - len(tasks))
    t_start = time.perf_counter()
    started = _now()
    if progress is not None:
        progress(run.done, run.total, "simulating")
    n_workers = min(workers, len(tasks))
    try:
        if n_workers <= 1:
            with _one_thread():
                for task in tasks:
                    run.finish(task, _simulate_slice(task))
        else:
            _run_pool(tasks, n_workers, run.finish)
    finally:
        seconds = time.perf_counter() - t_start
        run.close(started, n_workers, len(ds) * realisations, seconds)
    return manifest


def _pending_tasks(
    folder: Path,
    records: list[dict[str, Any]],
    real: Sequence[RealSource],
    *,
    phantoms: int,
    sigma_e: float,
    doses: tuple[float, ...],
    geometry: Any,
    phantom_size: int,
    fov_mm: float,
) -> list[_Task]:
    """A task for every slice not finished (its record marked not done), in order."""
    real_slices = [(src, k) for src in real for k in range(src.volume.shape[0])]
    tasks: list[_Task] = []
    for rec in records:
        if _finished(folder, rec):
            continue
        rec["done"] = False
        common = {
            "index": rec["index"],
            "path": str(folder / rec["file"]),
            "kind": rec["kind"],
            "source": rec["source"],
            "kernel": rec["kernel"],
            "i0": float(rec["i0"]),
            "sigma_e": sigma_e,
            "doses": doses,
            "seeds": tuple(tuple(int(s) for s in row) for row in rec["seeds"]),
            "normal_seed": rec["normal_seed"],
            "geometry": geometry,
            "spacing": (float(rec["spacing_mm"][0]), float(rec["spacing_mm"][1])),
        }
        if rec["kind"] == "real-insert":
            src, k = real_slices[rec["index"] - phantoms]
            tasks.append(_Task(**common, hu=np.asarray(src.volume.hu[k], dtype=np.float32)))
        else:
            tasks.append(
                _Task(
                    **common,
                    anatomy_seed=rec["anatomy_seed"],
                    phantom_size=phantom_size,
                    fov_mm=fov_mm,
                )
            )
    return tasks


@dataclasses.dataclass
class _Run:
    """A run over a dataset folder: counts the finished slices and keeps the manifest written."""

    folder: Path
    manifest: dict[str, Any]
    progress: ProgressCallback | None
    done: int  # slices finished, by earlier runs too
    made: int = 0  # slices made by this run

    @property
    def total(self) -> int:
        """Number of slices in the dataset."""
        return len(self.manifest["slices"])

    def _status(self) -> str:
        return "complete" if self.done == self.total else "incomplete"

    def finish(self, task: _Task, result: dict[str, Any]) -> None:
        """Record a finished slice, rewrite the manifest and report progress."""
        self.manifest["slices"][task.index].update(done=True, **result)
        self.done += 1
        self.made += 1
        self.manifest["status"] = self._status()
        _write_manifest(self.folder, self.manifest)
        if self.progress is not None:
            self.progress(self.done, self.total, Path(task.path).stem)

    def close(self, started: str, workers: int, images_per_slice: int, seconds: float) -> None:
        """Append this run's entry to the manifest and write it (if the folder is still there)."""
        made = self.made
        self.manifest["runs"].append(
            {
                "started": started,
                "workers": workers,
                "slices": made,
                "images": made * images_per_slice,
                "seconds": round(seconds, 3),
                "s_per_image": round(seconds / (made * images_per_slice), 4) if made else None,
                "versions": _versions(),
            }
        )
        self.manifest["versions"] = _versions()
        self.manifest["status"] = self._status()
        if self.folder.is_dir():
            _write_manifest(self.folder, self.manifest)


def _pool_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_pool(
    tasks: list[_Task], n_workers: int, finish: Callable[[_Task, dict[str, Any]], None]
) -> None:
    """Simulate ``tasks`` in ``n_workers`` processes; ``finish`` each as it is done.

    On the first failure the slices not yet started are cancelled, the running ones are
    finished when they are done, and the failure is raised.
    """
    error: BaseException | None = None
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=n_workers, mp_context=_pool_context(), initializer=_init_worker
    ) as pool:
        futures = {pool.submit(_simulate_slice, t): t for t in tasks}
        try:
            for fut in concurrent.futures.as_completed(futures):
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if error is None:
                        error = exc
                        for other in futures:
                            other.cancel()
                    continue
                finish(futures[fut], fut.result())
        except BaseException:  # interrupted: do not start more work
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if error is not None:
        raise error
