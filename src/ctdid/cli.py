"""Command-line interface: ``ctdid --help``.

Errors caused by the input or options print one line, ``ctdid: error: <what>``, and exit with
status 2; ``--debug`` shows the traceback instead. Warnings print one line each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import sys
import time
import warnings
import webbrowser
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ctdid import __version__
from ctdid.errors import CTDIDError, CTDIDWarning

__all__ = ["app", "main"]

app = typer.Typer(
    name="ctdid",
    help=(
        "Deep Interactive Denoiser for CT: from one pretrained denoiser, make candidate images "
        "along the noise-resolution tradeoff curve and pick one per task."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state: dict[str, bool] = {"debug": False}
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


class ByteOrder(str, Enum):
    little = "little"
    big = "big"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ctdid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["debug"] = debug


# Options shared by commands that read a volume -------------------------------------------------

SeriesOpt = Annotated[
    str | None,
    typer.Option(
        "--series", help="DICOM folder with several series: SeriesInstanceUID, number or index."
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="Input format, if the name does not tell it."),
]
ShapeOpt = Annotated[
    str | None,
    typer.Option("--shape", help="Raw data: 'Y,X' or 'Z,Y,X' voxels, e.g. 512,512."),
]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="Raw data: stored type, e.g. uint16, int16, <f4.")
]
OffsetOpt = Annotated[
    float | None,
    typer.Option("--hu-offset", help="Raw/MetaImage: HU = slope * value + offset (Mayo: -1024)."),
]
SlopeOpt = Annotated[float | None, typer.Option("--hu-slope", help="Raw/MetaImage: HU slope.")]
ByteOrderOpt = Annotated[ByteOrder, typer.Option("--byte-order", help="Raw data: byte order.")]
SpacingOpt = Annotated[
    str | None, typer.Option("--spacing", help="Raw data: 'DY,DX' or 'DZ,DY,DX' in mm.")
]
KeyOpt = Annotated[str | None, typer.Option("--key", help=".npz: which array to read.")]
# Options of the simulation commands.
KernelOpt = Annotated[str, typer.Option("--kernel", help="FBP window of phantom scans.")]
RealKernelOpt = Annotated[
    str, typer.Option("--real-kernel", help="FBP window of the inserted noise.")
]
PhantomSizeOpt = Annotated[
    int, typer.Option("--phantom-size", min=32, help="Phantom size in pixels (380 mm).")
]
ViewsOpt = Annotated[
    int | None, typer.Option("--views", min=8, help="Fan-beam views (default 1152).")
]


def _ints(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise CTDIDError(f"{name} must be integers separated by commas, got {text!r}") from None
    if not values or min(values) <= 0:
        raise CTDIDError(f"{name} must be positive integers, got {text!r}")
    return values


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CTDIDError(f"{name} must be numbers separated by commas, got {text!r}") from None
    return values


@dataclasses.dataclass(frozen=True)
class _ReadOptions:
    """The input options of the commands that read a volume, as ``read_volume`` takes them."""

    series: str | None = None
    format: str | None = None
    shape: str | None = None
    dtype: str | None = None
    hu_offset: float | None = None
    hu_slope: float | None = None
    byte_order: ByteOrder = ByteOrder.little
    spacing: str | None = None
    key: str | None = None

    def read(self, path: Path) -> Any:
        """Read ``path`` as HU, with a spinner; errors as :class:`ctdid.errors.InputError`."""
        from ctdid.io import read_volume

        with err_console.status(f"reading {path}", spinner="dots"):
            return read_volume(
                path,
                format=self.format,
                series=self.series,
                shape=_ints(self.shape, "--shape"),
                dtype=self.dtype,
                hu_offset=self.hu_offset,
                hu_slope=self.hu_slope,
                byte_order=self.byte_order.value,
                spacing=_floats(self.spacing, "--spacing"),
                key=self.key,
            )


#: The input options, declared once: (parameter, typer annotation, default).
_READ_PARAMS: tuple[tuple[str, Any, Any], ...] = (
    ("series", SeriesOpt, None),
    ("format", FormatOpt, None),
    ("shape", ShapeOpt, None),
    ("dtype", DtypeOpt, None),
    ("hu_offset", OffsetOpt, None),
    ("hu_slope", SlopeOpt, None),
    ("byte_order", ByteOrderOpt, ByteOrder.little),
    ("spacing", SpacingOpt, None),
    ("key", KeyOpt, None),
)


def _reads_volume(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the input options of :data:`_READ_PARAMS` as one ``read`` argument.

    The command takes ``read: _ReadOptions``; the command line shows the nine options.
    """
    sig = inspect.signature(func, eval_str=True)
    kept = [p for p in sig.parameters.values() if p.name != "read"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, ann, default in _READ_PARAMS
    ]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> None:
        read = _ReadOptions(**{name: kwargs.pop(name) for name, _, _ in _READ_PARAMS})
        func(*args, read=read, **kwargs)

    setattr(command, "__signature__", sig.replace(parameters=kept + added))  # noqa: B010
    return command


