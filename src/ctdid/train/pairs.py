"""Paired training data: low-dose / normal-dose HU slices written as a folder of ``.npz`` files.

Two kinds of source give pairs at one *base dose* ``a0`` (0.25 by default):

* procedural phantoms (:func:`ctdid.sim.abdomen_phantom`, :func:`ctdid.sim.chest_phantom`): the
  noise-free slice is projected once; the normal-dose image is the FBP of Poisson + electronic
  noise at full dose, and the low-dose image adds to that same noisy sinogram the extra
  log-domain noise that takes full dose to ``a0`` (:func:`ctdid.sim.insertion_noise`);
* real normal-dose slices: the target is the real image and the low-dose image is made by
  projection-domain noise insertion (:func:`ctdid.sim.simulate_low_dose` with
  ``mode="insert"``).

In both cases ``low - normal`` is (to first order) independent of the noise of ``normal``, which
is what the paper's image-domain shortcut (:func:`ctdid.sim.rescale_noise`) needs to derive other
doses from the base pair; :mod:`ctdid.train.dataset` does that on the fly, so one folder serves
models of every dose.

Each ``.npz`` holds float32 HU ``low`` and ``normal`` (y, x), ``dose`` (``a0``), ``spacing``
(dy, dx) in mm and the strings ``source``, ``kind`` and ``kernel``; ``dataset.json`` describes
the whole folder (sources, seeds, simulation settings, software versions, timings).

The reading functions also accept the multi-dose folders of ``ctdid simulate``
(:func:`ctdid.train.simulate_dataset.simulate_dataset`): ``manifest.json`` and ``slices/*.npz``,
each file holding ``low`` of shape (doses, realisations, y, x) and its ``doses``. Such a pair
gives its stored images only (:meth:`Pair.realisations_at`), never the shortcut.

Examples
--------
>>> from ctdid.train.pairs import make_pairs, load_pair
>>> folder = make_pairs("pairs", n_phantoms=20, seed=0)                # doctest: +SKIP
>>> pair = load_pair(folder / "0000_abdomen.npz")                       # doctest: +SKIP
>>> low_at_eighth = pair.low_at(0.125)                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ctdid.errors import InputError
from ctdid.volume import CTVolume

__all__ = [
    "DATASET_FORMAT",
    "DATASET_VERSION",
    "HELD_OUT_PATTERNS",
    "MANIFEST_NAME",
    "SIMULATE_FORMAT",
    "SLICES_DIR",
    "Pair",
    "RealSource",
    "check_not_held_out",
    "insertion_pair",
    "list_pairs",
    "load_pair",
    "make_pairs",
    "phantom_pair",
    "read_dataset_info",
    "read_real_sources",
]

#: ``dataset.json``'s ``format`` value.
DATASET_FORMAT = "ctdid-pairs"
#: ``dataset.json``'s ``version`` value.
DATASET_VERSION = 1
#: Name fragments of data held out for testing (the Mayo L506 pair): refused as training input.
HELD_OUT_PATTERNS: tuple[str, ...] = ("L506",)
#: ``manifest.json``'s ``format`` value in a ``ctdid simulate`` folder.
SIMULATE_FORMAT = "ctdid-simulate"
#: The description file of a ``ctdid simulate`` folder.
MANIFEST_NAME = "manifest.json"
#: The sub-folder of a ``ctdid simulate`` folder that holds one ``.npz`` per slice.
SLICES_DIR = "slices"

#: progress(done, total, description) after each slice.
ProgressCallback = Callable[[int, int, str], None]

_RAW_SUFFIXES = (".raw", ".bin", ".img")


# ---------------------------------------------------------------------------------------------
# one pair


@dataclasses.dataclass(frozen=True, eq=False)
class Pair:
    """A low/normal-dose pair of HU slices at a base dose.

    Attributes
    ----------
    low, normal : ndarray, shape (y, x)
        Float32 HU.
    dose : float
        Dose fraction of ``low`` relative to ``normal``, in (0, 1).
    spacing : tuple of float
        Pixel size (dy, dx) in mm.
    source : str
        Where the slice came from (phantom name and seed, or the real file).
    kind : str
        ``"phantom-abdomen"``, ``"phantom-chest"`` or ``"real-insert"``.
    kernel : str
        FBP window of the simulated noise.
    levels : ndarray, shape (doses, realisations, y, x), or None
        Float32 HU low-dose images stored at :attr:`level_doses` (a ``ctdid simulate`` slice);
        None for a base-dose pair. ``low`` is then ``levels[0, 0]`` and ``dose`` its dose.
    level_doses : tuple of float
        Dose fractions of the ``levels`` rows, in (0, 1].
    """

    low: NDArray[np.float32]
    normal: NDArray[np.float32]
    dose: float
    spacing: tuple[float, float]
    source: str = ""
    kind: str = ""
    kernel: str = ""
    levels: NDArray[np.float32] | None = None
    level_doses: tuple[float, ...] = ()

    def low_at(self, dose: float) -> NDArray[np.float32]:
        """The low-dose image at another dose fraction.

        A base-dose pair uses the image-domain shortcut
        ``normal + (low - normal) * sqrt((1/dose - 1) / (1/a0 - 1))``
        (:func:`ctdid.sim.rescale_noise`); ``dose == self.dose`` returns ``low`` itself. A pair
        with stored ``levels`` returns the first realisation stored at ``dose``.

        Raises
        ------
        InputError
            ``levels`` are stored but none at ``dose``.
        """
        if self.levels is not None:
            return self.realisations_at(dose)[0]
        if dose == self.dose:
            return self.low
        from ctdid.sim import rescale_noise

        return rescale_noise(self.normal, self.low, pair_dose=self.dose, dose=dose)

    def realisations_at(self, dose: float) -> NDArray[np.float32]:
        """Every low-dose realisation at ``dose``, float32 HU of shape (realisations, y, x).

        A base-dose pair has one: ``low_at(dose)[None]``.

        Raises
        ------
        InputError
            ``levels`` are stored but none at ``dose`` (the message names the stored ones).
        """
        if self.levels is None:
            return self.low_at(dose)[None]
        return self.levels[_level_index(self.level_doses, dose, where=self.source or None)]


def _level_index(level_doses: Sequence[float], dose: float, *, where: Any) -> int:
    for k, stored in enumerate(level_doses):
        if math.isclose(stored, dose, rel_tol=1e-6):
            return k
    levels = ", ".join(f"{d:g}" for d in level_doses)
    raise InputError(
        f"dose {dose:g} is not stored in this simulated dataset (stored: {levels}); train at a "
        "stored dose or simulate it ('ctdid simulate --doses')",
        path=where,
    )


def _geometry_or_default(geometry: Any) -> Any:
    from ctdid.sim import FanBeamGeometry

    return FanBeamGeometry() if geometry is None else geometry


def phantom_pair(
    hu: NDArray[np.floating[Any]],
    *,
    spacing: tuple[float, float],
    dose: float = 0.25,
    seed: int = 0,
    geometry: Any = None,
    kernel: str = "hann",
    device: str | torch.device | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Simulate a normal-dose and a low-dose scan of a noise-free slice from one projection.

    Parameters
    ----------
    hu : ndarray, shape (y, x)
        Noise-free slice in HU.
    spacing : tuple of float
        Pixel size (dy, dx) in mm.
    dose : float, optional
        Dose fraction of the low-dose image, in (0, 1). Default 0.25.
    seed : int, optional
        Seed of the noise.
    geometry : ParallelBeamGeometry or FanBeamGeometry, optional
        Scan geometry; default :class:`ctdid.sim.FanBeamGeometry` ().
    kernel : str, optional
        FBP window (:data:`ctdid.sim.KERNELS`). Default ``"hann"``.
    device : torch device, optional
        Where to compute (default CPU).

    Returns
    -------
    low, normal : ndarray, shape (y, x)
        Float32 HU. ``normal`` carries full-dose Poisson + electronic noise; ``low`` adds the
        insertion noise that takes that sinogram to ``dose``.
    """
    from ctdid.sim import (
        fbp,
        forward_project,
        hu_to_mu,
        insertion_noise,
        mu_to_hu,
        poisson_sinogram,
    )

    img = np.asarray(hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected one slice (y, x), got shape {img.shape}")
    if not 0 < dose < 1:
        raise ValueError(f"dose must be in (0, 1), got {dose}")
    geom = _geometry_or_default(geometry)
    dev = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))
    sp = (float(spacing[0]), float(spacing[1]))
    shape = (img.shape[0], img.shape[1])
    with torch.no_grad():
        mu = hu_to_mu(torch.as_tensor(img, device=dev))
        sino = forward_project(mu, geom, spacing=sp)
        noisy = poisson_sinogram(sino, dose=1.0, generator=gen)
        extra = insertion_noise(sino, dose=dose, generator=gen)
        normal = mu_to_hu(fbp(noisy, geom, shape=shape, spacing=sp, kernel=kernel))
        low = mu_to_hu(fbp(noisy + extra, geom, shape=shape, spacing=sp, kernel=kernel))
    return (
        low.cpu().numpy().astype(np.float32, copy=False),
        normal.cpu().numpy().astype(np.float32, copy=False),
    )


