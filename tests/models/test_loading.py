"""Tests of ctdid.models.loading.load_model: every way of naming a denoiser."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ctdid.core.adapter import HUAdapter
from ctdid.errors import CTDIDWarning, InputError
from ctdid.models import (
    MODEL_FACTORIES,
    CompactUNet,
    ModelCard,
    PaperUNet,
    PlainNet,
    available_models,
    build_model,
    load_model,
    load_state_dict_file,
    sha256_file,
)

PLUGIN_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.a = nn.Conv2d(1, width, 3, padding=1)
            self.b = nn.Conv2d(width, 1, 1)

        def forward(self, x):
            return x - self.b(torch.relu(self.a(x)))


    def build(width=4):
        return Tiny(width=width)


    def not_a_module():
        return 42


    def no_parameters():
        return nn.Identity()
    """
)


def trained_tiny(width: int = 4) -> nn.Module:
    """A plug-in-compatible network with non-default (recognisable) weights."""
    namespace: dict[str, object] = {}
    exec(PLUGIN_SOURCE, namespace)
    torch.manual_seed(3)
    net = namespace["build"](width=width)  # type: ignore[operator]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    return net


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN_SOURCE)
    return path


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"ctdid_test_plugin_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return f"{name}.nets"


def make_card(tmp_path: Path, weights: Path | None = None, **changes: object) -> Path:
    fields: dict[str, object] = {
        "name": "tiny",
        "architecture": "compact-unet",
        "hu_offset": -1024.0,
        "hu_scale": 4096.0,
        "residual": False,
        "size_multiple": 8,
        "architecture_config": {"width": 6},
        "weights_sha256": None if weights is None else sha256_file(weights),
    }
    fields.update(changes)
    return ModelCard(**fields).save(tmp_path / "tiny.card.yaml", overwrite=True)  # type: ignore[arg-type]


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])


def test_file_factory_with_safetensors_and_card(tmp_path: Path, plugin_file: Path) -> None:
    trained = trained_tiny(width=6)
    weights = tmp_path / "tiny.safetensors"
    save_file(trained.state_dict(), str(weights))
    card = make_card(tmp_path, weights)
    adapter = load_model(f"{plugin_file}:build", weights=weights, card=card)
    assert isinstance(adapter, HUAdapter)
    assert_same_weights(adapter.net, trained)
    assert (adapter.hu_offset, adapter.hu_scale, adapter.size_multiple) == (-1024.0, 4096.0, 8)
    assert adapter.meta["name"] == "tiny"
    hu = torch.linspace(-1000, 1000, 30 * 20).reshape(1, 1, 30, 20)
    expected = trained(adapter.to_net(hu)) * 4096.0 - 1024.0
    # Away from the bottom/right edge, which sees the padding, the result is the network's.
    torch.testing.assert_close(
        adapter(hu)[..., :-1, :-1], expected[..., :-1, :-1], atol=1e-2, rtol=1e-5
    )
    assert not adapter.training


@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_package_factory_with_pt_weights(
    tmp_path: Path, plugin_module: str, nest: str | None
) -> None:
    trained = trained_tiny()
    state = trained.state_dict()
    weights = tmp_path / "tiny.pt"
    torch.save(state if nest is None else {nest: state, "epoch": 3}, weights)
    with pytest.warns(CTDIDWarning, match="no model card"):
        adapter = load_model(f"{plugin_module}:build", weights=weights)
    assert_same_weights(adapter.net, trained)
    assert (adapter.hu_offset, adapter.hu_scale, adapter.residual) == (-1000.0, 1000.0, False)


def test_prefixed_state_dict_is_accepted(tmp_path: Path, plugin_file: Path) -> None:
    trained = trained_tiny()
    weights = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, weights)
    adapter = load_model(f"{plugin_file}:build", weights=weights, hu_offset=0, hu_scale=1)
    assert_same_weights(adapter.net, trained)


def test_module_object_with_keyword_units() -> None:
    net = CompactUNet(depth=2, base_channels=4)
    adapter = load_model(net, hu_offset=-1024, hu_scale=4096, residual=True, size_multiple=3)
    assert adapter.net is net
    assert (adapter.hu_offset, adapter.hu_scale, adapter.residual) == (-1024.0, 4096.0, True)
    # Least common multiple of the requested 3 and the network's 4.
    assert adapter.size_multiple == 12
    assert load_model(adapter).net is net  # an adapter is unwrapped, its units kept
    assert load_model(adapter).hu_scale == 4096.0
    with pytest.warns(CTDIDWarning):
        assert load_model(PlainNet(channels=2)).size_multiple == 1