# Commands ----------------------------------------------------------------------------------------


@app.command()
@_reads_volume
def info(
    input: Annotated[Path, typer.Argument(help="DICOM folder/file, NIfTI, MetaImage, NumPy, raw.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    *,
    read: _ReadOptions,
) -> None:
    """Describe a CT input: series found, shape, spacing, HU range."""
    from ctdid.io import list_series

    input_is_dicom = input.is_dir() or (read.format == "dicom")
    listed: list[Any] = []
    if input_is_dicom and read.shape is None and read.dtype is None:
        listed = list_series(input)
        if len(listed) > 1 and read.series is None:
            _print_series(listed)
            err_console.print(
                f"{len(listed)} series found; pass --series UID|NUMBER|INDEX to describe one."
            )
            return
    vol = read.read(input)
    desc = vol.describe()
    if as_json:
        typer.echo(json.dumps(desc, indent=2, default=str))
        return
    if listed:
        _print_series(listed)
    table = Table(title=str(input), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("shape (z, y, x)", " x ".join(str(s) for s in desc["shape_zyx"]))
    table.add_row("spacing (mm)", " x ".join(f"{s:.4g}" for s in desc["spacing_mm_zyx"]))
    table.add_row("extent (mm)", " x ".join(f"{s:.4g}" for s in desc["extent_mm_zyx"]))
    table.add_row("HU min / max", f"{desc['hu_min']:.1f} / {desc['hu_max']:.1f}")
    table.add_row("HU 1st / 99th pct", f"{desc['hu_p01']:.1f} / {desc['hu_p99']:.1f}")
    table.add_row("HU mean", f"{desc['hu_mean']:.1f}")
    for k, v in desc["source"].items():
        if v not in (None, "", [], {}):
            table.add_row(str(k), str(v))
    out_console.print(table)


def _print_series(listed: list[Any]) -> None:
    table = Table(title="DICOM series")
    for col in ("#", "number", "description", "modality", "slices", "SeriesInstanceUID"):
        table.add_column(col)
    for i, s in enumerate(listed, start=1):
        table.add_row(
            str(i),
            str(getattr(s, "series_number", "")),
            str(getattr(s, "series_description", "")),
            str(getattr(s, "modality", "")),
            str(getattr(s, "n_files", "")),
            str(getattr(s, "series_instance_uid", "")),
        )
    out_console.print(table)


@app.command()
@_reads_volume
def convert(
    input: Annotated[Path, typer.Argument(help="Input volume (any readable format).")],
    output: Annotated[
        Path,
        typer.Argument(
            help="Output: .nii/.nii.gz, .mhd, .npy, .tif, .png, or a folder name for DICOM."
        ),
    ],
    window: Annotated[
        str, typer.Option("--window", help="Display window 'LOW,HIGH' in HU (PNG, DICOM).")
    ] = "-160,240",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
    *,
    read: _ReadOptions,
) -> None:
    """Convert a CT volume between formats, keeping HU (DICOM out is a derived series)."""
    from ctdid.io import write_volume

    win = _floats(window, "--window")
    if win is None or len(win) != 2:
        raise CTDIDError(f"--window must be 'LOW,HIGH' in HU, got {window!r}")
    vol = read.read(input)
    with err_console.status(f"writing {output}", spinner="dots"):
        written = write_volume(
            vol,
            output,
            overwrite=overwrite,
            window=(win[0], win[1]),
            description="ctdid convert",
            derivation=f"converted by ctdid {__version__} from {input.name}",
            params={"command": "convert", "input": input.name},
        )
    out_console.print(f"wrote {len(written)} file(s) to {output}")


class RunMode(str, Enum):
    robust = "robust"
    faithful = "faithful"
    fast = "fast"


class RunMethod(str, Enum):
    auto = "auto"
    did = "did"
    blend = "blend"
    iterate = "iterate"
    interp = "interp"
    tv = "tv"
    bm3d = "bm3d"


class PickTask(str, Enum):
    detect = "detect"
    match_noise = "match-noise"
    sharpest_below = "sharpest-below"


# Options of `ctdid run` ----------------------------------------------------------------------

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", help="Shipped name (e.g. unet-d25), 'pkg.mod:factory', 'file.py:factory'."
    ),
]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="State dict (.safetensors, .pt).")
]
CardOpt = Annotated[Path | None, typer.Option("--card", help="Model card (YAML/JSON).")]
ModeOpt = Annotated[
    RunMode,
    typer.Option(
        "--mode",
        help="DID engine mode: robust (Gauss-Newton steps, reaches furthest toward the "
        "bounds), fast (fewer Jacobian products, about 4x cheaper, a shorter low-noise "
        "side) or faithful (the paper's SGD and 1 % stop).",
    ),
]
MethodOpt = Annotated[
    RunMethod,
    typer.Option(
        "--method",
        help="What makes the candidates: auto (default: per side the better of DID and its "
        "free baselines by ctdid's comparison harness; DID in the faithful mode), did "
        "(fine-tuning on both sides) or a baseline: blend (pixel blends input <-> default "
        "<-> t_low, as ASiR-V), iterate (the model applied again), interp (weights "
        "interpolated toward DID's ends), tv or bm3d (classical sweeps of the input). Same "
        "result folder for all; run.json's curve says which method made each side and why.",
    ),
]
CandidatesOpt = Annotated[
    int, typer.Option("--candidates", min=1, help="Candidates per direction.")
]
KOpt = Annotated[int, typer.Option("--k", min=1, help="Model applications of t_low.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed, recorded in run.json.")]
PerSliceOpt = Annotated[
    bool,
    typer.Option(
        "--per-slice",
        help="One trajectory per slice, each slice written when done (default: one shared "
        "trajectory for the scan, fine-tuned on a few slices).",
    ),
]
TrainSlicesOpt = Annotated[
    int,
    typer.Option(
        "--train-slices", min=1, help="Shared trajectory: slices to fine-tune on (volumes)."
    ),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Slices per forward pass, volumes.")
]
ReferenceOpt = Annotated[
    Path | None, typer.Option("--reference", help="Normal-dose scan: adds RMSE labels.")
]
PickOpt = Annotated[
    PickTask | None, typer.Option("--pick", help="Choose a candidate for this task.")
]
TargetNoiseOpt = Annotated[
    float | None, typer.Option("--target-noise", help="match-noise: noise in HU.")
]
NoiseCeilingOpt = Annotated[
    float | None, typer.Option("--noise-ceiling", help="sharpest-below: max noise, HU.")
]
LesionOpt = Annotated[float, typer.Option("--lesion-mm", help="detect: lesion diameter in mm.")]
ContrastOpt = Annotated[float, typer.Option("--contrast-hu", help="detect: lesion contrast, HU.")]
ExportOpt = Annotated[
    str | None,
    typer.Option("--export", help="Write the pick (or default): 'dicom,nifti,png'."),
]
WindowOpt = Annotated[str, typer.Option("--window", help="Display window 'LOW,HIGH' in HU.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="torch device, e.g. cuda (default: cpu).")
]
OverwriteRunOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing result folder.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run in --out (same input, model and options), "
        "skipping finished slices and candidate volumes; a finished run is left as is.",
    ),
]
ViewOpt = Annotated[
    bool,
    typer.Option(
        "--view",
        help="Open the viewer as soon as the first candidate exists; serve until Ctrl-C.",
    ),
]
PreviewsOpt = Annotated[
    bool,
    typer.Option(
        "--previews/--no-previews",
        help="--method did: show pixel-blend previews over the whole strength range as soon "
        "as the default exists (one slice: previews/; a volume: rendered by the viewer for the "
        "slice shown; run.json 'previews'); DID's candidates replace them as they arrive, the "
        "finished folder is the same.",
    ),
]


