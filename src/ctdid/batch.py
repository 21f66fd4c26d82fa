"""Many scans at once: ``ctdid batch``, one Ray task per CT series.

Every series becomes one Ray task that writes exactly the result folder ``ctdid run`` writes
(through :func:`ctdid.runner.run_did`), under ``OUT/<name>``. A new result is made in the
hidden folder ``OUT/.<name>.partial`` (:func:`partial_folder`) and renamed to ``OUT/<name>``
once it is finished, so ``OUT/<name>`` only ever holds a finished run. A rerun of the same
batch

* skips the series whose ``OUT/<name>`` holds the same finished run: the runner's resume check
  compares its ``run.json`` with the options, the model (state-dict sha256) and the input
  (shape and sha256); a folder holding another run is an error row, ``overwrite`` redoes it;
* finishes the interrupted ones from their partial folder with the runner's resume logic
  (``resume.json``: finished slices, slice batches and fine-tuning are not done again).

One bad series (unreadable, wrong shape, a bad option in its manifest row) gives a failed
row and does not stop the others. ``OUT/batch.csv`` has one row per finished series:
``series, status (done | skipped | failed), error, seconds, candidates, coverage``.

Ray (``pip install 'ctdid[batch]'``) is imported only here and only when a batch runs. By
default it starts on this machine with one worker per core, bound to the loopback interface,
without its dashboard; ``address`` joins a running cluster (``ray start --head``), whose
nodes must have ctdid installed and see the input and output paths. Each task uses
``threads`` torch threads; with a CUDA ``device`` each task asks Ray for one GPU. A result is
bit for bit that of ``ctdid run`` with the same options and as many torch threads (the
floating-point sums, and so the candidates, depend on the number of threads).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctdid.errors import CTDIDError, CTDIDWarning, InputError
from ctdid.runner.options import RunOptions

__all__ = [
    "BATCH_FILE",
    "CSV_COLUMNS",
    "DEFAULTS",
    "OPTION_COLUMNS",
    "BatchSummary",
    "SeriesJob",
    "SeriesResult",
    "SeriesSpec",
    "check_defaults",
    "find_series",
    "init_ray",
    "make_job",
    "partial_folder",
    "read_manifest",
    "run_batch",
    "run_batch_with_progress",
    "run_series",
    "summary_table",
]

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
_INSTALL = "ctdid batch needs Ray: pip install 'ctdid[batch]'"


# ------------------------------------------------------------------------------------------------
# the series: a folder of series or a CSV manifest


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


# ------------------------------------------------------------------------------------------------
# one series: its job (options checked on the driver) and its run (in a Ray worker)


@dataclasses.dataclass(frozen=True)
class SeriesJob:
    """Everything a worker needs to run one series (picklable).

    Attributes
    ----------
    name : str
        Result folder name under the batch's output folder.
    input : Path
        The series.
    model, weights, card : str, Path or None
        The model as :func:`ctdid.runner.console.load_denoiser` takes it.
    options : RunOptions
        The run's options (``resume`` and ``overwrite`` are set by :func:`run_series`).
    reference : Path or None
        Normal-dose scan of this series (adds RMSE labels).
    read : dict
        Keyword arguments of :func:`ctdid.io.read_volume` (the reference is read with them,
        without ``series``).
    device : str or None
        torch device; a CUDA device is the GPU Ray gives the task.
    threads : int
        torch threads of the task.
    cwd : str
        The driver's working folder, where a relative model file is looked for.
    """

    name: str
    input: Path
    model: str
    weights: Path | None
    card: Path | None
    options: RunOptions
    reference: Path | None = None
    read: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str | None = None
    threads: int = 1
    cwd: str = "."


@dataclasses.dataclass(frozen=True)
class SeriesResult:
    """The outcome of one series: a row of ``batch.csv``.

    Attributes
    ----------
    series : str
        Its name (result folder ``OUT/<series>``).
    status : {"done", "skipped", "failed"}
        ``"skipped"``: the folder held this finished run already.
    error : str
        Why it failed (one line), else ``""``.
    seconds : float
        Time the task took, reading and loading included.
    candidates : int or None
        Candidates in the result folder.
    coverage : dict
        How far the candidates reach toward each bound (``high``, ``low``; 1 = the bound).
    warnings : tuple of str
        Warnings of the run (model card missing, input oddities, ...).
    """

    series: str
    status: str
    error: str = ""
    seconds: float = 0.0
    candidates: int | None = None
    coverage: dict[str, float] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def row(self) -> dict[str, str]:
        """The row of ``batch.csv``."""
        cover = ";".join(f"{k}={v:.3f}" for k, v in sorted(self.coverage.items()))
        return {
            "series": self.series,
            "status": self.status,
            "error": self.error,
            "seconds": f"{self.seconds:.2f}",
            "candidates": "" if self.candidates is None else str(self.candidates),
            "coverage": cover,
        }


def partial_folder(out: str | os.PathLike[str], name: str) -> Path:
    """Where series ``name`` is made before it is renamed to ``out/name``."""
    return Path(out).absolute() / f".{name}.partial"


def _window(value: Any) -> tuple[float, float]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"window must be 'LOW,HIGH' in HU, got {value!r}") from None
    return low, high


def _run_options(v: Mapping[str, Any]) -> RunOptions:
    """The :class:`~ctdid.runner.RunOptions` of a series' merged options (InputError if bad)."""
    return RunOptions(
        mode=str(v["mode"]),
        method=str(v["method"]),
        k=int(v["k"]),
        n_candidates=int(v["candidates"]),
        seed=int(v["seed"]),
        shared=not v["per_slice"],
        train_slices=int(v["train_slices"]),
        batch_size=int(v["batch_size"]),
        pick=v["pick"] or None,
        pick_options={
            "target_noise": v["target_noise"],
            "noise_ceiling": v["noise_ceiling"],
            "diameter_mm": v["lesion_mm"],
            "contrast_hu": v["contrast_hu"],
        },
        export=v["export"] or "",
        window=_window(v["window"]),
    )