def insertion_pair(
    hu: NDArray[np.floating[Any]],
    *,
    spacing: tuple[float, float],
    dose: float = 0.25,
    seed: int = 0,
    geometry: Any = None,
    kernel: str = "hann",
    i0: float | None = None,
    device: str | torch.device | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A low-dose version of a real normal-dose slice by projection-domain noise insertion.

    Parameters
    ----------
    hu : ndarray, shape (y, x)
        Real normal-dose slice in HU (the target).
    spacing : tuple of float
        Pixel size (dy, dx) in mm.
    dose : float, optional
        Dose fraction of the low-dose image, in (0, 1). Default 0.25.
    seed : int, optional
        Seed of the inserted noise.
    geometry : optional
        Scan geometry; default :class:`ctdid.sim.FanBeamGeometry` ().
    kernel : str, optional
        FBP window of the inserted noise (default ``"hann"``, see :func:`read_real_sources`).
    i0 : float, optional
        Full-dose photons per detector bin per view assumed for the real scan (sets the
        inserted noise level); default :data:`ctdid.sim.DEFAULT_I0`.
    device : torch device, optional
        Where to compute.

    Returns
    -------
    low, normal : ndarray, shape (y, x)
        Float32 HU; ``normal`` is the input.
    """
    from ctdid.sim import DEFAULT_I0, simulate_low_dose

    img = np.asarray(hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected one slice (y, x), got shape {img.shape}")
    if not 0 < dose < 1:
        raise ValueError(f"dose must be in (0, 1), got {dose}")
    low = simulate_low_dose(
        img,
        dose=dose,
        spacing=(float(spacing[0]), float(spacing[1])),
        geometry=_geometry_or_default(geometry),
        mode="insert",
        kernel=kernel,
        i0=DEFAULT_I0 if i0 is None else float(i0),
        seed=int(seed),
        device=device,
    )
    return low.astype(np.float32, copy=False), img


# ---------------------------------------------------------------------------------------------
# real sources


@dataclasses.dataclass(frozen=True, eq=False)
class RealSource:
    """A real normal-dose volume to make insertion pairs from (one pair per slice).

    Attributes
    ----------
    name : str
        Name written in the dataset (e.g. the file name).
    volume : CTVolume
        The slices in HU with their spacing.
    kernel : str
        FBP window of the inserted noise (see :func:`read_real_sources`). Default ``"hann"``.
    i0 : float or None
        Full-dose photons per bin per view assumed for this scan (inserted noise level);
        None for :data:`ctdid.sim.DEFAULT_I0` (:func:`make_pairs`) or the dataset's ``i0``
        (:func:`ctdid.train.simulate_dataset.simulate_dataset`).
    path : str
        The file it was read from (recorded in dataset descriptions); may be empty.
    """

    name: str
    volume: CTVolume
    kernel: str = "hann"
    i0: float | None = None
    path: str = ""


def check_not_held_out(name: str, *, path: str | os.PathLike[str] | None = None) -> None:
    """Refuse a source whose name contains a held-out pattern (:data:`HELD_OUT_PATTERNS`).

    Raises
    ------
    InputError
        If ``name`` names the held-out test data.
    """
    for pattern in HELD_OUT_PATTERNS:
        if pattern.lower() in str(name).lower():
            raise InputError(
                f"{pattern} is the held-out test pair and is never used for training",
                path=path if path is not None else name,
            )


def read_real_sources(
    paths: Sequence[str | os.PathLike[str]],
    *,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    hu_offset: float | None = None,
    spacing: Sequence[float] | None = None,
    kernel: str = "hann",
    i0: float | None = None,
) -> list[RealSource]:
    """Read real normal-dose inputs: files or DICOM folders, or folders of raw files.

    Parameters
    ----------
    paths : sequence of path-like
        Volumes readable by :func:`ctdid.io.read_volume`. With ``dtype`` (raw data) a folder is
        taken as a folder of raw slices: every ``.raw``/``.bin``/``.img`` file in it, sorted.
    shape, dtype, hu_offset, spacing : optional
        Passed to :func:`ctdid.io.read_volume` (raw data: ``shape`` (y, x), stored ``dtype``,
        ``HU = value + hu_offset``, ``spacing`` (dy, dx) or (dz, dy, dx) in mm).
    kernel : str, optional
        FBP window of the inserted noise. Default ``"hann"``: with the default fan beam it gives
        106 HU std of (low - normal) at a quarter dose on a sharp (D45) Mayo L067 slice of
        0.7 mm pixels, against 109 HU for Mayo's own quarter-dose insertion on the L506 pair;
        ``"ramp"`` gives 282 HU there at the default ``i0``, but its noise texture is the
        closest to Mayo's sharp kernel (see docs/simulator.md); the shipped models use
        ``"ramp"`` with ``i0=2.8e5``, which gives 108 HU on the L506 full-dose slice.
    i0 : float, optional
        Full-dose photons per bin per view assumed for these scans (the inserted noise level);
        default :data:`ctdid.sim.DEFAULT_I0`.

    Returns
    -------
    list of RealSource

    Raises
    ------
    InputError
        Unreadable input, a folder without raw files, or held-out data (:data:`HELD_OUT_PATTERNS`).
    """
    from ctdid.io import read_volume

    files: list[Path] = []
    for p in map(Path, paths):
        check_not_held_out(str(p), path=p)
        if p.is_dir() and dtype is not None:
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in _RAW_SUFFIXES)
            if not found:
                raise InputError(
                    f"no raw files ({', '.join(_RAW_SUFFIXES)}) in this folder", path=p
                )
            files.extend(found)
        else:
            files.append(p)
    sources = []
    for f in files:
        check_not_held_out(f.name, path=f)
        vol = read_volume(
            f,
            shape=None if shape is None else tuple(shape),
            dtype=dtype,
            hu_offset=hu_offset,
            spacing=None if spacing is None else tuple(spacing),
        )
        sources.append(RealSource(name=f.name, volume=vol, kernel=kernel, i0=i0, path=str(f)))
    return sources


# ---------------------------------------------------------------------------------------------
# the dataset folder


def _seeds(seed: int, n: int, salt: int) -> list[tuple[int, int]]:
    children = np.random.SeedSequence([int(seed), salt]).spawn(n)
    out = []
    for c in children:
        a, b = c.generate_state(2, dtype=np.uint32)
        out.append((int(a), int(b)))
    return out


def _versions() -> dict[str, str]:
    from ctdid import __version__

    return {
        "ctdid": __version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _save_npz(path: Path, pair: Pair) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            low=pair.low.astype(np.float32),
            normal=pair.normal.astype(np.float32),
            dose=np.float64(pair.dose),
            spacing=np.asarray(pair.spacing, dtype=np.float64),
            source=np.str_(pair.source),
            kind=np.str_(pair.kind),
            kernel=np.str_(pair.kernel),
        )


def make_pairs(
    out: str | os.PathLike[str],
    *,
    n_phantoms: int = 0,
    seed: int = 0,
    real: Sequence[RealSource] = (),
    base_dose: float = 0.25,
    phantom_shape: int = 512,
    fov_mm: float = 380.0,
    kernel: str = "hann",
    geometry: Any = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write a folder of low/normal-dose training pairs at ``base_dose``.

    Parameters
    ----------
    i0 : float, optional
        Full-dose photons per bin per view assumed for these scans (inserted noise level).
    out : path-like
        Folder to create (atomically: it appears only when complete).
    n_phantoms : int, optional
        Number of procedural phantom slices; even indices are abdomens, odd ones chests.
    seed : int, optional
        Master seed: the anatomy and noise seed of every slice derive from it (and are recorded).
    real : sequence of RealSource, optional
        Real normal-dose volumes; every slice becomes an insertion pair.
    base_dose : float, optional
        Dose fraction ``a0`` of the stored low-dose images, in (0, 1). Default 0.25.
    phantom_shape : int, optional
        Phantom size in pixels. Default 512.
    fov_mm : float, optional
        Phantom field of view in mm (pixel ``fov_mm / phantom_shape``). Default 380.
    kernel : str, optional
        FBP window of the phantom scans. Default ``"hann"``.
    geometry : optional
        Scan geometry for all simulations; default :class:`ctdid.sim.FanBeamGeometry` ().
    device : torch device, optional
        Where to simulate (``"cuda"`` is much faster than the CPU).
    overwrite : bool, optional
        Replace an existing folder.
    progress : callable, optional
        ``progress(done, total, description)`` after every slice.

    Returns
    -------
    Path
        The folder written.

    Raises
    ------
    InputError
        Bad options, no source, or held-out data among the real sources.
    OutputExistsError
        If ``out`` exists and ``overwrite`` is false.
    """
    from ctdid.io.atomic import atomic_dir, check_output

    _check_pair_options(n_phantoms, base_dose, real)
    check_output(out, overwrite=overwrite)
    geom = _geometry_or_default(geometry)
    n_real = sum(src.volume.shape[0] for src in real)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        writer = _PairWriter(tmp, n_phantoms + n_real, progress, base_dose, geom, device)
        for i, seeds in enumerate(_seeds(seed, n_phantoms, 0)):
            writer.phantom(
                i, seeds, n=n_phantoms, shape=phantom_shape, fov_mm=fov_mm, kernel=kernel
            )
        real_seeds = iter(_seeds(seed, n_real, 1))
        for src in real:
            for k in range(src.volume.shape[0]):
                _, noise_seed = next(real_seeds)
                writer.insertion(src, k, noise_seed)
        info = {
            **_PAIRS_DESCRIPTION,
            "base_dose": base_dose,
            "seed": seed,
            "n_phantoms": n_phantoms,
            "phantom_shape": phantom_shape,
            "fov_mm": fov_mm,
            "kernel": kernel,
            "geometry": repr(geom),
            "real_sources": [
                {"name": s.name, "kernel": s.kernel, "slices": s.volume.shape[0]} for s in real
            ],
            "held_out_patterns": list(HELD_OUT_PATTERNS),
            "timing_s_per_slice": {
                k: (round(float(np.mean(v)), 3) if v else None) for k, v in writer.times.items()
            },
            "device": str(torch.device("cpu") if device is None else torch.device(device)),
            "versions": _versions(),
            "pairs": writer.records,
        }
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(out).absolute()


def _check_pair_options(n_phantoms: int, base_dose: float, real: Sequence[RealSource]) -> None:
    """Refuse bad :func:`make_pairs` options, no source, and held-out real sources."""
    if isinstance(n_phantoms, bool) or not isinstance(n_phantoms, int) or n_phantoms < 0:
        raise InputError(f"n_phantoms must be an integer >= 0, got {n_phantoms!r}")
    if not 0 < base_dose < 1:
        raise InputError(f"base dose must be a fraction in (0, 1), got {base_dose}")
    if n_phantoms == 0 and not real:
        raise InputError("no source: give phantoms and/or real normal-dose slices")
    for src in real:
        check_not_held_out(src.name)


#: The fixed part of ``dataset.json``: format and what the pairs are.
_PAIRS_DESCRIPTION: dict[str, Any] = {
    "format": DATASET_FORMAT,
    "version": DATASET_VERSION,
    "what": (
        "low/normal-dose HU slice pairs at the base dose; other doses are derived by the "
        "image-domain shortcut normal + (low - normal) * sqrt((1/a - 1)/(1/a0 - 1))"
    ),
    "how": {
        "phantoms": (
            "noise-free ctdid.sim phantom -> one forward projection -> normal: FBP of "
            "Poisson + electronic noise at full dose; low: FBP of the same noisy "
            "sinogram + insertion noise to the base dose"
        ),
        "real": (
            "real normal-dose slice (target) -> low: projection-domain noise insertion "
            "(ctdid.sim.simulate_low_dose mode='insert')"
        ),
    },
}


@dataclasses.dataclass
class _PairWriter:
    """Simulates pairs at ``base_dose`` into ``folder``, keeping records, timings and progress."""

    folder: Path
    total: int
    progress: ProgressCallback | None
    base_dose: float
    geometry: Any
    device: str | torch.device | None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    times: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {"phantom": [], "insert": []}
    )

    def phantom(
        self, i: int, seeds: tuple[int, int], *, n: int, shape: int, fov_mm: float, kernel: str
    ) -> None:
        """The pair of phantom ``i`` of ``n`` (abdomen if even, chest if odd) from its seeds."""
        from ctdid.sim import abdomen_phantom, chest_phantom

        anatomy_seed, noise_seed = seeds
        region = "abdomen" if i % 2 == 0 else "chest"
        make = abdomen_phantom if region == "abdomen" else chest_phantom
        t0 = time.perf_counter()
        ph = make(seed=anatomy_seed, shape=shape, fov_mm=fov_mm)
        low, normal = phantom_pair(
            ph.hu,
            spacing=ph.spacing,
            dose=self.base_dose,
            seed=noise_seed,
            geometry=self.geometry,
            kernel=kernel,
            device=self.device,
        )
        seconds = time.perf_counter() - t0
        self.times["phantom"].append(seconds)
        source = f"ctdid.sim.{region}_phantom(seed={anatomy_seed})"
        pair = Pair(low, normal, self.base_dose, ph.spacing, source, f"phantom-{region}", kernel)
        seed_record = {"anatomy_seed": anatomy_seed, "noise_seed": noise_seed}
        self._add(region, pair, seed_record, seconds, desc=f"{region} phantom {i + 1}/{n}")

    def insertion(self, src: RealSource, k: int, noise_seed: int) -> None:
        """The insertion pair of slice ``k`` of a real source."""
        spacing = (src.volume.spacing[1], src.volume.spacing[2])
        t0 = time.perf_counter()
        low, normal = insertion_pair(
            src.volume.hu[k],
            spacing=spacing,
            dose=self.base_dose,
            seed=noise_seed,
            geometry=self.geometry,
            kernel=src.kernel,
            i0=src.i0,
            device=self.device,
        )
        seconds = time.perf_counter() - t0
        self.times["insert"].append(seconds)
        several = src.volume.shape[0] > 1
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(src.name).stem)
        stem += f"_z{k:03d}" if several else ""
        source = f"{src.name}" + (f"[{k}]" if several else "")
        pair = Pair(low, normal, self.base_dose, spacing, source, "real-insert", src.kernel)
        self._add(stem, pair, {"noise_seed": noise_seed}, seconds, desc=f"insertion {src.name}")

    def _add(
        self, stem: str, pair: Pair, seeds: dict[str, int], seconds: float, *, desc: str
    ) -> None:
        """Save ``pair`` as the next ``NNNN_<stem>.npz``, record it and report progress."""
        name = f"{len(self.records):04d}_{stem}.npz"
        _save_npz(self.folder / name, pair)
        self.records.append(
            {
                "file": name,
                "kind": pair.kind,
                "source": pair.source,
                **seeds,
                "kernel": pair.kernel,
                "spacing_mm": list(pair.spacing),
                "shape": list(pair.low.shape),
                "seconds": round(seconds, 3),
            }
        )
        if self.progress is not None:
            self.progress(len(self.records), self.total, desc)