def _window(text: str) -> tuple[float, float]:
    win = _floats(text, "--window")
    if win is None or len(win) != 2:
        raise CTDIDError(f"--window must be 'LOW,HIGH' in HU, got {text!r}")
    return win[0], win[1]


def _check_out(out: Path, *, overwrite: bool, resume: bool) -> None:
    """Fail before the model loads when the result folder cannot be written."""
    if resume and overwrite:
        raise CTDIDError("--resume and --overwrite exclude each other")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise CTDIDError(
            "exists and is not empty; pass --overwrite to replace it (or --resume to continue "
            "the run in it)",
            path=out,
        )


def _run_and_view(
    vol: Any, net: Any, out: Path, *, view_result: bool, **kwargs: Any
) -> tuple[Any, contextlib.ExitStack]:
    """``run_did`` with progress bars; with ``view_result`` the viewer starts at the first
    candidate (the returned exit stack stops it)."""
    from ctdid.runner.console import run_with_progress

    stack = contextlib.ExitStack()

    def start_viewer() -> None:
        from ctdid.viewer import serve_in_thread

        url = stack.enter_context(serve_in_thread(out, model=net))
        err_console.print(f"ctdid viewer at {url} (candidates appear as they are made)")
        webbrowser.open(url)

    summary = run_with_progress(
        vol,
        net,
        console=err_console,
        on_first_candidate=start_viewer if view_result else None,
        out_dir=out,
        **kwargs,
    )
    return summary, stack


