"""``ctdid demo``: the whole workflow on an embedded example scan (no download).

By default the example is real anatomy: one normal-dose abdomen slice of the TotalSegmentator
example CT (Apache-2.0; ``ctdid/data/README.md`` and ``ctdid/data/LICENSE-TotalSegmentator``),
stored as int16 HU in ``ctdid/data/totalseg_abdomen_slice.npz`` by
``scripts/embed_demo_slice.py``. With ``phantom=True`` (``ctdid demo --phantom``) it is the
seeded procedural abdomen phantom instead.

1. Real slice: load it (:func:`load_demo_slice`) and insert the extra noise of a 4x lower dose
   in the projection domain (:func:`insert_demo_noise`: :func:`ctdid.train.pairs.insertion_pair`,
   i.e. :func:`ctdid.sim.simulate_low_dose` ``mode="insert"``, the way the real L067 evaluation
   slices and the shipped models' real training pairs were made), with a fixed seed; the
   normal dose is the slice itself. Phantom: simulate its normal-dose and quarter-dose scans
   from one fan-beam projection (:func:`ctdid.train.pairs.phantom_pair`).
2. Write the quarter-dose scan as a DICOM series (``input_dicom/``) and the normal dose beside
   it (``normal_dose_dicom/``), and read the input back as a user's scan would be read.
3. Load the shipped quarter-dose denoiser ``unet-d25`` and run DID (robust mode) into
   ``result/`` with the RMSE to the normal dose as an extra label; print the candidates.

When the shipped weights are not installed, the demo says so after describing the input scan,
and stops: it never substitutes an untrained or made-up network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from ctdid.errors import OutputExistsError
from ctdid.volume import CTVolume

__all__ = [
    "DEMO_DOSE",
    "DEMO_MODEL",
    "DEMO_SIZE",
    "DEMO_SLICE",
    "DemoScan",
    "demo_slice_path",
    "insert_demo_noise",
    "load_demo_slice",
    "run_demo",
    "simulate_demo_scan",
]

#: Shipped model the demo uses: trained on quarter-dose scans.
DEMO_MODEL = "unet-d25"
#: Default image size in pixels (square): the embedded slice's own 512.
DEMO_SIZE = 512
#: Dose of the demo's low-dose scan, as a fraction of the normal dose.
DEMO_DOSE = 0.25
#: File name of the embedded real slice in the package's ``data`` folder.
DEMO_SLICE = "totalseg_abdomen_slice.npz"
_FOV_MM = 380.0
_SLICE_MM = 1.0


@dataclasses.dataclass(frozen=True)
class DemoScan:
    """The demo's low-dose and normal-dose scans.

    Attributes
    ----------
    low_dose, normal_dose : CTVolume
        Quarter-dose and normal-dose images of the same slice, HU, (1, y, x).
    phantom : Any
        The :class:`ctdid.sim.Phantom` (noise-free HU, lesions, flat ROI) of the phantom demo;
        None for the real slice.
    seconds : dict of str to float
        Time spent making the input (loading or drawing it) and making each scan.
    kind : {'totalseg', 'phantom'}, optional
        The embedded real slice or the procedural phantom.
    """

    low_dose: CTVolume
    normal_dose: CTVolume
    phantom: Any
    seconds: dict[str, float]
    kind: str = "phantom"


def demo_slice_path() -> Path:
    """Where the embedded real slice is installed.

    Returns
    -------
    Path
        ``ctdid/data/totalseg_abdomen_slice.npz`` inside the installed package.
    """
    return Path(str(resources.files("ctdid").joinpath("data", DEMO_SLICE)))


def load_demo_slice(path: str | os.PathLike[str] | None = None) -> CTVolume:
    """Load the embedded real normal-dose slice (TotalSegmentator example CT, Apache-2.0).

    Parameters
    ----------
    path : path-like, optional
        An ``.npz`` written by ``scripts/embed_demo_slice.py``; default :func:`demo_slice_path`.

    Returns
    -------
    CTVolume
        Float32 HU, shape (1, y, x), spacing (slice thickness, dy, dx) in mm. ``meta`` holds
        the source description (``source``: repository, file, instance, scanner, kernel) and
        the noise-insertion parameters (``insert_i0``, ``insert_kernel``,
        ``reconstruction_diameter_mm``).
    """
    file = demo_slice_path() if path is None else Path(path)
    with np.load(file, allow_pickle=False) as z:
        stored = z["hu"]
        if stored.dtype != np.int16 or stored.ndim != 2:
            raise ValueError(f"{file}: expected a 2-D int16 'hu' array, got {stored.dtype}")
        hu = stored.astype(np.float32)
        dy, dx = (float(v) for v in z["pixel_spacing_mm"])
        thickness = float(z["slice_thickness_mm"])
        meta = {
            "source": json.loads(str(z["source"])),
            "insert_i0": float(z["insert_i0"]),
            "insert_kernel": str(z["insert_kernel"]),
            "reconstruction_diameter_mm": float(z["reconstruction_diameter_mm"]),
        }
    return CTVolume(hu[None], spacing=(thickness, dy, dx), meta=meta)


def _resample(hu: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Area-average (or, upward, bilinearly interpolate) a square slice to ``size`` pixels."""
    import torch

    if hu.shape == (size, size):
        return hu
    x = torch.tensor(np.asarray(hu, dtype=np.float32))[None, None]
    mode = "area" if size < hu.shape[0] else "bilinear"
    out = torch.nn.functional.interpolate(x, size=(size, size), mode=mode)
    return np.asarray(out[0, 0].numpy(), dtype=np.float32)