def _is_simulate_folder(p: Path) -> bool:
    return (p / MANIFEST_NAME).is_file() and (p / SLICES_DIR).is_dir()


def read_dataset_info(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``dataset.json`` of a pairs folder (an empty dict if it has none).

    For a ``ctdid simulate`` folder, its ``manifest.json`` (``format`` :data:`SIMULATE_FORMAT`).

    Raises
    ------
    InputError
        If the folder is missing or ``dataset.json`` is not valid JSON.
    """
    p = Path(folder)
    if not p.is_dir():
        raise InputError("pairs folder not found", path=p)
    f = p / (MANIFEST_NAME if _is_simulate_folder(p) else "dataset.json")
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read dataset description: {exc}", path=f) from None
    if not isinstance(data, dict):
        raise InputError("dataset description is not a JSON object", path=f)
    return data


def list_pairs(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.npz`` pair files of a folder, sorted by name.

    For a ``ctdid simulate`` folder, the finished slice files in its ``slices/`` sub-folder.

    Raises
    ------
    InputError
        If the folder is missing or holds no ``.npz`` file.
    """
    p = Path(folder)
    if not p.is_dir():
        raise InputError("pairs folder not found", path=p)
    if _is_simulate_folder(p):
        p = p / SLICES_DIR
    files = sorted(p.glob("*.npz"))
    if not files:
        raise InputError("no .npz pair files in this folder", path=p)
    return files


def load_pair(path: str | os.PathLike[str], *, dose: float | None = None) -> Pair:
    """Read one pair file written by :func:`make_pairs` or ``ctdid simulate``.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    dose : float, optional
        For a ``ctdid simulate`` slice (low-dose images stored at several doses): keep only the
        images stored at this dose fraction (``levels`` of shape (1, realisations, y, x)), so
        that a training set holds one dose in memory. Ignored for a base-dose pair.

    Raises
    ------
    InputError
        Missing or unreadable file, missing arrays, bad values, or ``dose`` not stored.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError("pair file not found", path=p) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read pair file: {exc}", path=p) from None
    stacked = "doses" in data
    required = ("low", "normal", "doses" if stacked else "dose", "spacing")
    missing = [k for k in required if k not in data]
    if missing:
        raise InputError(f"pair file lacks array(s): {', '.join(missing)}", path=p)
    low = np.asarray(data["low"], dtype=np.float32)
    normal = np.asarray(data["normal"], dtype=np.float32)
    if normal.ndim != 2 or low.ndim != (4 if stacked else 2) or low.shape[-2:] != normal.shape:
        raise InputError(
            f"low {low.shape} and normal {normal.shape} must be slices of one shape"
            + (" (low: doses, realisations, y, x)" if stacked else ""),
            path=p,
        )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(normal))):
        raise InputError("pair holds NaN or Inf", path=p)
    levels: NDArray[np.float32] | None = None
    level_doses: tuple[float, ...] = ()
    if stacked:
        level_doses = tuple(float(d) for d in np.asarray(data["doses"], dtype=float).reshape(-1))
        if len(level_doses) != low.shape[0] or low.shape[1] < 1:
            raise InputError(
                f"{len(level_doses)} doses for low-dose images of shape {low.shape}", path=p
            )
        if not all(0 < d <= 1 for d in level_doses):
            raise InputError(f"pair doses must be in (0, 1], got {list(level_doses)}", path=p)
        levels = low
        if dose is not None:  # keep one dose (a copy, so that the others are freed)
            k = _level_index(level_doses, dose, where=p)
            levels, level_doses = levels[k : k + 1].copy(), (level_doses[k],)
        low, pair_dose = levels[0, 0], level_doses[0]
    else:
        pair_dose = float(data["dose"])
        if not 0 < pair_dose < 1:
            raise InputError(f"pair dose must be in (0, 1), got {pair_dose}", path=p)
    sp = np.asarray(data["spacing"], dtype=float).reshape(-1)
    if sp.size != 2 or not np.all(sp > 0):
        raise InputError(f"pair spacing must be two sizes > 0 mm, got {sp}", path=p)

    def text(key: str) -> str:
        return str(data[key]) if key in data else ""

    return Pair(
        low=low,
        normal=normal,
        dose=pair_dose,
        spacing=(float(sp[0]), float(sp[1])),
        source=text("source") or p.name,
        kind=text("kind"),
        kernel=text("kernel"),
        levels=levels,
        level_doses=level_doses,
    )