def _print_run(summary: Any) -> None:
    from ctdid.runner.console import candidate_table

    title = "candidates, high resolution -> low noise"
    curve = summary.curve or {}
    if curve and not (curve.get("high") == curve.get("low") == "did"):
        title = (f"{curve['high']} (baseline) {title}" if curve.get("high") == curve.get("low")
                 else f"{title}; high side: {curve['high']}, low side: {curve['low']}")  # fmt: skip
    out_console.print(candidate_table(summary, title=title))
    if curve.get("verdict"):  # --method auto: say which method makes each side, and why
        out_console.print(f"curve (--method auto): {curve['reason']}")
        out_console.print(f"  measured by: {curve['verdict']}; --method did for DID")
    t = summary.timings
    if summary.already_done:
        out_console.print(
            f"the run in {summary.folder} is already finished; nothing to do "
            f"({len(summary.records)} candidates)"
        )
    else:
        out_console.print(
            f"{len(summary.records)} candidates in {t['total']:.1f} s (first after "
            f"{t['first_candidate']:.1f} s); results in {summary.folder}"
        )
    for path in summary.exports:
        out_console.print(f"exported {path}")


def _serve_until_interrupted(stack: contextlib.ExitStack) -> None:
    with stack:
        err_console.print("viewer running; press Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            err_console.print("viewer stopped")


@app.command()
@_reads_volume
def run(
    input: Annotated[Path, typer.Argument(help="Noisy scan: DICOM folder/file, NIfTI, NumPy...")],
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", help="Result folder to write.")],
    weights: WeightsOpt = None,
    card: CardOpt = None,
    mode: ModeOpt = RunMode.robust,
    method: MethodOpt = RunMethod.auto,
    candidates: CandidatesOpt = 8,
    k: KOpt = 3,
    seed: SeedOpt = 0,
    per_slice: PerSliceOpt = False,
    train_slices: TrainSlicesOpt = 8,
    batch_size: BatchSizeOpt = 8,
    reference: ReferenceOpt = None,
    pick: PickOpt = None,
    target_noise: TargetNoiseOpt = None,
    noise_ceiling: NoiseCeilingOpt = None,
    lesion_mm: LesionOpt = 5.0,
    contrast_hu: ContrastOpt = 10.0,
    export: ExportOpt = None,
    window: WindowOpt = "-160,240",
    device: DeviceOpt = None,
    overwrite: OverwriteRunOpt = False,
    resume: ResumeOpt = False,
    view_result: ViewOpt = False,
    previews: PreviewsOpt = True,
    *,
    read: _ReadOptions,
) -> None:
    """Make DID candidates along the noise-resolution curve and write a result folder.

    Volumes stream to disk with bounded memory: in the shared trajectory every candidate's
    fine-tuned weights are saved (candidates/cNNN.weights.safetensors) and its volume is
    rendered a batch of slices at a time; with --per-slice each slice is written when done.
    An interrupted run continues with --resume (finished work is skipped).
    """
    from ctdid.runner import RunOptions, check_pick
    from ctdid.runner.console import load_denoiser

    _check_out(out, overwrite=overwrite, resume=resume)
    task = None if pick is None else pick.value
    options = RunOptions(
        mode=mode.value,
        method=method.value,
        k=k,
        n_candidates=candidates,
        seed=seed,
        shared=not per_slice,
        train_slices=train_slices,
        batch_size=batch_size,
        resume=resume,
        pick=task,
        pick_options={
            "target_noise": target_noise,
            "noise_ceiling": noise_ceiling,
            "diameter_mm": lesion_mm,
            "contrast_hu": contrast_hu,
        },
        export=export or "",
        window=_window(window),
        overwrite=overwrite,
        previews=previews,
    )
    check_pick(task, options.pick_options, has_reference=reference is not None)
    net, model_info = load_denoiser(model, weights=weights, card=card, device=device)
    vol = read.read(input)
    ref = None if reference is None else dataclasses.replace(read, series=None).read(reference)
    summary, viewer = _run_and_view(
        vol,
        net,
        out,
        view_result=view_result,
        options=options,
        reference=ref,
        model_info=model_info,
        input_info={"path": str(input.absolute()), "series": read.series, **vol.meta},
    )
    _print_run(summary)
    if view_result:
        _serve_until_interrupted(viewer)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        "ctdid-demo"
    ),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing demo folder.")
    ] = False,
    size: Annotated[
        int,
        typer.Option(
            "--size",
            min=32,
            help="Image size in pixels (the real slice is resampled from 512 px over 500 mm; "
            "the phantom has a 380 mm field of view).",
        ),
    ] = 512,
    phantom: Annotated[
        bool,
        typer.Option(
            "--phantom", help="Use the procedural abdomen phantom instead of the real slice."
        ),
    ] = False,
    view_result: Annotated[
        bool, typer.Option("--view", help="Open the result in the viewer when done.")
    ] = False,
) -> None:
    """Run the demo on the embedded example (no download, no external data).

    Inserts quarter-dose noise (projection domain, fixed seed) into an embedded real abdomen
    slice (TotalSegmentator example CT, Apache-2.0; --phantom: simulates a quarter-dose scan
    of a procedural abdomen phantom), runs DID with the shipped quarter-dose model, and writes
    the candidates, their labels, a montage and the tradeoff plot into --out.
    """
    from ctdid.demo import run_demo

    summary = run_demo(out, overwrite=overwrite, console=out_console, size=size, phantom=phantom)
    if summary is None:
        return
    result = Path(summary.folder)
    if view_result:
        from ctdid.viewer import view as serve_view

        serve_view(result, host="127.0.0.1", port=0, open_browser=True, allow_remote=False)
    else:
        out_console.print(f"browse the candidates: ctdid view {result} --open")