def insert_demo_noise(
    hu: NDArray[np.float32],
    *,
    spacing: tuple[float, float],
    i0: float,
    kernel: str,
    seed: int,
    dose: float = DEMO_DOSE,
    fov_mm: float | None = None,
) -> NDArray[np.float32]:
    """Insert the extra noise of a lower dose into a real normal-dose slice.

    Parameters
    ----------
    hu : ndarray, shape (y, x)
        Normal-dose slice in HU.
    spacing : (float, float)
        Pixel size (dy, dx) in mm.
    i0 : float
        Full-dose photons per detector bin per view assumed for the scan (the noise level).
    kernel : str
        FBP window of the inserted noise (:data:`ctdid.sim.KERNELS`).
    seed : int
        Seed of the noise.
    dose : float, optional
        Dose fraction of the result. Default :data:`DEMO_DOSE`.
    fov_mm : float, optional
        The scanner's reconstruction diameter: pixels outside this centred circle (padding,
        not image) are left as they are. Default: noise everywhere.

    Returns
    -------
    ndarray, shape (y, x)
        Float32 HU: ``hu`` plus the reconstructed insertion noise
        (:func:`ctdid.train.pairs.insertion_pair`, default fan beam).
    """
    from ctdid.train import pairs

    low, _ = pairs.insertion_pair(hu, spacing=spacing, dose=dose, seed=seed, kernel=kernel, i0=i0)
    if fov_mm is not None:
        ny, nx = hu.shape
        yy = (np.arange(ny) - (ny - 1) / 2) * spacing[0]
        xx = (np.arange(nx) - (nx - 1) / 2) * spacing[1]
        outside = np.hypot(yy[:, None], xx[None, :]) > fov_mm / 2
        low = np.where(outside, hu, low).astype(np.float32)
    return low


def simulate_demo_scan(*, size: int = DEMO_SIZE, seed: int = 0, phantom: bool = False) -> DemoScan:
    """Make the demo's quarter-dose and normal-dose scans.

    Parameters
    ----------
    size : int, optional
        Pixels per side. Real slice: resampled from its 512 (500 mm field of view, so the
        pixel is ``500 / size`` mm). Phantom: drawn at this size over 380 mm.
    seed : int, optional
        Seeds the inserted noise (real slice), or the phantom's anatomy and both scans' noise.
    phantom : bool, optional
        Use the procedural abdomen phantom instead of the embedded real slice.

    Returns
    -------
    DemoScan
    """
    if phantom:
        return _phantom_scan(size=size, seed=seed)
    t0 = time.perf_counter()
    src = load_demo_slice()
    native = src.hu[0]
    hu = _resample(native, int(size))
    scale = native.shape[0] / hu.shape[0]
    dy, dx = src.spacing[1] * scale, src.spacing[2] * scale
    t1 = time.perf_counter()
    low = insert_demo_noise(
        hu,
        spacing=(dy, dx),
        i0=src.meta["insert_i0"],
        kernel=src.meta["insert_kernel"],
        seed=seed,
        fov_mm=src.meta["reconstruction_diameter_mm"],
    )
    t2 = time.perf_counter()
    info = src.meta["source"]
    meta = {
        "source": "ctdid demo",
        "slice": f"TotalSegmentator example CT, {info['file']} (instance {info['instance']})",
        "licence": "Apache-2.0 (ctdid/data/LICENSE-TotalSegmentator)",
        "insert_i0": src.meta["insert_i0"],
        "insert_kernel": src.meta["insert_kernel"],
        "seed": seed,
        "size": int(size),
    }
    spacing = (src.spacing[0], dy, dx)
    return DemoScan(
        low_dose=CTVolume(low[None], spacing=spacing, meta={**meta, "dose": DEMO_DOSE}),
        normal_dose=CTVolume(hu[None], spacing=spacing, meta={**meta, "dose": 1.0}),
        phantom=None,
        seconds={"load": t1 - t0, "scans": t2 - t1},
        kind="totalseg",
    )


