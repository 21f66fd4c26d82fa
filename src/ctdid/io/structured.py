"""Small YAML/JSON documents (model cards, training configs): read and write with clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ctdid.errors import InputError

__all__ = ["STRUCTURED_SUFFIXES", "read_structured", "write_structured"]

STRUCTURED_SUFFIXES = (".yaml", ".yml", ".json")


def _suffix(p: Path, what: str) -> str:
    suffix = p.suffix.lower()
    if suffix not in STRUCTURED_SUFFIXES:
        raise InputError(
            f"a {what} must end in {', '.join(STRUCTURED_SUFFIXES)}, got {p.suffix!r}", path=p
        )
    return suffix


def read_structured(path: str | os.PathLike[str], *, what: str) -> Any:
    """Parse a ``.yaml``/``.yml`` or ``.json`` file.

    Parameters
    ----------
    path : path
    what : str
        What the document is ("model card", "training config"), for the error messages.

    Raises
    ------
    InputError
        Wrong ending, missing or unreadable file, or invalid YAML/JSON; names the file.
    """
    p = Path(path)
    suffix = _suffix(p, what)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", path=p) from None
    try:
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        msg = " ".join(str(exc).split())
        raise InputError(f"{what} is not valid {suffix[1:].upper()}: {msg}", path=p) from None


def write_structured(
    data: Any, path: str | os.PathLike[str], *, what: str, overwrite: bool = False
) -> Path:
    """Write ``data`` as YAML or JSON (chosen by the ending), atomically; return the path."""
    from ctdid.io.atomic import atomic_file

    p = Path(path)
    suffix = _suffix(p, what)
    if suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    with atomic_file(p, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p.absolute()
