"""``ctdid demo`` at a tiny size: without shipped weights it describes the input and stops; with
a model installed in the weights folder it runs DID with the normal dose as reference. By default
on the embedded real slice (TotalSegmentator, with its licence and attribution beside it),
``--phantom`` on the procedural phantom. The scans use a coarse fan beam, for speed."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

import ctdid.train.pairs
from ctdid.demo import DEMO_SLICE, demo_slice_path, insert_demo_noise, load_demo_slice
from ctdid.errors import OutputExistsError
from ctdid.io import read_volume
from ctdid.models import ModelCard, loading, sha256_file
from ctdid.models.plain import PlainNet
from ctdid.results import ResultReader
from ctdid.sim import FanBeamGeometry

torch.set_num_threads(1)

SIZE = 64
ROOT = Path(__file__).resolve().parents[1]
_real_pair = ctdid.train.pairs.phantom_pair
_real_insertion = ctdid.train.pairs.insertion_pair


def _coarse_geometry() -> FanBeamGeometry:
    return FanBeamGeometry(n_views=192, n_cols=184, col_width_mm=5.1432)


def _coarse_pair(hu: Any, **kwargs: Any) -> Any:
    """The real simulation on a coarse fan beam (fewer views and wider bins), for speed."""
    kwargs.setdefault("geometry", _coarse_geometry())
    return _real_pair(hu, **kwargs)


def _coarse_insertion(hu: Any, **kwargs: Any) -> Any:
    """The real noise insertion on the same coarse fan beam."""
    kwargs.setdefault("geometry", _coarse_geometry())
    return _real_insertion(hu, **kwargs)


@pytest.fixture(autouse=True)
def coarse_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctdid.train.pairs, "phantom_pair", _coarse_pair)
    monkeypatch.setattr(ctdid.train.pairs, "insertion_pair", _coarse_insertion)


def recording_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, highlight=False, color_system=None), buf


def _no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setattr(loading, "SHIPPED_WEIGHTS_DIR", empty)
    return empty


# ---------------------------------------------------------------------------------------------
# the embedded slice


def test_embedded_slice_loads_as_float32_hu_with_spacing() -> None:
    vol = load_demo_slice()
    assert vol.hu.dtype == np.float32 and vol.shape == (1, 512, 512)
    assert vol.spacing == pytest.approx((3.0, 0.9765625, 0.9765625))
    hu = vol.hu[0]
    assert np.median(hu[10:40, 200:312]) == pytest.approx(-1000, abs=25)  # air above the body
    body = hu > -500
    assert 0.2 < body.mean() < 0.6
    assert 0 < np.median(hu[body]) < 100  # soft tissue (fat, muscle, organs)
    assert hu.min() >= -1024 and 1000 < hu.max() < 3000  # bone present, nothing absurd
    src = vol.meta["source"]
    assert src["licence"] == "Apache-2.0" and src["kernel"] == "Br38f"
    assert src["instance"] == 277 and "10.1148/ryai.230024" in src["citation"]
    assert vol.meta["insert_kernel"] == "hann" and vol.meta["insert_i0"] > 0


def test_embedded_slice_int16_storage_round_trips_exactly(tmp_path: Path) -> None:
    with np.load(demo_slice_path(), allow_pickle=False) as z:
        stored = z["hu"]
        arrays = {k: z[k] for k in z.files}
    assert stored.dtype == np.int16 and stored.shape == (512, 512)
    hu = load_demo_slice().hu[0]
    assert np.array_equal(hu.astype(np.int16), stored)
    assert np.array_equal(hu, stored.astype(np.float32))
    # the embedding script's writer: same arrays back, and the same bytes when written again
    embed = _embed_script()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    embed.write_npz(a, arrays)
    embed.write_npz(b, arrays)
    assert a.read_bytes() == b.read_bytes()
    assert np.array_equal(load_demo_slice(a).hu, load_demo_slice().hu)
    assert demo_slice_path().stat().st_size < 400_000


def test_inserted_noise_is_reproducible_quarter_dose(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the stored i0 and seed 0 the full-resolution insertion (the real scanner geometry)
    gives the noise recorded by the embedding script: twice the slice's own noise in all."""
    from ctdid.metrics import find_flat_regions, noise_label

    monkeypatch.setattr(ctdid.train.pairs, "insertion_pair", _real_insertion)
    vol = load_demo_slice()
    hu, sp = vol.hu[0], vol.spacing[1:]
    kw = dict(spacing=sp, i0=vol.meta["insert_i0"], kernel=vol.meta["insert_kernel"], seed=0)
    low = insert_demo_noise(hu, fov_mm=vol.meta["reconstruction_diameter_mm"], **kw)
    with np.load(demo_slice_path()) as z:
        recorded = float(z["inserted_noise_hu"])
        full = float(z["full_dose_noise_hu"])
    regions = find_flat_regions(hu, spacing=sp)
    assert noise_label(low - hu, spacing=sp, regions=regions) == pytest.approx(recorded, rel=1e-3)
    assert recorded == pytest.approx(math.sqrt(3) * full, rel=0.03)
    total = noise_label(low, spacing=sp, regions=regions)
    assert total == pytest.approx(2 * noise_label(hu, spacing=sp, regions=regions), rel=0.05)
    corner = (slice(0, 20), slice(0, 20))  # outside the 500 mm reconstruction circle
    assert np.array_equal(low[corner], hu[corner])