def _phantom_scan(*, size: int, seed: int) -> DemoScan:
    """The procedural phantom's normal and quarter dose from one fan-beam projection."""
    from ctdid.sim import abdomen_phantom
    from ctdid.train import pairs

    t0 = time.perf_counter()
    phantom = abdomen_phantom(seed=seed, shape=int(size), fov_mm=_FOV_MM)
    t1 = time.perf_counter()
    # One fan-beam projection of the phantom; normal dose = Poisson + electronic noise at full
    # dose; quarter dose = the same noisy sinogram with the extra noise of a 4x lower dose
    # inserted, exactly as the shipped models' training pairs were made.
    low, normal = pairs.phantom_pair(phantom.hu, spacing=phantom.spacing, dose=DEMO_DOSE, seed=seed)
    t3 = time.perf_counter()
    spacing = (_SLICE_MM, float(phantom.spacing[0]), float(phantom.spacing[1]))
    meta = {"source": "ctdid demo", "phantom": "abdomen", "seed": seed, "size": int(size)}
    return DemoScan(
        low_dose=CTVolume(low, spacing=spacing, meta={**meta, "dose": DEMO_DOSE}),
        normal_dose=CTVolume(normal, spacing=spacing, meta={**meta, "dose": 1.0}),
        phantom=phantom,
        seconds={"phantom": t1 - t0, "scans": t3 - t1},
        kind="phantom",
    )


