"""Checks of the engine's inputs: HU arrays to float32 tensors, batches and body masks."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ctdid.core.body import body_mask

__all__ = ["as_batch", "as_tensor", "body_weights"]


def as_tensor(x: ArrayLike | Tensor, name: str) -> Tensor:
    """A finite, real, non-empty float32 tensor of HU values (detached; numpy is copied).

    Raises
    ------
    ValueError
        If ``x`` is not numeric, is empty or holds NaN or Inf (the message names ``name``).
    """
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be a numeric HU array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a real numeric HU array, got dtype {t.dtype}")
    t = t.to(dtype=torch.float32)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty, shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} holds {n_bad} NaN or Inf value(s); give finite HU values")
    return t


def as_batch(x: ArrayLike | Tensor, device: torch.device) -> tuple[Tensor, tuple[int, ...]]:
    """An (H, W) image or (B, 1, H, W) batch in HU as a (B, 1, H, W) tensor, and its shape."""
    xt = as_tensor(x, "x")
    shape = tuple(xt.shape)
    if xt.ndim == 2:
        xt = xt[None, None]
    elif not (xt.ndim == 4 and xt.shape[1] == 1):
        raise ValueError(
            f"x must be an (H, W) image or a (B, 1, H, W) batch in HU, got shape {shape}"
        )
    if min(xt.shape[-2:]) < 2:
        raise ValueError(f"x is too small, shape {shape}")
    return xt.to(device), shape


def body_weights(
    xb: Tensor,
    body: ArrayLike | Tensor | None,
    shape: tuple[int, ...],
    *,
    threshold: float,
    device: torch.device,
) -> Tensor:
    """The body mask as float64 0/1 weights shaped like ``xb`` (B, 1, H, W).

    ``body=None``: the automatic mask above ``threshold`` HU (everywhere when fewer than 16
    pixels are above it). A given mask must have the caller's ``shape`` and not be empty.
    """
    if body is None:
        m = body_mask(xb[:, 0].cpu().numpy(), threshold=threshold)
        if m.sum() < 16:
            m = np.ones_like(m)
        mt = torch.from_numpy(m)[:, None]
    else:
        arr = body.detach().cpu().numpy() if isinstance(body, Tensor) else np.asarray(body)
        if arr.shape != shape:
            raise ValueError(f"body mask shape {arr.shape} differs from the image's {shape}")
        if not arr.any():
            raise ValueError("body mask is empty")
        mt = torch.from_numpy(np.ascontiguousarray(arr.astype(bool))).reshape(xb.shape)
    return mt.to(device=device, dtype=torch.float64)