# Training: paired dataset and denoiser training (ctdid.train) -----------------------------------


@app.command("simulate-pairs")
def simulate_pairs(
    out: Annotated[Path, typer.Argument(help="Folder to create with the pair .npz files.")],
    phantoms: Annotated[
        int, typer.Option("--phantoms", min=0, help="Procedural phantom slices (abdomen/chest).")
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Master seed of anatomy and noise.")] = 0,
    real: Annotated[
        list[Path] | None,
        typer.Option("--real", help="Real normal-dose volume or folder of raw slices (repeat)."),
    ] = None,
    shape: ShapeOpt = None,
    dtype: DtypeOpt = None,
    hu_offset: OffsetOpt = None,
    spacing: SpacingOpt = None,
    real_kernel: RealKernelOpt = "hann",
    real_i0: Annotated[
        float | None,
        typer.Option(
            "--real-i0", help="Full-dose photons/bin/view assumed for --real scans (noise level)."
        ),
    ] = None,
    base_dose: Annotated[
        float, typer.Option("--base-dose", help="Dose fraction of the stored low-dose images.")
    ] = 0.25,
    phantom_size: PhantomSizeOpt = 512,
    views: ViewsOpt = None,
    kernel: KernelOpt = "hann",
    device: Annotated[
        str | None, typer.Option("--device", help="torch device, e.g. cuda (default cpu).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing folder.")
    ] = False,
) -> None:
    """Write low/normal-dose training pairs (phantoms and real slices with inserted noise)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ctdid.sim import FanBeamGeometry
    from ctdid.train.pairs import make_pairs, read_real_sources

    sp = _floats(spacing, "--spacing")
    sources = read_real_sources(
        real or [],
        shape=_ints(shape, "--shape"),
        dtype=dtype,
        hu_offset=hu_offset,
        spacing=sp,
        kernel=real_kernel,
        i0=real_i0,
    )
    geometry = None if views is None else FanBeamGeometry(n_views=views)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task("simulating", total=phantoms + sum(s.volume.shape[0] for s in sources))

        def step(done: int, total: int, desc: str) -> None:
            bar.update(task, completed=done, total=total, description=desc)

        folder = make_pairs(
            out,
            n_phantoms=phantoms,
            seed=seed,
            real=sources,
            base_dose=base_dose,
            phantom_shape=phantom_size,
            kernel=kernel,
            geometry=geometry,
            device=device,
            overwrite=overwrite,
            progress=step,
        )
    info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    timing = ", ".join(
        f"{k} {v:.2f} s/slice" for k, v in info["timing_s_per_slice"].items() if v is not None
    )
    out_console.print(f"wrote {len(info['pairs'])} pairs to {folder} ({timing})")


def _doses(text: str) -> tuple[float, ...]:
    from fractions import Fraction

    try:
        values = tuple(float(Fraction(v.strip())) for v in text.split(",") if v.strip())
    except (ValueError, ZeroDivisionError):
        raise CTDIDError(
            f"--doses must be dose fractions separated by commas (e.g. 0.5,0.25 or 1/2,1/4), "
            f"got {text!r}"
        ) from None
    if not values:
        raise CTDIDError(f"--doses names no dose, got {text!r}")
    return values


# Options of `ctdid simulate` -----------------------------------------------------------------

PhantomsOpt = Annotated[
    int, typer.Option("--phantoms", min=0, help="Procedural phantom slices (abdomen/chest).")
]
RealOpt = Annotated[
    list[Path] | None,
    typer.Option("--real", help="Real normal-dose volume or folder of raw slices (repeat)."),
]
DosesOpt = Annotated[
    str,
    typer.Option("--doses", help="Dose levels, fractions of the normal dose (0.5,0.25 or 1/4)."),
]
RealisationsOpt = Annotated[
    int, typer.Option("--realisations", min=1, help="Noise realisations per dose level.")
]
MasterSeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Master seed of anatomy and noise.")
]
I0Opt = Annotated[
    float | None,
    typer.Option("--i0", help="Normal-dose photons/bin/view (phantoms; default 1.5e5)."),
]
SigmaEOpt = Annotated[
    float | None, typer.Option("--sigma-e", help="Electronic noise std in counts (default 10).")
]
RealI0Opt = Annotated[
    float | None,
    typer.Option(
        "--real-i0", help="Normal-dose photons/bin/view assumed for --real scans (else --i0)."
    ),
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Processes (one thread each).")]
OverwriteDatasetOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing ctdid dataset folder.")
]


@contextlib.contextmanager
def _lazy_progress(description: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar that appears at the first update (a bad option prints only its error)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    task = bar.add_task(description, total=None)

    def step(done: int, total: int, desc: str) -> None:
        if not bar.live.is_started:  # first call: after the options and folder were checked
            bar.start()
        bar.update(task, completed=done, total=total, description=desc)

    try:
        yield step
    finally:
        if bar.live.is_started:
            bar.stop()


def _print_simulated(manifest: dict[str, Any], out: Path) -> None:
    run = manifest["runs"][-1]
    n = len(manifest["slices"])
    where = Path(out).absolute()
    if run["slices"] == 0:
        out_console.print(f"nothing to do: all {n} slices of {where} are done")
        return
    earlier = n - run["slices"]
    note = f"; {earlier} of {n} were done before" if earlier else ""
    slices = f"{run['slices']} slice" + ("s" if run["slices"] != 1 else "")
    images = f"{run['images']} low-dose image" + ("s" if run["images"] != 1 else "")
    out_console.print(
        f"wrote {slices} ({images}) to {where} in "
        f"{run['seconds']:.1f} s: {run['s_per_image']:.3g} s per image with "
        f"{run['workers']} worker(s){note}"
    )


@app.command("simulate")
def simulate_cmd(
    out: Annotated[Path, typer.Argument(help="Dataset folder to create (or resume).")],
    phantoms: PhantomsOpt = 0,
    real: RealOpt = None,
    doses: DosesOpt = "0.5,0.25,0.125,0.0625",
    realisations: RealisationsOpt = 1,
    seed: MasterSeedOpt = 0,
    i0: I0Opt = None,
    sigma_e: SigmaEOpt = None,
    kernel: KernelOpt = "hann",
    real_kernel: RealKernelOpt = "hann",
    real_i0: RealI0Opt = None,
    shape: ShapeOpt = None,
    dtype: DtypeOpt = None,
    hu_offset: OffsetOpt = None,
    spacing: SpacingOpt = None,
    phantom_size: PhantomSizeOpt = 512,
    views: ViewsOpt = None,
    workers: WorkersOpt = 2,
    overwrite: OverwriteDatasetOpt = False,
) -> None:
    """Write a paired dataset: normal dose + chosen dose levels, several noise realisations.

    Phantoms get full low-dose simulations, real normal-dose slices projection-domain noise
    insertion. Rerunning the same command finishes an interrupted folder.
    """
    from ctdid.sim import FanBeamGeometry
    from ctdid.train.pairs import read_real_sources
    from ctdid.train.simulate_dataset import simulate_dataset

    levels = _doses(doses)
    sources = read_real_sources(
        real or [],
        shape=_ints(shape, "--shape"),
        dtype=dtype,
        hu_offset=hu_offset,
        spacing=_floats(spacing, "--spacing"),
        kernel=real_kernel,
        i0=real_i0,
    )
    geometry = None if views is None else FanBeamGeometry(n_views=views)
    with _lazy_progress("simulating") as step:
        manifest = simulate_dataset(
            out,
            phantoms=phantoms,
            real=sources,
            doses=levels,
            realisations=realisations,
            seed=seed,
            i0=i0,
            sigma_e=sigma_e,
            kernel=kernel,
            geometry=geometry,
            phantom_size=phantom_size,
            workers=workers,
            overwrite=overwrite,
            progress=step,
        )
    _print_simulated(manifest, out)


@app.command("train")
def train_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="Pairs folder ('ctdid simulate' or 'simulate-pairs').")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (one per model).")],
    name: Annotated[str | None, typer.Option("--name", help="Model name.")] = None,
    extra: Annotated[
        list[Path] | None,
        typer.Option(
            "--extra-dataset",
            help="Another pairs folder, all of it trained on (repeat; shares: dataset_weights).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TrainConfig .yaml/.json; options override.")
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture.")] = None,
    dose: Annotated[float | None, typer.Option("--dose", help="Training dose fraction.")] = None,
    iterations: Annotated[
        int | None, typer.Option("--iterations", min=1, help="Optimiser steps.")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Batch size.")] = None,
    patch: Annotated[int | None, typer.Option("--patch", min=8, help="Patch size (px).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of weights and patches.")] = None,
    val_every: Annotated[
        int | None, typer.Option("--val-every", min=1, help="Iterations between validations.")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from the checkpoint.")
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
) -> None:
    """Train a denoiser on a pairs folder: weights, model card, curve, config and log."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ctdid.train import TrainConfig, TrainProgress, train

    data: dict[str, Any] = {} if config is None else TrainConfig.read_mapping(config)
    overrides = {
        "name": name,
        "architecture": arch,
        "dose": dose,
        "iterations": iterations,
        "batch_size": batch,
        "patch": patch,
        "seed": seed,
        "val_every": val_every,
        "threads": threads,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["dataset"] = str(dataset)
    if extra:
        data["extra_datasets"] = [str(p) for p in extra]
    if "name" not in data:
        raise CTDIDError("give --name (or 'name' in --config)")
    cfg = TrainConfig.from_dict(data, path=config)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "loss {task.fields[loss]}  val RMSE {task.fields[val]} HU",
        TimeRemainingColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(cfg.name, total=cfg.iterations, loss="-", val="-")

        def step(p: TrainProgress) -> None:
            val = "-" if p.val_rmse_hu is None else f"{p.val_rmse_hu:.2f}"
            bar.update(task, completed=p.iteration, loss=f"{p.loss:.3g}", val=val)

        res = train(
            cfg, out_dir=out, progress=step, resume=resume, overwrite=overwrite, device=device
        )
    metrics = ", ".join(f"{k} {v}" for k, v in res.metrics.items())
    out_console.print(f"wrote {res.weights} and {res.card.name} ({metrics})")


@app.command()
def view(
    result: Annotated[Path, typer.Argument(help="A result folder written by `ctdid run`.")],
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; only 127.0.0.1 unless --allow-remote.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port; 0 picks a free one.")] = 0,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow binding a non-local address; the URL then carries a random token.",
        ),
    ] = False,
) -> None:
    """Browse, compare, measure and pick candidates in a local web page."""
    from ctdid.viewer import view as serve_view

    serve_view(result, host=host, port=port, open_browser=open_browser, allow_remote=allow_remote)


