"""Make the demo's embedded real slice, ``src/ctdid/data/totalseg_abdomen_slice.npz``.

    .venv/bin/python scripts/embed_demo_slice.py [--source ../shared/data/abdomen_ct_totalseg]

The slice is one image of the TotalSegmentator example CT (``tests/reference_files/
example_ct_dicom/`` of https://github.com/wasserth/TotalSegmentator, Apache-2.0; in this
project's ``../shared/data/abdomen_ct_totalseg``): instance 277, slice location -786.5 mm, the
middle of the 20 slices, with liver, spine, aorta, stomach and spleen. It is read with ctdid's
own DICOM reader (JPEG 2000 lossless, decoded by pylibjpeg-openjpeg) and stored as it is:
512 x 512 int16 HU (the decoded HU are integers, so the storage is exact), no crop, no
resampling. Besides the pixels the file records the pixel spacing, the slice thickness, a
description of the source (repository, file, instance, scanner, kernel; no dates, institution
or patient data) and the parameters of the demo's noise insertion.

The noise insertion (:func:`ctdid.demo.insert_demo_noise`: projection-domain insertion with
the default fan beam, ``"hann"`` window as for the smooth-kernel L067 evaluation slices) needs
the full-dose photons per bin and view, ``i0``. The value used for the Mayo slices,
:data:`ctdid.reproduce.experiments.REAL_I0` = 2.8e5, gives this wider, arms-down patient
(500 mm field of view) about 140 HU of inserted quarter-dose noise with photon-starvation
streaks through the arms, twelve times the slice's own 11.4 HU; a scanner with tube-current
modulation (this scan used it) gives much less. So ``i0`` is calibrated here instead, starting from
REAL_I0: the inserted noise (median STD over flat regions found on the full dose,
:func:`ctdid.metrics.noise_label`) must be ``sqrt(1 / dose - 1)`` times the slice's own
flat-region noise, so that the quarter-dose image has twice the normal dose's noise, as
quantum noise at a quarter of the dose has. It is rounded to three significant figures. The
calibration uses the demo's default noise seed (0).

The licence file of the source folder is copied to ``src/ctdid/data/LICENSE-TotalSegmentator``.
The arrays are written to a zip with fixed time stamps, so a rerun gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "abdomen_ct_totalseg"
DATA_DIR = ROOT / "src" / "ctdid" / "data"
#: The chosen slice: its file name in the series folder, and its instance number.
FILE = "CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016583"
INSTANCE = 277
#: Noise insertion: FBP window (smooth kernel, as the smooth L067 slices), dose, seed.
KERNEL = "hann"
DOSE = 0.25
SEED = 0
CITATION = (
    "Wasserthal J, Breit H-C, Meyer MT, Pradella M, Hinck D, Sauter AW, Heye T, Boll D, "
    "Cyriac J, Yang S, Bach M, Segeroth M. TotalSegmentator: Robust Segmentation of 104 "
    "Anatomic Structures in CT Images. Radiology: Artificial Intelligence 2023; "
    "https://doi.org/10.1148/ryai.230024"
)


def read_slice(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the chosen slice with ctdid's reader, and describe its source.

    Parameters
    ----------
    folder : Path
        The TotalSegmentator example DICOM series.

    Returns
    -------
    hu : ndarray of int16, shape (512, 512)
        HU, exactly as decoded.
    info : dict
        Pixel spacing, slice thickness, reconstruction diameter and the source description.
    """
    import pydicom

    from ctdid.io import read_volume

    path = folder / FILE
    vol = read_volume(path)
    hdr = pydicom.dcmread(path, stop_before_pixels=True)
    if int(hdr.InstanceNumber) != INSTANCE or vol.shape != (1, 512, 512):
        sys.exit(f"{path}: not instance {INSTANCE} of 512 x 512 px")
    img = vol.hu[0]
    if not np.array_equal(img, np.round(img)) or img.min() < -32768 or img.max() > 32767:
        sys.exit(f"{path}: HU are not int16 integers")
    hu = img.astype(np.int16)
    source = {
        "dataset": "TotalSegmentator example CT (DICOM series of 20 slices)",
        "repository": "https://github.com/wasserth/TotalSegmentator",
        "path": "tests/reference_files/example_ct_dicom/",
        "file": FILE,
        "instance": INSTANCE,
        "slice_location_mm": float(hdr.SliceLocation),
        "series_description": str(hdr.SeriesDescription),
        "modality": str(hdr.Modality),
        "manufacturer": str(hdr.Manufacturer),
        "scanner": str(hdr.ManufacturerModelName),
        "kernel": str(hdr.ConvolutionKernel[0]),
        "kvp": float(hdr.KVP),
        "ctdivol_mgy": round(float(hdr.CTDIvol), 2),
        "transfer_syntax": str(hdr.file_meta.TransferSyntaxUID.name),
        "licence": "Apache-2.0",
        "citation": CITATION,
        "processing": "decoded by ctdid.io.read_volume and stored as int16 HU: no crop, no "
        "resampling, no other change",
    }
    info = {
        "pixel_spacing_mm": np.asarray(vol.spacing[1:], dtype=np.float64),
        "slice_thickness_mm": float(hdr.SliceThickness),
        "reconstruction_diameter_mm": float(hdr.ReconstructionDiameter),
        "source": source,
    }
    return hu, info


