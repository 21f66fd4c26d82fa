"""A volume's shared run stopped after its fine-tuning: candidates listed under ``rendering``."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from ctdid.runner import RunProgress, run_did
from ctdid.viewer.server import create_app
from ctdid.volume import CTVolume
from tiny_run_model import Tiny as TinyHU
from tiny_run_model import disk_volume

with warnings.catch_warnings():  # starlette >= 1.0 asks for httpx2 (not installed)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

N, Z = 40, 5  # disk_volume's default size
__all__ = ["OPTS", "N", "TinyHU", "Z", "client", "disk_volume", "slice_of", "stopped_run"]
OPTS: dict[str, Any] = {"mode": "fast", "n_candidates": 2, "train_slices": 2, "batch_size": 2}


def client(folder: Path, **kw: Any) -> TestClient:
    """The viewer's app on ``folder`` (``create_app`` keywords, e.g. ``model``)."""
    return TestClient(create_app(folder, **kw), base_url="http://127.0.0.1")


def slice_of(c: TestClient, cand: int | str, z: int) -> tuple[np.ndarray, str]:
    """Slice ``z`` of ``cand`` as the viewer serves it (int16 HU) and its ``X-Rendered``."""
    r = c.get(f"/api/slice/{cand}/{z}")
    assert r.status_code == 200, r.text
    ny, nx = (int(v) for v in r.headers["X-Shape"].split(","))
    return np.frombuffer(r.content, dtype="<i2").reshape(ny, nx), r.headers["X-Rendered"]


def stopped_run(
    folder: Path,
    model: nn.Module,
    *,
    volume: CTVolume | None = None,
    model_info: Mapping[str, Any] | None = None,
    **options: Any,
) -> None:
    """Run the shared trajectory until its first volume batch, then stop it (Ctrl-C).

    The folder is left with ``status`` "failed" and every candidate listed under
    ``rendering`` (weights saved, no volume listed).
    """

    def stop(p: RunProgress) -> None:
        if p.stage == "render":
            raise KeyboardInterrupt("stopped before the volumes")

    with pytest.raises(KeyboardInterrupt):
        run_did(
            volume if volume is not None else disk_volume(), model, out_dir=folder,
            progress=stop, model_info=model_info, **{**OPTS, **options},
        )  # fmt: skip
