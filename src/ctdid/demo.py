"""``ctdid demo``: the whole workflow on an embedded, simulated abdomen scan (no download).

1. Make a seeded procedural abdomen slice (:func:`ctdid.sim.abdomen_phantom`).
2. Simulate its normal-dose scan (Poisson + electronic noise on a fan-beam sinogram, FBP) and a
   quarter-dose scan (the same sinogram with the extra noise of a 4x lower dose inserted), as
   the shipped models' training pairs were made (:func:`ctdid.train.pairs.phantom_pair`).
3. Write the quarter-dose scan as a DICOM series (``input_dicom/``) and the normal dose beside
   it (``normal_dose_dicom/``), and read the input back as a user's scan would be read.
4. Load the shipped quarter-dose denoiser ``unet-d25`` and run DID (robust mode) into
   ``result/`` with the RMSE to the normal dose as an extra label; print the candidates.

When the shipped weights are not installed, the demo says so after describing the simulated
scan, and stops: it never substitutes an untrained or made-up network.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ctdid.errors import OutputExistsError
from ctdid.volume import CTVolume

__all__ = ["DEMO_MODEL", "DEMO_SIZE", "DemoScan", "run_demo", "simulate_demo_scan"]

#: Shipped model the demo uses: trained on quarter-dose simulated scans.
DEMO_MODEL = "unet-d25"
#: Default image size in pixels (square, 380 mm field of view).
DEMO_SIZE = 512
#: Dose of the demo's low-dose scan, as a fraction of the normal dose.
DEMO_DOSE = 0.25
_FOV_MM = 380.0
_SLICE_MM = 1.0


@dataclasses.dataclass(frozen=True)
class DemoScan:
    """The demo's simulated scans.

    Attributes
    ----------
    low_dose, normal_dose : CTVolume
        Quarter-dose and normal-dose reconstructions of the same phantom, HU, (1, y, x).
    phantom : Any
        The :class:`ctdid.sim.Phantom` (noise-free HU, lesions, flat ROI).
    seconds : dict of str to float
        Time spent making the phantom and simulating each scan.
    """

    low_dose: CTVolume
    normal_dose: CTVolume
    phantom: Any
    seconds: dict[str, float]


def simulate_demo_scan(*, size: int = DEMO_SIZE, seed: int = 0) -> DemoScan:
    """Make the demo's phantom and simulate its quarter-dose and normal-dose scans.

    Parameters
    ----------
    size : int, optional
        Pixels per side (field of view 380 mm, so the pixel is ``380 / size`` mm).
    seed : int, optional
        Seeds the phantom's anatomy and both scans' noise (different streams).

    Returns
    -------
    DemoScan
    """
    from ctdid.sim import abdomen_phantom
    from ctdid.train.pairs import phantom_pair

    t0 = time.perf_counter()
    phantom = abdomen_phantom(seed=seed, shape=int(size), fov_mm=_FOV_MM)
    t1 = time.perf_counter()
    # One fan-beam projection of the phantom; normal dose = Poisson + electronic noise at full
    # dose; quarter dose = the same noisy sinogram with the extra noise of a 4x lower dose
    # inserted, exactly as the shipped models' training pairs were made.
    low, normal = phantom_pair(phantom.hu, spacing=phantom.spacing, dose=DEMO_DOSE, seed=seed)
    t3 = time.perf_counter()
    spacing = (_SLICE_MM, float(phantom.spacing[0]), float(phantom.spacing[1]))
    meta = {"source": "ctdid demo", "phantom": "abdomen", "seed": seed, "size": int(size)}
    return DemoScan(
        low_dose=CTVolume(low, spacing=spacing, meta={**meta, "dose": DEMO_DOSE}),
        normal_dose=CTVolume(normal, spacing=spacing, meta={**meta, "dose": 1.0}),
        phantom=phantom,
        seconds={"phantom": t1 - t0, "scans": t3 - t1},
    )


def _describe(scan: DemoScan, input_dir: Path, console: Console) -> None:
    ph = scan.phantom
    roi = (0, *ph.flat_roi)
    low = scan.low_dose.hu
    normal = scan.normal_dose.hu
    _, dy, dx = scan.low_dose.spacing
    table = Table(title="simulated scan", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("phantom", f"procedural abdomen, {len(ph.lesions)} low-contrast liver lesions")
    table.add_row("image", f"{low.shape[2]} x {low.shape[1]} px, pixel {dx:.3f} x {dy:.3f} mm")
    table.add_row(
        "noise (liver ROI STD)",
        f"quarter dose {float(low[roi].std()):.1f} HU, "
        f"normal dose {float(normal[roi].std()):.1f} HU",
    )
    table.add_row("input (quarter dose)", str(input_dir))
    console.print(table)


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
        Image size in pixels (field of view 380 mm). Default :data:`DEMO_SIZE`.
    seed : int, optional
        Phantom and noise seed.
    model : str, optional
        Shipped model name (default :data:`DEMO_MODEL`).
    weights_dir : path, optional
        Folder of shipped models; default ``ctdid.models.SHIPPED_WEIGHTS_DIR``.
    n_candidates : int, optional
        Candidates per direction.

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

    con.print(f"ctdid demo: simulating a quarter-dose abdomen scan ({size} x {size} px) ...")
    scan = simulate_demo_scan(size=size, seed=seed)
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
        f"simulation {sum(scan.seconds.values()):.1f} s, DID {summary.timings['engine']:.1f} s "
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

    input_dir = folder / "input_dicom"
    for vol, target, what in (
        (scan.low_dose, input_dir, "quarter dose"),
        (scan.normal_dose, folder / "normal_dose_dicom", "normal dose"),
    ):
        write_volume(
            vol,
            target,
            format="dicom",
            overwrite=overwrite,
            description=f"ctdid demo abdomen phantom, {what} (simulated)",
            derivation=f"simulated by ctdid demo: procedural abdomen phantom, fan-beam {what} scan",
            params={"demo": "abdomen", "seed": seed, "size": size, "dose": vol.meta["dose"]},
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
        n_candidates=n_candidates,
        seed=seed,
        reference=reference,
        overwrite=overwrite,
        model_info={"name": model, "spec": model, "weights_sha256": card.get("weights_sha256")},
        input_info={"path": str(input_dir), "demo": dict(scan.low_dose.meta)},
    )
    con.print(candidate_table(summary, title="candidates, high resolution -> low noise"))
    return summary
