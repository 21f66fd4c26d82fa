"""Atomic, non-destructive output: write under a temporary name, then rename.

Nothing that exists is overwritten unless ``overwrite=True``; a failed write leaves no partial
file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ctdid.errors import OutputExistsError

__all__ = ["atomic_dir", "atomic_file", "check_output"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; make sure the parent folder exists.

    Returns
    -------
    Path
        ``path`` as an absolute path.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    p = Path(path).absolute()
    if p.exists() and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=p)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Examples
    --------
    >>> with atomic_file(out, overwrite=False) as tmp:  # doctest: +SKIP
    ...     np.save(tmp, arr)
    """
    p = check_output(path, overwrite=overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        if p.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError("appeared while writing; not replaced", path=p)
        if p.is_dir():
            raise OutputExistsError("is a folder; not replaced by a file", path=p)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    With ``overwrite=True`` an existing folder at ``path`` is removed only after the new one is
    complete, and moved aside first so that a crash never leaves neither.
    """
    p = check_output(path, overwrite=overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield tmp
        old: Path | None = None
        if p.exists():
            if not overwrite:
                raise OutputExistsError("appeared while writing; not replaced", path=p)
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
            old.rmdir()
            os.replace(p, old)
        os.replace(tmp, p)
        if old is not None:
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
