"""The shipped weights load through their cards, match their sha256 and denoise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctdid.models import available_models, load_model
from ctdid.models.card import ModelCard, sha256_file
from ctdid.models.loading import SHIPPED_WEIGHTS_DIR
from ctdid.models.unet import SafeInstanceNorm2d

SHIPPED = sorted(available_models())
TOTAL_LIMIT_BYTES = 30 * 1024 * 1024


def test_unet_d25_is_shipped_and_weights_are_small() -> None:
    assert "unet-d25" in SHIPPED
    total = sum(p.stat().st_size for p in SHIPPED_WEIGHTS_DIR.glob("*.safetensors"))
    assert total <= TOTAL_LIMIT_BYTES


@pytest.mark.parametrize("name", SHIPPED)
def test_card_matches_weights(name: str) -> None:
    card = ModelCard.load(SHIPPED_WEIGHTS_DIR / f"{name}.card.yaml")
    assert card.name == name
    assert card.weights_sha256 == sha256_file(SHIPPED_WEIGHTS_DIR / f"{name}.safetensors")
    assert card.training_dose is not None and 0 < card.training_dose < 1
    assert card.hu_scale > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_lowers_noise_and_keeps_hu(name: str) -> None:
    torch.set_num_threads(1)
    model = load_model(name)
    yy, xx = np.mgrid[:96, :96]
    clean = np.where(np.hypot(yy - 48, xx - 48) < 40, 40.0, -1000.0).astype(np.float32)
    noisy = clean + np.random.default_rng(0).normal(0, 60, clean.shape).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(noisy)[None, None])[0, 0].numpy()
    flat = np.hypot(yy - 48, xx - 48) < 25
    assert out[flat].std() < 0.7 * noisy[flat].std()
    assert abs(float(out[flat].mean()) - 40.0) < 15.0  # no HU shift from the normalisation


UNETS = [n for n in SHIPPED if n.startswith("unet-")]


@pytest.mark.parametrize("name", UNETS)
def test_shipped_unets_have_no_instance_norm(name: str) -> None:
    # Instance norm made the output depend on the field of view (soft tissue shifted by up to
    # +35 HU on whole slices, benchmarks/hu_shift.py); the shipped U-Nets are norm-free.
    card = ModelCard.load(SHIPPED_WEIGHTS_DIR / f"{name}.card.yaml")
    assert card.architecture_config.get("norm") is False
    model = load_model(name)
    norms = (torch.nn.modules.instancenorm._InstanceNorm, SafeInstanceNorm2d)
    assert not any(isinstance(m, norms) for m in model.modules())


@pytest.mark.parametrize("name", UNETS)
def test_shipped_unet_output_does_not_depend_on_the_field_of_view(name: str) -> None:
    """A body-sized phantom in air and a crop of it: same HU inside the crop, truth kept."""
    torch.set_num_threads(1)
    model = load_model(name)
    yy, xx = np.mgrid[:256, :256]
    body = ((yy - 128) / 110.0) ** 2 + ((xx - 128) / 90.0) ** 2 < 1
    clean = np.where(body, 50.0, -1000.0).astype(np.float32)
    noisy = clean + np.random.default_rng(1).normal(0, 40, clean.shape).astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(noisy)[None, None])[0, 0].numpy()
        crop = model(torch.from_numpy(np.ascontiguousarray(noisy[64:192, 64:192]))[None, None])
    crop = crop[0, 0].numpy()
    centre = (slice(96, 160), slice(96, 160))  # the crop's inner half
    inner = (slice(32, 96), slice(32, 96))
    assert abs(float(whole[centre].mean()) - 50.0) < 3.0  # whole field of view: HU kept
    assert abs(float(crop[inner].mean()) - float(whole[centre].mean())) < 1.0


#: A training source named in a card's training_data, and the words its notes must carry
#: (the source and its licence or terms of use).
SOURCE_TERMS = {
    "L067_FD": ("AAPM/Mayo", "L067"),
    "abdomen_ct_totalseg": ("TotalSegmentator", "Apache-2.0"),
    "cranium.mhd": ("invesalius-examples", "GPL-2"),
    "phantom-": ("phantoms",),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_card_names_every_training_source_and_its_licence(name: str) -> None:
    card = ModelCard.load(SHIPPED_WEIGHTS_DIR / f"{name}.card.yaml")
    data, notes = card.training_data or "", card.notes or ""
    found = [src for src in SOURCE_TERMS if src in data]
    assert found, f"{name}: no known training source in {data[:80]!r}"
    for src in found:
        for term in SOURCE_TERMS[src]:
            assert term in notes, f"{name}: trained on {src} but its notes do not say {term}"


def test_wide_unet_is_shipped_beside_the_compact_default() -> None:
    card = ModelCard.load(SHIPPED_WEIGHTS_DIR / "unet-wide-d25.card.yaml")
    assert card.architecture_config["base_channels"] == 16
    model = load_model("unet-wide-d25")
    compact = load_model("unet-d25")
    wide_n = sum(p.numel() for p in model.parameters())
    assert 1e6 < wide_n < 3e6  # 1-3 M parameters (issue 15)
    assert wide_n > 5 * sum(p.numel() for p in compact.parameters())


@pytest.mark.parametrize("name", SHIPPED)
def test_weights_are_stored_as_their_config_says_and_compute_in_float32(name: str) -> None:
    from safetensors.torch import load_file

    card = ModelCard.load(SHIPPED_WEIGHTS_DIR / f"{name}.card.yaml")
    stored = load_file(str(SHIPPED_WEIGHTS_DIR / f"{name}.safetensors"))
    want = (card.training_config or {}).get("weights_dtype", "float32")
    assert {str(v.dtype) for v in stored.values() if v.is_floating_point()} == {f"torch.{want}"}
    assert {p.dtype for p in load_model(name).parameters()} == {torch.float32}


def test_the_wide_dose_family_is_shipped() -> None:
    doses = {}
    for name in ("unet-wide-d50", "unet-wide-d25", "unet-wide-d12", "unet-wide-d06"):
        card = ModelCard.load(SHIPPED_WEIGHTS_DIR / f"{name}.card.yaml")
        assert (
            card.architecture_config
            == ModelCard.load(SHIPPED_WEIGHTS_DIR / "unet-wide-d25.card.yaml").architecture_config
        )
        doses[name] = card.training_dose
    assert list(doses.values()) == [0.5, 0.25, 0.125, 0.0625]
