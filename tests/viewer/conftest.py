"""Fixtures of the viewer tests: small finished result folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_factory import make_result


@pytest.fixture
def result64(tmp_path: Path) -> Path:
    folder = tmp_path / "result"
    make_result(folder)
    return folder


@pytest.fixture
def result_volume(tmp_path: Path) -> Path:
    folder = tmp_path / "result_vol"
    make_result(folder, n=64, nz=5)
    return folder
