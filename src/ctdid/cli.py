"""Command-line interface: ``ctdid --help``.

Errors caused by the input or options print one line, ``ctdid: error: <what>``, and exit with
status 2; ``--debug`` shows the traceback instead. Warnings print one line each.
"""

from __future__ import annotations

import json
import sys
import warnings
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


def _read(
    path: Path,
    *,
    format: str | None,
    series: str | None,
    shape: str | None,
    dtype: str | None,
    hu_offset: float | None,
    hu_slope: float | None,
    byte_order: ByteOrder,
    spacing: str | None,
    key: str | None,
) -> Any:
    from ctdid.io import read_volume

    with err_console.status(f"reading {path}", spinner="dots"):
        return read_volume(
            path,
            format=format,
            series=series,
            shape=_ints(shape, "--shape"),
            dtype=dtype,
            hu_offset=hu_offset,
            hu_slope=hu_slope,
            byte_order=byte_order.value,
            spacing=_floats(spacing, "--spacing"),
            key=key,
        )


# Commands ----------------------------------------------------------------------------------------


@app.command()
def info(
    input: Annotated[Path, typer.Argument(help="DICOM folder/file, NIfTI, MetaImage, NumPy, raw.")],
    series: SeriesOpt = None,
    format: FormatOpt = None,
    shape: ShapeOpt = None,
    dtype: DtypeOpt = None,
    hu_offset: OffsetOpt = None,
    hu_slope: SlopeOpt = None,
    byte_order: ByteOrderOpt = ByteOrder.little,
    spacing: SpacingOpt = None,
    key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe a CT input: series found, shape, spacing, HU range."""
    from ctdid.io import list_series

    input_is_dicom = input.is_dir() or (format == "dicom")
    listed: list[Any] = []
    if input_is_dicom and shape is None and dtype is None:
        listed = list_series(input)
        if len(listed) > 1 and series is None:
            _print_series(listed)
            err_console.print(
                f"{len(listed)} series found; pass --series UID|NUMBER|INDEX to describe one."
            )
            return
    vol = _read(
        input,
        format=format,
        series=series,
        shape=shape,
        dtype=dtype,
        hu_offset=hu_offset,
        hu_slope=hu_slope,
        byte_order=byte_order,
        spacing=spacing,
        key=key,
    )
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
def convert(
    input: Annotated[Path, typer.Argument(help="Input volume (any readable format).")],
    output: Annotated[
        Path,
        typer.Argument(
            help="Output: .nii/.nii.gz, .mhd, .npy, .tif, .png, or a folder name for DICOM."
        ),
    ],
    series: SeriesOpt = None,
    format: FormatOpt = None,
    shape: ShapeOpt = None,
    dtype: DtypeOpt = None,
    hu_offset: OffsetOpt = None,
    hu_slope: SlopeOpt = None,
    byte_order: ByteOrderOpt = ByteOrder.little,
    spacing: SpacingOpt = None,
    key: KeyOpt = None,
    window: Annotated[
        str, typer.Option("--window", help="Display window 'LOW,HIGH' in HU (PNG, DICOM).")
    ] = "-160,240",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
) -> None:
    """Convert a CT volume between formats, keeping HU (DICOM out is a derived series)."""
    from ctdid.io import write_volume

    win = _floats(window, "--window")
    if win is None or len(win) != 2:
        raise CTDIDError(f"--window must be 'LOW,HIGH' in HU, got {window!r}")
    vol = _read(
        input,
        format=format,
        series=series,
        shape=shape,
        dtype=dtype,
        hu_offset=hu_offset,
        hu_slope=hu_slope,
        byte_order=byte_order,
        spacing=spacing,
        key=key,
    )
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


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        "ctdid-demo"
    ),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing demo folder.")
    ] = False,
) -> None:
    """Run the demo on the embedded example (no download, no external data)."""
    from ctdid.demo import run_demo

    run_demo(out, overwrite=overwrite, console=out_console)


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