def test_shipped_name_from_a_weights_folder(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(InputError, match="none installed"):
        load_model("tiny", weights_dir=folder)
    net = CompactUNet(depth=2, base_channels=4)
    save_file(net.state_dict(), str(folder / "tiny.safetensors"))
    ModelCard(
        name="tiny",
        architecture="compact-unet",
        architecture_config={"depth": 2, "base_channels": 4},
        hu_offset=-1000.0,
        hu_scale=1000.0,
        weights_sha256=sha256_file(folder / "tiny.safetensors"),
    ).save(folder / "tiny.card.yaml")
    (folder / "orphan.safetensors").write_bytes(b"")  # no card: not listed
    assert available_models(weights_dir=folder) == ["tiny"]
    adapter = load_model("tiny", weights_dir=folder)
    assert_same_weights(adapter.net, net)
    assert adapter.size_multiple == 4
    out = adapter(torch.zeros(1, 1, 10, 10))
    assert out.shape == (1, 1, 10, 10)
    with pytest.raises(InputError, match=r"unknown model 'nope'.*shipped models: tiny"):
        load_model("nope", weights_dir=folder)


def test_default_weights_folder_lookup_names_what_is_available() -> None:
    with pytest.raises(InputError, match="shipped models:"):
        load_model("no-such-model-xyz")


def test_card_file_as_spec_and_registry_name(tmp_path: Path) -> None:
    net = PlainNet(n_layers=2, channels=2)
    weights = tmp_path / "plain2.safetensors"
    save_file(net.state_dict(), str(weights))
    card = ModelCard(
        name="plain2",
        architecture="plain",
        architecture_config={"n_layers": 2, "channels": 2},
        hu_offset=0.0,
        hu_scale=1.0,
        weights_sha256=sha256_file(weights),
    ).save(tmp_path / "plain2.card.yaml")
    adapter = load_model(card)  # weights found beside the card
    assert_same_weights(adapter.net, net)
    assert adapter.meta["architecture"] == "plain"
    # A registry name with explicit weights and card.
    adapter = load_model("plain", weights=weights, card=card)
    assert_same_weights(adapter.net, net)
    # A weights file as spec, its card naming the architecture.
    assert_same_weights(load_model(weights, card=card).net, net)
    with pytest.raises(InputError, match="not a trained model"):
        load_model("plain")


def test_sha_mismatch_is_refused(tmp_path: Path, plugin_file: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_file(trained_tiny(width=6).state_dict(), str(weights))
    card = make_card(tmp_path, weights=None, weights_sha256="0" * 64)
    with pytest.raises(InputError, match="SHA-256") as info:
        load_model(f"{plugin_file}:build", weights=weights, card=card)
    assert info.value.path == str(weights)


def test_state_dict_mismatch_lists_keys(tmp_path: Path, plugin_file: Path) -> None:
    state = trained_tiny().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["b.bias"]
    weights = tmp_path / "bad.safetensors"
    save_file(state, str(weights))
    with pytest.raises(InputError, match=r"missing keys: b\.bias.*unexpected keys: extra") as info:
        load_model(f"{plugin_file}:build", weights=weights, hu_offset=0, hu_scale=1)
    assert info.value.path == str(weights)
    # Right keys, wrong sizes (the card's architecture options differ).
    weights2 = tmp_path / "wide.safetensors"
    save_file(trained_tiny(width=6).state_dict(), str(weights2))
    with pytest.raises(InputError, match=r"shape mismatches.*a\.weight"):
        load_model(f"{plugin_file}:build", weights=weights2, hu_offset=0, hu_scale=1)


def test_bad_factories(plugin_file: Path, plugin_module: str) -> None:
    with pytest.raises(InputError, match=r"has no factory 'missing'.*build"):
        load_model(f"{plugin_file}:missing")
    with pytest.raises(InputError, match="has no factory"):
        load_model(f"{plugin_module}:missing")
    with pytest.raises(InputError, match=r"int, not an nn\.Module"):
        load_model(f"{plugin_file}:not_a_module")
    with pytest.raises(InputError, match="without trainable parameters"):
        load_model(f"{plugin_file}:no_parameters")
    with pytest.raises(InputError, match="no Python module named"):
        load_model("ctdid_no_such_module_xyz.nets:build")
    with pytest.raises(InputError, match="not found"):
        load_model(f"{plugin_file.with_name('absent.py')}:build")


def test_broken_plugin_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("def build(:\n")
    with pytest.raises(InputError, match="importing failed: SyntaxError") as info:
        load_model(f"{bad}:build")
    assert info.value.path == str(bad)


@pytest.mark.parametrize("spec", ["a b:c", "mod:", ":build", "mod:1bad", "x/y", "m.py"])
def test_bad_spec_syntax(spec: str) -> None:
    with pytest.raises(InputError):
        load_model(spec)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_and_torchscript_are_refused(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(InputError, match=r"ONNX.*trainable PyTorch nn\.Module"):
        load_model(onnx)
    scripted = torch.jit.script(nn.Conv2d(1, 1, 1))
    archive = tmp_path / "model.pt"
    torch.jit.save(scripted, str(archive))
    with pytest.raises(InputError, match=r"TorchScript.*trainable"):
        load_model(archive)
    with pytest.raises(InputError, match="TorchScript"):
        load_model("plain", weights=archive)
    with pytest.raises(InputError, match="TorchScript"):
        load_model(scripted)


def test_pickled_objects_are_not_loaded(tmp_path: Path) -> None:
    weights = tmp_path / "pickle.pt"
    torch.save({"net": PlainNet(n_layers=2, channels=2)}, weights)
    with pytest.raises(InputError, match="weights_only"):
        load_state_dict_file(weights)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(InputError, match="non-tensor"):
        load_state_dict_file(empty)
    with pytest.raises(InputError, match="not found"):
        load_state_dict_file(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="safetensors"):
        load_state_dict_file(junk)


def test_registry_builds_each_architecture() -> None:
    assert set(MODEL_FACTORIES) == {"paper-unet", "plain", "compact-unet"}
    assert isinstance(build_model("paper-unet", {"depth": 2, "base_channels": 4}), PaperUNet)
    assert isinstance(build_model("compact-unet", {"depth": 2}), CompactUNet)
    assert isinstance(build_model("plain", {"channels": 2}), PlainNet)
    with pytest.raises(InputError, match="bad options for architecture 'plain'"):
        build_model("plain", {"depth": 3})
    with pytest.raises(InputError, match="unknown architecture"):
        build_model("resnet")