@app.command()
def reproduce(
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md and the figures.")] = (
        Path("docs/reproduction")
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer slices and candidates, fast mode (<10 min).")
    ] = False,
    size: Annotated[
        int, typer.Option("--size", min=32, help="Image size in pixels (512 as the training).")
    ] = 512,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the files of an earlier run.")
    ] = False,
    order_guard: Annotated[
        bool,
        typer.Option(
            "--order-guard",
            help="Engine drops candidates that break their side's noise order (the report "
            "says how many); the committed report is made with it.",
        ),
    ] = False,
) -> None:
    """Reproduce the paper's experiments (Figs. 2-8) with the shipped models, and report.

    Simulates the inputs, runs DID with the shipped weights (never trains), measures STD, CNR,
    RMSE and TTF50 along the candidates, and writes report.md, where each of the paper's claims
    is HELD or NOT HELD with its numbers, and PNG figures into --out. Real-data sections need
    ../shared/data and are skipped with a note without it.
    """
    from ctdid.reproduce import run_reproduction
    from ctdid.reproduce.experiments import make_config

    res = run_reproduction(
        out,
        quick=quick,
        size=size,
        config=make_config(quick=quick, size=size, order_guard=order_guard),
        overwrite=overwrite,
        log=lambda msg: err_console.print(msg, markup=False),
    )
    table = Table(title="the paper's claims")
    for col in ("claim", "verdict", "cases held"):
        table.add_column(col)
    for c in res.claims:
        table.add_row(c.key, c.status, f"{c.n_held}/{len(c.cases)}")
    out_console.print(table)
    if res.missing_models:
        out_console.print(f"missing shipped models (skipped): {', '.join(res.missing_models)}")
    out_console.print(f"report: {res.report} ({len(res.figures)} figures, {res.seconds:.0f} s)")