def _describe(scan: DemoScan, input_dir: Path, console: Console) -> None:
    low = scan.low_dose.hu
    normal = scan.normal_dose.hu
    _, dy, dx = scan.low_dose.spacing
    real = scan.kind == "totalseg"
    table = Table(title="demo scan" if real else "simulated scan", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    if real:
        meta = scan.low_dose.meta
        table.add_row("slice", f"real abdomen CT: {meta['slice']}, {meta['licence']}")
        table.add_row(
            "quarter dose",
            f"noise inserted in the projection domain (I0 {meta['insert_i0']:.3g} at full dose, "
            f"{meta['insert_kernel']} window, seed {meta['seed']})",
        )
    else:
        ph = scan.phantom
        table.add_row(
            "phantom", f"procedural abdomen, {len(ph.lesions)} low-contrast liver lesions"
        )
    table.add_row("image", f"{low.shape[2]} x {low.shape[1]} px, pixel {dx:.3f} x {dy:.3f} mm")
    table.add_row(*_noise_row(scan, low, normal, (dy, dx)))
    table.add_row("input (quarter dose)", str(input_dir))
    console.print(table)


def _noise_row(
    scan: DemoScan, low: NDArray[np.float32], normal: NDArray[np.float32], spacing: Any
) -> tuple[str, str]:
    """The noise of both scans: the phantom's liver ROI, or flat regions of the real slice."""
    from ctdid.metrics import find_flat_regions, noise_label

    if scan.kind != "totalseg":
        roi = (0, *scan.phantom.flat_roi)
        return (
            "noise (liver ROI STD)",
            f"quarter dose {float(low[roi].std()):.1f} HU, "
            f"normal dose {float(normal[roi].std()):.1f} HU",
        )
    regions = find_flat_regions(normal[0], spacing=spacing)
    if not regions:
        return ("noise (flat-region STD)", "no flat region at this size")
    q = noise_label(low[0], spacing=spacing, regions=regions)
    n = noise_label(normal[0], spacing=spacing, regions=regions)
    return ("noise (flat-region STD)", f"quarter dose {q:.1f} HU, normal dose {n:.1f} HU")


def run_demo(
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    console: Console | None = None,
    size: int = DEMO_SIZE,
    seed: int = 0,
    model: str = DEMO_MODEL,
    weights_dir: str | os.PathLike[str] | None = None,
    n_candidates: int = 8,
    phantom: bool = False,
) -> Any:
    """Run the demo into the folder ``out``.

    Parameters
    ----------
    out : path
        Output folder (made); it must not exist, or be empty, unless ``overwrite``.
    overwrite : bool, optional
        Replace the outputs of an earlier demo in ``out``.
    console : rich Console, optional
        Where to print; default a new console on stdout.
    size : int, optional
        Image size in pixels (real slice: resampled from 512 px over 500 mm; phantom: 380 mm
        field of view). Default :data:`DEMO_SIZE`.
    seed : int, optional
        Noise seed (and, for the phantom, anatomy seed).
    model : str, optional
        Shipped model name (default :data:`DEMO_MODEL`).
    weights_dir : path, optional
        Folder of shipped models; default ``ctdid.models.SHIPPED_WEIGHTS_DIR``.
    n_candidates : int, optional
        Candidates per direction.
    phantom : bool, optional
        Use the procedural abdomen phantom instead of the embedded real slice.

    Returns
    -------
    RunSummary or None
        The summary of the DID run, or None when the model is not installed.

    Raises
    ------
    OutputExistsError
        If ``out`` holds files and ``overwrite`` is false.
    """
    from ctdid.models import available_models
    from ctdid.models import loading as _loading

    con = console if console is not None else Console(highlight=False)
    folder = Path(out).absolute()
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise OutputExistsError(
            "exists and is not empty; pass --overwrite to replace it", path=folder
        )
    folder.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    what = "a procedural abdomen phantom" if phantom else "a real abdomen slice"
    con.print(f"ctdid demo: quarter-dose scan of {what} ({size} x {size} px) ...")
    scan = simulate_demo_scan(size=size, seed=seed, phantom=phantom)
    input_dir = _write_scans(scan, folder, overwrite=overwrite, seed=seed, size=size)
    _describe(scan, input_dir, con)

    wdir = Path(_loading.SHIPPED_WEIGHTS_DIR if weights_dir is None else weights_dir)
    if model not in available_models(weights_dir=wdir):
        con.print(
            f"[bold yellow]The shipped model {model!r} is not installed[/] (no {model}.safetensors "
            f"with {model}.card.yaml in {wdir}). The demo stops here: ctdid does not run DID "
            "with an untrained or substitute network.\n"
            f"To continue with your own denoiser: ctdid run {input_dir} --model SPEC "
            f"--weights FILE --reference {folder / 'normal_dose_dicom'} --out {folder / 'result'}"
        )
        return None

    summary = _denoise(
        scan,
        folder,
        con,
        model=model,
        wdir=wdir,
        overwrite=overwrite,
        seed=seed,
        n_candidates=n_candidates,
    )
    total = time.perf_counter() - t_start
    con.print(
        f"input scans {sum(scan.seconds.values()):.1f} s, DID {summary.timings['engine']:.1f} s "
        f"(first candidate after {summary.timings['first_candidate']:.1f} s), total {total:.1f} s"
    )
    con.print(
        f"files: {summary.folder} (run.json, metrics.csv, montage.png, tradeoff.png, "
        f"candidates/); input DICOM {input_dir}; normal dose {folder / 'normal_dose_dicom'}"
    )
    return summary


def _write_scans(scan: DemoScan, folder: Path, *, overwrite: bool, seed: int, size: int) -> Path:
    """Write the quarter and normal dose as DICOM series; return the input's folder."""
    from ctdid.io import write_volume

    real = scan.kind == "totalseg"
    input_dir = folder / "input_dicom"
    for vol, target, what in (
        (scan.low_dose, input_dir, "quarter dose"),
        (scan.normal_dose, folder / "normal_dose_dicom", "normal dose"),
    ):
        if real:
            how = "noise inserted" if vol.meta["dose"] < 1 else "real"
            description = f"ctdid demo TotalSegmentator abdomen slice, {what} ({how})"
            derivation = f"ctdid demo: TotalSegmentator example CT slice (Apache-2.0), {what}" + (
                ", projection-domain noise insertion" if vol.meta["dose"] < 1 else ""
            )
        else:
            description = f"ctdid demo abdomen phantom, {what} (simulated)"
            derivation = (
                f"simulated by ctdid demo: procedural abdomen phantom, fan-beam {what} scan"
            )
        write_volume(
            vol,
            target,
            format="dicom",
            overwrite=overwrite,
            description=description,
            derivation=derivation,
            params={"demo": scan.kind, "seed": seed, "size": size, "dose": vol.meta["dose"]},
        )
    return input_dir


def _denoise(
    scan: DemoScan,
    folder: Path,
    con: Console,
    *,
    model: str,
    wdir: Path,
    overwrite: bool,
    seed: int,
    n_candidates: int,
) -> Any:
    """Read the written scans back, run DID into ``result/`` and print its candidates."""
    from ctdid.io import read_volume
    from ctdid.models import load_model
    from ctdid.runner import run_did
    from ctdid.runner.console import candidate_table

    input_dir = folder / "input_dicom"
    denoiser = load_model(model, weights_dir=wdir)
    card = dict(denoiser.meta)
    low = read_volume(input_dir)
    reference = read_volume(folder / "normal_dose_dicom")
    con.print(f"running DID with {model} (robust mode) ...")
    summary = run_did(
        low,
        denoiser,
        out_dir=folder / "result",
        mode="robust",
        # the demo shows DID itself, whatever ``ctdid run``'s default method is
        method="did",
        n_candidates=n_candidates,
        seed=seed,
        reference=reference,
        overwrite=overwrite,
        model_info={"name": model, "spec": model, "weights_sha256": card.get("weights_sha256")},
        input_info={"path": str(input_dir), "demo": dict(scan.low_dose.meta)},
    )
    con.print(candidate_table(summary, title="candidates, high resolution -> low noise"))
    return summary
