"""Load a denoiser from a shipped name, a plug-in factory, or a module, as an HU-to-HU adapter.

The plug-in contract: DID fine-tunes the network's parameters, so a denoiser must be a
trainable PyTorch ``nn.Module`` mapping (B, 1, H, W) images to (B, 1, H, W) images in its own
units. ctdid builds it from a factory (a registered name, ``package.module:factory`` or
``path/to/file.py:factory``, called with the card's ``architecture_config`` as keyword
arguments), loads a state dict into it (``.safetensors`` or ``.pt``/``.pth``), and wraps it in
a :class:`ctdid.core.adapter.HUAdapter` with the units its model card gives.

Examples
--------
>>> adapter = load_model("compact-ld25")                                 # doctest: +SKIP
>>> adapter = load_model("my_pkg.nets:build", weights="w.safetensors",
...                      card="w.card.yaml")                             # doctest: +SKIP
>>> adapter = load_model(my_module, hu_offset=-1024, hu_scale=4096)      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from ctdid.core.adapter import HUAdapter
from ctdid.errors import CTDIDWarning, InputError
from ctdid.models.card import CARD_SUFFIXES, ModelCard
from ctdid.models.plain import PlainNet
from ctdid.models.unet import CompactUNet, PaperUNet

__all__ = [
    "DEFAULT_HU_OFFSET",
    "DEFAULT_HU_SCALE",
    "MODEL_FACTORIES",
    "SHIPPED_WEIGHTS_DIR",
    "available_models",
    "build_model",
    "load_model",
    "load_state_dict_file",
]

#: HU mapped to 0 in network units when no card (or keyword) says otherwise: air.
DEFAULT_HU_OFFSET = -1000.0
#: HU per network unit when no card says otherwise: water is 1, air 0.
DEFAULT_HU_SCALE = 1000.0

#: Where shipped models live: ``<name>.safetensors`` next to ``<name>.card.yaml``.
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _paper_unet(config: Mapping[str, Any]) -> nn.Module:
    return PaperUNet(**config)


def _plain(config: Mapping[str, Any]) -> nn.Module:
    return PlainNet(**config)


def _compact_unet(config: Mapping[str, Any]) -> nn.Module:
    return CompactUNet(**config)


#: ctdid's architectures: name -> factory taking the card's ``architecture_config`` dict.
MODEL_FACTORIES: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "paper-unet": _paper_unet,
    "plain": _plain,
    "compact-unet": _compact_unet,
}

_TRAINABLE_HINT = (
    "DID fine-tunes the network, so it needs a trainable PyTorch nn.Module with parameters: "
    "give 'package.module:factory' or 'file.py:factory' building the network, with its "
    "state dict as weights (.safetensors or .pt)"
)
_SHIPPED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_ATTR_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FILE_SUFFIXES = (".onnx", ".safetensors", ".pt", ".pth", ".ckpt", ".py", *CARD_SUFFIXES)
_NESTED_KEYS = ("state_dict", "model", "model_state_dict")
_STRIPPABLE_PREFIXES = ("module.", "net.", "model.")
_LIST_MAX = 8


# ---------------------------------------------------------------------------------------------
# public API


def available_models(*, weights_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the shipped models: those with both ``<name>.safetensors`` and ``<name>.card.yaml``.

    Parameters
    ----------
    weights_dir : str or path-like, optional
        Folder to look in. Default :data:`SHIPPED_WEIGHTS_DIR`.
    """
    folder = Path(SHIPPED_WEIGHTS_DIR if weights_dir is None else weights_dir)
    if not folder.is_dir():
        return []
    names = [p.name[: -len(".safetensors")] for p in folder.glob("*.safetensors")]
    return sorted(n for n in names if (folder / f"{n}.card.yaml").is_file())


