"""``run_did(method=...)`` / ``ctdid run --method``: baselines write the same result folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdid.baselines import blend
from ctdid.core import HUAdapter, InteractiveDenoiser
from ctdid.errors import InputError
from ctdid.results import ResultReader
from ctdid.runner import run_did
from ctdid.volume import CTVolume
from smoother_model import Smoother

torch.set_num_threads(1)


def _volume(z: int) -> CTVolume:
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    clean = np.where(np.hypot(yy - 32, xx - 32) < 28, 0.0, -1000.0).astype(np.float32)
    clean[np.hypot(yy - 24, xx - 36) < 6] = 200.0
    rng = np.random.default_rng(z)
    noisy = clean[None] + rng.normal(0, 40.0, (z, 64, 64)).astype(np.float32)
    return CTVolume(noisy.astype(np.float32), spacing=(2.0, 0.8, 0.8))


def _model() -> HUAdapter:
    return HUAdapter(Smoother(), meta={"name": "mean3"})


def test_blend_result_folder_is_exact(tmp_path: Path) -> None:
    vol = _volume(1)
    summary = run_did(vol, _model(), out_dir=tmp_path / "r", method="blend", n_candidates=4)
    reader = ResultReader(tmp_path / "r")
    assert reader.doc["config"]["method"] == "blend"
    assert reader.status == "done" and len(summary.records) == 9
    eng = InteractiveDenoiser(_model())
    x = vol.hu[0]
    y0 = eng.apply(x)
    t_low = eng.apply(eng.apply(y0))
    for rec in summary.records:
        img = np.load(tmp_path / "r" / rec.file)[0]
        assert np.allclose(img, blend(x, y0, t_low, rec.strength), atol=1e-3), rec.strength
    assert [r.strength for r in summary.records] == sorted(r.strength for r in summary.records)


@pytest.mark.parametrize("method", ["iterate", "tv"])
def test_volume_baselines_run_per_slice(tmp_path: Path, method: str) -> None:
    vol = _volume(2)
    summary = run_did(vol, _model(), out_dir=tmp_path / method, method=method, n_candidates=2)
    doc = ResultReader(tmp_path / method).doc
    assert doc["config"]["method"] == method and doc["config"]["trajectory"] == "per-slice"
    assert len(summary.records) == 5
    assert np.load(tmp_path / method / summary.records[0].file).shape == (2, 64, 64)
    # The high-resolution end of both methods is the input itself.
    assert np.allclose(np.load(tmp_path / method / summary.records[0].file), vol.hu, atol=1e-3)


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown method"):
        run_did(_volume(1), _model(), out_dir=tmp_path / "x", method="median")


def test_cli_method_option(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", _volume(1).hu[0])
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n"
        "    torch.set_num_threads(1)\n    return nn.Conv2d(1, 1, 3, padding=1)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ctdid", "run", "in.npy", "--model", "m.py:build",
         "--out", "res", "--method", "blend", "--candidates", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "blend (baseline)" in proc.stdout
    assert ResultReader(tmp_path / "res").doc["config"]["method"] == "blend"
