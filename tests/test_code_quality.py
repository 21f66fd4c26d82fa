"""Ruff- and mypy-clean code; ``core`` free of I/O and of the other sub-packages."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ctdid"


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def test_ruff_clean() -> None:
    res = subprocess.run(
        [_tool("ruff"), "check", "src", "tests", "benchmarks", "scripts", "docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_clean() -> None:
    res = subprocess.run(
        [_tool("mypy"), "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr


FORBIDDEN_IN_CORE = {
    "ctdid.io",
    "ctdid.cli",
    "ctdid.models",
    "ctdid.sim",
    "ctdid.metrics",
    "ctdid.train",
    "ctdid.viewer",
    "ctdid.demo",
    "pydicom",
    "nibabel",
    "PIL",
    "tifffile",
    "matplotlib",
    "typer",
    "rich",
}


@pytest.mark.parametrize(
    "path",
    sorted(SRC.joinpath("core").rglob("*.py")),  # core/ and its sub-packages (core/did/)
    ids=lambda p: str(p.relative_to(SRC / "core")),
)
def test_core_imports_nothing_outside(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            bad = [f for f in FORBIDDEN_IN_CORE if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.name} imports {name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"print", "open"}, f"{path.name} calls {node.func.id}()"