def calibrate_i0(hu: np.ndarray, info: dict[str, Any], *, log: Any = print) -> dict[str, float]:
    """Full-dose photons per bin and view that give the slice quarter-dose noise.

    Parameters
    ----------
    hu : ndarray of int16
        The normal-dose slice.
    info : dict
        From :func:`read_slice`.
    log : callable, optional
        Progress messages.

    Returns
    -------
    dict
        ``insert_i0`` (rounded to 3 significant figures), ``full_dose_noise_hu``,
        ``inserted_noise_hu`` (at that ``i0``) and ``target_noise_hu``.
    """
    from ctdid.demo import insert_demo_noise
    from ctdid.metrics import find_flat_regions, noise_label
    from ctdid.reproduce.experiments import REAL_I0

    img = hu.astype(np.float32)
    sp = (float(info["pixel_spacing_mm"][0]), float(info["pixel_spacing_mm"][1]))
    regions = find_flat_regions(img, spacing=sp)
    full = noise_label(img, spacing=sp, regions=regions)
    target = math.sqrt(1 / DOSE - 1) * full

    def inserted(i0: float) -> float:
        low = insert_demo_noise(
            img, spacing=sp, i0=i0, kernel=KERNEL, seed=SEED, dose=DOSE,
            fov_mm=info["reconstruction_diameter_mm"],
        )  # fmt: skip
        return noise_label(low - img, spacing=sp, regions=regions)

    i0 = float(REAL_I0)
    for _ in range(6):
        got = inserted(i0)
        log(f"i0 {i0:.4g}: inserted noise {got:.2f} HU (target {target:.2f} HU)")
        if abs(got / target - 1) < 0.01:
            break
        i0 *= (got / target) ** 2
    i0 = float(f"{i0:.3g}")
    got = inserted(i0)
    log(f"i0 {i0:.3g} (rounded): inserted noise {got:.2f} HU, full-dose noise {full:.2f} HU")
    return {
        "insert_i0": i0,
        "full_dose_noise_hu": round(full, 3),
        "inserted_noise_hu": round(got, 3),
        "target_noise_hu": round(target, 3),
    }


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` whose bytes depend only on the arrays.

    Parameters
    ----------
    path : Path
        The file to write.
    arrays : dict of str to array_like
        Name -> array (strings become 0-d unicode arrays).
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(member, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)


def main(argv: list[str] | None = None) -> int:
    """Read, calibrate and write; print what was written.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    licence = args.source / "LICENSE"
    if "Apache License" not in licence.read_text() or "Version 2.0" not in licence.read_text():
        sys.exit(f"{licence}: not the Apache-2.0 licence")
    hu, info = read_slice(args.source)
    noise = calibrate_i0(hu, info)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "totalseg_abdomen_slice.npz"
    write_npz(
        target,
        {
            "hu": hu,
            "pixel_spacing_mm": info["pixel_spacing_mm"],
            "slice_thickness_mm": np.float64(info["slice_thickness_mm"]),
            "reconstruction_diameter_mm": np.float64(info["reconstruction_diameter_mm"]),
            "source": json.dumps(info["source"], sort_keys=True),
            "insert_kernel": KERNEL,
            "insert_dose": np.float64(DOSE),
            "insert_seed": np.int64(SEED),
            **{k: np.float64(v) for k, v in noise.items()},
        },
    )
    shutil.copyfile(licence, args.out / "LICENSE-TotalSegmentator")
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} kB) and LICENSE-TotalSegmentator")
    print(json.dumps({**noise, "hu_range": [int(hu.min()), int(hu.max())]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
