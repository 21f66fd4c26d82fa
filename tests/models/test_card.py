"""Tests of ctdid.models.card.ModelCard: round trips and validation messages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctdid.errors import InputError, OutputExistsError
from ctdid.models.card import ModelCard, sha256_file


def full_card(**changes: Any) -> ModelCard:
    fields: dict[str, Any] = {
        "name": "compact-ld25",
        "architecture": "compact-unet",
        "architecture_config": {"depth": 4, "base_channels": 8},
        "hu_offset": -1000.0,
        "hu_scale": 1000.0,
        "residual": False,
        "size_multiple": 16,
        "training_dose": 0.25,
        "kernel": "ramp",
        "training_data": "simulated phantoms",
        "licence": "CC0-1.0",
        "weights_sha256": "ab" * 32,
        "metrics": {"rmse_hu": 12.5},
        "training_config": {"lr": 1e-3, "epochs": 3},
        "notes": "test card",
    }
    fields.update(changes)
    return ModelCard(**fields)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    card = full_card()
    path = card.save(tmp_path / f"m.card{suffix}")
    assert path.is_file()
    assert ModelCard.load(path) == card
    text = path.read_text()
    data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert data["hu_scale"] == 1000.0 and data["metrics"] == {"rmse_hu": 12.5}


def test_minimal_card_gets_defaults(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("name: m\narchitecture: plain\nhu_offset: -1024\nhu_scale: 4096\n")
    card = ModelCard.load(path)
    assert (card.hu_offset, card.hu_scale, card.residual, card.size_multiple) == (
        -1024,
        4096,
        False,
        1,
    )
    assert card.weights_sha256 is None and card.architecture_config == {}


def test_save_does_not_overwrite(tmp_path: Path) -> None:
    card = full_card()
    card.save(tmp_path / "m.yaml")
    with pytest.raises(OutputExistsError):
        card.save(tmp_path / "m.yaml")
    card.save(tmp_path / "m.yaml", overwrite=True)
    with pytest.raises(InputError, match="must end in"):
        card.save(tmp_path / "m.txt")


def write_card(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "bad.card.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hu_scale": 0}, "'hu_scale'"),
        ({"hu_scale": -5.0}, "'hu_scale'"),
        ({"hu_scale": "1000"}, "'hu_scale'"),
        ({"hu_offset": True}, "'hu_offset'"),
        ({"residual": "yes"}, "'residual'"),
        ({"size_multiple": 0}, "'size_multiple'"),
        ({"size_multiple": 2.5}, "'size_multiple'"),
        ({"training_dose": 1.5}, "'training_dose'"),
        ({"weights_sha256": "xyz"}, "'weights_sha256'"),
        ({"metrics": [1, 2]}, "'metrics'"),
        ({"name": ""}, "'name'"),
        ({"kernel": 3}, "'kernel'"),
    ],
)
def test_bad_field_is_named_with_the_file(
    tmp_path: Path, change: dict[str, Any], match: str
) -> None:
    data = full_card().to_dict()
    data.update(change)
    path = write_card(tmp_path, data)
    with pytest.raises(InputError, match=match) as info:
        ModelCard.load(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_missing_and_unknown_fields(tmp_path: Path) -> None:
    data = full_card().to_dict()
    del data["hu_scale"]
    with pytest.raises(InputError, match=r"lacks required field.*hu_scale"):
        ModelCard.load(write_card(tmp_path, data))
    data = full_card().to_dict()
    data["hu_scal"] = 1.0
    with pytest.raises(InputError, match=r"unknown field.*hu_scal"):
        ModelCard.load(write_card(tmp_path, data))
    with pytest.raises(InputError, match="mapping"):
        ModelCard.load(write_card(tmp_path, [1, 2]))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        ModelCard.load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        ModelCard.load(bad)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        ModelCard.load(bad)


def test_weights_checksum(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"some weights")
    digest = hashlib.sha256(b"some weights").hexdigest()
    assert sha256_file(weights) == digest
    full_card(weights_sha256=digest).verify_weights(weights)
    full_card(weights_sha256=None).verify_weights(weights)  # nothing to check
    with pytest.raises(InputError, match="SHA-256") as info:
        full_card().verify_weights(weights)
    assert info.value.path == str(weights)
