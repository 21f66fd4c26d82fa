"""``ctdid simulate-pairs`` and ``ctdid train`` end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ctdid.cli import app
from ctdid.errors import OutputExistsError
from ctdid.models import ModelCard
from ctdid.train.pairs import list_pairs, load_pair


def test_simulate_pairs_then_train(tmp_path: Path) -> None:
    runner = CliRunner()
    raws = tmp_path / "raws"
    raws.mkdir()
    yy, xx = np.mgrid[:64, :64]
    slice_ = np.where(np.hypot(yy - 32, xx - 32) < 26, 1064, 24).astype("<u2")
    slice_.tofile(raws / "x_sm_1.raw")
    pairs = tmp_path / "pairs"
    res = runner.invoke(
        app,
        [
            "simulate-pairs", str(pairs), "--phantoms", "2", "--seed", "5",
            "--phantom-size", "64", "--views", "48",
            "--real", str(raws), "--shape", "64,64", "--dtype", "uint16",
            "--hu-offset", "-1024", "--spacing", "6,6",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wrote 3 pairs" in res.output
    files = list_pairs(pairs)
    assert len(files) == 3
    real = load_pair(files[2])
    assert real.kind == "real-insert" and real.kernel == "hann"
    assert real.spacing == (6.0, 6.0)
    assert float(real.normal.max()) == 40.0
    info = json.loads((pairs / "dataset.json").read_text())
    assert info["seed"] == 5 and info["real_sources"][0]["name"] == "x_sm_1.raw"

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model_config: {depth: 2, base_channels: 4, max_channels: 8}\nn_val: 1\n")
    run = tmp_path / "run"
    args = ["train", str(pairs), "--out", str(run), "--name", "tiny", "--config", str(cfg),
            "--dose", "0.125", "--iterations", "2", "--batch", "2", "--patch", "32",
            "--val-every", "1"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    card = ModelCard.load(run / "tiny.card.yaml")
    assert card.training_dose == 0.125
    assert card.architecture_config == {"depth": 2, "base_channels": 4, "max_channels": 8}
    assert "x_sm_1.raw" in card.training_data
    # a second run refuses to overwrite the finished model
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert isinstance(res.exception, OutputExistsError)


def test_train_needs_a_name(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "--name" in str(res.exception)
