"""The series of a batch: a folder of series (a file or subfolder each) or a CSV manifest,
and the options every series runs with unless its row says otherwise."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctdid.errors import CTDIDWarning, InputError
from ctdid.runner.options import RunOptions

#: The summary table of a batch, in its output folder.
BATCH_FILE = "batch.csv"
#: The columns of ``batch.csv``.
CSV_COLUMNS = ("series", "status", "error", "seconds", "candidates", "coverage")
#: Options a manifest row may set, with how a cell is read ("path": relative to the manifest).
OPTION_COLUMNS: dict[str, str] = {
    "model": "str",
    "weights": "path",
    "card": "path",
    "mode": "str",
    "method": "str",
    "candidates": "int",
    "k": "int",
    "seed": "int",
    "per_slice": "bool",
    "train_slices": "int",
    "batch_size": "int",
    "reference": "path",
    "pick": "str",
    "target_noise": "float",
    "noise_ceiling": "float",
    "lesion_mm": "float",
    "contrast_hu": "float",
    "export": "str",
    "window": "str",
    "series": "str",
}
_RUN = {f.name: f.default for f in dataclasses.fields(RunOptions)}
#: The options of every series unless the command line or its manifest row says otherwise:
#: those of ``ctdid run`` (:class:`~ctdid.runner.RunOptions`); ``model`` has none.
DEFAULTS: dict[str, Any] = {
    "model": None,
    "weights": None,
    "card": None,
    "mode": _RUN["mode"],
    "method": "auto",  # as `ctdid run` (RunOptions' Python default is "did")
    "candidates": _RUN["n_candidates"],
    "k": _RUN["k"],
    "seed": _RUN["seed"],
    "per_slice": not _RUN["shared"],
    "train_slices": _RUN["train_slices"],
    "batch_size": _RUN["batch_size"],
    "reference": None,
    "pick": None,
    "target_noise": None,
    "noise_ceiling": None,
    "lesion_mm": 5.0,
    "contrast_hu": 10.0,
    "export": "",
    "window": _RUN["window"],
    "series": None,
}
#: Suffixes of the files a folder of series holds one series each in (DICOM files without a
#: suffix are recognised by their preamble).
SERIES_SUFFIXES = (
    ".dcm", ".dicom", ".ima", ".nii", ".nii.gz", ".mhd", ".mha", ".npy", ".npz",
    ".tif", ".tiff", ".raw", ".img", ".bin",
)  # fmt: skip
_RAW_SUFFIXES = (".raw", ".zraw", ".img", ".bin")


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """One series of a batch as found in the folder or the manifest.

    Attributes
    ----------
    name : str
        Name of its result folder under the batch's output folder.
    input : Path
        The series (DICOM folder or file, NIfTI, MetaImage, NumPy, ...), absolute.
    values : dict
        Options of this series (manifest cells, already typed), over the batch's.
    source : str
        Where it came from (``"folder"`` or ``"manifest row N"``), for error messages.
    """

    name: str
    input: Path
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "folder"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    """A series' default name: a folder's name, a file's name without its CT suffix."""
    suffix = _suffix(path)
    if path.is_dir() or suffix not in SERIES_SUFFIXES:
        return path.name
    return path.name[: -len(suffix)]


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _is_sidecar(path: Path) -> bool:
    """A NumPy ``.json`` sidecar or the data file of a MetaImage header."""
    suffix = _suffix(path)
    return suffix == ".json" or (suffix in _RAW_SUFFIXES and path.with_suffix(".mhd").is_file())


def _is_series_file(path: Path) -> bool:
    suffix = _suffix(path)
    if suffix in SERIES_SUFFIXES:
        return True
    return suffix == "" and _is_dicom_file(path)


def _check_names(specs: Sequence[SeriesSpec], where: Path) -> None:
    seen: dict[str, SeriesSpec] = {}
    for spec in specs:
        name = spec.name
        if not name or name.startswith(".") or "/" in name or "\\" in name or name == BATCH_FILE:
            raise InputError(
                f"{spec.source}: {name!r} cannot name a result folder (no '/', no leading '.', "
                f"not {BATCH_FILE})",
                path=where,
            )
        if name in seen:
            raise InputError(
                f"two series would write the same result folder {name!r}: "
                f"{seen[name].input.name} and {spec.input.name}; give them names in a CSV "
                "manifest (columns input,name)",
                path=where,
            )
        seen[name] = spec


