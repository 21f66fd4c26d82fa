"""A volume's shared run stopped after its fine-tuning: candidates listed under ``rendering``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from ctdid.runner import RunProgress, run_did
from ctdid.volume import CTVolume
from tiny_run_model import Tiny as TinyHU
from tiny_run_model import disk_volume

N, Z = 40, 5  # disk_volume's default size
__all__ = ["OPTS", "N", "TinyHU", "Z", "disk_volume", "stopped_run"]
OPTS: dict[str, Any] = {"mode": "fast", "n_candidates": 2, "train_slices": 2, "batch_size": 2}


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
