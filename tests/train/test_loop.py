"""The training loop: outputs, card, schedule, validation, checkpoints and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pairs_factory import write_pairs
from safetensors.torch import load_file
from torch import nn

from ctdid.core.adapter import HUAdapter
from ctdid.errors import InputError, OutputExistsError
from ctdid.models import ModelCard, load_model, sha256_file
from ctdid.train.config import TrainConfig
from ctdid.train.loop import TrainProgress, evaluate, train

TINY = {"depth": 2, "base_channels": 4, "max_channels": 8}


def _config(dataset: Path, **changes: object) -> TrainConfig:
    base: dict[str, object] = {
        "name": "tiny",
        "dataset": str(dataset),
        "model_config": TINY,
        "iterations": 6,
        "batch_size": 2,
        "patch": 32,
        "lr": 1e-3,
        "checkpoint_every": 2,
        "val_every": 3,
        "log_every": 1,
        "n_val": 1,
        "seed": 3,
    }
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write_pairs(tmp_path / "pairs", n=3, size=64)
    return tmp_path / "pairs"


def test_train_writes_weights_card_curve_config_and_log(tmp_path: Path, dataset: Path) -> None:
    events: list[TrainProgress] = []
    cfg = _config(dataset)
    res = train(cfg, out_dir=tmp_path / "run", progress=events.append)
    assert [e.iteration for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].val_rmse_hu is not None and events[0].val_rmse_hu is None
    assert res.iterations_run == 6 and res.seconds_per_iteration is not None
    for p in (res.weights, res.card, res.curve, res.config, res.log, res.checkpoint):
        assert p.is_file(), p
    assert res.curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert TrainConfig.load(res.config) == cfg
    card = ModelCard.load(res.card)
    assert card.architecture == "compact-unet" and card.architecture_config == TINY
    assert (card.hu_offset, card.hu_scale, card.residual) == (-1000.0, 1000.0, False)
    assert card.size_multiple == 4 and card.training_dose == 0.25 and card.kernel == "hann"
    assert card.weights_sha256 == sha256_file(res.weights)
    assert card.metrics["val_slices"] == 1
    assert card.metrics["val_input_rmse_hu"] > 0 and card.metrics["val_rmse_hu"] > 0
    assert "2 training slice(s)" in card.training_data
    assert card.training_config["iterations"] == 6
    assert card.training_config["dataset"] == "pairs"  # no local paths in a shipped card
    log = [json.loads(line) for line in res.log.read_text().splitlines()]
    assert [e["iteration"] for e in log if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert [e["iteration"] for e in log if "val_rmse_hu" in e] == [3, 6]
    # the shipped files load through the plug-in contract and give the trained network
    adapter = load_model("compact-unet", weights=res.weights, card=res.card)
    assert isinstance(adapter, HUAdapter)
    trained = load_file(str(res.weights))
    for k, v in adapter.net.state_dict().items():
        assert torch.equal(v, trained[k])


def test_float16_storage_halves_the_file_and_loads_as_float32(
    tmp_path: Path, dataset: Path
) -> None:
    cfg = _config(dataset, iterations=2, val_every=100)
    full = train(cfg, out_dir=tmp_path / "f32")
    half = train(cfg.replace(weights_dtype="float16"), out_dir=tmp_path / "f16")
    a, b = load_file(str(full.weights)), load_file(str(half.weights))
    assert {v.dtype for v in a.values()} == {torch.float32}
    assert {v.dtype for v in b.values()} == {torch.float16}
    assert half.weights.stat().st_size < 0.6 * full.weights.stat().st_size
    for k in a:  # the same training, rounded once when written
        assert torch.equal(a[k].half(), b[k]), k
    adapter = load_model("compact-unet", weights=half.weights, card=half.card)
    assert {p.dtype for p in adapter.net.parameters()} == {torch.float32}
    for k, v in adapter.net.state_dict().items():
        assert torch.equal(v, b[k].float()), k
    assert TrainConfig.load(half.config).weights_dtype == "float16"
    with pytest.raises(InputError, match="weights_dtype"):
        cfg.replace(weights_dtype="bfloat16")


def test_learning_rate_drops_at_half_and_three_quarters(tmp_path: Path, dataset: Path) -> None:
    res = train(_config(dataset, iterations=8, val_every=100), out_dir=tmp_path / "run")
    log = [json.loads(line) for line in res.log.read_text().splitlines()]
    lrs = [e["lr"] for e in log if "lr" in e]
    assert lrs == pytest.approx([1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2)


def test_resume_gives_identical_weights(tmp_path: Path, dataset: Path) -> None:
    cfg = _config(dataset)
    whole = train(cfg, out_dir=tmp_path / "whole")
    first = train(cfg, out_dir=tmp_path / "split", stop_after=3)
    assert first.iterations_run == 3 and not first.weights.exists()
    assert first.checkpoint.is_file()
    events: list[TrainProgress] = []
    second = train(cfg, out_dir=tmp_path / "split", progress=events.append)
    assert second.iterations_run == 3
    assert [e.iteration for e in events] == [4, 5, 6]  # finished iterations are not redone
    a, b = load_file(str(whole.weights)), load_file(str(second.weights))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different seed gives different weights (the comparison above can fail)
    other = train(cfg.replace(seed=4), out_dir=tmp_path / "other")
    c = load_file(str(other.weights))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_existing_outputs_and_checkpoints_are_protected(tmp_path: Path, dataset: Path) -> None:
    cfg = _config(dataset, iterations=2)
    train(cfg, out_dir=tmp_path / "run")
    with pytest.raises(OutputExistsError):
        train(cfg, out_dir=tmp_path / "run")
    train(cfg, out_dir=tmp_path / "part", stop_after=1)
    with pytest.raises(InputError, match="another config"):
        train(cfg.replace(lr=1e-2), out_dir=tmp_path / "part")
    with pytest.raises(OutputExistsError, match="checkpoint"):
        train(cfg, out_dir=tmp_path / "part", resume=False)
    res = train(cfg.replace(lr=1e-2), out_dir=tmp_path / "part", resume=False, overwrite=True)
    assert res.iterations_run == 2


def test_test_pair_is_evaluated_at_the_training_dose(tmp_path: Path, dataset: Path) -> None:
    rng = np.random.default_rng(0)
    normal = np.zeros((48, 48), np.float32)
    low = normal + rng.normal(0, 30, normal.shape).astype(np.float32)
    np.save(tmp_path / "fd.npy", normal)
    np.save(tmp_path / "qd.npy", low)
    cfg = _config(
        dataset,
        iterations=1,
        dose=0.125,
        test_low=str(tmp_path / "qd.npy"),
        test_normal=str(tmp_path / "fd.npy"),
    )
    res = train(cfg, out_dir=tmp_path / "run")
    expected = 30 * np.sqrt((8 - 1) / (4 - 1))  # quarter-dose noise rescaled to 1/8 dose
    assert res.metrics["test_input_rmse_hu"] == pytest.approx(expected, rel=0.05)
    assert res.metrics["test_rmse_hu"] > 0


def test_held_out_dataset_is_refused(tmp_path: Path) -> None:
    write_pairs(tmp_path / "L506_pairs", n=2, size=32)
    with pytest.raises(InputError, match="held-out"):
        train(_config(tmp_path / "L506_pairs"), out_dir=tmp_path / "run")


def test_evaluate_of_identity_is_the_input_rmse() -> None:
    normal = np.zeros((16, 16), np.float32)
    low = normal + 10.0
    out, inp = evaluate(HUAdapter(nn.Identity()), [(low, normal)])
    assert inp == pytest.approx(10.0)
    assert out == pytest.approx(10.0, abs=1e-3)


def test_extra_datasets_are_trained_on_with_their_share_in_the_card(tmp_path: Path) -> None:
    write_pairs(tmp_path / "main", n=3, size=64)
    write_pairs(tmp_path / "more", n=2, size=64, sigma=30.0)
    cfg = _config(
        tmp_path / "main",
        extra_datasets=[str(tmp_path / "more")],
        dataset_weights=[3, 1],
        iterations=2,
    )
    res = train(cfg, out_dir=tmp_path / "run")
    card = ModelCard.load(res.card)
    assert "75 % of the patches: 2 training slice(s) from pairs folder 'main'" in (
        card.training_data
    )
    assert "25 % of the patches: 2 training slice(s) from pairs folder 'more'" in (
        card.training_data
    )
    assert card.metrics["val_slices"] == 1  # validation only from the main dataset
    assert card.training_config["extra_datasets"] == ["more"]  # no local paths
    assert TrainConfig.load(res.config) == cfg
    # another share is another run: a checkpoint of it is not resumed
    assert cfg.differences(cfg.replace(dataset_weights=[1, 1])) == ["dataset_weights"]


def test_extra_dataset_weights_must_match_the_folders(tmp_path: Path) -> None:
    write_pairs(tmp_path / "main", n=2, size=32)
    with pytest.raises(InputError, match="dataset_weights"):
        _config(tmp_path / "main", extra_datasets=["x"], dataset_weights=[1.0])
    with pytest.raises(InputError, match="extra_datasets"):
        _config(tmp_path / "main", extra_datasets="x")
    write_pairs(tmp_path / "L506_more", n=2, size=32)
    cfg = _config(tmp_path / "main", extra_datasets=[str(tmp_path / "L506_more")], n_val=1)
    with pytest.raises(InputError, match="held-out"):
        train(cfg, out_dir=tmp_path / "run")