def test_licence_and_attribution_are_package_data() -> None:
    data = resources.files("ctdid").joinpath("data")
    names = {p.name for p in data.iterdir()}
    assert {DEMO_SLICE, "LICENSE-TotalSegmentator", "README.md"} <= names
    licence = data.joinpath("LICENSE-TotalSegmentator").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    readme = data.joinpath("README.md").read_text()
    for needle in ("Wasserthal", "10.1148/ryai.230024", "Apache-2.0", "instance 277",
                   "LICENSE-TotalSegmentator", "scripts/embed_demo_slice.py"):  # fmt: skip
        assert needle in readme
    package_data = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    assert '"data/*"' in package_data.split("[")[1]


@pytest.mark.shared
def test_embedded_slice_matches_its_source() -> None:
    """Regenerating from ../shared gives the same pixels (the calibration is not rerun)."""
    embed = _embed_script()
    if not (embed.DEFAULT_SOURCE / embed.FILE).is_file():
        pytest.skip(f"{embed.DEFAULT_SOURCE} is absent")
    hu, info = embed.read_slice(embed.DEFAULT_SOURCE)
    with np.load(demo_slice_path()) as z:
        assert np.array_equal(hu, z["hu"])
        assert json.loads(str(z["source"])) == info["source"]
    licence = (embed.DEFAULT_SOURCE / "LICENSE").read_bytes()
    assert resources.files("ctdid").joinpath("data", "LICENSE-TotalSegmentator").read_bytes() == (
        licence
    )


def _embed_script() -> Any:
    name = "embed_demo_slice"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------------------------------------
# the demo


def test_demo_without_weights_describes_real_slice_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctdid.demo import run_demo

    _no_weights(tmp_path, monkeypatch)
    console, buf = recording_console()
    out = tmp_path / "demo"
    result = run_demo(out, overwrite=False, console=console, size=SIZE)
    text = buf.getvalue()
    assert result is None
    assert "unet-d25" in text and "not installed" in text
    assert "demo scan" in text and "real abdomen CT" in text and "TotalSegmentator" in text
    assert "Apache-2.0" in text and "quarter dose" in text and "64 x 64 px" in text
    assert not (out / "result").exists()
    vol = read_volume(out / "input_dicom")
    ref = read_volume(out / "normal_dose_dicom")
    assert vol.shape == ref.shape == (1, SIZE, SIZE)
    assert vol.spacing == pytest.approx((3.0, 500 / SIZE, 500 / SIZE), rel=1e-3)
    assert "TotalSegmentator" in vol.meta["series_description"]
    # the normal dose is the embedded slice, averaged down to 64 x 64 px
    native = load_demo_slice().hu[0].reshape(SIZE, 8, SIZE, 8).mean(axis=(1, 3))
    assert np.abs(ref.hu[0] - native).max() < 1.0
    body = ref.hu > -300
    diff = (vol.hu - ref.hu)[body]
    assert 0.5 < diff.std() < 100 and abs(diff.mean()) < 5  # noise added, anatomy kept
    with pytest.raises(OutputExistsError):
        run_demo(out, console=console, size=SIZE)


def test_demo_phantom_without_weights_describes_input_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctdid.demo import run_demo

    _no_weights(tmp_path, monkeypatch)
    console, buf = recording_console()
    out = tmp_path / "demo"
    result = run_demo(out, overwrite=False, console=console, size=SIZE, phantom=True)
    text = buf.getvalue()
    assert result is None
    assert "unet-d25" in text and "not installed" in text
    assert "simulated scan" in text and "procedural abdomen" in text and "quarter dose" in text
    assert "64 x 64 px" in text
    vol = read_volume(out / "input_dicom")
    ref = read_volume(out / "normal_dose_dicom")
    assert vol.shape == ref.shape == (1, SIZE, SIZE)
    body = ref.hu > -300
    # a quarter-dose scan of the same phantom: same anatomy, about twice the noise
    assert np.abs(vol.hu - ref.hu)[body].mean() < 100
    assert vol.hu[body].std() > ref.hu[body].std()


def test_cli_demo_phantom_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ctdid.cli import app

    _no_weights(tmp_path, monkeypatch)
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0 and "--phantom" in res.output
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--phantom", "--size", str(SIZE), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "procedural abdomen" in res.output and "not installed" in res.output
    assert "phantom" in read_volume(out / "input_dicom").meta["series_description"]


def test_demo_with_installed_model_runs_did(tmp_path: Path) -> None:
    from ctdid.demo import run_demo

    wdir = tmp_path / "weights"
    wdir.mkdir()
    torch.manual_seed(0)
    net = PlainNet(n_layers=2, channels=4, residual=True)
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(wdir / "unet-d25.safetensors"))
    ModelCard(
        name="unet-d25",
        architecture="plain",
        architecture_config={"n_layers": 2, "channels": 4, "residual": True},
        hu_offset=-1000.0,
        hu_scale=1000.0,
        weights_sha256=sha256_file(wdir / "unet-d25.safetensors"),
    ).save(wdir / "unet-d25.card.yaml")
    console, buf = recording_console()
    summary = run_demo(
        tmp_path / "demo", console=console, size=SIZE, weights_dir=wdir, n_candidates=2
    )
    text = buf.getvalue()
    assert summary is not None
    reader = ResultReader(tmp_path / "demo" / "result")
    assert reader.status == "done"
    assert reader.doc["model"]["name"] == "unet-d25"
    assert reader.doc["model"]["weights_sha256"] == sha256_file(wdir / "unet-d25.safetensors")
    assert all("rmse_hu" in r.labels for r in reader.records.values())
    assert "TotalSegmentator" in reader.doc["input"]["demo"]["slice"]
    assert reader.doc["config"]["method"] == "did"  # the demo shows DID, not a baseline
    assert "RMSE vs" in text and "default" in text and str(reader.folder) in text
    assert (reader.folder / "montage.png").is_file()