# Many series: `ctdid batch` on Ray (ctdid.batch) ------------------------------------------------


@app.command()
@_reads_volume
def batch(
    inputs: Annotated[
        Path, typer.Argument(help="Folder of series (a subfolder or file each) or a CSV manifest.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder: one result folder per series.")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="As `ctdid run --model` (or a 'model' manifest column)."),
    ] = None,
    weights: WeightsOpt = None,
    card: CardOpt = None,
    mode: ModeOpt = RunMode.robust,
    method: Annotated[
        RunMethod | None,
        typer.Option("--method", help="As `ctdid run --method` (default: its default)."),
    ] = None,
    candidates: CandidatesOpt = 8,
    k: KOpt = 3,
    seed: SeedOpt = 0,
    per_slice: PerSliceOpt = False,
    train_slices: TrainSlicesOpt = 8,
    batch_size: BatchSizeOpt = 8,
    pick: PickOpt = None,
    target_noise: TargetNoiseOpt = None,
    noise_ceiling: NoiseCeilingOpt = None,
    lesion_mm: LesionOpt = 5.0,
    contrast_hu: ContrastOpt = 10.0,
    export: ExportOpt = None,
    window: WindowOpt = "-160,240",
    device: Annotated[
        str | None, typer.Option("--device", help="torch device; cuda: one GPU per series.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Series at once (default: one per core here)."),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch threads per series.")] = 1,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Join a running Ray cluster (HOST:PORT of ray start)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Run every series again, replacing results.")
    ] = False,
    *,
    read: _ReadOptions,
) -> None:
    """Run many series, one Ray task each, into OUT/<name>; resumable; writes OUT/batch.csv.

    Each result folder is the one `ctdid run` writes with the same options. A manifest has
    the columns input, name and any option (mode, method, model, candidates, reference, ...;
    paths relative to it). A rerun skips finished series and finishes interrupted ones; a bad
    series is a failed row (exit 1). Ray starts on this machine (127.0.0.1) unless --address
    names a cluster.
    """
    from ctdid.batch import find_series, run_batch_with_progress, summary_table

    defaults = {
        "model": model, "weights": weights, "card": card, "mode": mode.value,
        "method": None if method is None else method.value, "candidates": candidates,
        "k": k, "seed": seed, "per_slice": per_slice, "train_slices": train_slices,
        "batch_size": batch_size,
        "pick": None if pick is None else pick.value, "target_noise": target_noise,
        "noise_ceiling": noise_ceiling, "lesion_mm": lesion_mm, "contrast_hu": contrast_hu,
        "export": export or "", "window": window, "series": read.series,
    }  # fmt: skip
    read_kwargs = {
        "format": read.format, "shape": _ints(read.shape, "--shape"), "dtype": read.dtype,
        "hu_offset": read.hu_offset, "hu_slope": read.hu_slope,
        "byte_order": read.byte_order.value, "spacing": _floats(read.spacing, "--spacing"),
        "key": read.key,
    }  # fmt: skip
    summary = run_batch_with_progress(
        find_series(inputs, out=out), console=err_console, out=out, defaults=defaults,
        read=read_kwargs, device=device, threads=threads, workers=workers, address=address,
        overwrite=overwrite,
    )  # fmt: skip
    out_console.print(summary_table(summary))
    out_console.print(
        f"{len(summary.results)} series in {summary.seconds:.1f} s: {summary.count('done')} "
        f"done, {summary.count('skipped')} skipped, {summary.count('failed')} failed; "
        f"summary in {summary.csv}"
    )
    if summary.failed:
        raise typer.Exit(1)


# Entry point -------------------------------------------------------------------------------------


def _showwarning(
    message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
) -> None:
    if issubclass(category, CTDIDWarning) and not _state["debug"]:
        err_console.print(f"[yellow]ctdid: warning:[/] {message}", markup=True, highlight=False)
    else:
        err_console.print(
            warnings.formatwarning(message, category, filename, lineno, line), markup=False
        )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with one line on bad input, 1 on an internal error."""
    _state["debug"] = "--debug" in (sys.argv[1:] if argv is None else argv)
    old = warnings.showwarning
    warnings.showwarning = _showwarning
    try:
        app(args=argv, standalone_mode=True)
    except CTDIDError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"ctdid: error: {exc}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("ctdid: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # a bug: say so, keep the traceback one flag away
        if _state["debug"]:
            raise
        err_console.print(
            f"ctdid: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback and please report it)",
            markup=False,
        )
        sys.exit(1)
    finally:
        warnings.showwarning = old


if __name__ == "__main__":  # pragma: no cover
    main()