def _merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` under the given options; a None option is one not given."""
    out = dict(DEFAULTS)
    for layer in layers:
        out.update({k: v for k, v in layer.items() if v is not None})
    return out


def check_defaults(defaults: Mapping[str, Any]) -> None:
    """Check the batch's own options before any series runs.

    Raises
    ------
    InputError
        An option that would fail every series (unknown mode, method, pick task or export
        format, a bad window, a pick without its target).
    """
    unknown = set(defaults) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown batch option(s): {sorted(unknown)}")
    _run_options(_merged(defaults))


def make_job(
    spec: SeriesSpec,
    *,
    defaults: Mapping[str, Any] | None = None,
    read: Mapping[str, Any] | None = None,
    device: str | None = None,
    threads: int = 1,
) -> SeriesJob:
    """The job of one series: its options (:data:`DEFAULTS` < ``defaults`` < its row) checked.

    Raises
    ------
    InputError
        A bad option of this series (unknown mode, method, pick task or export format, a
        bad window, no model, a manifest cell that could not be read).
    """
    from ctdid.runner import check_pick

    v = _merged(defaults or {}, spec.values)
    if "_error" in v:
        raise InputError(str(v["_error"]))
    if not v["model"]:
        raise InputError("no model: give --model or a 'model' column in the manifest")
    options = _run_options(v)
    reference = None if v["reference"] is None else Path(v["reference"]).absolute()
    check_pick(options.pick, options.pick_options, has_reference=reference is not None)
    paths = {k: None if v[k] is None else Path(v[k]).absolute() for k in ("weights", "card")}
    return SeriesJob(
        name=spec.name, input=spec.input, model=str(v["model"]), **paths, options=options,
        reference=reference, read={**(read or {}), "series": v["series"]}, device=device,
        threads=int(threads), cwd=os.getcwd(),
    )  # fmt: skip


@contextmanager
def _in_folder(folder: str) -> Iterator[None]:
    """Work in the driver's folder while a task runs (where it exists, e.g. not on a node)."""
    old = os.getcwd()
    if not os.path.isdir(folder):
        yield
        return
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def _coverage(summary: Any) -> dict[str, float]:
    cover = (summary.engine or {}).get("coverage")
    if isinstance(cover, Mapping) and all(isinstance(x, int | float) for x in cover.values()):
        return {str(k): float(x) for k, x in cover.items()}
    strengths = [float(r.strength) for r in summary.records]
    if not strengths:
        return {}
    return {"high": max(0.0, -min(strengths)), "low": max(0.0, max(strengths))}


def _publish(part: Path, final: Path) -> None:
    """Rename a finished partial folder to its result folder (replacing an older one)."""
    if not final.exists():
        part.rename(final)
        return
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    final.rename(old)
    part.rename(final)
    shutil.rmtree(old)


def _run_one(job: SeriesJob, out: Path, *, overwrite: bool) -> tuple[Any, str]:
    """Read, load and run one series; the run's summary and status (done or skipped)."""
    from ctdid.io import read_volume
    from ctdid.runner import run_did
    from ctdid.runner.console import load_denoiser

    volume = read_volume(job.input, **job.read)
    reference = None
    if job.reference is not None:
        reference = read_volume(job.reference, **{**job.read, "series": None})
    device = job.device
    if device is not None and device.startswith("cuda"):
        device = "cuda"  # the GPU Ray gave this task (CUDA_VISIBLE_DEVICES)
    model, model_info = load_denoiser(job.model, weights=job.weights, card=job.card, device=device)
    kwargs: dict[str, Any] = {
        "reference": reference,
        "model_info": model_info,
        "input_info": {"path": str(job.input), "series": job.read.get("series"), **volume.meta},
    }
    final, part = out / job.name, partial_folder(out, job.name)
    if final.exists() and not overwrite:
        options = dataclasses.replace(job.options, resume=True, overwrite=False)
        summary = run_did(volume, model, out_dir=final, options=options, **kwargs)
        return summary, "skipped" if summary.already_done else "done"
    options = dataclasses.replace(job.options, resume=not overwrite, overwrite=overwrite)
    summary = run_did(volume, model, out_dir=part, options=options, **kwargs)
    _publish(part, final)
    return summary, "done"


def run_series(
    job: SeriesJob, *, out: str | os.PathLike[str], overwrite: bool = False
) -> SeriesResult:
    """Run one series into ``out/<name>``: the body of a batch's Ray task.

    A finished run of the same series and options in ``out/<name>`` is left as it is
    (``"skipped"``); an interrupted one in :func:`partial_folder` (or in ``out/<name>``) is
    finished; otherwise a new run is made in the partial folder and renamed when done.
    ``overwrite`` runs the series again and replaces ``out/<name>``. Never raises for a bad
    series: the error is the result's ``error``.
    """
    import torch

    start = time.perf_counter()
    torch.set_num_threads(max(1, int(job.threads)))
    with warnings.catch_warnings(record=True) as caught, _in_folder(job.cwd):
        warnings.simplefilter("always", UserWarning)  # ctdid's own; hidden ones stay hidden
        try:
            summary, status = _run_one(job, Path(out).absolute(), overwrite=overwrite)
        except CTDIDError as exc:
            error: str | None = str(exc)
        except Exception as exc:  # a bug or a broken file: one row, not the whole batch
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None
    said = tuple(dict.fromkeys(str(w.message) for w in caught))
    seconds = time.perf_counter() - start
    if error is not None:
        one_line = " ".join(error.split())
        return SeriesResult(job.name, "failed", one_line, seconds, warnings=said)
    return SeriesResult(
        job.name, status, "", seconds, len(summary.records), _coverage(summary), said
    )


# ------------------------------------------------------------------------------------------------
# the batch: Ray, the tasks, batch.csv


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Make a local Ray bind its ports to 127.0.0.1 (Ray otherwise uses the node's address).

    Ray keeps a head node on the loopback interface when clusters are disabled
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is imported); the flag is
    restored once the local instance runs.
    """
    key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    old_env = os.environ.get(key)
    os.environ[key] = "0"
    constants: Any = sys.modules.get("ray._private.ray_constants")
    old_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None and old_flag is not None:
        constants.ENABLE_RAY_CLUSTER = False  # Ray was imported before the flag was set
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            if old_flag is None:  # Ray's own default for this platform and environment
                old_flag = (old_env or "1").lower() not in ("0", "false") and not getattr(
                    constants, "IS_WINDOWS_OR_OSX", False
                )
            constants.ENABLE_RAY_CLUSTER = old_flag


def init_ray(
    *, workers: int | None = None, threads: int = 1, address: str | None = None
) -> tuple[Any, bool]:
    """Start or join Ray quietly; return the ``ray`` module and whether this call started it.

    A Ray already initialised in this process is used as it is. Without ``address`` a local
    instance starts with ``workers * threads`` CPUs (default: every core), no dashboard,
    its ports on 127.0.0.1; ``address`` (``HOST:PORT`` of ``ray start --head``, or
    ``auto``) joins a running cluster; one on 127.0.0.1 is joined on the loopback interface
    (Ray would otherwise look for it at the node's own address).

    Raises
    ------
    CTDIDError
        Ray is not installed (the message says how to install it), or the cluster cannot be
        reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with _loopback_only() if address is None or _is_loopback(address) else _nothing():
        try:
            import ray
        except ImportError:
            raise CTDIDError(_INSTALL) from None
        if ray.is_initialized():
            return ray, False
        quiet: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        try:
            if address is None:
                cpus = None if workers is None else int(workers) * max(1, int(threads))
                ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            if address is None:
                raise CTDIDError(f"cannot start Ray here: {exc}") from None
            raise CTDIDError(
                f"cannot join the Ray cluster {address}: {exc} (a cluster with token "
                "authentication also needs RAY_AUTH_MODE=token and its token here)"
            ) from None
    return ray, True


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _is_loopback(address: str) -> bool:
    """Whether a cluster address names this machine's loopback interface."""
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """What a batch did.

    Attributes
    ----------
    folder : Path
        The output folder (one result folder per series and ``batch.csv``).
    results : tuple of SeriesResult
        One per series, in the order of the folder or the manifest.
    seconds : float
        Wall time of the batch, Ray's start included.
    csv : Path
        ``batch.csv``.
    """

    folder: Path
    results: tuple[SeriesResult, ...]
    seconds: float
    csv: Path

    def count(self, status: str) -> int:
        """Series with this status (``"done"``, ``"skipped"`` or ``"failed"``)."""
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> tuple[SeriesResult, ...]:
        """The series that failed."""
        return tuple(r for r in self.results if r.status == "failed")


def _write_csv(path: Path, results: Sequence[SeriesResult]) -> None:
    from ctdid.io.atomic import atomic_file

    with atomic_file(path, overwrite=True) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.row() for r in results)


def _uses_gpu(device: str | None) -> bool:
    return device is not None and device.startswith("cuda")


def _execute(
    ray: Any,
    jobs: Sequence[SeriesJob],
    *,
    out: Path,
    overwrite: bool,
    limit: int | None,
    on_result: Callable[[SeriesResult], None],
) -> None:
    """Run the jobs as Ray tasks, at most ``limit`` at a time; ``on_result`` as each ends."""
    task = ray.remote(run_series)
    queue = list(jobs)
    pending: dict[Any, SeriesJob] = {}
    try:
        while queue or pending:
            while queue and (limit is None or len(pending) < limit):
                job = queue.pop(0)
                ref = task.options(
                    num_cpus=max(1, job.threads),
                    num_gpus=1 if _uses_gpu(job.device) else 0,
                    max_retries=1,  # a worker lost (node gone): once more, resuming
                ).remote(job, out=out, overwrite=overwrite)
                pending[ref] = job
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    result = SeriesResult(job.name, "failed", f"the Ray task failed: {first}")
                on_result(result)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _plan(
    specs: Sequence[SeriesSpec], **job_options: Any
) -> tuple[list[SeriesJob], dict[str, SeriesResult]]:
    """The jobs of the series whose options are good, and a failed row for each other."""
    jobs, failed = [], {}
    for spec in specs:
        try:
            jobs.append(make_job(spec, **job_options))
        except InputError as exc:
            failed[spec.name] = SeriesResult(spec.name, "failed", f"bad options: {exc}")
    return jobs, failed


def _warn_once(results: Sequence[SeriesResult]) -> None:
    """Each distinct warning of the tasks once, with the series that gave it."""
    said: dict[str, list[str]] = {}
    for r in results:
        for message in r.warnings:
            said.setdefault(message, []).append(r.series)
    for message, names in said.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warnings.warn(f"{message} (series {shown})", CTDIDWarning, stacklevel=3)


def run_batch(
    specs: Sequence[SeriesSpec],
    *,
    out: str | os.PathLike[str],
    defaults: Mapping[str, Any] | None = None,
    read: Mapping[str, Any] | None = None,
    device: str | None = None,
    threads: int = 1,
    workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: Callable[[SeriesResult, int, int], object] | None = None,
    on_start: Callable[[int], object] | None = None,
) -> BatchSummary:
    """Run every series as one Ray task into ``out/<name>``; write ``out/batch.csv``.

    Parameters
    ----------
    specs : sequence of SeriesSpec
        The series (:func:`find_series`).
    out : path
        Output folder; made if missing.
    defaults : mapping, optional
        Options of every series (keys of :data:`DEFAULTS`, as ``ctdid run`` names them:
        ``model``, ``mode``, ``method``, ``candidates``, ...); a manifest row overrides them.
    read : mapping, optional
        Keyword arguments of :func:`ctdid.io.read_volume` for every series (raw ``shape``,
        ``dtype``, ``hu_offset``, ...).
    device : str, optional
        torch device of the tasks; ``"cuda"`` gives each task one GPU.
    threads : int
        torch threads (and Ray CPUs) per task. Default 1.
    workers : int, optional
        Series run at the same time; a local Ray gets ``workers * threads`` CPUs. Default:
        one per core here, as many as the cluster takes with ``address``.
    address : str, optional
        A running Ray cluster to join (see :func:`init_ray`).
    overwrite : bool
        Run every series again, replacing finished result folders.
    progress : callable, optional
        Called as ``progress(result, done, total)`` after each series.
    on_start : callable, optional
        Called with the number of series once the options are checked, Ray runs and the
        output folder exists (before the first ``progress``).

    Returns
    -------
    BatchSummary
        One result per series; ``batch.csv`` lists them in the series' order.

    Raises
    ------
    CTDIDError
        Ray missing or unreachable, a CUDA device without a GPU in the cluster, or the
        output folder cannot be made.
    """
    start = time.perf_counter()
    folder = Path(out).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError("the output exists and is not a folder", path=folder)
    check_defaults(defaults or {})
    jobs, done = _plan(specs, defaults=defaults, read=read, device=device, threads=threads)
    order = [s.name for s in specs]
    csv_path = folder / BATCH_FILE

    def record(result: SeriesResult) -> None:
        done[result.series] = result
        _write_csv(csv_path, [done[n] for n in order if n in done])
        if progress is not None:
            progress(result, len(done), len(order))

    ray: Any = None
    started = False
    if jobs:  # Ray first: without it, nothing is written
        ray, started = init_ray(workers=workers, threads=threads, address=address)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if on_start is not None:
            on_start(len(order))
        for result in list(done.values()):  # bad options: failed without a task
            record(result)
        if jobs:
            if _uses_gpu(device) and ray.cluster_resources().get("GPU", 0) < 1:
                raise CTDIDError(f"--device {device}, but the Ray cluster has no GPU")
            _execute(ray, jobs, out=folder, overwrite=overwrite, limit=workers, on_result=record)
    finally:
        if started:
            ray.shutdown()
    results = tuple(done[n] for n in order)
    _write_csv(csv_path, results)
    _warn_once(results)
    return BatchSummary(folder, results, time.perf_counter() - start, csv_path)


def run_batch_with_progress(
    specs: Sequence[SeriesSpec], *, console: Any, **kwargs: Any
) -> BatchSummary:
    """:func:`run_batch` with a rich progress bar over the series on ``console``.

    The bar appears once Ray runs, so a bad option or a missing Ray prints only its error.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    tally = {"done": 0, "skipped": 0, "failed": 0}
    bar = Progress(*columns, console=console, transient=False)
    task = bar.add_task("series", total=len(specs), tally="")

    def update(result: SeriesResult, done: int, total: int) -> None:
        tally[result.status] = tally.get(result.status, 0) + 1
        text = ", ".join(f"{n} {k}" for k, n in tally.items() if n)
        bar.update(task, completed=done, total=total, tally=text)

    try:  # the bar appears once Ray runs (a bad option prints only its error)
        return run_batch(specs, progress=update, on_start=lambda n: bar.start(), **kwargs)
    finally:
        if bar.live.is_started:
            bar.stop()


def summary_table(summary: BatchSummary) -> Any:
    """A rich table of the series: status, seconds, candidates, coverage, error."""
    from rich.table import Table

    counts = ", ".join(f"{summary.count(s)} {s}" for s in ("done", "skipped", "failed"))
    table = Table(title=f"ctdid batch: {len(summary.results)} series ({counts})")
    for col in ("series", "status", "seconds", "candidates", "coverage", "error"):
        table.add_column(col, justify="right" if col in ("seconds", "candidates") else "left")
    for r in summary.results:
        cover = " ".join(f"{k} {v:.2f}" for k, v in sorted(r.coverage.items()))
        seconds = f"{r.seconds:.1f}" if math.isfinite(r.seconds) else "n/a"
        table.add_row(
            r.series, r.status, seconds, "" if r.candidates is None else str(r.candidates),
            cover, r.error,
        )  # fmt: skip
    return table
