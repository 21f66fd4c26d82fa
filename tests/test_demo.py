"""``ctdid demo`` at a tiny size: without shipped weights it describes the input and stops; with
a model installed in the weights folder it runs DID with the normal dose as reference."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

import ctdid.train.pairs
from ctdid.errors import OutputExistsError
from ctdid.io import read_volume
from ctdid.models import ModelCard, loading, sha256_file
from ctdid.models.plain import PlainNet
from ctdid.results import ResultReader
from ctdid.sim import FanBeamGeometry

torch.set_num_threads(1)

SIZE = 64
_real_pair = ctdid.train.pairs.phantom_pair


def _coarse_pair(hu: Any, **kwargs: Any) -> Any:
    """The real simulation on a coarse fan beam (fewer views and wider bins), for speed."""
    kwargs.setdefault("geometry", FanBeamGeometry(n_views=192, n_cols=184, col_width_mm=5.1432))
    return _real_pair(hu, **kwargs)


@pytest.fixture(autouse=True)
def coarse_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctdid.train.pairs, "phantom_pair", _coarse_pair)


def recording_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, highlight=False, color_system=None), buf


def test_demo_without_weights_describes_input_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctdid.demo import run_demo

    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setattr(loading, "SHIPPED_WEIGHTS_DIR", empty)
    console, buf = recording_console()
    out = tmp_path / "demo"
    result = run_demo(out, overwrite=False, console=console, size=SIZE)
    text = buf.getvalue()
    assert result is None
    assert "unet-d25" in text and "not installed" in text
    assert "simulated scan" in text and "quarter dose" in text
    assert "64 x 64 px" in text
    assert not (out / "result").exists()
    vol = read_volume(out / "input_dicom")
    ref = read_volume(out / "normal_dose_dicom")
    assert vol.shape == ref.shape == (1, SIZE, SIZE)
    body = ref.hu > -300
    # a quarter-dose scan of the same phantom: same anatomy, about twice the noise
    assert np.abs(vol.hu - ref.hu)[body].mean() < 100
    assert vol.hu[body].std() > ref.hu[body].std()
    with pytest.raises(OutputExistsError):
        run_demo(out, console=console, size=SIZE)


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
    assert "RMSE vs" in text and "default" in text and str(reader.folder) in text
    assert (reader.folder / "montage.png").is_file()
