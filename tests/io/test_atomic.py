from __future__ import annotations

from pathlib import Path

import pytest

from ctdid.errors import OutputExistsError
from ctdid.io.atomic import atomic_dir, atomic_file


def test_file_written_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"


def test_file_never_overwritten_without_flag(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_file(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"precious"
    with atomic_file(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_dir_replaced_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "series"
    with atomic_dir(target) as tmp:
        (tmp / "1.dcm").write_bytes(b"x")
    assert sorted(p.name for p in target.iterdir()) == ["1.dcm"]
    with pytest.raises(OutputExistsError), atomic_dir(target) as tmp:
        pass
    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "2.dcm").write_bytes(b"y")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["1.dcm"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "2.dcm").write_bytes(b"y")
    assert sorted(p.name for p in target.iterdir()) == ["2.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_outputs_get_usual_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
