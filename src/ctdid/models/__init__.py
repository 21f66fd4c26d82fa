"""Denoisers and the plug-in contract.

ctdid's own networks (:class:`PaperUNet`, :class:`CompactUNet`, :class:`PlainNet`), their
registry :data:`MODEL_FACTORIES`, model cards (:class:`ModelCard`) and :func:`load_model`,
which turns a shipped name, a ``package.module:factory`` / ``file.py:factory`` plug-in or an
``nn.Module`` into a :class:`ctdid.core.adapter.HUAdapter` (HU in, HU out).

Examples
--------
>>> from ctdid.models import load_model
>>> denoiser = load_model("my_pkg.nets:build", weights="w.safetensors",
...                       card="w.card.yaml")                         # doctest: +SKIP
"""

from ctdid.models.card import ModelCard, sha256_file
from ctdid.models.loading import (
    DEFAULT_HU_OFFSET,
    DEFAULT_HU_SCALE,
    MODEL_FACTORIES,
    SHIPPED_WEIGHTS_DIR,
    available_models,
    build_model,
    load_model,
    load_state_dict_file,
    state_dict_sha256,
)
from ctdid.models.plain import PlainNet
from ctdid.models.unet import CompactUNet, PaperUNet, SafeInstanceNorm2d, UNet, count_parameters

__all__ = [
    "DEFAULT_HU_OFFSET",
    "DEFAULT_HU_SCALE",
    "MODEL_FACTORIES",
    "SHIPPED_WEIGHTS_DIR",
    "CompactUNet",
    "ModelCard",
    "PaperUNet",
    "PlainNet",
    "SafeInstanceNorm2d",
    "UNet",
    "available_models",
    "build_model",
    "count_parameters",
    "load_model",
    "load_state_dict_file",
    "sha256_file",
    "state_dict_sha256",
]