def build_model(
    architecture: str,
    config: Mapping[str, Any] | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build an (untrained) network from a registered name or a factory spec.

    Parameters
    ----------
    architecture : str
        A key of :data:`MODEL_FACTORIES`, ``package.module:factory`` or
        ``path/to/file.py:factory``. Plug-in factories are called as ``factory(**config)``.
    config : mapping, optional
        Architecture options.
    path : str or path-like, optional
        File named in errors (the card the architecture came from).

    Raises
    ------
    InputError
        Unknown architecture, bad options, or a factory that does not return a trainable
        ``nn.Module``.
    """
    config = dict(config or {})
    if architecture in MODEL_FACTORIES:
        try:
            net = MODEL_FACTORIES[architecture](config)
        except (TypeError, ValueError) as exc:
            msg = f"bad options for architecture {architecture!r}: {exc}"
            raise InputError(msg, path=path) from None
        return net
    if ":" not in architecture:
        raise InputError(
            f"unknown architecture {architecture!r}; expected one of "
            f"{', '.join(MODEL_FACTORIES)} or 'package.module:factory' / 'file.py:factory'",
            path=path,
        )
    factory, where = _resolve_factory(architecture)
    try:
        net = factory(**config)
    except Exception as exc:
        raise InputError(
            f"factory {architecture!r} failed with options {config}: {type(exc).__name__}: {exc}",
            path=where,
        ) from exc
    _check_trainable(net, what=f"factory {architecture!r} returned", path=where)
    return net


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only``).

    A dict nested under ``"state_dict"``, ``"model"`` or ``"model_state_dict"`` (as in
    training checkpoints) is unwrapped. Nothing but tensors is unpickled.

    Raises
    ------
    InputError
        Missing file, ONNX or TorchScript file, unreadable file, or no tensors in it.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("weights file not found", path=p)
    _reject_non_trainable_file(p)
    if p.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"cannot read safetensors weights: {exc}", path=p) from None
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise InputError(
                "cannot load with torch.load(weights_only=True): the file holds Python objects, "
                "not only tensors; save model.state_dict() (or use .safetensors) instead",
                path=p,
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot read PyTorch weights: {msg}", path=p) from None
    return _unwrap_state_dict(obj, path=p)


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 of a module's state dict: each name, dtype and C-order bytes, by name.

    ``run.json`` records it (``model.state_dict_sha256``) so that a resume or the viewer's
    on-demand rendering can check that a loaded model is the run's.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_model(
    spec: str | os.PathLike[str] | nn.Module,
    *,
    weights: str | os.PathLike[str] | None = None,
    card: str | os.PathLike[str] | ModelCard | None = None,
    hu_offset: float | None = None,
    hu_scale: float | None = None,
    residual: bool | None = None,
    size_multiple: int | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> HUAdapter:
    """Load a denoiser and wrap it so that it maps HU images to HU images.

    Parameters
    ----------
    spec : str, path-like or nn.Module
        One of

        - a shipped model name (see :func:`available_models`): weights and card come from
          ``weights_dir``;
        - a registered architecture (``"compact-unet"``, ...), ``package.module:factory`` or
          ``path/to/file.py:factory``: the network is built by the factory (plug-ins are
          called as ``factory(**card.architecture_config)``) and ``weights`` loaded into it;
        - a model card file (``.yaml``, ``.yml``, ``.json``): its ``architecture`` is built
          and ``weights`` (default: ``<stem>.safetensors`` beside the card, where ``<stem>``
          drops a ``.card`` ending) loaded;
        - an ``nn.Module`` (or an :class:`HUAdapter`, unwrapped) with its weights already in
          it; ``weights`` may still be given.
    weights : str or path-like, optional
        State dict: ``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``,
        possibly nested under ``"state_dict"``/``"model"``. Checked against the card's
        ``weights_sha256`` when it has one.
    card : str, path-like or ModelCard, optional
        Model card (YAML or JSON) giving the units, architecture options and checksum.
    hu_offset, hu_scale, residual, size_multiple : optional
        Override the card. Without a card and without these, the defaults are
        ``hu_offset=-1000`` HU, ``hu_scale=1000`` HU (network units: water 1, air 0),
        ``residual=False`` and the network's ``required_multiple`` (1 if it has none), and a
        :class:`ctdid.errors.CTDIDWarning` says so. The padding multiple actually used is the
        least common multiple of ``size_multiple`` and the network's ``required_multiple``.
    weights_dir : str or path-like, optional
        Folder of shipped models. Default :data:`SHIPPED_WEIGHTS_DIR`.

    Returns
    -------
    HUAdapter
        The network wrapped with its units; :attr:`HUAdapter.meta` holds the card as a dict
        (empty without a card). The network is in eval mode with gradients enabled.

    Raises
    ------
    InputError
        Unknown name (the message lists the shipped ones), bad spec, missing file or
        factory, ONNX/TorchScript input, checksum mismatch, state-dict keys that do not
        match the network (listed), or a network without trainable parameters.
    """
    card_obj = _as_card(card)
    card_path: str | os.PathLike[str] | None = (
        None if card is None or isinstance(card, ModelCard) else card
    )
    weights_path = None if weights is None else Path(weights)
    base: HUAdapter | None = None

    if isinstance(spec, HUAdapter):
        base = spec
        net = spec.net
    elif isinstance(spec, nn.Module):
        if isinstance(spec, torch.jit.ScriptModule):
            raise InputError(f"got a TorchScript module; {_TRAINABLE_HINT}")
        net = spec
    elif isinstance(spec, str | os.PathLike):
        net, card_obj, card_path, weights_path = _net_from_spec(
            os.fspath(spec), card_obj, card_path, weights_path, weights_dir
        )
    else:
        raise TypeError(
            "spec must be a name, a factory spec, a path or an nn.Module, "
            f"got {type(spec).__name__}"
        )

    if weights_path is not None:
        if card_obj is not None:
            _verify_sha(card_obj, weights_path)
        _apply_state_dict(net, load_state_dict_file(weights_path), path=weights_path)

    _check_trainable(net, what="the denoiser is", path=weights_path)

    offset, scale, res, multiple = _units(card_obj, base)
    offset = offset if hu_offset is None else float(hu_offset)
    scale = scale if hu_scale is None else float(hu_scale)
    if card_obj is None and base is None and (hu_offset is None or hu_scale is None):
        warnings.warn(
            f"no model card given: assuming hu_offset={offset:g} HU, hu_scale={scale:g} HU per "
            "network unit; give a card (or hu_offset and hu_scale) if the network was trained "
            "otherwise",
            CTDIDWarning,
            stacklevel=2,
        )
    res = res if residual is None else bool(residual)
    multiple = multiple if size_multiple is None else int(size_multiple)
    required = getattr(net, "required_multiple", 1)
    if isinstance(required, int) and required >= 1:
        multiple = math.lcm(multiple, required)
    try:
        adapter = HUAdapter(
            net,
            hu_offset=offset,
            hu_scale=scale,
            residual=res,
            size_multiple=multiple,
            meta=card_obj.to_dict() if card_obj is not None else None,
        )
    except ValueError as exc:
        raise InputError(str(exc), path=card_path) from None
    adapter.eval()
    return adapter


# ---------------------------------------------------------------------------------------------
# spec resolution


def _as_card(card: str | os.PathLike[str] | ModelCard | None) -> ModelCard | None:
    if card is None or isinstance(card, ModelCard):
        return card
    return ModelCard.load(card)


def _units(card: ModelCard | None, base: HUAdapter | None) -> tuple[float, float, bool, int]:
    if card is not None:
        return float(card.hu_offset), float(card.hu_scale), card.residual, card.size_multiple
    if base is not None:
        return base.hu_offset, base.hu_scale, base.residual, base.size_multiple
    return DEFAULT_HU_OFFSET, DEFAULT_HU_SCALE, False, 1


def _spec_help(weights_dir: str | os.PathLike[str] | None) -> str:
    names = available_models(weights_dir=weights_dir)
    shipped = ", ".join(names) if names else "none installed"
    return (
        f"shipped models: {shipped}; or give an architecture ({', '.join(MODEL_FACTORIES)}), "
        "'package.module:factory' or 'path/to/file.py:factory' with weights, or a model card"
    )


def _net_from_spec(
    spec: str,
    card: ModelCard | None,
    card_path: str | os.PathLike[str] | None,
    weights: Path | None,
    weights_dir: str | os.PathLike[str] | None,
) -> tuple[nn.Module, ModelCard | None, str | os.PathLike[str] | None, Path | None]:
    """Build the network named by a string spec; returns (net, card, card path, weights)."""
    as_path = Path(spec)
    suffix = as_path.suffix.lower()
    if as_path.is_file() or suffix in _FILE_SUFFIXES:
        if suffix == ".onnx":
            raise InputError(f"ONNX models cannot be used; {_TRAINABLE_HINT}", path=as_path)
        if not as_path.is_file():
            raise InputError("file not found", path=as_path)
        _reject_non_trainable_file(as_path)
        if suffix in CARD_SUFFIXES:
            if card is not None:
                raise InputError("two model cards given (as spec and as card)", path=as_path)
            card, card_path = ModelCard.load(as_path), as_path
            if weights is None:
                stem = as_path.name[: -len(as_path.suffix)].removesuffix(".card")
                weights = as_path.with_name(f"{stem}.safetensors")
            net = build_model(card.architecture, card.architecture_config, path=as_path)
            return net, card, card_path, weights
        if suffix == ".py":
            raise InputError(
                "a Python file needs the factory to call: 'path/to/file.py:factory'", path=as_path
            )
        # A weights file given as spec: the card must say which architecture to build.
        if card is None:
            raise InputError(
                "a weights file alone does not say which network to build; give a model card "
                "(card=...) or a factory spec with weights=this file",
                path=as_path,
            )
        if weights is not None:
            raise InputError("two weights files given (as spec and as weights)", path=as_path)
        net = build_model(card.architecture, card.architecture_config, path=card_path)
        return net, card, card_path, as_path

    config = card.architecture_config if card is not None else {}
    if ":" in spec:
        return build_model(spec, config, path=card_path), card, card_path, weights

    if not _SHIPPED_NAME_RE.match(spec):
        raise InputError(f"not a model spec: {spec!r}; {_spec_help(weights_dir)}")
    folder = Path(SHIPPED_WEIGHTS_DIR if weights_dir is None else weights_dir)
    shipped_weights = folder / f"{spec}.safetensors"
    shipped_card = folder / f"{spec}.card.yaml"
    if shipped_weights.is_file() and shipped_card.is_file():
        if card is None:
            card, card_path = ModelCard.load(shipped_card), shipped_card
        net = build_model(card.architecture, card.architecture_config, path=card_path)
        return net, card, card_path, weights if weights is not None else shipped_weights
    if spec in MODEL_FACTORIES:
        if weights is None:
            raise InputError(
                f"{spec!r} is an architecture, not a trained model: give its weights "
                f"(weights=...) or a shipped model name ({_spec_help(weights_dir)})"
            )
        return build_model(spec, config, path=card_path), card, card_path, weights
    raise InputError(f"unknown model {spec!r}; {_spec_help(weights_dir)}")


def _resolve_factory(spec: str) -> tuple[Callable[..., Any], Path | None]:
    """Import ``module:attr`` or ``file.py:attr``; returns (factory, file or None)."""
    target, _, attr = spec.rpartition(":")
    if not target or not _ATTR_RE.match(attr):
        raise InputError(
            f"not a factory spec: {spec!r}; expected 'package.module:factory' or "
            "'path/to/file.py:factory'"
        )
    where: Path | None = None
    if target.lower().endswith(".py"):
        where = Path(target)
        module = _import_file(where)
        label = str(where)
    elif _MODULE_RE.match(target):
        module = _import_module(target)
        label = target
    else:
        raise InputError(
            f"not a factory spec: {spec!r}; expected 'package.module:factory' or "
            "'path/to/file.py:factory'"
        )
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(
                n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
            )
            hint = f" (callables there: {_short_list(public)})" if public else ""
            raise InputError(f"{label} has no factory {attr!r}{hint}", path=None)
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{label}:{attr} is not callable")
    return obj, where


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise InputError("Python file not found", path=path)
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_ctdid_plugin_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise InputError("cannot import as a Python module", path=path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise InputError(f"importing failed: {type(exc).__name__}: {exc}", path=path) from exc
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise InputError(
                f"no Python module named {name!r} (is its package installed or on sys.path?)"
            ) from None
        raise InputError(f"importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise InputError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# checks and state dicts


def _reject_non_trainable_file(path: Path) -> None:
    if path.suffix.lower() == ".onnx":
        raise InputError(f"ONNX models cannot be used; {_TRAINABLE_HINT}", path=path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise InputError(
                f"this is a TorchScript archive, which cannot be fine-tuned; {_TRAINABLE_HINT}",
                path=path,
            )


def _check_trainable(net: Any, *, what: str, path: str | os.PathLike[str] | None) -> None:
    if isinstance(net, torch.jit.ScriptModule):
        raise InputError(f"{what} a TorchScript module; {_TRAINABLE_HINT}", path=path)
    if not isinstance(net, nn.Module):
        raise InputError(f"{what} a {type(net).__name__}, not an nn.Module", path=path)
    if not any(p.requires_grad for p in net.parameters()):
        raise InputError(f"{what} a module without trainable parameters; {_TRAINABLE_HINT}")


def _verify_sha(card: ModelCard, weights: Path) -> None:
    if not weights.is_file():
        raise InputError("weights file not found", path=weights)
    card.verify_weights(weights)


def _unwrap_state_dict(obj: Any, *, path: Path) -> dict[str, Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping):
            nested = [k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)]
            if nested:
                obj = obj[nested[0]]
                continue
        break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(
            "weights file holds no state dict (expected a mapping of parameter names to "
            "tensors, possibly under 'state_dict' or 'model')",
            path=path,
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise InputError(
            f"weights file holds non-tensor entries ({_short_list(bad)}); expected a state dict",
            path=path,
        )
    return {str(k): v for k, v in obj.items()}


def _strip_prefix(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    if set(state) == expected:
        return state
    for prefix in _STRIPPABLE_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if len(set(stripped) & expected) > len(set(state) & expected):
                return stripped
    return state


def _apply_state_dict(net: nn.Module, state: dict[str, Tensor], *, path: Path) -> None:
    expected_sd = net.state_dict()
    state = _strip_prefix(state, set(expected_sd))
    missing = sorted(set(expected_sd) - set(state))
    unexpected = sorted(set(state) - set(expected_sd))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected_sd.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs network): {_short_list(mismatched)}")
    if problems:
        raise InputError(
            f"weights do not fit the network {type(net).__name__} ({'; '.join(problems)}); "
            "wrong architecture or architecture options?",
            path=path,
        )
    net.load_state_dict(state, strict=True)


def _short_list(items: list[str]) -> str:
    if len(items) <= _LIST_MAX:
        return ", ".join(items)
    return ", ".join(items[:_LIST_MAX]) + f", ... ({len(items) - _LIST_MAX} more)"
