"""``ctdid simulate``: a tiny dataset end to end, resume, errors, and ``ctdid train`` on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ctdid.cli import app, main
from ctdid.models import ModelCard
from ctdid.train.pairs import list_pairs, load_pair

#: 64-pixel phantoms and a 64 x 64 raw slice of 6 mm pixels, 48 fan-beam views.
TINY = ["--phantom-size", "64", "--views", "48", "--workers", "1"]


def _raw_folder(tmp_path: Path) -> Path:
    raws = tmp_path / "raws"
    raws.mkdir()
    yy, xx = np.mgrid[:64, :64]
    np.where(np.hypot(yy - 32, xx - 32) < 26, 1064, 24).astype("<u2").tofile(raws / "x_sm_1.raw")
    return raws


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run ``ctdid ARGS`` in this process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), out, err


def _simulate_args(out: Path, raws: Path, *extra: str) -> list[str | Path]:
    return [
        "simulate", out, "--phantoms", "1", "--seed", "5", "--doses", "1/2,0.125",
        "--realisations", "2", "--real", raws, "--shape", "64,64", "--dtype", "uint16",
        "--hu-offset", "-1024", "--spacing", "6,6", "--real-kernel", "ramp", *TINY, *extra,
    ]  # fmt: skip


def test_simulate_resume_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raws = _raw_folder(tmp_path)
    data = tmp_path / "sim"
    code, out, _ = _cli(capsys, *_simulate_args(data, raws))
    assert code == 0
    assert "wrote 2 slices (8 low-dose images)" in out and "s per image" in out
    files = list_pairs(data)
    assert [f.name for f in files] == ["0000_abdomen.npz", "0001_x_sm_1.npz"]
    real = load_pair(files[1])
    assert real.kind == "real-insert" and real.kernel == "ramp" and real.spacing == (6.0, 6.0)
    assert real.level_doses == (0.5, 0.125) and real.levels is not None
    assert real.levels.shape == (2, 2, 64, 64)
    assert float(real.normal.max()) == 40.0  # the input HU, untouched
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["options"]["geometry"]["n_views"] == 48
    assert manifest["slices"][1]["path"].endswith("x_sm_1.raw")

    # the same command again: nothing to do; other options: refused
    code, out, _ = _cli(capsys, *_simulate_args(data, raws))
    assert code == 0 and "nothing to do: all 2 slices" in out
    code, _, err = _cli(capsys, *_simulate_args(data, raws, "--seed", "6"))
    assert code == 2 and err.startswith("ctdid: error:") and "seed (dataset 5, asked 6)" in err

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model_config: {depth: 2, base_channels: 4, max_channels: 8}\nn_val: 1\n")
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--name", "tiny", "--config", str(cfg),
            "--dose", "0.125", "--iterations", "2", "--batch", "2", "--patch", "32",
            "--val-every", "1"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    card = ModelCard.load(run / "tiny.card.yaml")
    assert card.training_dose == 0.125 and card.kernel == "hann,ramp"
    assert "ctdid simulate" in card.training_data and "x_sm_1.raw" in card.training_data
    # a dose that was not simulated: one line naming the stored ones
    code, _, err = _cli(capsys, *args[:-10], "--dose", "0.25", "--iterations", "2",
                        "--out", tmp_path / "run2")  # fmt: skip
    last = err.strip().splitlines()[-1]  # (after train's own progress bar)
    assert code == 2 and last.startswith("ctdid: error:") and "stored: 0.5, 0.125" in last


@pytest.mark.parametrize(
    ("doses", "message"),
    [
        ("a,b", "--doses must be dose fractions"),
        ("0,0.5", "(0, 1]"),
        ("1.5", "(0, 1]"),
        (",", "no dose"),
    ],
)
def test_bad_doses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doses: str, message: str
) -> None:
    out = tmp_path / "d"
    code, _, err = _cli(capsys, "simulate", out, "--phantoms", "1", "--doses", doses, *TINY)
    assert code == 2
    assert err.startswith("ctdid: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_existing_folder_is_not_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code, _, err = _cli(capsys, "simulate", mine, "--phantoms", "1", "--doses", "0.5",
                            *TINY, *extra)  # fmt: skip
        assert code == 2 and "ctdid: error:" in err and "not" in err
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    # a dataset is replaced with --overwrite only
    data = tmp_path / "data"
    base = ["simulate", data, "--phantoms", "1", "--doses", "0.5", *TINY]
    assert _cli(capsys, *base)[0] == 0
    code, _, err = _cli(capsys, *base[:-6], "--doses", "0.25", *TINY)
    assert code == 2 and "--overwrite" in err
    code, out, _ = _cli(capsys, *base[:-6], "--doses", "0.25", *TINY, "--overwrite")
    assert code == 0 and "wrote 1 slice (1 low-dose image)" in out
    assert load_pair(list_pairs(data)[0]).level_doses == (0.25,)
