"""TrainConfig: defaults, validation, JSON/YAML round trips, resume comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctdid.errors import InputError, OutputExistsError
from ctdid.train.config import TrainConfig


def test_defaults_follow_the_paper() -> None:
    cfg = TrainConfig(name="m", dataset="pairs")
    assert cfg.architecture == "compact-unet"
    assert (cfg.hu_offset, cfg.hu_scale) == (-1000.0, 1000.0)
    assert cfg.lr == 1e-4 and cfg.lr_milestones == [0.5, 0.75] and cfg.lr_gamma == 0.1


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = TrainConfig(
        name="m",
        dataset="pairs",
        model_config={"depth": 2},
        dose=0.125,
        val_files=["a.npz"],
        test_low="qd.raw",
        test_normal="fd.raw",
        test_read={"shape": [512, 512], "dtype": "uint16", "hu_offset": -1024},
    )
    path = cfg.save(tmp_path / f"c{suffix}")
    assert TrainConfig.load(path) == cfg
    with pytest.raises(OutputExistsError):
        cfg.save(path)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dose": 0.0}, "dose"),
        ({"dose": 1.5}, "dose"),
        ({"hu_scale": 0}, "hu_scale"),
        ({"iterations": 0}, "iterations"),
        ({"batch_size": True}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"lr_milestones": [1.5]}, "lr_milestones"),
        ({"name": "a/b"}, "name"),
        ({"test_low": "x"}, "test_low/test_normal"),
        ({"threads": 0}, "threads"),
    ],
)
def test_invalid_values(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InputError, match=field):
        TrainConfig(**{"name": "m", "dataset": "pairs", **changes})  # type: ignore[arg-type]


def test_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: m\ndataset: d\nitertions: 5\n")
    with pytest.raises(InputError, match=r"unknown field.*itertions"):
        TrainConfig.load(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        TrainConfig.load(p)
    p.write_text("dataset: d\n")
    with pytest.raises(InputError, match="lacks"):
        TrainConfig.load(p)
    with pytest.raises(InputError, match="must end in"):
        TrainConfig.load(tmp_path / "c.txt")
    with pytest.raises(InputError, match="not found"):
        TrainConfig.load(tmp_path / "missing.json")


def test_differences_ignore_intervals() -> None:
    a = TrainConfig(name="m", dataset="d")
    assert a.differences(a.replace(val_every=3, checkpoint_every=7, log_every=2)) == []
    assert a.differences(a.replace(lr=1e-3, seed=4)) == ["lr", "seed"]