def find_series(
    inputs: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None
) -> list[SeriesSpec]:
    """The series of a batch: each subfolder or CT file of a folder, or a CSV manifest's rows.

    In a folder, every subfolder is one series (a DICOM series) and every file with a CT
    suffix (``.dcm``, ``.nii``, ``.nii.gz``, ``.mhd``, ``.mha``, ``.npy``, ``.npz``, ``.tif``,
    raw) or a DICOM preamble is one, named by its file name without the suffix. Hidden
    entries, the output folder ``out``, ``.json`` sidecars and the data files of MetaImage
    headers are left out; other files are listed in one :class:`CTDIDWarning`. A ``.csv``
    file is a manifest (:func:`read_manifest`).

    Raises
    ------
    InputError
        ``inputs`` is neither a folder nor a CSV file, holds no series, or two series would
        have the same name.
    """
    root = Path(inputs).absolute()
    if root.is_file() and root.suffix.lower() == ".csv":
        return read_manifest(root)
    if not root.is_dir():
        raise InputError(
            "give a folder of series (one subfolder or file per series) or a CSV manifest",
            path=root,
        )
    skip = None if out is None else Path(out).absolute()
    specs, other = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.absolute() == skip:
            continue
        if entry.is_file() and _is_sidecar(entry):
            continue
        if entry.is_dir() or _is_series_file(entry):
            specs.append(SeriesSpec(_stem(entry), entry.absolute()))
        else:
            other.append(entry.name)
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        warnings.warn(f"{root}: not CT series, left out: {shown}", CTDIDWarning, stacklevel=2)
    if not specs:
        raise InputError("no series found (no subfolder and no CT file)", path=root)
    _check_names(specs, root)
    return specs


def _cell(kind: str, text: str, base: Path) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "path":
        return (base / text).absolute()
    if kind == "bool":
        word = text.lower()
        if word in ("1", "true", "yes", "y", "on"):
            return True
        if word in ("0", "false", "no", "n", "off"):
            return False
        raise ValueError(f"not a yes/no value: {text!r}")
    return text


def _row_values(row: Mapping[str, str], base: Path) -> tuple[dict[str, Any], str | None]:
    """The typed option cells of a manifest row, and the first bad cell's message."""
    values: dict[str, Any] = {}
    for column, text in row.items():
        if column in ("input", "name") or text is None or not str(text).strip():
            continue
        try:
            values[column] = _cell(OPTION_COLUMNS[column], str(text).strip(), base)
        except ValueError as exc:
            return values, f"column {column}: {exc}"
    return values, None


def read_manifest(path: str | os.PathLike[str]) -> list[SeriesSpec]:
    """The series listed in a CSV manifest.

    The header names the columns: ``input`` (required: the series, relative to the
    manifest's folder or absolute), ``name`` (its result folder; default the input's name
    without the suffix) and any of :data:`OPTION_COLUMNS` (``mode``, ``method``, ``model``,
    ``candidates``, ``seed``, ``reference``, ...; ``-`` and ``_`` are the same). A cell
    left empty takes the batch's option. Paths (input, reference, weights, card) are
    relative to the manifest's folder; a model spec is read as ``ctdid run --model`` reads
    it. A cell that cannot be read fails its series only.

    Raises
    ------
    InputError
        Unreadable file, no ``input`` column, an unknown column, or two rows with one name.
    """
    file = Path(path).absolute()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", path=file) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [str(h).strip().lower().replace("-", "_") for h in reader.fieldnames or []]
    if "input" not in header:
        raise InputError("the manifest has no 'input' column (header: input,name,...)", path=file)
    unknown = sorted(set(header) - {"input", "name"} - set(OPTION_COLUMNS))
    if unknown:
        raise InputError(
            f"unknown manifest column(s) {', '.join(unknown)}; use input, name, "
            + ", ".join(OPTION_COLUMNS),
            path=file,
        )
    specs = []
    for number, raw in enumerate(reader, start=2):
        row = {h: (v or "").strip() for h, v in zip(header, raw.values(), strict=False)}
        if not any(row.values()):
            continue
        if not row.get("input"):
            raise InputError(f"manifest row {number} has no input", path=file)
        source = (file.parent / row["input"]).absolute()
        values, bad = _row_values(row, file.parent)
        if bad is not None:
            values = {"_error": f"manifest row {number}: {bad}"}
        specs.append(SeriesSpec(row.get("name") or _stem(source), source, values, f"row {number}"))
    if not specs:
        raise InputError("the manifest lists no series", path=file)
    _check_names(specs, file)
    return specs
